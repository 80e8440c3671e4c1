"""The adaptive overload control law: signals in, overload level and INVITE admission rate out.

Pure and deterministic: time is an input (``Signals.t``), there is no I/O, so the law is
tested on recorded traces.  Every signal is turned into a *pressure*, its value over its
target (1.0 = at target); the tick's pressure is the largest of them, so the worst signal
drives the decision and the audit entry names it.

* Level: rises one step when the pressure reaches the next level's threshold (``LEVEL_UP``),
  falls one step when it is below the current level's threshold times ``1 - hysteresis``.
  A level is held at least ``dwell_s`` before it changes again (either way), so a signal
  hovering around a threshold cannot make the level flap.  A level whose ``shed_below`` drops
  new INVITEs (``invite_level``, from the policy: 3 with the defaults) is entered only once
  the admission rate is down to ``min_rate``: the level drops them silently, the callers
  retransmit into the surge and time out (recorded: K at 1.5x and 2x of an 800 calls/s proxy
  reached level 3 on the 5xx ratio, INVITE->200 p99 3.5 s, 33,000 retransmissions), while
  admission answers each refused INVITE with a 503.
* Admission rate (new INVITEs, tokens/s per CPU; 0 = admission off), AIMD on the rate that
  actually passes (``admitted``: new INVITEs let through per second per receiving CPU, so the
  total is the rate times the receiving CPUs): engages when the pressure first reaches 1 at
  what passed in the tick cut once (``max_rate`` when that is not measured); over target it
  is cut from what passed (not from a token rate above the offered load, which refuses
  nothing) by ``1/pressure``, at most ``max_step`` of it per tick; while the proxy fails
  calls (5xx ratio over target) one cut per ``REACT_TICKS`` ticks, since its failures go on
  for a tick or two after a cut (its transaction memory frees as old calls end); under
  ``1 - hysteresis`` it grows additively by ``AI_SHARE x max_step`` of the rate that passed
  when the congestion began (at least ``min_rate``) while admission refuses calls, by
  ``max_step`` of itself once it refuses none; held in between; bounded to
  ``min_rate..max_rate``.  Under 7/8 of the *peak* (the rate the proxy took when the last
  congestion began; none engaging from off or while it fails calls) the increase is
  ``max_step / 2`` of the rate a tick, up to that; the small probes then stop at 15/16 of the
  peak (``1 - max_step / 4``) for ``probe_hold_s`` after the cut, whether or not the rate binds:
  each probe over the capacity queues a tick of calls in the
  proxy's socket (recorded: three probes in a 20 s step at 3x took INVITE->200 p99 from 4 ms to
  148 ms).  A tick with nothing offered holds the rate;
  ``dwell_s`` of them at level 0 switch admission off.  Engaging at ``max_rate`` (recorded:
  2000/s against 1200/s offered) and cutting the token rate refused nothing for seconds, then
  the increase by 25 % a tick brought it back over the offered load within three ticks, every
  five seconds.
* What the proxy serves (``served``: new calls it answered 2xx per second and receiving CPU
  over the tick) bounds both ways: over target a rate above it drops to it at once (the excess
  only queues) and no cut goes below ``served x (1 - hysteresis)``; under target the rate
  grows to at most ``served x (1 + max_step / 2)`` -- unless the 5xx ratio is over its target:
  a proxy failing calls (Kamailio out of transaction memory answers 500 at once) serves few
  2xx for a reason other than its capacity (recorded: served 1.7/s took the rate from 1586 to
  10 in one tick).  The queue and latency signals lag the
  rate by the backlog in the proxy's socket and the callers' retransmissions of calls admitted
  before the cut; cutting on them alone drives the rate far below what the proxy serves
  (recorded: 2000 -> 35/s against ~300 served).
  Switched off only after level 0 was held ``dwell_s`` and in a tick where admission refused
  no INVITE: under a sustained surge the pressure dips below target as soon as a cut has
  drained the queue, and switching admission off while it still refuses calls lets the whole
  surge in again.
* RFC 7339 advertisement (``rfc7339.enabled``): the reduction asked of ``oc`` clients is the
  share of new INVITEs the admission control turns away, ``100 x (1 - rate / max_rate)``
  rounded (0 with admission off), with ``oc-validity = rfc7339.validity_ms`` while it is above
  0 and ``oc-validity = 0`` (stop) when it is 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: pressure at which level 1, 2, 3 is entered
LEVEL_UP = (1.0, 2.0, 4.0)
MAX_LEVEL = len(LEVEL_UP)
#: pressure a tick with socket drops has at least (the queue overflowed: level 2)
DROP_PRESSURE = LEVEL_UP[1]
#: ticks after a cut during which a proxy still failing calls gets no further cut
REACT_TICKS = 3
#: additive increase per tick while admission refuses calls: this share of max_step x rate
AI_SHARE = 0.1


@dataclass
class Signals:
    """One tick's inputs; None = not measured this tick (ignored)."""
    t: float                          # seconds, monotonic
    queue: int | None = None          # largest proxy socket receive queue, bytes
    drops: int | None = None          # proxy socket drops since the previous tick
    pdd_ms: float | None = None       # INVITE -> first 100/180 latency (mean over the tick)
    ratio_5xx: float | None = None    # 5xx share of INVITE final responses over the tick
    cpu: float | None = None          # busy share of the host CPUs over the tick, 0..1
    refused: int | None = None        # new INVITEs refused by admission over the tick (no pressure)
    served: float | None = None       # new calls answered 2xx per second per receiving CPU (no pressure)
    admitted: float | None = None     # new INVITEs let through per second per receiving CPU (no pressure)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("queue", self.queue), ("drops", self.drops), ("pdd_ms", self.pdd_ms),
                                  ("ratio_5xx", self.ratio_5xx), ("cpu", self.cpu),
                                  ("refused", self.refused), ("served", self.served),
                                  ("admitted", self.admitted)) if v is not None}


