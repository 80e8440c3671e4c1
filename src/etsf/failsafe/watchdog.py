"""The fail-safe watchdog: heartbeat, rules and the engaged/bypassed/detached state machine."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import time
from typing import Any

from .. import datapath, paths
from ..datapath import held
from ..policy.history import default_actor
from .config import (ACK_FILE, BYPASSED, DETACHED, ENGAGED, FailsafeError, MAX_HISTORY, MAX_ITERATIONS,
                     STATE_CODES)
from .audit import audit, read_audit, read_state, running, state_path, write_state
from .rules import (check_attachments, counters_summary, learn_ser, rule_drop_ratio, rule_fastpath_fallback,
                    rule_heartbeat, rule_map_pressure, rule_ser, take_snapshot)


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
        self.ack_actor: str | None = None     # who asked for the last ack (etsfctl failsafe ack)
        self.last_ack: dict[str, Any] | None = None   # what the last ack this watchdog read came to
        self.cooldown_s = cfg["actions"]["cooldown_s"]
        self.clear_since: float | None = None
        self.breach_since: dict[str, float] = {}
        self.learn: dict[str, Any] = {}
        self.history: collections.deque = collections.deque(maxlen=MAX_HISTORY)
        self.last_results: dict[str, Any] = {}
        self.ticks = 0
        self.heartbeat_ns: int | None = None
        self.own_bypass = False
        self.resumed_reverted = False
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
        self.resumed_reverted = True
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
        if event == "ack":
            fields.setdefault("actor", self.ack_actor)
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
                self.detached[iface] = {"mode": rec.get("mode"), "hook": rec.get("hook") or "xdp",
                                        "tc_api": rec.get("tc_api"), "build_dir": build}
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
                    self.detached[iface] = {"mode": recs[iface].get("mode"), "hook": recs[iface].get("hook") or "xdp",
                                            "tc_api": recs[iface].get("tc_api"), "build_dir": build}
        for iface, rec in sorted(self.detached.items()):
            try:
                # the hook and TC API it had (records of older releases: xdp and clsact, the only ones then)
                hook = rec.get("hook") or "xdp"
                datapath.attach(iface, mode=rec.get("mode") if hook == "xdp" else None,
                                build_dir=rec.get("build_dir"), hook=hook, tc_api=rec.get("tc_api") or "clsact")
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

    def _ack_blocker(self, cur, now: float) -> dict[str, Any] | None:
        """The heartbeat rule's verdict when it breaches now (stale files with their limits)."""
        rule = self.cfg["rules"]["heartbeat"]
        if not rule["enabled"]:
            return None
        r = rule_heartbeat(rule, cur, self.cfg["heartbeat"], running_s=now - self.started_t)
        if not r["breach"]:
            return None
        limits = {f["path"]: float(f.get("max_age_s", 30)) for f in rule["files"]}
        return {"stale": r["stale"], "max_age_s": {p: limits.get(p, rule["max_age_s"]) for p in r["stale"]}}

    def _ack_requested(self) -> bool:
        """True when `etsfctl failsafe ack` asked; self.ack_actor says who (the file's JSON)."""
        p = state_path(ACK_FILE)
        if os.path.exists(p):
            doc = paths.read_json(p, limit=4096) or {}
            self.ack_actor = str(doc.get("actor") or "?")[:128]
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
        if self._ack_requested():
            self.last_ack = {"time": time.time(), "actor": self.ack_actor, "result": "done"}
            blocker = self._ack_blocker(cur, now) if self.state != ENGAGED else None
            if blocker is not None:
                # the heartbeat rule holds regardless of any window: re-engaged now, the host would
                # trip again in this very tick (bypass, then detach once more)
                self.last_ack.update(result="refused", rule="heartbeat", numbers=blocker)
                audit("ack_refused", state=self.state, actor=self.ack_actor, rule="heartbeat", numbers=blocker)
            elif self.state != ENGAGED:
                self.do_reengage(cur, "ack")
            elif (cur.get("ctl") or {}).get("bypass"):
                # a bypass the watchdog did not set (`etsfctl revert`, `bypass on`): an ack
                # re-engages that too, as it does with no watchdog running
                datapath.set_bypass(False)
                audit("ack", state=ENGAGED, actor=self.ack_actor,
                      numbers={"watchdog_running": True, "bypass_cleared": True})
        if self.resumed_reverted and self.state != ENGAGED and cur.get("ctl") is not None:
            # resumed reverted onto maps without the bypass: a reboot made them new and the
            # restore attached the programs again; the host stays reverted until an ack
            self.resumed_reverted = False
            if not cur["ctl"].get("bypass"):
                datapath.set_bypass(True)
                audit("resume_bypass", state=self.state, numbers={"bypass_restored": True})
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
            "own_bypass": self.own_bypass, "last_ack": self.last_ack,
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
        # stopped on purpose (systemctl stop, the role turning it off, remove.yml): the state file
        # says so, and the exporter tells that from a watchdog that died
        with contextlib.suppress(OSError):
            write_state({**wd.state_doc(), "stopped": True})
        audit("stop", state=wd.state, numbers={"ticks": wd.ticks})
    return doc


