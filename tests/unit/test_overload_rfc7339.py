"""The RFC 7339 advertisement of the overload controller: reduction = 100 x (1 - admission
rate / max_rate), oc-validity while shedding and 0 (stop) when not, on recorded surge traces,
and the policy keys overload.auto.rfc7339 (defaults, one-line errors)."""
from __future__ import annotations

import pytest

from etsf import policy as P
from etsf.overload.law import Signals, State, oc_advert, oc_reduction, step
from etsf.policy.schema import AUTO

CFG = dict(AUTO.default_value(), target_queue=1000, target_pdd_ms=0, target_5xx_ratio=0, min_rate=10,
           max_rate=1000, dwell_s=0, max_step=0.5, hysteresis=0.2, interval_ms=500,
           rfc7339={"enabled": True, "validity_ms": 3000})


@pytest.mark.parametrize("rate,max_rate,want", [
    (0, 1000, 0),          # admission off: nothing refused
    (1000, 1000, 0),       # just engaged at max_rate
    (750, 1000, 25),
    (500, 1000, 50),
    (10, 1000, 99),        # min_rate: never 100 while anything is admitted
    (1, 3, 67),            # rounded
    (2, 3, 33),
    (5000, 1000, 0),       # above max (a manual rate): no negative reduction
])
def test_reduction_formula(rate, max_rate, want):
    assert oc_reduction(rate, max_rate) == want


def test_advert_disabled_by_default():
    assert AUTO.default_value()["rfc7339"] == {"enabled": False, "validity_ms": 5000}
    assert oc_advert(dict(CFG, rfc7339=AUTO.default_value()["rfc7339"]), 500) == (False, 50, 5000)


def test_advert_validity_zero_when_nothing_is_shed():
    assert oc_advert(CFG, 0) == (True, 0, 0)
    assert oc_advert(CFG, 1000) == (True, 0, 0)
    assert oc_advert(CFG, 250) == (True, 75, 3000)


def test_advert_missing_section_is_off():
    cfg = {k: v for k, v in CFG.items() if k != "rfc7339"}
    assert oc_advert(cfg, 250)[0] is False


def test_surge_trace_reduction_follows_the_admission_rate():
    """A queue surge at 4x target for 8 ticks, then idle: the advertised reduction rises while
    the rate is cut, falls back as it recovers, and ends at oc=0 with oc-validity=0."""
    st = State()
    trace = [(i * 0.5, 4000 if i < 8 else 0) for i in range(30)]
    ads = []
    for t, q in trace:
        d = step(CFG, st, Signals(t=t, queue=q))
        ads.append((d.rate, oc_advert(CFG, d.rate)))
    for rate, (on, red, validity) in ads:
        assert on and red == (round(100 * (1 - rate / 1000)) if rate else 0)
        assert validity == (3000 if red else 0)
    reds = [a[1][1] for a in ads]
    surge, after = reds[:8], reds[8:]
    assert surge[0] == 0 and all(b >= a for a, b in zip(surge, surge[1:])) and surge[-1] >= 90
    assert all(b <= a for a, b in zip(after, after[1:]))
    assert ads[-1] == (0, (True, 0, 0))


@pytest.mark.parametrize("text,expected", [
    ("version: 1\noverload: {auto: {rfc7339: {validity_ms: 0}}}\n",
     "policy.overload.auto.rfc7339.validity_ms: an integer 1..86400000 expected (got 0)"),
    ("version: 1\noverload: {auto: {rfc7339: {enabled: 1}}}\n",
     "policy.overload.auto.rfc7339.enabled: "),
    ("version: 1\noverload: {auto: {rfc7339: {validity: 10}}}\n",
     "policy.overload.auto.rfc7339.validity: one of the keys enabled, validity_ms"),
])
def test_policy_rfc7339_invalid_one_line(text, expected):
    with pytest.raises(P.PolicyError) as ei:
        P.load_text(text)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(expected), msg


def test_policy_rfc7339_values():
    p = P.load_text("version: 1\noverload: {auto: {enabled: true, rfc7339: {enabled: true, validity_ms: 800}}}\n")
    assert p.overload_auto["rfc7339"] == {"enabled": True, "validity_ms": 800}
    p = P.load_text("version: 1\noverload: {auto: {enabled: true, rfc7339: null}}\n")
    assert p.overload_auto["rfc7339"] == {"enabled": False, "validity_ms": 5000}


def test_state_metrics_carry_the_reduction(tmp_path, monkeypatch):
    from etsf.overload import state
    from etsf.telemetry.collector import overload_auto_metrics
    monkeypatch.setenv("ETSF_STATE_DIR", str(tmp_path / "state"))
    state.update_state(lambda d: d.update(level=1, admit_rate=500, changes_total=2, pressure=1.5))
    assert "etsf_overload_auto_oc_reduction_pct" not in {f.name for f in overload_auto_metrics(state.read_state())}
    state.update_state(lambda d: d.update(rfc7339={"enabled": True, "reduction_pct": 50, "validity_ms": 5000,
                                                   "seq": 1764500000123}))
    m = {f.name: f.samples[0].value for f in overload_auto_metrics(state.read_state())}
    assert m["etsf_overload_auto_oc_reduction_pct"] == 50
