"""What every benchmark plot ends with: axis labels, title, legend, then the file."""
from __future__ import annotations

from pathlib import Path


def label(ax, xlabel: str | None = None, ylabel: str | None = None, title: str | None = None,
          legend: float | str | None = None) -> None:
    """Set the axis labels and title that are given; legend=<font size> draws the legend."""
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    if legend is not None:
        ax.legend(fontsize=legend)


def save(fig, path: Path, dpi: int = 110) -> None:
    """Lay out, write and close the figure (pyplot keeps every open figure otherwise)."""
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