@dataclass
class State:
    level: int = 0
    rate: int = 0                     # 0: admission off
    since: float | None = None        # time of the last level change
    changes: int = 0                  # level or rate changes so far
    cut: float | None = None          # time of the last decrease of the rate
    ceiling: float | None = None      # what passed when the last congestion began
    over: bool = False                # the last tick was over target
    peak: float | None = None         # the rate in force when the last congestion began
    idle_since: float | None = None   # start of the ticks in a row in which nothing was offered


@dataclass
class Decision:
    level: int
    rate: int
    pressure: float
    signal: str | None                # the signal with the largest pressure
    changed: bool
    level_changed: bool
    signals: dict[str, Any] = field(default_factory=dict)


def pressures(cfg: dict[str, Any], s: Signals) -> dict[str, float]:
    """{signal: value / target} for every measured signal with a target."""
    out = {}
    if s.queue is not None and cfg["target_queue"] > 0:
        out["queue"] = s.queue / cfg["target_queue"]
    if s.drops:
        out["drops"] = DROP_PRESSURE
    if s.pdd_ms is not None and cfg["target_pdd_ms"] > 0:
        out["pdd_ms"] = s.pdd_ms / cfg["target_pdd_ms"]
    if s.ratio_5xx is not None and cfg["target_5xx_ratio"] > 0:
        out["ratio_5xx"] = s.ratio_5xx / cfg["target_5xx_ratio"]
    if s.cpu is not None and cfg["target_cpu"] > 0:
        out["cpu"] = s.cpu / cfg["target_cpu"]
    return out


