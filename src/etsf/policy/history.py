"""The policies this host applied: the last N kept for ``policy history`` / ``policy rollback``.

``$ETSF_STATE_DIR/policy-history/<generation>.json`` holds one applied policy each (the
canonical, validated document, its generation, slot, time, who, sha256, and whether it was
an apply or a rollback); only the newest N files are kept (N: ``ETSF_POLICY_HISTORY``,
default 10).  Every apply and rollback also appends one line to
``$ETSF_STATE_DIR/policy-audit.jsonl``, which is never pruned.
Writers hold the policy lock (the caller's), so the files change in generation order.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import time
from typing import Any

from .. import inputs, paths
from ..errors import PolicyError
from ..paths import state_dir

HISTORY_DIR = "policy-history"
AUDIT_FILE = "policy-audit.jsonl"
DEFAULT_KEEP = 10
MAX_KEEP = 1000


def keep_default() -> int:
    raw = os.environ.get("ETSF_POLICY_HISTORY")
    if raw is None or raw == "":
        return DEFAULT_KEEP
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if not 1 <= n <= MAX_KEEP:
        raise PolicyError("ETSF_POLICY_HISTORY", f"must be an integer 1..{MAX_KEEP} (got {raw!r})")
    return n


def check_keep(n: int | None) -> int:
    if n is None:
        return keep_default()
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_KEEP:
        raise PolicyError("history_keep", f"must be an integer 1..{MAX_KEEP} (got {n!r})")
    return n


def default_actor() -> str:
    who = os.environ.get("ETSF_ACTOR") or os.environ.get("SUDO_USER")
    if not who:
        try:
            who = getpass.getuser()
        except (KeyError, OSError):
            who = f"uid {os.getuid()}"
    return who


def digest(doc: dict[str, Any]) -> str:
    """sha256 of the canonical document (what the maps hold), independent of YAML layout."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _dir() -> str:
    return os.path.join(state_dir(), HISTORY_DIR)


def _generations() -> list[int]:
    try:
        names = os.listdir(_dir())
    except FileNotFoundError:
        return []
    gens = []
    for n in names:
        stem, dot, ext = n.partition(".")
        if dot and ext == "json" and stem.isdigit():
            gens.append(int(stem))
    return sorted(gens)


def _atomic_write(path: str, data: str) -> None:
    paths.write_atomic(path, data, sync=True)


def newest_generation() -> int:
    """The highest generation kept (0 when none): pruning keeps the newest, so this is the
    newest this host ever applied, also after a reboot emptied the maps."""
    gens = _generations()
    return gens[-1] if gens else 0


def kept(generation: int) -> bool:
    return os.path.exists(os.path.join(_dir(), f"{generation}.json"))


def read_entry(generation: int) -> dict[str, Any] | None:
    path = os.path.join(_dir(), f"{generation}.json")
    try:
        return json.loads(inputs.read_text(path, "policy"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, inputs.InputTooLarge) as e:
        raise PolicyError("history", f"cannot read {path}: {e}") from None


def entries(with_policy: bool = False) -> list[dict[str, Any]]:
    """Kept entries, oldest first (without the documents unless asked)."""
    out = []
    for g in _generations():
        e = read_entry(g)
        if e is None:
            continue
        if not with_policy:
            e = {k: v for k, v in e.items() if k != "policy"}
        out.append(e)
    return out


def record(*, generation: int, slot: int, doc: dict[str, Any], action: str, actor: str | None,
           source: str | None, keep: int, previous: int | None, rollback_to: int | None = None,
           changes: int = 0) -> dict[str, Any]:
    """Keep this applied policy, prune to the newest `keep`, and audit the event."""
    entry = {
        "generation": generation, "slot": slot, "time": time.time(), "action": action,
        "actor": actor or default_actor(), "source": source, "sha256": digest(doc),
        "previous_generation": previous, "policy": doc,
    }
    if rollback_to is not None:
        entry["rollback_to"] = rollback_to
    os.makedirs(_dir(), mode=0o755, exist_ok=True)
    _atomic_write(os.path.join(_dir(), f"{generation}.json"),
                  json.dumps(entry, indent=1, sort_keys=True) + "\n")
    gens = _generations()
    for g in gens[:-keep] if len(gens) > keep else []:
        try:
            os.unlink(os.path.join(_dir(), f"{g}.json"))
        except FileNotFoundError:
            pass
    audit = {k: v for k, v in entry.items() if k != "policy"}
    audit["event"] = action
    audit["changes"] = changes
    with open(os.path.join(state_dir(), AUDIT_FILE), "a", encoding="utf-8") as f:
        f.write(json.dumps(audit, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return entry


def pick(live_generation: int | None, generation: int | None) -> dict[str, Any]:
    """The kept entry a rollback re-applies: `generation`, or the newest one before the live one.

    One-line PolicyError when there is none; nothing is read from or written to the maps here.
    """
    gens = _generations()
    kept = ", ".join(str(g) for g in gens) or "none"
    if generation is not None:
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 1:
            raise PolicyError("rollback.generation", f"must be a positive integer (got {generation!r})")
        if generation not in gens:
            raise PolicyError("rollback.generation", f"generation {generation} is not in the policy history "
                                                     f"(kept: {kept})")
        target = generation
    else:
        older = [g for g in gens if live_generation is None or g < live_generation]
        if not older:
            raise PolicyError("rollback", f"no policy older than the live generation {live_generation} "
                                          f"in the history (kept: {kept})")
        target = older[-1]
    e = read_entry(target)
    if e is None or not isinstance(e.get("policy"), dict):
        raise PolicyError("rollback.generation", f"history entry {target} has no policy document")
    return e
