"""The overload control law on recorded and synthetic traces: step responses, hysteresis,
dwell, bounds, recovery to level 0 after a surge.  Time is an input: no clock, no sleeps."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from etsf.overload.law import LEVEL_UP, Signals, State, step
from etsf.policy.schema import AUTO

CFG = dict(AUTO.default_value(), target_queue=1000, target_pdd_ms=100, target_5xx_ratio=0.1, min_rate=10,
           max_rate=1000, dwell_s=2.0, max_step=0.25, hysteresis=0.2, interval_ms=500)


def run(trace, cfg=None, st=None):
    """Feed (t, queue[, extra kwargs]) ticks; the list of decisions."""
    cfg = CFG if cfg is None else cfg
    st = st or State()
    out = []
    for row in trace:
        t, q, *more = row
        out.append(step(cfg, st, Signals(t=t, queue=q, **(more[0] if more else {}))))
    return out


def test_idle_stays_at_zero_and_off():
    ds = run([(i * 0.5, 0) for i in range(40)])
    assert {(d.level, d.rate, d.changed) for d in ds} == {(0, 0, False)}


def test_step_response_engages_then_bounded_decrease():
    ds = run([(i * 0.5, 3000) for i in range(20)])            # queue 3x target from t=0
    assert ds[0].level == 1 and ds[0].rate == CFG["max_rate"] and ds[0].signal == "queue"
    assert ds[0].pressure == 3.0
    rates = [d.rate for d in ds]
    for a, b in zip(rates, rates[1:]):                          # never more than max_step per tick
        assert b >= a * (1 - CFG["max_step"]) - 1 and b <= a
    assert rates[-1] == CFG["min_rate"]                          # floor
    levels = [d.level for d in ds]
    assert max(levels) == 2                                      # pressure 3: level 2, not 3
    # one step per dwell: level 2 only once dwell_s after level 1
    first2 = levels.index(2)
    assert first2 * 0.5 >= CFG["dwell_s"]


def test_levels_reach_three_and_never_exceed():
    ds = run([(i * 0.5, 100_000) for i in range(40)])
    assert max(d.level for d in ds) == 3 and ds[-1].level == 3
    assert all(CFG["min_rate"] <= d.rate <= CFG["max_rate"] for d in ds)


def test_hysteresis_no_flapping_around_threshold():
    # queue alternates just above / just below the level-1 threshold for 60 s
    trace = [(i * 0.5, 1050 if i % 2 else 950) for i in range(120)]
    ds = run(trace)
    level_changes = sum(d.level_changed for d in ds)
    assert level_changes == 1 and ds[-1].level == 1            # entered once, never left
    rates = [d.rate for d in ds][1:]                             # engaged from the first 1050
    assert all(r >= CFG["min_rate"] for r in rates)
    # within the band [1 - hysteresis, 1] the rate holds; above it only decreases
    assert all(b <= a for a, b in zip(rates, rates[1:]))


def test_dwell_holds_level():
    st = State()
    ds = run([(0.0, 5000)], st=st)
    assert ds[0].level == 1
    ds = run([(0.5, 0), (1.0, 0), (1.5, 0)], st=st)            # signal gone before dwell_s
    assert [d.level for d in ds] == [1, 1, 1]
    ds = run([(2.0, 0)], st=st)
    assert ds[0].level == 0 and ds[0].level_changed


def test_recovery_after_surge_to_zero_and_admission_off():
    surge = [(i * 0.5, 8000) for i in range(30)]
    calm = [(15 + i * 0.5, 0) for i in range(80)]
    ds = run(surge + calm)
    assert max(d.level for d in ds[:30]) == 3
    tail = ds[30:]
    levels = [d.level for d in tail]
    assert levels == sorted(levels, reverse=True)                # monotonic recovery
    assert tail[-1].level == 0 and tail[-1].rate == 0
    rates = [d.rate for d in tail if d.rate]
    assert all(b - a <= CFG["max_step"] * CFG["max_rate"] for a, b in zip(rates, rates[1:]))


def test_drops_latency_and_5xx_are_pressure():
    d = run([(0, 0, {"drops": 3})])[0]
    assert d.level == 1 and d.signal == "drops" and d.pressure == LEVEL_UP[1]
    d = run([(0, 10, {"pdd_ms": 250.0})])[0]
    assert d.level == 1 and d.signal == "pdd_ms" and d.pressure == 2.5
    assert d.signals == {"queue": 10, "pdd_ms": 250.0}
    d = run([(0, None, {"ratio_5xx": 0.05})])[0]
    assert d.level == 0 and d.rate == 0 and d.signal == "ratio_5xx"
    d = run([(0, None, {"cpu": 0.99})])[0]                       # target_cpu 0: CPU ignored
    assert d.signal is None and d.level == 0
    d = run([(0, None, {"cpu": 0.99})], cfg=dict(CFG, target_cpu=0.8))[0]
    assert d.signal == "cpu" and d.level == 1


RECORDED = [  # (t, rx_queue bytes) sampled every 0.5 s from a proxy socket during a flash crowd
    (0.0, 0), (0.5, 768), (1.0, 2304), (1.5, 9216), (2.0, 24576), (2.5, 49920), (3.0, 106496),
    (3.5, 212992), (4.0, 212992), (4.5, 212992), (5.0, 180224), (5.5, 131072), (6.0, 98304),
    (6.5, 65536), (7.0, 40960), (7.5, 16384), (8.0, 4096), (8.5, 1536), (9.0, 768), (9.5, 0),
]


def test_recorded_flash_crowd():
    cfg = dict(CFG, target_queue=32768)
    trace = RECORDED + [(10.0 + i * 0.5, 0) for i in range(60)]
    ds = run(trace, cfg)
    levels = [d.level for d in ds]
    assert levels[:5] == [0] * 5 and levels[5] == 1          # engages at pressure 0.75 -> 1.52
    assert max(levels) == 2 and levels[-1] == 0               # one level per dwell_s
    assert cfg["min_rate"] <= min(d.rate for d in ds if d.rate) < cfg["max_rate"] / 10
    assert ds[-1].rate == 0
    # level changes are at least dwell_s apart
    times = [t for (t, _q), d in zip(trace, ds) if d.level_changed]
    assert all(b - a >= cfg["dwell_s"] for a, b in zip(times, times[1:]))


@pytest.mark.parametrize("q", [0, 500, 1000, 2500, 5000, 10_000_000])
def test_bounds_hold_for_any_constant_signal(q):
    ds = run([(i * 0.5, q) for i in range(50)])
    assert all(0 <= d.level <= 3 for d in ds)
    assert all(d.rate == 0 or CFG["min_rate"] <= d.rate <= CFG["max_rate"] for d in ds)


SURGE = json.loads((Path(__file__).parent / "overload_fixtures" / "surge_kamailio.json").read_text())


def replay(ticks, without=()):
    st = State()
    return [step(SURGE["cfg"], st, Signals(t=k["t"], **{n: v for n, v in k["signals"].items() if n not in without}))
            for k in ticks]


def test_recorded_surge_through_kamailio():
    """The signals of a real surge (sipp at 3x a Kamailio's capacity, then 0.5x): admission
    engages within a second of the surge, cuts the rate, stays on as long as the surge lasts
    and is off at level 0 afterwards."""
    ticks = SURGE["ticks"]
    start, calm = SURGE["surge_ticks"]
    ds = replay(ticks)
    on = next(i for i, d in enumerate(ds) if d.rate)
    assert ticks[on]["tick"] - start <= 5
    end = next(i for i, k in enumerate(ticks) if k["tick"] == calm)
    during = ds[on:end + 1]
    assert all(d.rate for d in during)
    assert min(d.rate for d in during) < SURGE["cfg"]["max_rate"] and max(d.level for d in during) >= 1
    assert (ds[-1].level, ds[-1].rate) == (0, 0) and all(d.level == 0 for d in ds[-5:])


def test_recorded_surge_without_refusals_switches_admission_off_midway():
    """The same trace without the `refused` signal: level 0 held and the rate back at max_rate
    switch admission off while the surge goes on (what the refusal gate prevents)."""
    ticks = SURGE["ticks"]
    _start, calm = SURGE["surge_ticks"]
    ds = replay(ticks, without=("refused",))
    on = next(i for i, d in enumerate(ds) if d.rate)
    end = next(i for i, k in enumerate(ticks) if k["tick"] == calm)
    assert any(d.rate == 0 for d in ds[on:end])
