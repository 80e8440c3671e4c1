"""KPI formulas (etsf.kpi) against hand-computed RFC 6076 / ITU-T E.411 / E.425 values."""
import math

import pytest

from etsf import kpi


def test_formulas():
    # 70 answered, 10 redirected (3xx), 8 busy (486), 2 no answer (480), 5 abandoned (487),
    # 1 declined (603), 4 server failures (503)
    codes = {200: 70, 302: 10, 486: 8, 480: 2, 487: 5, 603: 1, 503: 4}
    a = 100
    assert kpi.attempts(codes) == a
    assert kpi.ser(codes) == 70 / (a - 10)
    assert kpi.seer(codes) == (70 + 8 + 2 + 1) / (a - 10)
    assert kpi.ner(codes) == (70 + 8 + 2 + 5 + 1) / (a - 10)
    assert kpi.asr(codes) == 70 / a


def test_provisionals_ignored_and_empty_is_undefined():
    assert kpi.compute({100: 5, 180: 5}) == {"ser": None, "seer": None, "ner": None,
                                             "asr": None, "attempts": 0}
    assert kpi.ser({302: 3}) is None          # only redirects: SER undefined
    assert kpi.asr({302: 3}) == 0.0


def test_delta_and_reset():
    assert kpi.delta({200: 10, 486: 3}, {200: 4, 486: 3}) == {200: 6}
    assert kpi.delta({200: 2}, {200: 9}) == {200: 2}      # counters restarted


def test_window_keeps_one_baseline_before_the_window():
    w = kpi.Window(60)
    w.add(0, {200: 0})
    w.add(30, {200: 5})
    w.add(70, {200: 8, 486: 2})
    # baseline = the sample at t=30 (the newest one at or before 100 - 60 = 40)
    r = w.kpis(100, {200: 9, 486: 3})
    assert r["attempts"] == 4 + 3 and r["ser"] == 4 / 7
    assert r["window_seconds"] == 70           # span actually covered (baseline to now)
    with pytest.raises(ValueError):
        kpi.Window(0)


def test_window_is_bounded():
    w = kpi.Window(1e9, max_samples=5)
    for t in range(100):
        w.add(t, {200: t})
    assert len(w._samples) == 5                # noqa: SLF001


def test_nan_is_what_the_exporter_reports_for_none():
    assert math.isnan(float("nan"))
