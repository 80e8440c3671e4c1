"""Fail-safe state file and audit trail ($ETSF_STATE_DIR/failsafe.json, failsafe-audit.jsonl)."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import sys
import time
from typing import Any

from .. import datapath, inputs, paths
from .config import AUDIT_FILE, STATE_FILE


# ---------------------------------------------------------------------------
# state file + audit
# ---------------------------------------------------------------------------


def state_path(name: str) -> str:
    return os.path.join(datapath.state_dir(), name)


def write_state(doc: dict[str, Any]) -> None:
    paths.write_json(state_path(STATE_FILE), doc)


def read_state() -> dict[str, Any] | None:
    try:
        return json.loads(inputs.read_text(state_path(STATE_FILE), "state"))
    except (OSError, ValueError):
        return None


def running(st: dict[str, Any] | None) -> bool:
    """A watchdog process is alive and wrote its state file within the last few ticks."""
    if not st or not st.get("pid"):
        return False
    try:
        os.kill(int(st["pid"]), 0)
    except PermissionError:
        pass                               # alive, another user's (a status read without root)
    except (OSError, ValueError, TypeError):
        return False
    try:
        return time.time() - float(st.get("updated_at", 0)) < max(5.0, 10 * float(st.get("interval_s", 1)))
    except (ValueError, TypeError):
        return False


def audit(event: str, **fields) -> dict[str, Any]:
    rec = {"time": time.time(), "event": event, **fields}
    d = datapath.state_dir()
    os.makedirs(d, exist_ok=True)
    with open(state_path(AUDIT_FILE), "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    prio = 4 if event in ("trip", "detach", "reengage_failed") else 5
    rule = f" rule={fields['rule']}" if fields.get("rule") else ""
    nums = fields.get("numbers") or {}
    short = ", ".join(f"{k}={v}" for k, v in nums.items() if not isinstance(v, (dict, list)))
    sys.stderr.write(f"<{prio}>etsf-failsafe: {event}{rule} state={fields.get('state')}"
                     f"{' (' + short + ')' if short else ''}\n")
    sys.stderr.flush()
    return rec


def read_audit(limit: int = 50) -> list[dict[str, Any]]:
    try:
        tail = inputs.read_tail(state_path(AUDIT_FILE), "audit log tail")
    except OSError:
        return []
    # the first line of a tail that starts mid-file is cut: json.loads skips it below
    lines = collections.deque(tail.decode("utf-8", "replace").splitlines(), maxlen=limit)
    out = []
    for ln in lines:
        with contextlib.suppress(ValueError):
            out.append(json.loads(ln))
    return out
