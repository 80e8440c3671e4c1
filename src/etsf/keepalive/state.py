"""The prober's state file ($ETSF_STATE_DIR/keepalive.json): the last probe, counts of probe
outcomes, the alive/dead transitions and what was last written into etsf_ctl.  Read by
``etsfctl keepalive status`` and the exporter; written only by the prober.

Kept free of the data path and telemetry imports so every reader can use it.
"""

from __future__ import annotations

import os
from typing import Any

from .. import paths

STATE_FILE = "keepalive.json"
LOCK = "keepalive.lock"


def state_path() -> str:
    return os.path.join(paths.state_dir(), STATE_FILE)


def read_state() -> dict[str, Any] | None:
    """The state document, or None when the prober never ran (or the file is unreadable)."""
    return paths.read_json(state_path())


def update_state(mutate) -> dict[str, Any]:
    """Read-modify-write the state file under its lock; *mutate* changes the dict in place."""
    return paths.update_json(state_path(), LOCK, mutate)