def _next_level(cfg, level: int, p: float, rate: int) -> int:
    if level < MAX_LEVEL and p >= LEVEL_UP[level]:
        # a level that sheds new INVITEs drops them silently (the callers retransmit into the
        # surge): entered only once admission, which answers 503, is down to min_rate
        if level + 1 < cfg.get("invite_level", MAX_LEVEL) or rate <= cfg["min_rate"]:
            return level + 1
        return level
    if level > 0 and p < LEVEL_UP[level - 1] * (1 - cfg["hysteresis"]):
        return level - 1
    return level


def _next_rate(cfg, st: State, level: int, p: float, may_stop: bool, s: Signals, failing: bool) -> int:
    lo, hi, step = cfg["min_rate"], cfg["max_rate"], cfg["max_step"]
    rate = st.rate
    # what the proxy serves bounds the rate, unless it fails calls (its 2xx rate then measures
    # the failure, not its capacity)
    served = None if failing else s.served
    if (rate == 0 or st.idle_since is not None) and s.admitted:
        # engaging from off, or load arriving after ticks without any, the cut is from what
        # passed in the tick; its 2xx lag the INVITEs by the call setup and, in the tick a surge
        # begins, cover time before it, not what the proxy can serve (recorded: 283/s passed,
        # 154/s served, capacity 350/s: engaged at 154 and took 10 s to come back; on at 340/s
        # after a pause, cut to 80/s served); served bounds from the next tick on
        served = None
    # what admission lets through: below the token rate when the offered load is; cuts start
    # from it, else a cut of a rate above the offered load refuses nothing
    passed = s.admitted if s.admitted else None
    if rate == 0 or p > 1.0:
        if rate == 0 and p < 1.0:
            return 0
        eff = rate or hi
        if passed is not None:
            eff = min(eff, passed)
        if rate and failing and st.cut is not None and s.t - st.cut < cfg["interval_ms"] * REACT_TICKS / 1000:
            # the signals of a cut show a tick or two later (the proxy's queue drains, its
            # failing calls end): one multiplicative decrease per reaction time, not one per
            # tick of the same congestion
            return rate
        new = eff * max(1.0 / p, 1.0 - step) if (rate or passed is not None) else hi
        if served:
            # above what the proxy serves the excess only queues: down to it at once; the cut
            # stops at served x (1 - hysteresis), and that floor never raises the rate
            new = min(eff, max(min(new, served), served * (1.0 - cfg["hysteresis"])))
        if not st.over or st.ceiling is None:
            st.ceiling = min(eff, new)
            # the rate the proxy took before it congested: what passed, from a steady state;
            # after ticks without load the token rate it held (what passed covers part of the
            # tick); unknown engaging from off (what passed is the surge) and when the proxy
            # fails calls (its 5xx show ticks late, after the rate went on past its capacity)
            st.peak = None if rate == 0 or failing else (rate if st.idle_since is not None else eff)
        st.cut = s.t
    elif p < 1.0 - cfg["hysteresis"]:
        if s.admitted == 0 and not s.refused:
            # nothing offered, nothing learnt: growing now would meet the next surge with a rate
            # above the capacity (recorded: 340/s grew to 449/s in a 3 s pause, and the first tick
            # of a 3x surge queued 400 KB in the proxy's socket); off once idle for dwell_s
            idle_for = s.t - st.idle_since if st.idle_since is not None else 0.0
            return 0 if level == 0 and may_stop and idle_for >= cfg["dwell_s"] else rate
        if rate >= hi:
            return 0 if level == 0 and may_stop else rate
        hold = _hold_level(cfg, st, s.t)
        if hold is not None and rate >= hold:
            # just under the rate that congested the proxy last: no probe above it until
            # probe_hold_s after that cut, whether or not the rate binds (each probe over the
            # capacity queues a tick of calls in the proxy's socket)
            return rate
        if s.refused == 0:
            new = rate + step * max(rate, lo)     # nothing refused: the rate does not bind
        else:
            # refusing (or unknown): additive increase, a small share of the rate that congested
            # the proxy last, so the probe above its capacity is small when it comes
            new = rate + max(lo, step * AI_SHARE * (st.ceiling or hi))
            if st.peak and rate < st.peak * (1.0 - step / 2):
                # far under the rate that congested last: back towards it by max_step / 2 of
                # itself a tick, the small probes only near it (recorded: from a cut to 80/s
                # the additive increase took 13 s back to a 350/s capacity)
                new = max(new, min(rate * (1.0 + step / 2), st.peak * (1.0 - step / 2)))
        if served and s.refused != 0:
            new = min(new, max(rate, served * (1.0 + step / 2)))
        if hold is not None:
            new = min(new, hold)
    else:
        return rate
    return int(min(hi, max(lo, round(new))))


