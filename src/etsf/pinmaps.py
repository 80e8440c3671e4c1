"""Pinned maps opened by name on first use and closed together (policy apply, fast path)."""

from __future__ import annotations

import contextlib

from .paths import pin_root as _resolve_root


class PinnedMaps:
    """``maps["etsf_ctl"]`` opens <pin_root>/maps/etsf_ctl once; ``missing(message)`` builds the
    error raised when a map is not pinned, so each caller keeps its own error type."""

    def __init__(self, pin_root=None, missing=RuntimeError):
        from . import bpf
        self.bpf = bpf
        self.pin_root = _resolve_root(pin_root)
        self.missing = missing
        self._open = {}

    def __getitem__(self, name):
        if name not in self._open:
            try:
                self._open[name] = self.bpf.open_map(name, self.pin_root)
            except (OSError, self.bpf.BpfError) as e:
                raise self.missing(f"datapath maps not found under {self.pin_root} "
                                   f"(run 'etsfctl attach' first): {e}") from None
        return self._open[name]

    def close(self):
        for m in self._open.values():
            with contextlib.suppress(Exception):
                m.close()
        self._open.clear()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
