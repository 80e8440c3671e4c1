"""The path benchmark's accounting, matching and statistics (bench/cpuacct.py,
bench/transit.py, bench/stats.py) on fixtures: /proc/stat, schedstat and status texts,
captured transit sightings, and known per-round differences."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import cpuacct  # noqa: E402
import path  # noqa: E402
import path_report  # noqa: E402
import stats  # noqa: E402
import transit  # noqa: E402

STAT_A = """cpu  1000 10 500 80000 20 0 40 0 0 0
cpu0 500 5 250 40000 10 0 20 0 0 0
cpu1 500 5 250 40000 10 0 20 0 0 0
intr 123 0 0
ctxt 5000
btime 1700000000
"""
# 2 s later on 2 CPUs: 400 ticks of CPU time, 100 idle + 10 iowait -> 290 ticks busy
STAT_B = """cpu  1150 10 580 80100 30 0 100 0 0 0
cpu0 575 5 290 40050 15 0 50 0 0 0
cpu1 575 5 290 40050 15 0 50 0 0 0
intr 456 0 0
ctxt 6800
btime 1700000000
"""
STATUS = """Name:\tresponder
State:\tS (sleeping)
voluntary_ctxt_switches:\t1234
nonvoluntary_ctxt_switches:\t56
"""


def test_parse_stat_schedstat_status():
    s = cpuacct.parse_stat(STAT_A)
    assert s["cpus"] == 2 and s["user"] == 1000 and s["idle"] == 80000 and s["iowait"] == 20
    assert s["softirq"] == 40 and s["ctxt"] == 5000
    assert s["per_cpu"]["1"] == {"user": 500, "nice": 5, "system": 250, "idle": 40000, "iowait": 10,
                                 "irq": 0, "softirq": 20, "steal": 0}
    assert cpuacct.parse_schedstat("123456789 2000 17\n") == 123456789
    assert cpuacct.parse_status(STATUS) == {"voluntary": 1234, "involuntary": 56}


def _snap(t, stat, tasks, reaped=None):
    return {"t": t, "stat": cpuacct.parse_stat(stat), "tasks": tasks, "reaped": reaped or {}}


def test_account_whole_by_idle_and_parts_by_task():
    hz = cpuacct.HZ
    # tid: (pid, comm, ns on CPU, voluntary, involuntary, kernel thread)
    a = _snap(10.0, STAT_A, {100: (100, "responder", 1_000_000_000, 10, 1, False),
                             101: (100, "responder", 0, 0, 0, False),
                             7: (7, "ksoftirqd/0", 5_000_000, 0, 0, True),
                             300: (300, "bash", 0, 0, 0, False),
                             400: (400, "gone", 0, 0, 0, False)},
              {1: 0})
    b = _snap(12.0, STAT_B, {100: (100, "responder", 1_300_000_000, 40, 3, False),
                             101: (100, "responder", 100_000_000, 5, 0, False),
                             7: (7, "ksoftirqd/0", 25_000_000, 0, 0, True),
                             9: (9, "kworker/1:1", 50_000_000, 0, 0, True),   # started in the window
                             300: (300, "bash", 400_000_000, 0, 0, False)},
              {1: 30})
    acc = cpuacct.account(a, b, {100: "responder"})
    whole = 2.0 * 2 - (100 + 10) / hz
    assert acc["whole_s"] == pytest.approx(whole)
    # per CPU, the same idle accounting: each CPU idle 50 + iowait 5 ticks of its 2 s
    assert acc["cpu_busy_s"] == pytest.approx({"0": 2.0 - 55 / hz, "1": 2.0 - 55 / hz})
    assert sum(acc["cpu_busy_s"].values()) == pytest.approx(whole)
    assert acc["parts_s"]["responder"] == pytest.approx(0.4)          # both threads
    assert acc["parts_s"]["softirq threads"] == pytest.approx(0.02)
    assert acc["parts_s"]["kernel threads"] == pytest.approx(0.05)
    assert acc["parts_s"]["other tasks"] == pytest.approx(0.4)
    assert acc["tasks_sum_s"] == pytest.approx(0.87)
    assert acc["residual_s"] == pytest.approx(whole - 0.87)
    assert acc["ctx_switches"]["responder"] == {"voluntary": 35, "involuntary": 2}
    assert acc["softirq_s"] == pytest.approx(60 / hz)
    assert acc["tasks_exited"] == 1 and acc["reaped_children_s"] == pytest.approx(30 / hz)
    assert acc["ctxt_machine"] == 1800


def test_adds_up_within_and_outside_tolerance():
    ok, why = cpuacct.adds_up({"residual_ratio": 0.04, "tasks_exited": 0, "reaped_children_s": 0.0,
                               "elapsed_s": 3.0})
    assert ok and "96.0 %" in why
    ok, why = cpuacct.adds_up({"residual_ratio": 0.30, "tasks_exited": 4, "reaped_children_s": 1.5,
                               "elapsed_s": 3.0})
    assert not ok and "30.0 %" in why and "exited" in why
    ok, why = cpuacct.adds_up({"residual_ratio": -0.2, "tasks_exited": 0, "reaped_children_s": 0.0,
                               "elapsed_s": 3.0})
    assert not ok and "120.0 %" in why


def _ev(h, point, ts, what, seen=1):
    return {"hash": h, "point": point, "ts": ts, "seen": seen, "len": 500, "what": what}


def test_match_pairs_directions_and_flags_the_rest():
    events = [
        _ev(1, 0, 1000, "INVITE"), _ev(1, 1, 6000, "INVITE"),            # request 5 us
        _ev(2, 0, 2000, "ACK"), _ev(2, 1, 2500, "ACK"),                   # request 0.5 us
        _ev(3, 2, 9000, "180"), _ev(3, 3, 12000, "180"),                  # response 3 us
        _ev(4, 0, 100, "BYE"),                                            # lost in the node
        _ev(5, 3, 100, "200"),                                            # arrival without departure
        _ev(6, 2, 100, "200", seen=2), _ev(6, 3, 400, "200"),             # retransmitted: ambiguous
        _ev(7, 0, 900, "INVITE"), _ev(7, 1, 800, "INVITE"),               # clock order broken
    ]
    m = transit.match(events)
    assert sorted(m["request"]["ns"]) == [500, 5000]
    assert m["request"]["by_what"] == {"INVITE": [5000], "ACK": [500]}
    assert m["request"]["unmatched_departures"] == 1 and m["request"]["negative"] == 1
    assert m["response"]["ns"] == [3000] and m["response"]["by_what"] == {"180": [3000]}
    assert m["response"]["unmatched_arrivals"] == 1 and m["response"]["ambiguous"] == 1


def test_decode_map_items_and_labels():
    key = struct.pack("<QII", 0xABCDEF, 2, 0)
    val = struct.pack("<QII16s", 123456789, 1, 321, b"SIP/2.0 180 Ring")
    ev = transit.decode([(key, val)])
    assert ev == [{"hash": 0xABCDEF, "point": 2, "ts": 123456789, "seen": 1, "len": 321, "what": "180"}]
    assert transit.label(b"INVITE sip:x@y SI") == "INVITE"
    assert transit.label(b"ACK sip:a@b\0\0\0\0\0") == "ACK"


def test_quantiles_and_summary():
    vals = list(range(1, 1001))
    assert stats.quantile(vals, 0.5) == 500 and stats.quantile(vals, 0.99) == 990
    assert stats.quantile(vals, 0.999) == 999 and stats.quantile([], 0.5) is None
    s = stats.summary([3.0, 1.0, 2.0])
    assert s["n"] == 3 and s["p50"] == 2.0 and s["mean"] == pytest.approx(2.0)


def test_sign_test_exact_values():
    assert stats.sign_test([1.0] * 10)["p"] == pytest.approx(2 / 1024)
    assert stats.sign_test([1, 1, -1, 0])["p"] == pytest.approx(1.0)       # 2 vs 1, zero dropped
    t = stats.sign_test([1, 2, 3, 4, 5, 6, -1, -2])
    assert (t["pos"], t["neg"]) == (6, 2) and t["p"] == pytest.approx(2 * (1 + 8 + 28) / 256)
    assert stats.sign_rounds_needed(0.05) == 6


def test_paired_bootstrap_interval_and_detectable_effect():
    a = {r: 20.0 + r % 3 for r in range(10)}
    b = {r: 10.0 for r in range(12)}                     # rounds 10, 11 have no partner
    pr = stats.paired(a, b)
    assert pr["rounds"] == list(range(10))
    assert pr["median"] == pytest.approx(11.0)
    lo, hi = pr["ci95"]
    assert 10.0 <= lo <= pr["median"] <= hi <= 12.0
    assert pr["sign"] == {"pos": 10, "neg": 0, "p": pytest.approx(2 / 1024)}
    assert pr["mde"] == pytest.approx(2.8016 * 0.87560 / 10 ** 0.5, rel=1e-3)    # sd of 4x10, 3x11, 3x12
    assert stats.paired({0: 1.0}, {0: 0.5})["mde"] is None
    assert stats.bootstrap_ci([1.0, 2.0, 3.0]) == stats.bootstrap_ci([1.0, 2.0, 3.0])   # seeded


def test_ecdf_downsamples_and_ends_at_one():
    xs, ys = stats.ecdf(list(range(1000)), points=100)
    assert xs[0] == 0 and xs[-1] == 999 and ys[-1] == 1.0
    assert all(x1 <= x2 for x1, x2 in zip(xs, xs[1:])) and len(xs) <= 101


def _run(rnd, req_p50, sipp_s, resp_s, other_s, whole_s, ok=100):
    """A results.json run record: transit and CPU, as bench/path.py writes it."""
    parts = {"sipp (UAC)": sipp_s, "responder": resp_s, "other tasks": other_s}
    tasks = sum(parts.values())
    return {"round": rnd, "successful": ok,
            "transit": {"request": {"p50": req_p50, "p99": req_p50 * 2,
                                    "by_message": {"INVITE": {"p50": req_p50 * 3, "p99": req_p50 * 4}}},
                        "response": {"p50": req_p50 / 2, "p99": req_p50}},
            "cpu": {"parts_s": parts, "whole_s": whole_s, "residual_s": whole_s - tasks,
                    "adds_up": abs(whole_s - tasks) <= 0.1 * whole_s}}


def test_headline_table_cpu_sum_and_paired_lines():
    res = {"params": {"key_services": 10000},
           "configs": {"D": {"runs": {"un": [_run(r, 5.0 + r, 0.01, 0.005, 0.002, 0.018) for r in range(3)]}},
                       "C-10000": {"runs": {"un": [_run(r, 9.0 + r, 0.01, 0.005, 0.002, 0.030)
                                                   for r in range(3)]}},
                       "A-ipt-nft-10000": {"runs": {"un": [_run(r, 18.0 + r, 0.01, 0.005, 0.002, 0.018)
                                                           for r in range(3)]}}},
           "bpf_stats": {"in_traffic": {"E0": {"programs": {"xdp_sip": {"run_cnt": 300, "ns_per_run": 812.4}}}}},
           "prog_test_run": {"invite_1k_pass": 783}}
    text = "\n".join(path_report.headline(res))
    # medians over rounds: D 6.0, C 10.0, A 19.0 (request p50); INVITE x3; response = half
    assert ("| D direct | 18.0 | 24.0 | 6.0 | 12.0 | 3.0 | 6.0 | 3 | 100 + 50 + 20 + 10 = 180 (±10 % in 3/3 runs) |"
            in text)
    assert "| C as deployed, default hook (N=10000) | 30.0 |" in text and "= 300 (±10 % in 0/3 runs)" in text
    assert "C/A INVITE transit p50 at N=10000: **0.53** (30.0 / 57.0 µs)" in text
    assert "C/A all requests transit p50 at N=10000: **0.53** (10.0 / 19.0 µs)" in text
    assert ("- C − D (per-round Δ of transit p50, median): INVITE +12.0 µs (95 % CI [+12.0, +12.0], 3 rounds); "
            "request +4.0 µs (95 % CI [+4.0, +4.0], 3 rounds)") in text
    assert "E0 − D" not in text                          # no E0 runs: no line
    assert "eTSF programs per run in traffic: E0 xdp_sip 812 ns, PROG_TEST_RUN (INVITE, hot, back to back) 783 ns" in text
    assert "N=30000" not in text                         # configurations that did not run have no row


def test_headline_with_no_services_lists_c_once():
    """key_services 0: the key C is C-0, one row and one C-vs-D line, not two."""
    res = {"params": {"key_services": 0},
           "configs": {"D": {"runs": {"un": [_run(r, 5.0 + r, 0.01, 0.005, 0.002, 0.018) for r in range(3)]}},
                       "C-0": {"runs": {"un": [_run(r, 9.0 + r, 0.01, 0.005, 0.002, 0.030) for r in range(3)]}}}}
    text = "\n".join(path_report.headline(res))
    assert text.count("| C as deployed, default hook (N=0) |") == 1
    assert text.count("- node transit p50 C (N=0) vs D:") == 1


@pytest.mark.parametrize("value", ["1", '"no"', "null"])
def test_overload_setting_must_be_a_boolean(value, capsys):
    with pytest.raises(SystemExit) as e:
        path.main(["--quick", "--set", f"overload={value}"])
    assert e.value.code == 2
    assert "overload: true or false" in capsys.readouterr().err