def _hold_level(cfg, st: State, t: float) -> float | None:
    """The rate the increase stops at while the last cut is under probe_hold_s old: (1 -
    max_step / 4) of the peak, 15/16 with the defaults (the peak is what passed when the proxy
    began to queue, a little over its capacity; the fast return's 7/8 held 0.88x of a 400 calls/s
    capacity); None when not holding (no peak known, or the hold is over)."""
    hold_s = cfg.get("probe_hold_s", 0)
    if not hold_s or not st.peak or st.cut is None or t - st.cut >= hold_s:
        return None
    return st.peak * (1.0 - cfg["max_step"] / 4)


RFC7339_DEFAULT = {"enabled": False, "validity_ms": 5000}


def oc_reduction(rate: int, max_rate: int) -> int:
    """Percent of new INVITEs refused: 100 x (1 - rate / max_rate), 0 with admission off (rate 0)."""
    if rate <= 0 or max_rate <= 0:
        return 0
    return max(0, min(100, round(100 * (1 - rate / max_rate))))


def oc_advert(cfg: dict[str, Any], rate: int) -> tuple[bool, int, int]:
    """(enabled, oc reduction %, oc-validity ms) for admission rate *rate*; oc-validity 0 when
    nothing is shed tells the clients to stop (RFC 7339 section 5.2)."""
    oc = cfg.get("rfc7339") or RFC7339_DEFAULT
    red = oc_reduction(rate, cfg["max_rate"])
    return bool(oc["enabled"]), red, (oc["validity_ms"] if red else 0)


def step(cfg: dict[str, Any], st: State, s: Signals) -> Decision:
    """Advance *st* by one tick of signals *s*; returns what to write.  *cfg* is the
    policy's ``overload.auto`` section (etsf.policy.schema.AUTO)."""
    pr = pressures(cfg, s)
    signal = max(pr, key=lambda k: pr[k]) if pr else None
    p = pr[signal] if signal else 0.0
    level = st.level
    if st.since is None or s.t - st.since >= cfg["dwell_s"]:
        level = _next_level(cfg, st.level, p, st.rate)
    since = s.t if level != st.level else st.since
    quiet = (since is None or s.t - since >= cfg["dwell_s"]) and not s.refused
    # while the proxy fails calls (5xx over target: e.g. Kamailio out of transaction memory
    # answers 500 at once) its 2xx rate measures the failure, not its capacity: no bound from it
    failing = "ratio_5xx" in pr and pr["ratio_5xx"] >= 1.0
    # refusals unknown (no admission map, or a trace without them) count as refusing: the bound holds
    rate = _next_rate(cfg, st, level, p, quiet, s, failing)
    st.over = p > 1.0
    if s.admitted == 0 and not s.refused:
        st.idle_since = s.t if st.idle_since is None else st.idle_since
    else:
        st.idle_since = None
    level_changed = level != st.level
    changed = level_changed or rate != st.rate
    if level_changed:
        st.since = s.t
    if changed:
        st.changes += 1
    st.level, st.rate = level, rate
    return Decision(level=level, rate=rate, pressure=round(p, 3), signal=signal, changed=changed,
                    level_changed=level_changed, signals=s.as_dict())
