"""Fail-safe configuration: state names, and failsafe.yml described once (:data:`SCHEMA`, nodes of
:mod:`etsf.schema`): the validator, the defaults, docs/reference/failsafe.md and the role's
argument_specs check all come from it."""

from __future__ import annotations

from typing import Any

from .. import inputs
from .. import schema as S


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
# configuration (version 1): the one description of failsafe.yml
# ---------------------------------------------------------------------------

_SECONDS = 86400


def _enabled():
    return S.Bool("evaluate this rule", default=True)


def _window(default, what="the window the rule looks back over, seconds"):
    return S.Num(0, 3600, what, default=default)


def _percent(default, what):
    return S.Num(0, 100, what, default=default)


def _count(lo, default, what):
    return S.Int(lo, 10**9, what, default=default)


_NAMES = S.Text("a non-empty string without NUL", lambda v: bool(v) and "\0" not in v, label="string")
_FILE = S.Map({
    "path": S.Text("an absolute path", lambda v: v.startswith("/") and "\0" not in v, "file whose age is watched",
                   required=True, label="absolute path"),
    "max_age_s": S.Num(0.01, _SECONDS, "older than this (seconds) is a breach", default=30),
}, label="`{path, max_age_s}`")

SCHEMA = S.Map({
    "version": S.Choice((1,), "configuration schema version", default=1),
    "interfaces": S.List(S.Text("an interface name", inputs.IFNAME_RE, label="interface name"),
                         "interfaces the `detached` rule watches; [] = every interface in state.json", default=[]),
    "interval_s": S.Num(0.01, 60, "seconds between ticks (heartbeat, snapshot, rules)", default=0.2),
    "heartbeat": S.Bool("write the dead-man heartbeat into etsf_ctl (the watchdog is \"the agent\")",
                        default=True),
    "actions": S.Map({
        "detach_after_s": S.Num(0, _SECONDS, "seconds in bypass before the programs are detached too; "
                                "null = never detach, stay in bypass", default=10.0, nullable=True),
        "recovery": S.Choice(("manual", "auto"), "after a revert: stay reverted until `etsfctl failsafe ack` "
                             "(manual) or re-engage by itself (auto)", default="manual"),
        "cooldown_s": S.Num(0, _SECONDS, "auto: earliest re-engage after the trip, seconds", default=30.0),
        "clear_s": S.Num(0, _SECONDS, "auto: every rule clear this long before re-engaging (hysteresis)",
                         default=5.0),
        "backoff": S.Num(1, 100, "auto: the cooldown is multiplied by this after each consecutive trip",
                         default=2.0),
        "max_auto_reengage": S.Int(0, 1000, "auto: after this many consecutive trips, manual", default=3),
    }, "what a trip does, and how the host re-engages"),
    "rules": S.Map({
        "detached": S.Map({"enabled": _enabled(), "window_s": _window(0.5)},
                          "a managed interface lost its program, or runs another one"),
        "drop_ratio": S.Map({
            "enabled": _enabled(), "threshold_pct": _percent(20.0, "XDP drops, % of SIP-port packets"),
            "window_s": _window(2.0), "min_packets": _count(0, 20, "fewer packets in the window never trip"),
            "excused_reasons": S.List(_NAMES, "drop reasons that do not count (decisions eTSF was asked to take: "
                                      "the rate limiter, admission control, NAT keep-alive drops)",
                                      default=["RATE_LIMIT", "ADMISSION", "ADMIT_503", "ADMIT_ACK", "NAT_KEEPALIVE"]),
        }, "too many XDP drops"),
        "ser": S.Map({
            "enabled": _enabled(), "points": S.Num(0, 100, "percentage points below the baseline", default=20.0),
            "window_s": _window(10.0), "min_attempts": _count(1, 20, "INVITE transactions needed per window"),
            "baseline_alpha": S.Num(0.001, 1, "EWMA weight of a new window in the baseline", default=0.2),
            "min_baseline_windows": S.Int(1, 1000, "windows learned before the rule is armed", default=3),
        }, "the INVITE Session Establishment Ratio fell below its learned baseline"),
        "map_pressure": S.Map({
            "enabled": _enabled(), "threshold_pct": _percent(95.0, "occupancy, % of max_entries"),
            "window_s": _window(5.0), "maps": S.List(_NAMES, "maps watched; [] = every map the exporter sizes",
                                                     default=[]),
        }, "a map is nearly full"),
        "fastpath_fallback": S.Map({
            "enabled": _enabled(), "threshold_pct": _percent(50.0, "fallbacks, % of fast-path packets"),
            "window_s": _window(2.0), "min_packets": _count(0, 50, "fewer packets in the window never trip"),
        }, "the fast path falls back to the slow path too often"),
        "heartbeat": S.Map({
            "enabled": _enabled(),
            "max_age_s": S.Num(0.01, _SECONDS, "with heartbeat: false, the etsf_ctl heartbeat older than this "
                               "is a breach", default=5.0),
            "files": S.List(_FILE, "heartbeat files of other processes (the exporter's, when the role watches it)",
                            default=[]),
        }, "a heartbeat is too old"),
    }, "anomaly rules; the first breaching one (in this order) trips"),
}, "the fail-safe watchdog configuration", nullable=True)

DEFAULTS: dict[str, Any] = SCHEMA.default_value()


def validate(doc: Any) -> dict[str, Any]:
    """The configuration with every default filled in; one-line FailsafeError naming the
    field path of the first mistake (``<path>: <what was expected> expected (got <value>)``)."""
    try:
        return SCHEMA.check(doc, "failsafe")
    except S.Invalid as exc:
        raise FailsafeError(str(exc)) from None


def load_config(path: str | None) -> dict[str, Any]:
    if path is None:
        return validate({})
    return inputs.load_checked(path, "failsafe config", validate, FailsafeError)
