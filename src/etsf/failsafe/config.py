"""Fail-safe configuration: state names, defaults, and the one validator of failsafe.yml."""

from __future__ import annotations

import json
from typing import Any

from .. import inputs


STATE_FILE = "failsafe.json"
AUDIT_FILE = "failsafe-audit.jsonl"
ACK_FILE = "failsafe.ack"
DEFAULT_CONFIG = "/etc/etsf/failsafe.yml"

ENGAGED, BYPASSED, DETACHED = "engaged", "bypassed", "detached"
STATE_CODES = {ENGAGED: 0, BYPASSED: 1, DETACHED: 2}
RULES = ("detached", "drop_ratio", "ser", "map_pressure", "fastpath_fallback", "heartbeat")
REASONS_NOT_SIP = ("NOT_IP", "NOT_UDP_TCP", "NOT_SIP_PORT", "TRUNC_L2L3", "BAD_IP", "VLAN_NESTED")
MAX_HISTORY = 4096
MAX_ITERATIONS = 10_000_000


class FailsafeError(ValueError):
    """A user-facing fail-safe error (one line)."""


# ---------------------------------------------------------------------------
# configuration (version 1)
# ---------------------------------------------------------------------------

DEFAULTS: dict[str, Any] = {
    "version": 1,
    "interfaces": [],                 # [] = every interface in state.json
    "interval_s": 0.2,
    "heartbeat": True,
    "actions": {
        "detach_after_s": 10.0,       # null = never detach, stay in bypass
        "recovery": "manual",         # manual (failsafe ack) | auto
        "cooldown_s": 30.0,           # auto: earliest re-engage after the trip
        "clear_s": 5.0,               # auto: every rule clear this long (hysteresis)
        "backoff": 2.0,               # auto: cooldown x backoff after each re-trip ...
        "max_auto_reengage": 3,       # ... and manual after this many consecutive trips
    },
    "rules": {
        "detached": {"enabled": True, "window_s": 0.5},
        "drop_ratio": {"enabled": True, "threshold_pct": 20.0, "window_s": 2.0, "min_packets": 20,
                       "excused_reasons": ["RATE_LIMIT"]},
        "ser": {"enabled": True, "points": 20.0, "window_s": 10.0, "min_attempts": 20,
                "baseline_alpha": 0.2, "min_baseline_windows": 3},
        "map_pressure": {"enabled": True, "threshold_pct": 95.0, "window_s": 5.0, "maps": []},
        "fastpath_fallback": {"enabled": True, "threshold_pct": 50.0, "window_s": 2.0,
                              "min_packets": 50},
        "heartbeat": {"enabled": True, "max_age_s": 5.0, "files": []},
    },
}

_TYPES = {
    "interfaces": "list_ifaces", "interval_s": ("num", 0.01, 60), "heartbeat": "bool",
    "actions.detach_after_s": ("num_or_null", 0, 86400), "actions.recovery": ("choice", ("manual", "auto")),
    "actions.cooldown_s": ("num", 0, 86400), "actions.clear_s": ("num", 0, 86400),
    "actions.backoff": ("num", 1, 100), "actions.max_auto_reengage": ("int", 0, 1000),
    "rules.*.enabled": "bool", "rules.*.window_s": ("num", 0, 3600),
    "rules.*.threshold_pct": ("num", 0, 100), "rules.*.min_packets": ("int", 0, 10**9),
    "rules.drop_ratio.excused_reasons": "list_str", "rules.ser.points": ("num", 0, 100),
    "rules.ser.min_attempts": ("int", 1, 10**9), "rules.ser.baseline_alpha": ("num", 0.001, 1),
    "rules.ser.min_baseline_windows": ("int", 1, 1000),
    "rules.map_pressure.maps": "list_str", "rules.heartbeat.max_age_s": ("num", 0.01, 86400),
    "rules.heartbeat.files": "list_files",
}


