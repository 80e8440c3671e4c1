"""What an apply would change: a flat field-by-field diff of two decoded policies."""

from __future__ import annotations

from typing import Any

from .keepalive import keepalive_default
from .schema import fmt_value, sort_cidrs


# ---------------------------------------------------------------------------
# diff
# ---------------------------------------------------------------------------


def _flatten(d, prefix=""):
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = d
    return out


def diff(old: dict | None, new: dict) -> list[dict[str, Any]]:
    """Field-level changes between two canonical dicts.

    Lists of CIDRs are diffed per element ("added"/"removed"); everything else
    as old -> new values.  ``overload.level: None`` in *new* means "keep".
    """
    # acl_guard only steers validation: the maps never hold it
    new = {k: v for k, v in new.items() if k not in ("generation", "acl_guard")}
    old = {k: v for k, v in (old or {}).items() if k not in ("generation", "acl_guard")}
    if "keepalive" in old and "keepalive" not in new:    # back to the default: shown field by field
        new["keepalive"] = keepalive_default()
    changes = []
    fo, fn = _flatten(old), _flatten(new)
    for path in fn:
        nv = fn[path]
        ov = fo.get(path)
        if path == "overload.level" and nv is None:
            continue
        if path in ("trust", "deny"):
            oset, nset = set(ov or []), set(nv or [])
            for c in sort_cidrs(nset - oset):
                changes.append({"path": path, "op": "add", "value": c})
            for c in sort_cidrs(oset - nset):
                changes.append({"path": path, "op": "remove", "value": c})
            continue
        if path not in fo:
            changes.append({"path": path, "op": "set", "old": None, "new": nv})
        elif ov != nv:
            changes.append({"path": path, "op": "change", "old": ov, "new": nv})
    if fo.get("services") and "services" not in fn:      # all fast-path services removed
        changes.append({"path": "services", "op": "change", "old": fo["services"], "new": []})
    return changes


def format_diff(changes: list[dict[str, Any]], live_exists: bool = True) -> str:
    if not changes:
        return "no changes"
    lines = [] if live_exists else ["(no policy applied yet)"]
    for c in changes:
        if c["op"] == "add":
            lines.append(f"+ {c['path']}: {c['value']}")
        elif c["op"] == "set":
            lines.append(f"+ {c['path']}: {fmt_value(c['new'])}")
        elif c["op"] == "remove":
            lines.append(f"- {c['path']}: {c['value']}")
        else:
            lines.append(f"~ {c['path']}: {fmt_value(c['old'])} -> {fmt_value(c['new'])}")
    return "\n".join(lines)
