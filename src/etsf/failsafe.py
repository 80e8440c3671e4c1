"""eTSF fail-safe watchdog (``etsfctl failsafe``, ``etsf-failsafe.service``).

Each tick (``interval_s``, bounded work) the watchdog

1. writes the dead-man heartbeat into ``etsf_ctl`` (it is "the agent": if it
   dies, every program passes traffic untouched once ``deadman.timeout_ms`` of
   the policy has elapsed, counted as PASS/DEADMAN);
2. takes one counters snapshot (``etsf.exporter.snapshot`` when available,
   else ``etsf.datapath.stats``) and evaluates the anomaly rules on the deltas
   between snapshots inside each rule's window (``time.monotonic()``);
3. drives the state machine::

       engaged --trip--> bypassed --detach_after_s--> detached
          ^                  |                            |
          +---- reengage (auto: cooldown + hysteresis, or manual: ``failsafe ack``)

Every transition is appended to ``$ETSF_STATE_DIR/failsafe-audit.jsonl``
(rule, the numbers that tripped it, a counters snapshot) and logged as one
line on stderr with a ``<N>`` syslog priority prefix (journald under systemd).
The current state is written atomically to ``$ETSF_STATE_DIR/failsafe.json``
for the exporter.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from typing import Any

from . import datapath, inputs

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
    import yaml
    if path is None:
        return validate({})
    try:
        doc = inputs.load_yaml(inputs.read_text(path, "failsafe config"))
    except OSError as exc:
        raise FailsafeError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise FailsafeError(f"{path}: not UTF-8 text") from None
    except inputs.InputTooLarge as exc:
        raise FailsafeError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise FailsafeError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    try:
        return validate(doc)
    except FailsafeError as exc:
        raise FailsafeError(f"{path}: {exc}") from None


# ---------------------------------------------------------------------------
# counters snapshot (one per tick)
# ---------------------------------------------------------------------------


def take_snapshot() -> dict[str, Any]:
    """{t, stats: [(hook, method, verdict, reason, pk)], codes: {code: n}, maps: {name: {...}},
    ctl: {...}|None, fastpath: {reason: packets}|None}"""
    snap: dict[str, Any] = {"t": time.monotonic(), "codes": {}, "maps": {}, "fastpath": None}
    try:
        from . import exporter
        es = exporter.snapshot(programs=False)
        snap["stats"] = [tuple(r[:5]) for r in es.get("stats", [])]
        snap["codes"] = {int(c): int(n) for (m, c), n in es.get("codes", {}).items() if m == "INVITE"}
        snap["maps"] = dict(es.get("maps", {}))
        snap["ctl"] = es.get("ctl")
        snap["have_codes"] = "etsf_tm_codes" not in es.get("missing", [])
    except (ImportError, AttributeError):
        st = datapath.stats()
        snap["stats"] = [(r["hook"], r["method"], r["verdict"], r["reason"], r["packets"])
                         for r in st["counters"]]
        snap["ctl"] = None
        snap["have_codes"] = False
    try:
        from . import fastpath
        if fastpath.maps_present():
            snap["fastpath"] = {k: v["packets"] for k, v in fastpath.stats()["reasons"].items()}
    except Exception:  # noqa: BLE001 - fast path absent / older objects: rule has no data
        snap["fastpath"] = None
    return snap


def _xdp_sums(snap: dict[str, Any], excused: tuple[str, ...]) -> tuple[int, int, dict[str, int]]:
    """(SIP packets at XDP, unexplained drops, {verdict/reason: packets})."""
    total = drops = 0
    by: dict[str, int] = {}
    for hook, _m, verdict, reason, pk in snap["stats"]:
        if hook != "XDP" or reason in REASONS_NOT_SIP:
            continue
        total += pk
        by[f"{verdict}/{reason}"] = by.get(f"{verdict}/{reason}", 0) + pk
        if verdict == "DROP" and reason not in excused:
            drops += pk
    return total, drops, by


def counters_summary(snap: dict[str, Any]) -> dict[str, Any]:
    _t, _d, by = _xdp_sums(snap, ())
    return {"xdp": by, "invite_codes": snap.get("codes", {}), "ctl": snap.get("ctl"),
            "fastpath": snap.get("fastpath"), "maps": snap.get("maps", {})}


# ---------------------------------------------------------------------------
# rules (pure functions over a history of snapshots: unit-testable)
# ---------------------------------------------------------------------------


def _window_base(history, now: float, window: float):
    """Oldest snapshot not older than window; None until the history covers the window."""
    if not history or now - history[0]["t"] < window * 0.95:
        return None
    base = history[0]
    for s in history:
        if now - s["t"] >= window * 0.95:
            base = s
        else:
            break
    return base


def rule_drop_ratio(cfg, history, cur) -> dict[str, Any]:
    base = _window_base(history, cur["t"], cfg["window_s"])
    if base is None:
        return {"breach": False, "value": None, "detail": "window not full"}
    exc = tuple(cfg["excused_reasons"])
    t1, d1 = _xdp_sums(cur, exc)[:2]
    t0, d0 = _xdp_sums(base, exc)[:2]
    tot, drops = max(0, t1 - t0), max(0, d1 - d0)
    if tot < cfg["min_packets"]:
        return {"breach": False, "value": None, "packets": tot, "detail": "too few packets"}
    pct = 100.0 * drops / tot
    return {"breach": pct > cfg["threshold_pct"], "value": round(pct, 2), "threshold": cfg["threshold_pct"],
            "packets": tot, "drops": drops, "window_s": cfg["window_s"]}


def rule_ser(cfg, history, cur, learn: dict[str, Any]) -> dict[str, Any]:
    from . import kpi
    if not cur.get("have_codes"):
        return {"breach": False, "value": None, "detail": "no response-code counters"}
    base = _window_base(history, cur["t"], cfg["window_s"])
    if base is None:
        return {"breach": False, "value": None, "baseline": learn.get("baseline"), "detail": "window not full"}
    codes = kpi.delta(cur["codes"], base["codes"])
    a = kpi.attempts(codes)
    ser = kpi.ser(codes)
    if ser is None or a < cfg["min_attempts"]:
        return {"breach": False, "value": None, "attempts": a, "baseline": learn.get("baseline"),
                "detail": "too few INVITE transactions"}
    ser_pct = 100.0 * ser
    bl = learn.get("baseline")
    learned = learn.get("windows", 0) >= cfg["min_baseline_windows"]
    breach = bool(learned and bl is not None and ser_pct < bl - cfg["points"])
    return {"breach": breach, "value": round(ser_pct, 2), "baseline": None if bl is None else round(bl, 2),
            "learned": learned, "points": cfg["points"], "attempts": a, "window_s": cfg["window_s"],
            "_learn": None if breach else ser_pct}


def learn_ser(cfg, learn: dict[str, Any], res: dict[str, Any], now: float) -> None:
    """EWMA of SER, one sample per window (not per tick), only from healthy engaged windows."""
    v = res.get("_learn")
    if v is None or now - learn.get("last_t", -1e18) < cfg["window_s"]:
        return
    bl = learn.get("baseline")
    a = cfg["baseline_alpha"]
    learn["baseline"] = v if bl is None else (1 - a) * bl + a * v
    learn["windows"] = learn.get("windows", 0) + 1
    learn["last_t"] = now


def rule_map_pressure(cfg, history, cur) -> dict[str, Any]:
    worst, worst_name = 0.0, None
    for name, m in cur.get("maps", {}).items():
        if cfg["maps"] and name not in cfg["maps"]:
            continue
        mx = int(m.get("max_entries") or 0)
        if mx:
            pct = 100.0 * int(m.get("entries") or 0) / mx
            if pct > worst:
                worst, worst_name = pct, name
    breach_now = worst >= cfg["threshold_pct"]
    return {"breach_now": breach_now, "value": round(worst, 2), "map": worst_name,
            "threshold": cfg["threshold_pct"], "window_s": cfg["window_s"]}


FP_OWN_FALLBACKS = ("FWD", "RET", "BYPASS", "DEADMAN")


def rule_fastpath_fallback(cfg, history, cur) -> dict[str, Any]:
    if cur.get("fastpath") is None:
        return {"breach": False, "value": None, "detail": "fast path not loaded"}
    base = _window_base([h for h in history if h.get("fastpath") is not None], cur["t"], cfg["window_s"])
    if base is None:
        return {"breach": False, "value": None, "detail": "window not full"}
    d = {k: max(0, v - base["fastpath"].get(k, 0)) for k, v in cur["fastpath"].items()}
    fb = sum(v for k, v in d.items() if k not in FP_OWN_FALLBACKS)
    tot = fb + d.get("FWD", 0) + d.get("RET", 0)
    if tot < cfg["min_packets"]:
        return {"breach": False, "value": None, "packets": tot, "detail": "too few packets"}
    pct = 100.0 * fb / tot
    return {"breach": pct > cfg["threshold_pct"], "value": round(pct, 2), "threshold": cfg["threshold_pct"],
            "packets": tot, "fallback": {k: v for k, v in d.items() if k not in FP_OWN_FALLBACKS and v}}


def rule_heartbeat(cfg, cur, own_heartbeat: bool, running_s: float = float("inf")) -> dict[str, Any]:
    """Stale agent heartbeat (when another process writes it) or heartbeat files (e.g. the
    exporter's) older than their max_age_s.  A file that does not exist yet is given
    max_age_s from the watchdog's start (boot: the exporter may start after the watchdog)."""
    stale = {}
    ctl = cur.get("ctl") or {}
    if not own_heartbeat and ctl.get("heartbeat_age_s") is not None and ctl["heartbeat_age_s"] > cfg["max_age_s"]:
        stale["agent"] = round(ctl["heartbeat_age_s"], 3)
    for f in cfg["files"]:
        try:
            age = time.time() - os.stat(f["path"]).st_mtime
        except OSError:
            age = running_s                    # missing: as old as our watch of it
            if age > float(f.get("max_age_s", 30)):
                stale[f["path"]] = "missing"
            continue
        if age > float(f.get("max_age_s", 30)):
            stale[f["path"]] = round(age, 3)
    return {"breach": bool(stale), "stale": stale, "max_age_s": cfg["max_age_s"]}


def check_attachments(ifaces: list[str]) -> dict[str, Any]:
    """Our programs still attached where state.json says (same prog ids), per interface."""
    recs = datapath.load_state().get("interfaces", {})
    rows = datapath.interface_status(ifaces)
    bad = {}
    for name in ifaces:
        r, rec = rows.get(name, {}), recs.get(name)
        why = None
        if rec is None:
            continue                    # not managed (never attached, or detached by etsfctl/revert)
        if not r.get("present"):
            why = "interface gone"
        else:
            # compare ids with what our last attach recorded (names need CAP_SYS_ADMIN to read)
            xid, tid = r.get("xdp_prog_id"), r.get("tc_prog_id")
            if not xid:
                why = "XDP: nothing attached"
            elif xid != rec.get("xdp_prog_id"):
                why = f"XDP: program {xid} ({r.get('xdp_prog_name')}) replaced ours ({rec.get('xdp_prog_id')})"
            elif not tid:
                why = "TC egress: nothing attached"
            elif rec.get("tc_prog_id") and tid != rec.get("tc_prog_id"):
                why = f"TC egress: program {tid} ({r.get('tc_prog_name')}) replaced ours ({rec.get('tc_prog_id')})"
        if why:
            bad[name] = why
    return {"breach_now": bool(bad), "interfaces": bad}


# ---------------------------------------------------------------------------
# state file + audit
# ---------------------------------------------------------------------------


def _path(name: str) -> str:
    return os.path.join(datapath.state_dir(), name)


def write_state(doc: dict[str, Any]) -> None:
    d = datapath.state_dir()
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".failsafe.json.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, sort_keys=True, default=str)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, _path(STATE_FILE))


def read_state() -> dict[str, Any] | None:
    try:
        return json.loads(inputs.read_text(_path(STATE_FILE), "state"))
    except (OSError, ValueError):
        return None


def audit(event: str, **fields) -> dict[str, Any]:
    rec = {"time": time.time(), "event": event, **fields}
    d = datapath.state_dir()
    os.makedirs(d, exist_ok=True)
    with open(_path(AUDIT_FILE), "a", encoding="utf-8") as f:
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
        tail = inputs.read_tail(_path(AUDIT_FILE), "audit log tail")
    except OSError:
        return []
    # the first line of a tail that starts mid-file is cut: json.loads skips it below
    lines = collections.deque(tail.decode("utf-8", "replace").splitlines(), maxlen=limit)
    out = []
    for ln in lines:
        with contextlib.suppress(ValueError):
            out.append(json.loads(ln))
    return out


# ---------------------------------------------------------------------------
# the watchdog
# ---------------------------------------------------------------------------


class Watchdog:
    def __init__(self, cfg: dict[str, Any], clock=time.monotonic):
        self.cfg = cfg
        self.clock = clock
        self.state = ENGAGED
        self.since = time.time()
        self.trip_t: float | None = None
        self.trip: dict[str, Any] | None = None
        self.detached: dict[str, dict[str, Any]] = {}
        self.consecutive = 0
        self.trips_total = 0
        self.cooldown_s = cfg["actions"]["cooldown_s"]
        self.clear_since: float | None = None
        self.breach_since: dict[str, float] = {}
        self.learn: dict[str, Any] = {}
        self.history: collections.deque = collections.deque(maxlen=MAX_HISTORY)
        self.last_results: dict[str, Any] = {}
        self.ticks = 0
        self.heartbeat_ns: int | None = None
        self.own_bypass = False
        self.started_t = clock()
        self.max_window = max([r.get("window_s", 0) for r in cfg["rules"].values()] + [1.0])

    def resume(self, prev: dict[str, Any] | None) -> None:
        """After a restart (crash, upgrade): stay reverted if we were; the cooldown restarts now."""
        if not prev or prev.get("state") not in (BYPASSED, DETACHED):
            return
        self.state = prev["state"]
        self.since = float(prev.get("since") or time.time())
        self.trip = prev.get("last_trip")
        self.trip_t = self.clock()
        self.trips_total = int(prev.get("trips_total") or 0)
        self.consecutive = int(prev.get("consecutive_trips") or 1)
        self.cooldown_s = float(prev.get("cooldown_s") or self.cooldown_s)
        self.own_bypass = bool(prev.get("own_bypass"))
        det = prev.get("detached") or {}
        self.detached = {k: dict(v) for k, v in det.items()} if isinstance(det, dict) else {}

    # -- helpers ---------------------------------------------------------
    def interfaces(self) -> list[str]:
        return list(self.cfg["interfaces"]) or sorted(datapath.load_state().get("interfaces", {}))

    def _sustained(self, name: str, now_breach: bool, now: float, window: float) -> bool:
        if not now_breach:
            self.breach_since.pop(name, None)
            return False
        t0 = self.breach_since.setdefault(name, now)
        return now - t0 >= window

    def evaluate(self, cur: dict[str, Any]) -> dict[str, Any]:
        rules = self.cfg["rules"]
        now = cur["t"]
        res: dict[str, Any] = {}
        hist = list(self.history)
        if rules["detached"]["enabled"] and self.state == ENGAGED:
            r = check_attachments(self.interfaces())
            r["breach"] = self._sustained("detached", r.pop("breach_now"), now, rules["detached"]["window_s"])
            res["detached"] = r
        if rules["drop_ratio"]["enabled"]:
            res["drop_ratio"] = rule_drop_ratio(rules["drop_ratio"], hist, cur)
        if rules["ser"]["enabled"]:
            r = rule_ser(rules["ser"], hist, cur, self.learn)
            if self.state == ENGAGED and not (cur.get("ctl") or {}).get("bypass"):
                learn_ser(rules["ser"], self.learn, r, now)
            r.pop("_learn", None)
            res["ser"] = r
        if rules["map_pressure"]["enabled"]:
            r = rule_map_pressure(rules["map_pressure"], hist, cur)
            r["breach"] = self._sustained("map_pressure", r.pop("breach_now"), now,
                                          rules["map_pressure"]["window_s"])
            res["map_pressure"] = r
        if rules["fastpath_fallback"]["enabled"]:
            res["fastpath_fallback"] = rule_fastpath_fallback(rules["fastpath_fallback"], hist, cur)
        if rules["heartbeat"]["enabled"]:
            res["heartbeat"] = rule_heartbeat(rules["heartbeat"], cur, self.cfg["heartbeat"],
                                              running_s=now - self.started_t)
        return res

    def _transition(self, new: str, event: str, cur, **fields) -> None:
        old = self.state
        self.state = new
        self.since = time.time()
        audit(event, state=new, previous=old, counters=counters_summary(cur) if cur else None, **fields)

    # -- actions ---------------------------------------------------------
    def do_trip(self, rule: str, numbers: dict[str, Any], cur) -> None:
        was = bool((cur.get("ctl") or {}).get("bypass"))
        datapath.set_bypass(True)                   # one map update: atomic, instant
        self.own_bypass = not was
        self.trip_t = cur["t"]
        self.trip = {"rule": rule, "numbers": numbers, "time": time.time()}
        self.trips_total += 1
        self.consecutive += 1
        self.clear_since = None
        if self.consecutive > 1:
            self.cooldown_s = min(self.cooldown_s * self.cfg["actions"]["backoff"], 86400.0)
        self._transition(BYPASSED, "trip", cur, rule=rule, numbers=numbers,
                         operator_bypass_before=was)

    def do_detach(self, cur) -> None:
        recs = datapath.load_state().get("interfaces", {})
        build = (datapath.load_state().get("build") or {}).get("out_dir")
        done, errors = {}, {}
        for iface in self.interfaces():
            rec = recs.get(iface)
            if rec is None:
                continue
            try:
                datapath.detach(iface)
                self.detached[iface] = {"mode": rec.get("mode") or "native", "build_dir": build}
                done[iface] = True
            except (datapath.DatapathError, OSError) as e:
                errors[iface] = str(e)
        self._transition(DETACHED, "detach", cur, rule=(self.trip or {}).get("rule"),
                         numbers={"grace_s": self.cfg["actions"]["detach_after_s"]},
                         interfaces=done, errors=errors or None)

    def do_reengage(self, cur, event: str) -> bool:
        errors = {}
        if (self.trip or {}).get("rule") == "detached":
            # someone else detached our programs: put them back where we still manage the interface
            recs = datapath.load_state().get("interfaces", {})
            build = (datapath.load_state().get("build") or {}).get("out_dir")
            for iface in (self.trip.get("numbers") or {}).get("interfaces", {}):
                if iface in recs and iface not in self.detached:
                    self.detached[iface] = {"mode": recs[iface].get("mode") or "native", "build_dir": build}
        for iface, rec in sorted(self.detached.items()):
            try:
                datapath.attach(iface, mode=rec["mode"], build_dir=rec.get("build_dir"))
            except (datapath.DatapathError, OSError) as e:
                errors[iface] = str(e)
        if errors:
            audit("reengage_failed", state=self.state, rule=(self.trip or {}).get("rule"), errors=errors)
            return False
        if self.own_bypass or event == "ack":
            datapath.set_bypass(False)
        self.detached.clear()
        self.own_bypass = False
        self.history.clear()            # rule windows restart from the re-engage
        self.breach_since.clear()
        self._transition(ENGAGED, event, cur, rule=(self.trip or {}).get("rule"),
                         numbers={"cooldown_s": self.cooldown_s, "consecutive_trips": self.consecutive})
        if event == "ack":
            self.consecutive = 0
            self.cooldown_s = self.cfg["actions"]["cooldown_s"]
        return True

    def _ack_requested(self) -> bool:
        p = _path(ACK_FILE)
        if os.path.exists(p):
            with contextlib.suppress(OSError):
                os.unlink(p)
            return True
        return False

    # -- one tick ----------------------------------------------------------
    def tick(self) -> dict[str, Any]:
        self.ticks += 1
        if self.cfg["heartbeat"]:
            try:
                self.heartbeat_ns = datapath.heartbeat()["heartbeat_ns"]
            except datapath.DatapathError:
                self.heartbeat_ns = None       # maps not loaded yet: nothing to protect
        cur = take_snapshot()
        now = cur["t"]
        act = self.cfg["actions"]
        if self._ack_requested() and self.state != ENGAGED:
            self.do_reengage(cur, "ack")
        res = self.evaluate(cur)
        self.last_results = res
        tripped = [(n, r) for n, r in res.items() if r.get("breach")]
        if self.state == ENGAGED:
            if tripped:
                name, r = tripped[0]
                self.do_trip(name, r, cur)
            elif self.consecutive and self.trip_t is not None and now - self.trip_t > 2 * self.cooldown_s:
                self.consecutive = 0                     # quiet long enough: forget the backoff
                self.cooldown_s = act["cooldown_s"]
        else:
            if (self.state == BYPASSED and act["detach_after_s"] is not None
                    and now - self.trip_t >= act["detach_after_s"]):
                self.do_detach(cur)
            if act["recovery"] == "auto" and self.consecutive <= act["max_auto_reengage"]:
                if tripped:
                    self.clear_since = None
                else:
                    self.clear_since = self.clear_since or now
                if (now - self.trip_t >= self.cooldown_s and self.clear_since is not None
                        and now - self.clear_since >= act["clear_s"]):
                    self.do_reengage(cur, "reengage")
        self.history.append(cur)
        while self.history and now - self.history[0]["t"] > self.max_window * 1.5 + 1:
            self.history.popleft()
        doc = self.state_doc(cur)
        write_state(doc)
        return doc

    def state_doc(self, cur=None) -> dict[str, Any]:
        act = self.cfg["actions"]
        return {
            "version": 1, "pid": os.getpid(), "updated_at": time.time(), "state": self.state,
            "state_code": STATE_CODES[self.state], "since": self.since, "ticks": self.ticks,
            "interval_s": self.cfg["interval_s"], "recovery": act["recovery"],
            "trips_total": self.trips_total, "consecutive_trips": self.consecutive,
            "cooldown_s": self.cooldown_s,
            "tripped_rule": (self.trip or {}).get("rule") if self.state != ENGAGED else None,
            "last_trip": self.trip, "detached_interfaces": sorted(self.detached), "detached": self.detached,
            "own_bypass": self.own_bypass,
            "heartbeat_ns": self.heartbeat_ns, "ser_baseline_pct": self.learn.get("baseline"),
            "rules": {n: {k: v for k, v in r.items() if not k.startswith("_")} for n, r in self.last_results.items()},
            "bypass": (cur or {}).get("ctl", {}).get("bypass") if cur and cur.get("ctl") else None,
        }


def run(cfg: dict[str, Any], iterations: int | None = None) -> dict[str, Any]:
    """Daemon loop (iterations=None) or a bounded number of ticks."""
    if iterations is not None and not 1 <= iterations <= MAX_ITERATIONS:
        raise FailsafeError(f"--iterations must be in 1..{MAX_ITERATIONS}")
    wd = Watchdog(cfg)
    prev = read_state()
    wd.resume(prev)
    stop = {"v": False}

    def _stop(_sig, _frm):
        stop["v"] = True
    old = signal.signal(signal.SIGTERM, _stop)
    audit("start", state=wd.state, numbers={"interval_s": cfg["interval_s"]}, resumed=wd.state != ENGAGED,
          config={k: cfg[k] for k in ("actions", "rules")})
    doc: dict[str, Any] = {}
    try:
        n = 0
        nxt = time.monotonic()
        last_err = None
        while not stop["v"] and (iterations is None or n < iterations):
            try:
                doc = wd.tick()
                last_err = None
            except Exception as e:  # noqa: BLE001 - a daemon must outlive transient errors
                msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                if msg != last_err:         # audit each distinct error once, not every tick
                    audit("error", state=wd.state, error=msg)
                    last_err = msg
            n += 1
            if iterations is not None and n >= iterations:
                break
            nxt += cfg["interval_s"]
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                nxt = time.monotonic()      # overran: do not try to catch up
    finally:
        signal.signal(signal.SIGTERM, old)
    if stop["v"]:
        audit("stop", state=wd.state, numbers={"ticks": wd.ticks})
    return doc


def ack(wait_s: float = 5.0) -> dict[str, Any]:
    """Ask the running watchdog to re-engage; without a watchdog, re-engage here."""
    st = read_state() or {}
    d = datapath.state_dir()
    os.makedirs(d, exist_ok=True)
    with open(_path(ACK_FILE), "w", encoding="utf-8") as f:
        f.write(f"{time.time()}\n")
    alive = False
    if st.get("pid"):
        try:
            os.kill(int(st["pid"]), 0)
            alive = time.time() - float(st.get("updated_at", 0)) < max(5.0, 10 * float(st.get("interval_s", 1)))
        except (OSError, ValueError):
            alive = False
    if alive:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and os.path.exists(_path(ACK_FILE)):
            time.sleep(0.05)
        if not os.path.exists(_path(ACK_FILE)):
            # consumed: wait for the end of that tick (re-attach can take a second)
            t_consumed = time.time()
            while time.monotonic() < deadline + wait_s:
                now_st = read_state() or {}
                if float(now_st.get("updated_at", 0)) >= t_consumed:
                    break
                time.sleep(0.05)
            now_st = read_state() or {}
            return {"changed": st.get("state") != ENGAGED, "by": "watchdog", "state": now_st.get("state")}
    # nobody consumed it: do the re-engage here
    with contextlib.suppress(OSError):
        os.unlink(_path(ACK_FILE))
    changed = False
    if datapath._policy.maps_present(datapath.pin_root()):   # noqa: SLF001
        changed = datapath.set_bypass(False)["changed"]
    audit("ack", state=ENGAGED, numbers={"watchdog_running": False})
    return {"changed": changed, "by": "etsfctl", "state": ENGAGED}


def status() -> dict[str, Any]:
    st = read_state()
    return {"state": st, "audit": read_audit(10)}


# ---------------------------------------------------------------------------
# CLI (etsfctl failsafe ...)
# ---------------------------------------------------------------------------


def _cmd_run(args):
    cfg = load_config(args.config if args.config and (args.config != DEFAULT_CONFIG
                                                      or os.path.exists(args.config)) else None)
    if args.interval is not None:
        cfg = validate({**cfg, "interval_s": args.interval})
    if args.check:
        args._out(args, cfg, f"failsafe config valid: {args.config}")
        return
    iterations = 1 if args.once else args.iterations
    doc = run(cfg, iterations)
    args._out(args, doc, f"failsafe: {doc.get('state')} after {doc.get('ticks')} ticks"
                         + (f" (tripped: {doc['tripped_rule']})" if doc.get("tripped_rule") else ""))


def _cmd_ack(args):
    res = ack()
    args._out(args, res, f"failsafe: re-engaged ({res['by']})" if res["changed"] else "failsafe: already engaged")


def _cmd_status(args):
    res = status()
    st = res["state"]
    if st is None:
        text = "failsafe: no state (watchdog never ran)"
    else:
        age = time.time() - float(st.get("updated_at", 0))
        text = (f"failsafe: {st['state']} since {time.strftime('%H:%M:%S', time.localtime(st['since']))}; "
                f"trips {st['trips_total']}; last rule {(st.get('last_trip') or {}).get('rule') or '-'}; "
                f"updated {age:.1f}s ago")
    args._out(args, res, text)


def add_cli(sub, common, out) -> None:
    T = inputs  # pylint: disable=invalid-name
    s = sub.add_parser("failsafe", parents=[common], help="fail-safe watchdog (daemon), ack, status")
    s.add_argument("--config", type=T.path, default=DEFAULT_CONFIG, metavar="FILE")
    s.add_argument("--once", action="store_true", help="one tick, then exit")
    s.add_argument("--iterations", type=T.int_range(1, MAX_ITERATIONS), metavar="N", help="N ticks, then exit")
    s.add_argument("--interval", type=T.float_range(0.01, 60, lo_open=False), metavar="S",
                   help="override interval_s (0.01..60)")
    s.add_argument("--check", action="store_true", help="validate the config file and exit")
    s.set_defaults(func=_cmd_run, _out=out)
    fsub = s.add_subparsers(dest="fcmd", metavar="ACTION", parser_class=type(s))
    a = fsub.add_parser("ack", parents=[common], help="re-engage after a fail-safe revert")
    a.set_defaults(func=_cmd_ack, _out=out)
    a = fsub.add_parser("status", parents=[common], help="current fail-safe state and recent audit entries")
    a.set_defaults(func=_cmd_status, _out=out)