def _bypass_on() -> bool:
    return paths.maps_present(None, (datapath.MAP_CTL,)) and bool(datapath.read_ctl().bypass)


def ack(wait_s: float = 5.0) -> dict[str, Any]:
    """Ask the running watchdog to re-engage; without a watchdog, re-engage here.  Either way
    the bypass ends, whoever set it."""
    st = read_state() or {}
    was_bypass = _bypass_on()
    d = datapath.state_dir()
    os.makedirs(d, exist_ok=True)
    t_asked = time.time()
    paths.write_json(state_path(ACK_FILE), {"time": t_asked, "actor": default_actor()})
    if running(st):
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and os.path.exists(state_path(ACK_FILE)):
            time.sleep(0.05)
        if not os.path.exists(state_path(ACK_FILE)):
            # consumed: wait for the end of that tick (re-attach can take a second)
            t_consumed = time.time()
            while time.monotonic() < deadline + wait_s:
                now_st = read_state() or {}
                if float(now_st.get("updated_at", 0)) >= t_consumed:
                    break
                time.sleep(0.05)
            now_st = read_state() or {}
            last = now_st.get("last_ack") or {}
            if last.get("result") == "refused" and float(last.get("time", 0)) >= t_asked:
                raise FailsafeError(f"ack refused, the host stays {now_st.get('state')}: {refusal_text(last)}")
            if now_st.get("state") != ENGAGED:
                raise FailsafeError(f"ack taken, but the host is {now_st.get('state')} again: the re-attach failed "
                                    "or a rule tripped at once (etsfctl failsafe status)")
            changed = st.get("state") != ENGAGED or (was_bypass and not _bypass_on())
            released = held.release("bypass")   # an operator's bypass no longer outlives a reboot
            return {"changed": changed or released, "by": "watchdog", "state": now_st.get("state")}
    # nobody consumed it: do the re-engage here
    with contextlib.suppress(OSError):
        os.unlink(state_path(ACK_FILE))
    changed = False
    if paths.maps_present(None, (datapath.MAP_CTL,)):
        changed = datapath.set_bypass(False)["changed"]
    audit("ack", state=ENGAGED, actor=default_actor(),
          numbers={"watchdog_running": False, "bypass_cleared": changed})
    released = held.release("bypass")
    return {"changed": changed or released, "by": "etsfctl", "state": ENGAGED}


def refusal_text(last: dict[str, Any]) -> str:
    """Why the watchdog refused an ack: each stale heartbeat, its age and limit, who writes it."""
    nums = last.get("numbers") or {}
    parts = []
    for path, age in sorted((nums.get("stale") or {}).items()):
        limit = (nums.get("max_age_s") or {}).get(path)
        what = "the agent heartbeat in etsf_ctl" if path == "agent" else path
        age_s = "missing" if age == "missing" else f"{float(age):.0f} s old"
        unit = os.path.basename(os.path.dirname(path))     # the services' RuntimeDirectory= names
        by = f" (written by {unit}.service)" if unit.startswith("etsf-") else ""
        parts.append(f"{what}{by} is {age_s}, limit {limit:g} s" if limit is not None else f"{what}{by} is {age_s}")
    return ("the heartbeat rule would trip again at once: " + "; ".join(parts)
            + "; start what writes it, then ack again")


def status() -> dict[str, Any]:
    st = read_state()
    return {"state": st, "running": running(st), "audit": read_audit(10)}
