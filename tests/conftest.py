"""Session-wide order: the unit and BPF tests run first, everything else after them in the usual
(path) order.  They are single-threaded and assert no timing, so the appliance build that
tests/appliance/conftest.py starts in the background at collection runs beside them on the
second CPU instead of in front of the tests that need it."""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
FIRST = ("unit", "bpf")


def _rank(item) -> int:
    rel = Path(str(item.path)).resolve().relative_to(HERE) if HERE in Path(str(item.path)).resolve().parents else None
    return FIRST.index(rel.parts[0]) if rel is not None and rel.parts[0] in FIRST else len(FIRST)


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=_rank)           # stable: each group keeps its collection order
