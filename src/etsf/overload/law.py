"""The adaptive overload control law: signals in, overload level and INVITE admission rate out.

Pure and deterministic: time is an input (``Signals.t``), there is no I/O, so the law is
tested on recorded traces.  Every signal is turned into a *pressure*, its value over its
target (1.0 = at target); the tick's pressure is the largest of them, so the worst signal
drives the decision and the audit entry names it.

* Level: rises one step when the pressure reaches the next level's threshold (``LEVEL_UP``),
  falls one step when it is below the current level's threshold times ``1 - hysteresis``.
  A level is held at least ``dwell_s`` before it changes again (either way), so a signal
  hovering around a threshold cannot make the level flap.
* Admission rate (new INVITEs, tokens/s per CPU; 0 = admission off): engages at ``max_rate``
  when the pressure first reaches 1, then multiplicative decrease by ``1/pressure`` (at most
  ``max_step`` of the rate per tick) while over target, increase by ``max_step`` of the rate
  (at least ``min_rate``) per tick while under ``1 - hysteresis``, held in between; bounded
  to ``min_rate..max_rate`` and switched off once back at ``max_rate`` with level 0.
* What the proxy serves (``served``: new calls it answered 2xx per second and receiving CPU
  over the tick) bounds both ways: over target a rate above it drops to it at once (the excess
  only queues) and no cut goes below ``served x (1 - hysteresis)``; under target the rate
  grows to at most ``served x (1 + max_step / 2)`` -- unless the 5xx ratio is over its target:
  a proxy failing calls (Kamailio out of transaction memory answers 500 at once) serves few
  2xx for a reason other than its capacity (recorded: served 1.7/s took the rate from 1586 to
  10 in one tick).  The queue and latency signals lag the
  rate by the backlog in the proxy's socket and the callers' retransmissions of calls admitted
  before the cut; cutting on them alone drives the rate far below what the proxy serves
  (recorded: 2000 -> 35/s against ~300 served), engaging at ``max_rate`` floods the proxy for
  the seconds the bounded cuts take, and an increase of a share of ``max_rate`` per tick
  overshoots a capacity far below ``max_rate`` at once.
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

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("queue", self.queue), ("drops", self.drops), ("pdd_ms", self.pdd_ms),
                                  ("ratio_5xx", self.ratio_5xx), ("cpu", self.cpu),
                                  ("refused", self.refused), ("served", self.served)) if v is not None}


@dataclass
class State:
    level: int = 0
    rate: int = 0                     # 0: admission off
    since: float | None = None        # time of the last level change
    changes: int = 0                  # level or rate changes so far


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


def _next_level(cfg, level: int, p: float) -> int:
    if level < MAX_LEVEL and p >= LEVEL_UP[level]:
        return level + 1
    if level > 0 and p < LEVEL_UP[level - 1] * (1 - cfg["hysteresis"]):
        return level - 1
    return level


def _next_rate(cfg, rate: int, level: int, p: float, may_stop: bool, served: float | None = None,
               refusing: bool = False) -> int:
    lo, hi, step = cfg["min_rate"], cfg["max_rate"], cfg["max_step"]
    if rate == 0:
        return hi if p >= 1.0 else 0
    if p > 1.0:
        new = rate * max(1.0 / p, 1.0 - step)
        if served:
            # above what the proxy serves the excess only queues: down to it at once; the cut
            # stops at served x (1 - hysteresis), and that floor never raises the rate
            new = min(rate, max(min(new, served), served * (1.0 - cfg["hysteresis"])))
    elif p < 1.0 - cfg["hysteresis"]:
        if rate >= hi:
            return 0 if level == 0 and may_stop else rate
        new = rate + step * max(rate, lo)
        if served and refusing:
            # while admission still turns calls away, probe half a step over what the proxy
            # serves; once it refuses none the rate may grow on to max_rate and switch off
            new = min(new, max(rate, served * (1.0 + step / 2)))
    else:
        return rate
    return int(min(hi, max(lo, round(new))))


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
        level = _next_level(cfg, st.level, p)
    since = s.t if level != st.level else st.since
    quiet = (since is None or s.t - since >= cfg["dwell_s"]) and not s.refused
    # while the proxy fails calls (5xx over target: e.g. Kamailio out of transaction memory
    # answers 500 at once) its 2xx rate measures the failure, not its capacity: no bound from it
    failing = "ratio_5xx" in pr and pr["ratio_5xx"] >= 1.0
    # refusals unknown (no admission map, or a trace without them) count as refusing: the bound holds
    rate = _next_rate(cfg, st.rate, level, p, quiet, None if failing else s.served, s.refused != 0)
    level_changed = level != st.level
    changed = level_changed or rate != st.rate
    if level_changed:
        st.since = s.t
    if changed:
        st.changes += 1
    st.level, st.rate = level, rate
    return Decision(level=level, rate=rate, pressure=round(p, 3), signal=signal, changed=changed,
                    level_changed=level_changed, signals=s.as_dict())
