"""The controller's state file ($ETSF_STATE_DIR/overload.json): what it last wrote (level,
admission rate), why (signal, pressure, signal values), how often it changed, and the manual
pin.  Read by the exporter (metrics), ``etsfctl status`` and ``top``; the pin is set by
``etsfctl overload set`` and cleared by ``etsfctl overload auto --resume``.

Kept free of the data path and telemetry imports so every reader can use it.
"""

from __future__ import annotations

import json
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
    try:
        with open(state_path(), encoding="utf-8") as f:
            doc = json.loads(f.read(1 << 20))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _write(doc: dict[str, Any]) -> None:
    paths.write_json(state_path(), doc)    # the exporter (another user) reads it


def update_state(mutate) -> dict[str, Any]:
    """Read-modify-write the state file under its lock (the controller and the manual
    commands both write it); *mutate* changes the dict in place."""
    with paths.lock(LOCK):
        doc = read_state() or {}
        mutate(doc)
        doc["updated"] = time.time()
        _write(doc)
        return doc


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


def write_heartbeat(path: str) -> None:
    """Atomically replace *path*; its mtime is the heartbeat the fail-safe watches."""
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(json.dumps({"pid": os.getpid(), "time": time.time()}) + "\n")
    os.replace(tmp, path)
