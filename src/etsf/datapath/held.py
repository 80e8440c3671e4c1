"""An operator's revert outlives a reboot.

The bypass flag lives in a map and a detach leaves nothing attached, but a reboot empties bpffs
and ``etsf-restore.service`` attaches every configured interface again with a fresh ``etsf_ctl``:
without a record, a fleet revert made during an incident would end on each host's next reboot.
So ``etsfctl revert`` and ``etsfctl bypass on`` leave ``$ETSF_STATE_DIR/revert.json`` and the
restore honours it: a held detach attaches nothing, a held bypass attaches with the bypass on
before the policy is applied.  The record goes when the revert is undone on purpose: ``bypass
off`` or ``failsafe ack`` for a bypass, an explicit attach (``etsfctl attach``, the datapath role)
for a detach.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from .. import paths
from ..policy.history import default_actor

FILE = "revert.json"
MODES = ("bypass", "detach")


def _path() -> str:
    return os.path.join(paths.state_dir(), FILE)


def read() -> dict[str, Any] | None:
    """The held revert ({"mode", "time", "actor"}), or None; a record that is not one is ignored,
    as a missing one is: the restore then does what the config says."""
    doc = paths.read_json(_path(), limit=4096)
    if not doc or doc.get("mode") not in MODES:
        return None
    t = doc.get("time")
    doc["time"] = float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else 0.0  # 0: unknown
    return doc


def hold(mode: str, actor: str | None = None) -> bool:
    """Keep a revert across reboots; True when the held revert changes.  A bypass never replaces
    a held detach: nothing is attached for it to act on, and the detach is the stronger."""
    cur = read()
    if cur and (cur["mode"] == mode or (mode == "bypass" and cur["mode"] == "detach")):
        return False
    paths.write_json(_path(), {"mode": mode, "time": time.time(), "actor": actor or default_actor()})
    return True


def release(mode: str) -> bool:
    """Drop a held revert of this mode; True when there was one."""
    cur = read()
    if not cur or cur["mode"] != mode:
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_path())
    return True


def describe(rec: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(rec["time"])) if rec["time"] else "an unknown time"
    return f"{rec['mode']} held since {when} by {rec.get('actor') or '?'}"
