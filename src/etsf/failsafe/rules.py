"""Fail-safe anomaly rules: one counters snapshot per tick, each rule a pure function of the history."""

from __future__ import annotations

import os
import time
from typing import Any

from .. import datapath
from ..paths import heartbeat_stopped
from .config import REASONS_NOT_SIP


# ---------------------------------------------------------------------------
# counters snapshot (one per tick)
# ---------------------------------------------------------------------------


#: what the rules below read (the rest of a telemetry snapshot would cost every tick for nothing);
#: of the counters only the XDP hook's: _xdp_sums looks at no other
SNAPSHOT_PARTS = ("stats_xdp", "codes", "ctl", "maps")


def take_snapshot() -> dict[str, Any]:
    """{t, stats: [(hook, method, verdict, reason, pk)], codes: {code: n}, maps: {name: {...}},
    ctl: {...}|None, fastpath: {reason: packets}|None}"""
    snap: dict[str, Any] = {"t": time.monotonic(), "codes": {}, "maps": {}, "fastpath": None}
    try:
        from ..telemetry.reader import snapshot
        es = snapshot(programs=False, parts=SNAPSHOT_PARTS)
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
        from .. import fastpath
        if fastpath.maps_present():
            snap["fastpath"] = {k: v["packets"] for k, v in fastpath.reasons().items()}
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
    from .. import kpi
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
    max_age_s from the watchdog's start (boot: the exporter may start after the watchdog).  A
    file whose service was stopped on purpose says so (paths.write_heartbeat): not stale, listed
    under "stopped"; a service that dies leaves its last live heartbeat to go stale."""
    stale, stopped = {}, []
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
            if heartbeat_stopped(f["path"]):
                stopped.append(f["path"])      # stopped on purpose, not dead
            else:
                stale[f["path"]] = round(age, 3)
    res = {"breach": bool(stale), "stale": stale, "max_age_s": cfg["max_age_s"]}
    if stopped:
        res["stopped"] = stopped
    return res


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
            xid, tid, iid = r.get("xdp_prog_id"), r.get("tc_prog_id"), r.get("tc_ingress_prog_id")
            if rec.get("hook") == "tc":
                if not iid:
                    why = "TC ingress: nothing attached"
                elif iid != rec.get("tc_ingress_prog_id"):
                    why = (f"TC ingress: program {iid} ({r.get('tc_ingress_prog_name')}) replaced ours "
                           f"({rec.get('tc_ingress_prog_id')})")
            elif not xid:
                why = "XDP: nothing attached"
            elif xid != rec.get("xdp_prog_id"):
                why = f"XDP: program {xid} ({r.get('xdp_prog_name')}) replaced ours ({rec.get('xdp_prog_id')})"
            if why is None and not tid:
                why = "TC egress: nothing attached"
            elif why is None and rec.get("tc_prog_id") and tid != rec.get("tc_prog_id"):
                why = f"TC egress: program {tid} ({r.get('tc_prog_name')}) replaced ours ({rec.get('tc_prog_id')})"
        if why:
            bad[name] = why
    return {"breach_now": bool(bad), "interfaces": bad}
