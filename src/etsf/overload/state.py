"""The controller's state file ($ETSF_STATE_DIR/overload.json): what it last wrote (level,
admission rate), why (signal, pressure, signal values), how often it changed, and the manual
pin.  Read by the exporter (metrics), ``etsfctl status`` and ``top``; the pin is set by
``etsfctl overload set`` and cleared by ``etsfctl overload auto --resume``.

Kept free of the data path and telemetry imports so every reader can use it.
"""

from __future__ import annotations

import os
import time
from typing import Any

from .. import paths

STATE_FILE = "overload.json"
LOCK = "overload.lock"


def state_path() -> str:
    return os.path.join(paths.state_dir(), STATE_FILE)


def read_state() -> dict[str, Any] | None:
    """The state document, or None when the controller never ran (or the file is unreadable)."""
    return paths.read_json(state_path())


def update_state(mutate) -> dict[str, Any]:
    """Read-modify-write the state file under its lock (the controller and the manual
    commands both write it); *mutate* changes the dict in place."""
    return paths.update_json(state_path(), LOCK, mutate)


def pin(level: int, by: str) -> dict[str, Any]:
    """A manual level: the controller leaves etsf_ctl alone until resumed."""
    def mut(doc):
        doc.update(pinned=True, pinned_level=level, pinned_by=by, pinned_at=time.time())
    return update_state(mut)


def resume() -> dict[str, Any]:
    def mut(doc):
        doc["pinned"] = False
        for k in ("pinned_level", "pinned_by", "pinned_at"):
            doc.pop(k, None)
    return update_state(mut)