def _check(path: str, v: Any, kind) -> None:
    def bad(what):
        raise FailsafeError(f"failsafe.{path}: expected {what} (got {v!r})")
    if kind == "bool":
        if not isinstance(v, bool):
            bad("true or false")
    elif kind == "list_str":
        if not isinstance(v, list) or not all(isinstance(x, str) and x and "\0" not in x for x in v):
            bad("a list of strings")
    elif kind == "list_ifaces":
        if not isinstance(v, list) or not all(isinstance(x, str) and inputs.IFNAME_RE.match(x) for x in v):
            bad("a list of interface names")
    elif kind == "list_files":
        if not isinstance(v, list):
            bad("a list of {path, max_age_s}")
        for i, f in enumerate(v):
            if (not isinstance(f, dict) or set(f) - {"path", "max_age_s"} or not isinstance(f.get("path"), str)
                    or not f["path"].startswith("/") or "\0" in f["path"]):
                raise FailsafeError(f"failsafe.{path}[{i}]: expected {{path: /ABSOLUTE/FILE, max_age_s: N}} (got {f!r})")
            _check(f"{path}[{i}].max_age_s", f.get("max_age_s", 30), ("num", 0.01, 86400))
    else:
        typ = kind[0]
        if typ == "choice":
            if v not in kind[1]:
                bad(f"one of {', '.join(kind[1])}")
            return
        if typ == "num_or_null" and v is None:
            return
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (typ == "int" and not isinstance(v, int)):
            bad("an integer" if typ == "int" else "a number")
        if not kind[1] <= v <= kind[2]:
            bad(f"a value in {kind[1]}..{kind[2]}")


def validate(doc: Any) -> dict[str, Any]:
    """Merge doc over DEFAULTS; one-line FailsafeError naming the field path on any mistake."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise FailsafeError("failsafe: expected a mapping")
    if doc.get("version", 1) != 1:
        raise FailsafeError(f"failsafe.version: expected 1 (got {doc.get('version')!r})")
    cfg = json.loads(json.dumps(DEFAULTS))
    for k, v in doc.items():
        if k not in cfg:
            raise FailsafeError(f"failsafe.{k}: unknown key (expected one of {', '.join(cfg)})")
        if isinstance(cfg[k], dict):
            if not isinstance(v, dict):
                raise FailsafeError(f"failsafe.{k}: expected a mapping")
            for k2, v2 in v.items():
                if k2 not in cfg[k]:
                    raise FailsafeError(f"failsafe.{k}.{k2}: unknown key (expected one of {', '.join(cfg[k])})")
                if isinstance(cfg[k][k2], dict):
                    if not isinstance(v2, dict):
                        raise FailsafeError(f"failsafe.{k}.{k2}: expected a mapping")
                    for k3, v3 in v2.items():
                        if k3 not in cfg[k][k2]:
                            raise FailsafeError(f"failsafe.{k}.{k2}.{k3}: unknown key "
                                                f"(expected one of {', '.join(cfg[k][k2])})")
                        kind = _TYPES.get(f"{k}.{k2}.{k3}") or _TYPES.get(f"{k}.*.{k3}")
                        _check(f"{k}.{k2}.{k3}", v3, kind)
                        cfg[k][k2][k3] = v3
                else:
                    _check(f"{k}.{k2}", v2, _TYPES[f"{k}.{k2}"])
                    cfg[k][k2] = v2
        else:
            if k != "version":
                _check(k, v, _TYPES[k])
            cfg[k] = v
    return cfg


def load_config(path: str | None) -> dict[str, Any]:
    if path is None:
        return validate({})
    try:
        doc = inputs.load_yaml_file(path, "failsafe config")
    except inputs.InputError as exc:
        raise FailsafeError(str(exc)) from None
    try:
        return validate(doc)
    except FailsafeError as exc:
        raise FailsafeError(f"{path}: {exc}") from None
