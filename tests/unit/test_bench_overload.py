"""bench/overload.py's arithmetic on recorded files, no network: sipp's stat and counts files
(recorded from real runs: a clean 200 calls/s step, and 20 calls answered 503 by a sipp UAS),
the goodput/achieved-rate arithmetic, Kamailio's socket in /proc/net/udp, the capacity search on
recorded probe results, the budget plan and the markdown table."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import overload  # noqa: E402  pylint: disable=wrong-import-position

FIX = Path(__file__).resolve().parent / "overload_fixtures"


def _rows(name):
    return overload.read_rows((FIX / name).read_text())


def _stat(created_at, final):
    """A synthetic -trace_stat text: one row per (elapsed seconds, TotalCallCreated); the last
    row carries the final counters."""
    head = ["StartTime", "CurrentTime", "TotalCallCreated", "SuccessfulCall(C)", "FailedCall(C)",
            "FailedTimeoutOnRecv(C)", "FailedMaxUDPRetrans(C)", "FailedUnexpectedMessage(C)", "Retransmissions(C)"]
    lines = [";".join(head) + ";"]
    start = 1796000000.0
    for i, (t, c) in enumerate(created_at):
        vals = {k: 0 for k in head[3:]}
        if i == len(created_at) - 1:
            vals.update(final)
        lines.append(";".join([f"2026-11-30\t04:00:00.000000\t{start:.6f}",
                               f"2026-11-30\t04:00:00.000000\t{start + t:.6f}", str(c)]
                              + [str(vals[k]) for k in head[3:]]) + ";")
    return "\n".join(lines) + "\n"


# -- sipp files ---------------------------------------------------------------------------------

def test_recorded_clean_step():
    """200 calls/s for 5 s through Kamailio: every call completed.  sipp created the last call
    just after the planned 5 s: the end is extrapolated inside the last 1 s stat interval, and
    the rates are per second of that achieved window."""
    rows = _rows("stat_200cps.csv")
    assert [overload._int(r, "TotalCallCreated") for r in rows] == [0, 199, 400, 601, 802, 1000, 1000, 1000]
    assert overload.elapsed(rows[1]) == pytest.approx(1.00657, abs=1e-4)
    t_end = 4.01776 + (1000 - 802) / ((802 - 601) / (4.01776 - 3.01411))
    assert overload.creation_seconds(rows) == pytest.approx(t_end, abs=1e-3)
    assert overload.creation_seconds(rows) < overload.elapsed(rows[5])      # not the row's 5.023 s
    counts = overload.read_rows((FIX / "counts_200cps.csv").read_text())[-1]
    assert overload.final_codes(counts) == {}
    s = overload.summarize(rows, counts, 200, 1000)
    assert (s["attempted"], s["completed"], s["failed"], s["unfinished"], s["responses_503"]) == (1000, 1000, 0, 0, 0)
    assert s["window_s"] == 5.0 and s["creation_s"] == pytest.approx(t_end, abs=1e-3)
    assert s["achieved_cps"] == s["goodput_cps"] == pytest.approx(1000 / t_end, abs=0.01)


def test_recorded_503s_are_failures_not_goodput():
    """sipp counts a call that took the scenario's 503 branch as successful; the harness counts
    it as a 503 and a failure."""
    rows = _rows("stat_503.csv")
    assert overload._int(rows[-1], "SuccessfulCall(C)") == 20
    counts = overload.read_rows((FIX / "counts_503.csv").read_text())[-1]
    assert overload.final_codes(counts) == {"503": 20}
    s = overload.summarize(rows, counts, 10, 20)
    assert (s["completed"], s["failed"], s["responses_503"], s["goodput_cps"]) == (0, 20, 20, 0.0)
    assert s["fail_causes"] == {"final 503": 20} and s["final_codes"] == {"503": 20}
    assert s["completed"] + s["failed"] + s["unfinished"] == s["attempted"] == 20


def test_final_codes_only_error_responses():
    counts = {"0_INVITE_Sent": "9", "1_100_Recv": "9", "1_100_Unexp": "3", "4_408_Recv": "2", "5_480_Recv": "0",
              "8_503_Recv": "4", "8_503_Retrans": "7", "9_200_Recv": "3", "14_200_Recv": "3", "CurrentTime": "x",
              "12_ACK_Sent": "6", "3_183_Recv": "1"}
    assert overload.final_codes(counts) == {"408": 2, "503": 4}


def test_epoch_and_bad_rows():
    assert overload.epoch("2026-11-30\t04:12:31.575970\t1796011951.575970") == pytest.approx(1796011951.57597)
    assert overload.epoch("garbage") is None
    assert overload.read_rows("only;a;header;\n") == []
    assert overload.creation_seconds([]) is None
    assert overload.summarize([], {}, 100, 500)["attempted"] == 0


# -- goodput arithmetic ---------------------------------------------------------------------------

def test_overloaded_step_goodput_timeouts_unfinished():
    """3000 planned at 300/s; sipp needed 12.5 s to create 2900 (achieved < offered): rates are per
    second of the achieved window; calls still alive at sipp's exit are unfinished."""
    text = _stat([(0.0, 0), (10.0, 2400), (11.0, 2640), (13.0, 2900), (18.0, 2900)],
                 {"SuccessfulCall(C)": 2000, "FailedCall(C)": 850, "FailedTimeoutOnRecv(C)": 700,
                  "FailedMaxUDPRetrans(C)": 100, "FailedUnexpectedMessage(C)": 50, "Retransmissions(C)": 4321})
    rows = overload.read_rows(text)
    counts = {"4_408_Recv": "5", "8_503_Recv": "25", "0_INVITE_Sent": "2900", "10_200_Recv": "2000"}
    s = overload.summarize(rows, counts, 300, 3000)
    # creation ends at 11 + (2900 - 2640) / 240 per s = 12.083 s, past the planned 10 s window
    assert s["creation_s"] == pytest.approx(12.083, abs=1e-3)
    assert s["completed"] == 1970
    assert s["failed"] == 880 and s["failed_timeout"] == 800
    assert s["unfinished"] == 2900 - 2000 - 850
    assert s["completed"] + s["failed"] + s["unfinished"] == s["attempted"]
    assert s["achieved_cps"] == pytest.approx(2900 / 12.083, abs=0.01)
    assert s["goodput_cps"] == pytest.approx(1970 / 12.083, abs=0.01)
    assert s["goodput_cps"] <= s["achieved_cps"] <= s["offered_cps"]
    assert s["retransmissions"] == 4321
    assert s["fail_causes"] == {"TimeoutOnRecv": 700, "MaxUDPRetrans": 100, "UnexpectedMessage": 50,
                                "final 408": 5, "final 503": 25}
    assert s["responses_503"] == 25 and s["final_codes"] == {"408": 5, "503": 25}


def test_goodput_never_exceeds_offered_when_sipp_is_early():
    """sipp created everything slightly before the planned window ended: the planned window is
    the divisor, so neither rate exceeds the offered one."""
    rows = overload.read_rows(_stat([(0.0, 0), (1.0, 100), (1.95, 200)], {"SuccessfulCall(C)": 200}))
    s = overload.summarize(rows, {}, 100, 200)
    assert s["achieved_cps"] == 100.0 and s["goodput_cps"] == 100.0


SIPP_ASSERT = ("Resolving remote host '198.18.42.1'... Done.\n"
               "sipp: ./src/call.cpp:2952: virtual bool call::process_incoming(const char*, const sockaddr_storage*): "
               "Assertion `!call_scenario->transactions[checkTxn - 1].isInvite' failed.\n")


def test_sipp_aborted():
    """The abort recorded from a real run (A at 4x: sipp's assertion on a second final response
    to an INVITE before its ACK), a crash by signal, and normal ends."""
    assert overload.sipp_aborted(134, SIPP_ASSERT, False).startswith("sipp: ./src/call.cpp:2952")
    assert overload.sipp_aborted(None, SIPP_ASSERT, True).endswith("isInvite' failed.")
    assert overload.sipp_aborted(139, "Resolving remote host\n", False) == "sipp exit status 139"
    assert overload.sipp_aborted(0, "Resolving remote host\n", False) is None
    assert overload.sipp_aborted(1, "Resolving remote host\n", False) is None
    # stopped at the harness's hard deadline: not an abort (its calls are "unfinished")
    assert overload.sipp_aborted(124, "", True) is None


def test_out_of_memory_counts_from_the_offset(tmp_path):
    log = tmp_path / "kamailio.log"
    head = b" 1(17034) ERROR: tm [t_lookup.c:1311]: new_t(): out of mem:\n"
    tail = (b" 4(17037) ERROR: tm [t_lookup.c:1311]: new_t(): out of mem:\n"
            b" 4(17037) ERROR: tm [t_lookup.c:1457]: t_newtran(): new_t failed\n"
            b" 2(17035) ERROR: tm [t_lookup.c:1311]: new_t(): out of mem:\n")
    log.write_bytes(head + tail)
    assert overload.out_of_memory(log) == 3
    assert overload.out_of_memory(log, len(head)) == 2
    assert overload.out_of_memory(tmp_path / "missing.log") == 0


# -- Kamailio's socket -----------------------------------------------------------------------------

PROC_NET_UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  151: 0A2912C6:13C4 00000000:0000 07 00000000:00034000 00:00000000 00000000     0        0 81273 2 000000009f5a6c1d 1742
  170: 0100007F:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 81290 2 00000000b2c7d1a8 0
"""


def test_proxy_socket_from_proc_net_udp():
    if sys.byteorder != "little":
        pytest.fail("the fixture is a little-endian host's /proc/net/udp")
    assert overload.proxy_socket(PROC_NET_UDP, "198.18.41.10", 5060) == {"rx_queue": 0x34000, "drops": 1742}
    assert overload.proxy_socket(PROC_NET_UDP, "127.0.0.1", 5353) == {"rx_queue": 0, "drops": 0}
    assert overload.proxy_socket(PROC_NET_UDP, "198.18.41.10", 5061) is None


# -- capacity search ---------------------------------------------------------------------------------

def _probe_rec(rate, completed=None, failed=0, unfinished=0, achieved=None, drops=0, seconds=6, retrans=0):
    planned = rate * seconds
    return {"offered_cps": rate, "planned": planned, "completed": planned if completed is None else completed,
            "failed": failed, "unfinished": unfinished, "achieved_cps": rate if achieved is None else achieved,
            "proxy_drops": drops, "retransmissions": retrans}


def test_capacity_ok_criteria():
    assert overload.capacity_ok(_probe_rec(400))
    assert not overload.capacity_ok(_probe_rec(400, completed=2399, failed=1))
    assert not overload.capacity_ok(_probe_rec(400, completed=2399, unfinished=1))
    assert not overload.capacity_ok(_probe_rec(400, achieved=359))
    assert overload.capacity_ok(_probe_rec(400, achieved=360))
    assert not overload.capacity_ok(_probe_rec(400, drops=1))
    assert not overload.capacity_ok(_probe_rec(400, drops=None))       # drops unread: not proven
    # callers retransmitting: a backlog the socket buffer hides; one per 1,000 calls tolerated
    assert overload.capacity_ok(_probe_rec(400, retrans=2))             # 2,400 calls
    assert not overload.capacity_ok(_probe_rec(400, retrans=3))
    assert not overload.capacity_ok(_probe_rec(400, retrans=None))


def _replay(recorded):
    """probe() replaying recorded results by rate; records the rates asked for."""
    asked = []

    def probe(rate):
        asked.append(rate)
        rec = dict(recorded[rate])
        rec["ok"] = overload.capacity_ok(rec)
        return rec
    return probe, asked


def test_capacity_search_doubles_then_bisects():
    recorded = {200: _probe_rec(200), 400: _probe_rec(400), 800: _probe_rec(800),
                1600: _probe_rec(1600, completed=7000, failed=2600, achieved=1500, drops=900),
                1200: _probe_rec(1200, completed=7199, failed=1), 1000: _probe_rec(1000)}
    probe, asked = _replay(recorded)
    cap, steps = overload.capacity_search(probe, 200, 6400, 2)
    assert asked == [200, 400, 800, 1600, 1200, 1000]
    assert cap == 1000 and [s["ok"] for s in steps] == [True, True, True, False, False, True]


def test_capacity_search_bounds():
    # everything passes: stops at cap_max, never beyond
    probe, asked = _replay({r: _probe_rec(r) for r in (200, 400, 800, 1000)})
    assert overload.capacity_search(probe, 200, 1000, 2)[0] == 1000 and asked == [200, 400, 800, 1000]
    # the start already fails: bisect down from 0, not below the floor
    rec = {200: _probe_rec(200, failed=3, completed=1197), 100: _probe_rec(100, drops=2), 50: _probe_rec(50),
           75: _probe_rec(75, achieved=60)}
    probe, asked = _replay(rec)
    expect = [dict(rec[r], ok=r == 50) for r in (200, 100, 50, 75)]
    assert overload.capacity_search(probe, 200, 6400, 3, floor=30) == (50, expect)
    assert asked == [200, 100, 50, 75]
    probe, asked = _replay({200: _probe_rec(200, drops=1), 100: _probe_rec(100, drops=1)})
    assert overload.capacity_search(probe, 200, 6400, 3, floor=60)[0] is None and asked == [200, 100]

    # out of budget (probe returns None): the best so far
    def probe_budget(rate):
        return None if rate > 400 else dict(_probe_rec(rate), ok=True)
    assert overload.capacity_search(probe_budget, 200, 6400, 2) == (400, [dict(_probe_rec(r), ok=True)
                                                                          for r in (200, 400)])


# -- plan -------------------------------------------------------------------------------------------

def test_plan_drops_the_highest_multiples_for_every_config():
    p = dict(overload.PROFILES["full"])
    kinds = ["direct", "iptables-nft", "etsf-fastpath"]
    full, need = overload.plan(p, kinds, 10_000)
    assert full == [0.5, 1, 1.5, 2, 3, 4]
    step = {m: overload.step_cost(p, m) for m in full}
    setup = overload.setup_cost("iptables-nft", 10000) + overload.setup_cost("etsf-fastpath", 10000)
    assert setup == pytest.approx(30 + 35)
    assert need == pytest.approx(setup + 3 * sum(step.values()))
    cut, need = overload.plan(p, kinds, setup + 3 * sum(step[m] for m in (0.5, 1, 1.5, 2)) + 1)
    assert cut == [0.5, 1, 1.5, 2] and need <= setup + 3 * sum(step.values())
    assert overload.plan(p, kinds, 10)[0] == []
    # above capacity a step's drain is longer, and longer still in the worst case
    assert overload.step_cost(p, 0.5) < overload.step_cost(p, 2) < overload.step_cost(p, 2, worst=True)


# -- rendering --------------------------------------------------------------------------------------

def _result():
    def st(m, offered, achieved, goodput, att, comp, failed, tmo, codes, retr, p50, p99, drops):
        return {"multiple": m, "offered_cps": offered, "achieved_cps": achieved, "goodput_cps": goodput,
                "attempted": att, "completed": comp, "failed": failed, "failed_timeout": tmo,
                "responses_503": codes.get("503", 0), "final_codes": codes, "retransmissions": retr, "invite_200_ms": {"n": comp, "p50": p50, "p99": p99},
                "proxy_drops": drops}
    return {"capacity": {"cps": 800, "from": "measured on D-direct, 6 s probes",
                         "probes": [{"offered_cps": 800, "ok": True}, {"offered_cps": 1600, "ok": False}]},
            "params": {"step_s": 30, "transport": "un", "recv_timeout_s": 4, "max_retrans": 5},
            "host": {"pinning": {"kamailio": "cpu1"}},
            "configs": [{"name": "D-direct", "steps": [st(0.5, 400, 399.8, 399.8, 12000, 12000, 0, 0, {}, 0, 1, 3, 0),
                                                       st(4, 3200, 2511.2, 602.4, 80000, 18072, 60000, 59000, {"408": 988, "503": 12}, 91234,
                                                          850, 3900, 41234)]},
                        {"name": "C-etsf-fastpath", "steps": [], "error": "RuntimeError: kamailio exited"}],
            "skipped": [{"config": "C-etsf-fastpath", "multiple": 4, "why": "time budget"}]}


def test_table_rows_and_columns():
    md = overload.table_md(_result())
    lines = md.splitlines()
    assert lines[0].count("|") == lines[1].count("|") == 15
    assert "| D-direct | 0.5× | 400 | 400 | 400 | 0.50 | 12000 | 12000 | 0 (0) | 0 | 0 | 0 | 1 / 3 | 0 |" in lines
    assert ("| D-direct | 4× | 3200 | 2511 | 602 | 0.75 | 80000 | 18072 | 60000 (59000) | 12 | 408: 988, 503: 12 | 91234 "
            "| 850 / 3900 | 41234 |") in lines
    assert lines[-1].startswith("| C-etsf-fastpath | error: RuntimeError: kamailio exited |")
    assert all(ln.count("|") == 15 for ln in lines)


def test_aborted_step_is_flagged_and_left_out_of_the_curve():
    res = _result()
    d = res["configs"][0]
    d["steps"][1]["sipp_aborted"] = "sipp: ./src/call.cpp:2952: ... Assertion ... failed."
    assert "| D-direct | 4× (sipp aborted) | 3200 |" in overload.table_md(res)
    text = overload.report_md(res)
    assert "(sipp aborted): the load generator died during the step (D-direct 4×;" in text
    # the observations only use complete steps: the peak is the 0.5x one
    assert "* D-direct: peak goodput 400/s at 0.5×; at 0.5×: 0.50× capacity" in text


def test_report_section():
    res = _result()
    text = overload.report_md(res)
    assert "* D-direct: peak goodput 602/s at 4×; at 4×: 0.75× capacity, INVITE→200 p99 3900 ms (0.5×: 3 ms)" in text
    res["configs"][0]["steps"][1]["proxy_out_of_memory"] = 5123
    assert ("at 4×: 0.75× capacity, INVITE→200 p99 3900 ms (0.5×: 3 ms); Kamailio out of shared memory for new "
            "transactions from 4× on (5123 INVITE requests refused, retransmissions included)") in overload.report_md(res)
    assert text.startswith("## Overload sweep")
    assert "**800 calls/s**" in text and "800/s ok, 1600/s FAIL" in text
    assert "![goodput vs offered load](overload_goodput.png)" in text
    assert "Skipped: C-etsf-fastpath 4× (time budget)." in text
    res["capacity"] = {"cps": None, "why": "no probe passed"}
    assert "not found (no probe passed)" in overload.report_md(res, None)


def test_plot_writes_png(tmp_path):
    assert overload.plot(_result(), tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_profile_entries_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown profile entry 'step'"):
        overload.run(tmp_path, 60, True, step=3)
    with pytest.raises(ValueError, match="configs must be letters of D, A, C, F, K"):
        overload.run(tmp_path, 60, True, configs=["X"])
    with pytest.raises(ValueError, match=r"multiples must be in \(0, 10\]"):
        overload.run(tmp_path, 60, True, multiples=[0])
    assert not list(tmp_path.iterdir())


# -- admission and the controller ---------------------------------------------------------------------

def test_config_letters_and_admission():
    assert overload.config("K", 10000) == {"letter": "K", "name": "K-etsf-controller", "kind": "etsf-fastpath",
                                           "services": 10000, "admission": "auto", "steps": []}
    assert overload.config("F", 0)["admission"] == "fixed" and overload.config("A", 5)["name"] == "A-ipt-nft-5"
    assert overload.config("D", 10000)["services"] == 0 and overload.config("D", 1)["admission"] is None
    assert overload.setup_cost("direct", 10000) == 12.0 and overload.setup_cost("etsf-fastpath", 0) == 12.0


def test_fixed_admission_is_the_capacity_with_a_short_bucket():
    p = overload.PROFILES["full"]
    assert overload.fixed_admission(800, p) == {"rate": 800, "burst": 80, "retry_after": 5}
    assert overload.fixed_admission(5, p) == {"rate": 5, "burst": 1, "retry_after": 5}


def test_auto_policy_section_parses_with_the_defaults():
    from etsf.policy.schema import AUTO, load_text
    base = "version: 1\nsip_ports: [5060]\n"
    pol = load_text(base + overload.auto_policy(overload.PROFILES["full"]))
    assert pol.overload_auto == dict(AUTO.default_value(), enabled=True, proxy_ports=[5060])
    pol = load_text(base + overload.auto_policy(dict(overload.PROFILES["full"], auto={"max_rate": 900})))
    assert pol.overload_auto["max_rate"] == 900 and pol.overload_auto["enabled"] is True


def _adm(**kw):
    return dict(dict.fromkeys(overload.ADMIT_FIELDS, 0), **kw)


def test_admission_delta_totals_and_receive_cpus():
    a = [_adm(admitted=10, rejected=2), _adm(admitted=1)]
    b = [_adm(admitted=510, rejected=1502, replied=1520, retrans_rejected=18), _adm(admitted=1)]
    d = overload.admission_delta(a, b)
    assert (d["admitted"], d["rejected"], d["replied"], d["retrans_rejected"]) == (500, 1500, 1520, 18)
    assert d["cpus"] == {"0": 2000}
    assert overload.admission_delta(None, b) is None and overload.admission_delta(a, b[:1]) is None


# samples of a controller over a step: [t, level, rate, pressure, signal]
SAMPLES = [[0.0, 0, 0, 0.0, "queue"], [0.5, 1, 2000, 5.4, "queue"], [1.0, 1, 1500, 6.0, "queue"],
           [1.5, 1, 1500, 6.0, "queue"], [2.0, 2, 1125, 9.1, "pdd_ms"], [2.5, 2, 844, 0.3, "queue"],
           [3.0, 1, 900, 0.1, "queue"], [3.5, 0, 0, 0.0, "queue"]]


def test_controller_summary():
    s = overload.controller_summary(SAMPLES, 3.0)
    assert s == {"samples": 8, "engaged_after_s": 0.5, "level_max": 2, "level_end": 0, "on_share": 0.857,
                 "rate_min": 844, "rate_median": 1500, "rate_end": 0, "changes_seen": 6,
                 "signals": {"queue": 5, "pdd_ms": 1}}
    assert overload.controller_summary([], 3.0) is None
    idle = overload.controller_summary([[0.0, 0, 0, 0.0, None], [0.5, 0, 0, 0.0, None]], 3.0)
    assert idle["engaged_after_s"] is None and idle["rate_min"] is None and idle["on_share"] == 0.0


def _sweep_result(k3, k05_p99=4.0, k3_p99=6.0, d3=300.0, a3=350.0):
    def st(m, g, p99=4.0):
        return {"multiple": m, "goodput_cps": g, "invite_200_ms": {"n": 10, "p50": 1, "p99": p99}}
    return {"capacity": {"cps": 800},
            "configs": [{"name": "D-direct", "kind": "direct", "admission": None, "steps": [st(0.5, 400), st(3, d3)]},
                        {"name": "A-ipt-nft-10000", "kind": "iptables-nft", "admission": None,
                         "steps": [st(0.5, 400), st(3, a3)]},
                        {"name": "C-etsf-fastpath", "kind": "etsf-fastpath", "admission": None, "steps": []},
                        {"name": "K-etsf-controller", "kind": "etsf-fastpath", "admission": "auto",
                         "steps": [st(0.5, 400, k05_p99), st(3, k3, k3_p99)]}]}


def test_targets_pass_and_fail_with_numbers():
    rows = overload.targets(_sweep_result(760.0))
    assert [(r["target"], r["value"], r["bound"], r["ok"]) for r in rows] == [
        ("goodput at 3x >= 0.9 x capacity", 760.0, 720.0, True),
        ("goodput at 3x >= 2 x D-direct's", 760.0, 600.0, True),
        ("goodput at 3x >= 2 x A-ipt-nft-10000's", 760.0, 700.0, True),
        ("INVITE->200 p99 at 3x <= 2 x p99 at 0.5x", 6.0, 8.0, True)]
    assert all(r["config"] == "K-etsf-controller" for r in rows)
    rows = overload.targets(_sweep_result(710.0, k05_p99=0.0, k3_p99=3.0, a3=400.0))
    assert [r["ok"] for r in rows] == [False, True, False, False]
    assert rows[-1]["bound"] == 2.0                 # p99 0 at 0.5x, readings in 1 ms steps: bound 2 ms
    md = overload.targets_md(_sweep_result(710.0))
    assert "| K-etsf-controller | goodput at 3x >= 0.9 x capacity | 710.0 | 720.0 | **no** |" in md
    res = _sweep_result(760.0)
    res["configs"][3]["steps"][1]["sipp_aborted"] = "sipp: assertion"
    assert overload.targets(res)[0]["ok"] is None   # an aborted step is no point: not judged
    assert overload.targets_md({"configs": [{"name": "D-direct", "kind": "direct", "steps": []}]}) == ""


def test_admission_table():
    res = _result()
    admission = {"admitted": 7313, "rejected": 19363, "retrans_admitted": 4744, "retrans_rejected": 0,
                 "replied": 19363, "reply_unfit": 0, "cpus": {"0": 26670, "1": 6}}
    res["configs"][1]["steps"] = [{"multiple": 3, "admission": admission,
                                   "controller": overload.controller_summary(SAMPLES, 3.0),
                                   "loadavg": {"before": 7.11, "after": 9.13},
                                   "cpu_acct": {"adds_up": False, "residual_ratio": 0.168}}]
    md = overload.admission_table_md(res)
    lines = md.splitlines()
    assert all(ln.count("|") == 12 for ln in lines)
    assert ("| C-etsf-fastpath | 3× | 7313 | 19363 | 4744 / 0 | 19363 | 0 | 0, 1 | 0.5, 2, 844 / 1500 / 0 "
            "| 7.11 → 9.13 | no (16.8 % residual) |") in lines
    assert "| D-direct | 0.5× | – | – | – / – | – | – | – | – | – → – | – |" in lines


def test_merge_exited_keeps_the_last_sample_of_tasks_gone_before_the_window_closed():
    b = {"tasks": {10: (10, "kamailio", 5_000, 0, 0, False)}}
    seen = {10: (10, "kamailio", 4_000, 0, 0, False), 11: (11, "cc1", 700, 1, 0, False),
            12: (12, "sipp", 300, 0, 0, False)}
    assert overload.merge_exited(b, seen, {12}) == 700
    assert b["tasks"][10][2] == 5_000 and b["tasks"][11][1] == "cc1" and 12 not in b["tasks"]


def test_loadavg():
    assert overload.loadavg("7.11 6.27 3.94 10/190 20861\n") == 7.11
    assert overload.loadavg("") is None


def test_first_configuration_has_no_admission(tmp_path):
    with pytest.raises(ValueError, match="the first configuration measures the capacity"):
        overload.run(tmp_path, 60, True, configs=["F", "D"])
    assert not list(tmp_path.iterdir())


# -- placement: the proxy's CPU quota and its socket buffer ----------------------------------------

def test_quota_lines_for_both_cgroup_versions():
    assert overload.quota_lines("v1", 20) == {"cpu.cfs_period_us": "10000", "cpu.cfs_quota_us": "2000"}
    assert overload.quota_lines("v2", 25) == {"cpu.max": "2500 10000"}
    # the kernel's minimum quota is 1 ms: a longer period, not a larger share
    assert overload.quota_lines("v1", 1) == {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "1000"}


def test_cpu_cgroup_picks_the_hierarchy_with_a_cpu_controller(tmp_path):
    assert overload.cpu_cgroup("x", str(tmp_path)) is None
    (tmp_path / "cgroup.subtree_control").write_text("memory pids\n")
    assert overload.cpu_cgroup("x", str(tmp_path)) is None
    (tmp_path / "cgroup.subtree_control").write_text("cpuset cpu memory\n")
    assert overload.cpu_cgroup("x", str(tmp_path)) == ("v2", tmp_path / "x")
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert overload.cpu_cgroup("x", str(tmp_path)) == ("v1", tmp_path / "cpu" / "x")


SS_UAMN = """State  Recv-Q Send-Q   Local Address:Port  Peer Address:PortProcess
UNCONN 0      0        198.18.2.2:15060       0.0.0.0:*
\t skmem:(r0,rb212992,t0,tb212992,f0,w0,o0,bl0,d0)
UNCONN 2304   0        198.18.2.2:5060        0.0.0.0:*
\t skmem:(r2304,rb524288,t0,tb212992,f1792,w0,o0,bl0,d7)
"""


def test_rcvbuf_of_the_proxy_socket_from_ss():
    assert overload.rcvbuf(SS_UAMN, 5060) == 524288
    assert overload.rcvbuf(SS_UAMN, 15060) == 212992
    assert overload.rcvbuf(SS_UAMN, 5070) is None
    assert overload.rcvbuf("UNCONN 0 0 198.18.2.2:5060 0.0.0.0:*\n", 5060) is None


def test_fixed_admission_shares_expand_f_only():
    p = dict(overload.PROFILES["full"])
    cfgs = overload.expand_fixed([overload.config(x, 0) for x in ("D", "F", "K")], [0.8, 1.0])
    assert [c["name"] for c in cfgs] == ["D-direct", "F-etsf-fixed-admit-0.8", "F-etsf-fixed-admit",
                                         "K-etsf-controller"]
    assert cfgs[1]["steps"] is not cfgs[2]["steps"]
    assert overload.fixed_admission(300, p, cfgs[1]["fixed_share"]) == {"rate": 240, "burst": 24, "retry_after": 5}


def test_proxy_work_renders_into_the_kamailio_template():
    import run  # noqa: E402  pylint: disable=import-outside-toplevel
    tpl = (Path(run.__file__).parent / "templates" / "kamailio.cfg.in").read_text()
    assert tpl.count("@WORK@") == 1 and "max_while_loops=@WORKLOOPS@" in tpl
    assert run.proxy_work(0) == ""                                  # the proxy as before: no extra lines
    lines = run.proxy_work(1500).splitlines()
    assert lines[0].strip() == 'if (is_method("INVITE") && !has_totag()) {'   # new calls only
    assert "while ($var(i) < 1500) {" in lines[2]


# -- interleaving: the schedule, its budget, the run loop, the switch of admission ------------------

def test_interleave_orders_alternate_and_repeat():
    once = overload.interleave_orders(["F", "K"], [0.5, 1, 3])
    assert [(r["round"], r["multiple"], r["repeat"], r["order"]) for r in once] == [
        (0, 0.5, 0, ["F", "K"]), (1, 1, 0, ["K", "F"]), (2, 3, 0, ["F", "K"])]
    twice = overload.interleave_orders(["F", "K"], [0.5, 3], repeats=2)
    assert [(r["round"], r["multiple"], r["repeat"], r["order"]) for r in twice] == [
        (0, 0.5, 0, ["F", "K"]), (1, 0.5, 1, ["K", "F"]), (2, 3, 0, ["F", "K"]), (3, 3, 1, ["K", "F"])]
    # more than two: reversed round to round, so each is first as often as last per two rounds
    three = overload.interleave_orders(["F-0.8", "F", "K"], [3], repeats=4)
    assert [r["order"] for r in three] == [["F-0.8", "F", "K"], ["K", "F", "F-0.8"]] * 2
    for name in ("F-0.8", "F", "K"):
        assert sum(r["order"][0] == name for r in three) == sum(r["order"][-1] == name for r in three)
    assert overload.interleave_orders(["F", "K"], []) == []
    # the caller's list is not aliased into the rounds
    names = ["F", "K"]
    rounds = overload.interleave_orders(names, [1])
    rounds[0]["order"].append("X")
    assert names == ["F", "K"]


def test_split_interleaved_keeps_the_first_and_other_topologies_alone():
    cfgs = overload.expand_fixed([overload.config(x, 10000) for x in ("D", "A", "C", "F", "K")], [0.8, 1.0])
    alone, group = overload.split_interleaved(cfgs)
    assert [c["letter"] for c in alone] == ["D", "A"]
    assert [c["name"] for c in group] == ["C-etsf-fastpath", "F-etsf-fixed-admit-0.8", "F-etsf-fixed-admit",
                                          "K-etsf-controller"]
    # the first measures the capacity on its own topology, even when it is an eTSF one
    alone, group = overload.split_interleaved([overload.config(x, 0) for x in ("C", "F", "K")])
    assert [c["letter"] for c in alone] == ["C"] and [c["letter"] for c in group] == ["F", "K"]


def test_plan_counts_the_interleaved_steps_and_one_shared_setup():
    p = dict(overload.PROFILES["full"])
    mults = [0.5, 1, 1.5, 2, 3, 4]
    step = {m: overload.step_cost(p, m) for m in mults}
    etsf = overload.setup_cost("etsf-fastpath", 10000)
    full, need = overload.plan(p, ["direct"], 10_000, group=2, repeats=3)
    assert full == mults
    assert need == pytest.approx(etsf + sum(step.values()) + 2 * 3 * sum(step[m] + overload.SWITCH_S for m in mults))
    # against F and K on their own topologies: one setup less, a switch per step more
    _m, alone = overload.plan(p, ["direct", "etsf-fastpath", "etsf-fastpath"], 10_000)
    _m, inter = overload.plan(p, ["direct"], 10_000, group=2)
    assert inter == pytest.approx(alone - etsf + 2 * len(mults) * overload.SWITCH_S)
    # repeats multiply the interleaved steps only
    _m, twice = overload.plan(p, ["direct"], 10_000, group=2, repeats=2)
    assert twice - inter == pytest.approx(2 * sum(step[m] + overload.SWITCH_S for m in mults))
    # a budget cut drops the highest multiples for every configuration alike
    low = [0.5, 1, 1.5, 2]
    fits = etsf + sum(step[m] for m in low) + 2 * 3 * sum(step[m] + overload.SWITCH_S for m in low)
    assert overload.plan(p, ["direct"], fits + 1, group=2, repeats=3)[0] == low
    assert overload.plan(p, ["direct"], fits - 1, group=2, repeats=3)[0] == [0.5, 1, 1.5]
    assert overload.plan(p, ["direct"], 10, group=2)[0] == []
    # a round is checked whole, at its worst
    assert overload.round_cost(p, 3, 2) == pytest.approx(2 * (overload.step_cost(p, 3, worst=True)
                                                              + overload.SWITCH_S))


class _FakeBench:
    """The harness's Bench as far as the interleaved loop and the switch of admission use it:
    etsf_ctl is a dict, etsfctl calls change it and are recorded."""

    def __init__(self, state_dir):
        self.env = {"ETSF_STATE_DIR": str(state_dir)}
        self.topo = None
        self.policy_extra = None
        self.calls, self.setups, self.teardowns = [], [], []
        self.ctl = {"level": 0, "admit_rate": 0, "admit_burst": 0, "oc": False}

    def etsfctl(self, *args):
        self.calls.append(args)
        if args[:2] == ("overload", "set"):
            self.ctl["level"] = int(args[2])
        elif args[:3] == ("overload", "admit", "--off"):
            self.ctl.update(admit_rate=0, admit_burst=0)
        elif args[:3] == ("overload", "admit", "--rate"):
            self.ctl.update(admit_rate=int(args[3]), admit_burst=int(args[5]))

    def setup_config(self, cfg):
        self.setups.append(cfg["name"])
        cfg["_dir"] = Path("/nonexistent")

    def teardown_config(self, cfg):
        self.teardowns.append(cfg["name"])


def _sweep(tmp_path, left, **prof):
    sw = overload.Sweep.__new__(overload.Sweep)
    sw.p = dict(overload.PROFILES["full"], **prof)
    sw.b = _FakeBench(tmp_path)
    sw.ctl = None
    sw.res = {"capacity": {"cps": 400}, "configs": [], "skipped": [], "pids": []}
    sw.left = lambda: left[0]
    sw.read_ctl = lambda: dict(sw.b.ctl)
    for name in ("wait_proxy", "limit_proxy", "steer_receive", "socket_buffers", "uac_xdp", "unlimit_proxy"):
        setattr(sw, name, lambda *a, **k: None)
    return sw


def test_interleaved_loop_records_rounds_into_each_configuration(tmp_path):
    left = [10_000.0]
    sw = _sweep(tmp_path, left, repeats=2)
    cfgs = overload.expand_fixed([overload.config(x, 0) for x in ("D", "F", "K")], [1.0])
    _alone, group = overload.split_interleaved(cfgs)
    sw.mults = [0.5, 3]
    sw.res["interleaved"] = {"configs": [c["name"] for c in group], "repeats": 2, "rounds": []}
    ran = []

    def step(cfg, cap, m):
        ran.append((cfg["letter"], m))
        left[0] -= 100
        return {"multiple": m, "goodput_cps": 1.0}
    sw.interleaved_step = step
    sw.run_interleaved(group)
    # one topology for both, K's policy section on it, torn down once
    assert sw.b.setups == ["etsf-interleaved"] == sw.b.teardowns
    assert sw.b.policy_extra == overload.auto_policy(sw.p)
    assert ran == [("F", 0.5), ("K", 0.5), ("K", 0.5), ("F", 0.5), ("F", 3), ("K", 3), ("K", 3), ("F", 3)]
    f, k = group
    assert [(s["multiple"], s["round"], s["repeat"], s["position"]) for s in f["steps"]] == [
        (0.5, 0, 0, 0), (0.5, 1, 1, 1), (3, 2, 0, 0), (3, 3, 1, 1)]
    assert [(s["round"], s["position"]) for s in k["steps"]] == [(0, 1), (1, 0), (2, 1), (3, 0)]
    assert k["steps"][1]["order"] == ["K-etsf-controller", "F-etsf-fixed-admit"]
    assert sw.res["configs"] == group and sw.res["skipped"] == []
    assert not any("_dir" in c or "error" in c for c in group) and f["interleaved"] == "etsf-interleaved"
    assert [r["order"][0] for r in sw.res["interleaved"]["rounds"]] == [f["name"], k["name"]] * 2


def test_interleaved_loop_skips_whole_rounds_out_of_budget(tmp_path):
    p = overload.PROFILES["full"]
    # enough for the round at 0.5x and half of the one at 3x: that round is not started
    left = [overload.round_cost(p, 0.5, 2) + overload.round_cost(p, 3, 2) / 2 + 1]
    sw = _sweep(tmp_path, left)
    group = [overload.config("F", 0), overload.config("K", 0)]
    sw.mults = [0.5, 3]
    sw.res["interleaved"] = {"configs": [c["name"] for c in group], "repeats": 1, "rounds": []}

    def step(cfg, cap, m):
        left[0] -= overload.round_cost(p, m, 1)
        return {"multiple": m}
    sw.interleaved_step = step
    sw.run_interleaved(group)
    assert [len(c["steps"]) for c in group] == [1, 1]
    assert sw.res["skipped"] == [{"config": "K-etsf-controller", "multiple": 3, "round": 1, "why": "time budget"},
                                 {"config": "F-etsf-fixed-admit", "multiple": 3, "round": 1, "why": "time budget"}]
    # an error stops the run and is recorded on every configuration of it, the topology torn down
    left[0] = 10_000.0
    sw = _sweep(tmp_path, left)
    group = [overload.config("F", 0), overload.config("K", 0)]
    sw.mults = [0.5]
    sw.res["interleaved"] = {"configs": [c["name"] for c in group], "repeats": 1, "rounds": []}

    def broken(cfg, cap, m):
        if cfg["letter"] == "K":
            raise RuntimeError("kamailio exited")
        return {"multiple": m}
    sw.interleaved_step = broken
    sw.run_interleaved(group)
    assert group[1]["error"] == "RuntimeError: kamailio exited"
    assert group[0]["error"] == "stopped with K-etsf-controller: RuntimeError: kamailio exited"
    assert len(group[0]["steps"]) == 1 and sw.b.teardowns == ["etsf-interleaved"]


def test_switch_admission_resets_etsf_ctl_and_the_controller_state(tmp_path):
    sw = _sweep(tmp_path, [10_000.0])
    started = []

    def admission(cfg, cap):
        if cfg["admission"] == "fixed":
            fx = overload.fixed_admission(cap, sw.p, cfg.get("fixed_share", 1.0))
            sw.b.etsfctl("overload", "admit", "--rate", str(fx["rate"]), "--burst", str(fx["burst"]),
                         "--retry-after", str(fx["retry_after"]))
            cfg["fixed_admission"] = fx
        elif cfg["admission"] == "auto":
            started.append(sw.state_file().exists())
            sw.b.ctl["admit_rate"] = 0           # a fresh controller's first tick at rest
    sw.admission = admission
    sw.state_file = lambda: tmp_path / "overload.json"
    f, k = overload.config("F", 0), overload.config("K", 0)
    # after a K step: its level and rate are still in etsf_ctl, its state file is there
    sw.b.ctl.update(level=1, admit_rate=300, admit_burst=30)
    (tmp_path / "overload.json").write_text('{"level": 1, "admit_rate": 300, "changes_total": 9}')
    got = sw.switch_admission(f, 400)
    assert sw.b.calls == [("overload", "admit", "--off"), ("overload", "set", "0"),
                          ("overload", "admit", "--rate", "400", "--burst", "40", "--retry-after", "5")]
    assert got["before_reset"]["level"] == 1 and got["at_start"] == {"level": 0, "admit_rate": 400,
                                                                     "admit_burst": 40, "oc": False}
    assert not (tmp_path / "overload.json").exists()
    # after an F step: K's controller starts from level 0, admission off, no state file
    sw.b.calls.clear()
    (tmp_path / "overload.json").write_text('{"pinned": true}')
    got = sw.switch_admission(k, 400)
    assert sw.b.calls == [("overload", "admit", "--off")] and started == [False]
    assert got["at_start"]["admit_rate"] == 0 and got["at_start"]["level"] == 0
    # nothing to reset: no etsfctl call before the fixed rate
    sw.b.calls.clear()
    sw.switch_admission(f, 400)
    assert [c[:3] for c in sw.b.calls] == [("overload", "admit", "--rate")]
    # a reset that did not take is an error, not a step run from the wrong state
    sw.b.etsfctl = lambda *a: None
    sw.b.ctl.update(level=2)
    with pytest.raises(RuntimeError, match="etsf_ctl not reset before K-etsf-controller"):
        sw.switch_admission(k, 400)


# -- the paired summary ------------------------------------------------------------------------------

def _paired_result(cap=400):
    def st(m, g, rnd, pos, t, aborted=None):
        return {"multiple": m, "goodput_cps": g, "round": rnd, "position": pos, "started_unix": t,
                "sipp_aborted": aborted, "invite_200_ms": {"n": 1, "p50": 1, "p99": 4}, "offered_cps": 400 * m,
                "achieved_cps": 400 * m, "attempted": 10, "completed": 9, "failed": 1, "failed_timeout": 0,
                "responses_503": 1, "final_codes": {"503": 1}, "retransmissions": 0, "proxy_drops": 0}
    f = {"name": "F-etsf-fixed-admit", "letter": "F", "kind": "etsf-fastpath", "admission": "fixed",
         "steps": [st(0.5, 200, 0, 0, 1000.0), st(3, 390, 2, 0, 1100.0), st(3, 380, 3, 1, 1160.5),
                   st(3, 400, 4, 0, 1200.0)]}
    k = {"name": "K-etsf-controller", "letter": "K", "kind": "etsf-fastpath", "admission": "auto",
         "steps": [st(0.5, 198, 0, 1, 1030.0), st(3, 370, 2, 1, 1130.0), st(3, 380, 3, 0, 1130.2),
                   st(3, 300, 4, 1, 1230.0, aborted="sipp: assertion")]}
    d = {"name": "D-direct", "kind": "direct", "admission": None, "steps": [st(3, 150, 0, 0, 900.0)]}
    for s in d["steps"]:
        del s["round"]
    return {"capacity": {"cps": cap}, "configs": [d, f, k], "skipped": [],
            "interleaved": {"configs": [f["name"], k["name"]], "repeats": 3, "rounds": []}}


def test_paired_ratios_per_round_and_counts():
    rows = overload.paired(_paired_result())
    assert [(r["k"], r["f"], r["multiple"], r["n"]) for r in rows] == [
        ("K-etsf-controller", "F-etsf-fixed-admit", 0.5, 1), ("K-etsf-controller", "F-etsf-fixed-admit", 3, 2)]
    three = rows[1]
    assert [(x["round"], x["k_goodput"], x["f_goodput"], x["ratio"], x["k_first"], x["gap_s"], x["aborted"])
            for x in three["pairs"]] == [(2, 370, 390, 0.949, False, 30.0, False),
                                         (3, 380, 380, 1.0, True, 30.3, False),
                                         (4, 300, 400, 0.75, False, 30.0, True)]
    # the aborted pair is listed, not counted: median of 0.949 and 1.0; K >= 360 in both;
    # K >= 0.95 x F: 370 < 370.5 no, 380 >= 361 yes
    assert three["ratio_median"] == pytest.approx(0.974, abs=1e-3)
    assert (three["k_at_capacity"], three["k_near_f"]) == (2, 1)
    assert rows[0]["k_at_capacity"] == 0 and rows[0]["k_near_f"] == 1      # 198 >= 190, < 360
    # no capacity: that count is not made; no interleaved steps: no pairs
    assert overload.paired(_paired_result(cap=None))[1]["k_at_capacity"] is None
    res = _paired_result()
    for c in res["configs"]:
        for s in c["steps"]:
            s.pop("round", None)
    assert overload.paired(res) == [] and overload.paired_md(res) == ""


def test_paired_section_in_the_report():
    res = _paired_result()
    md = overload.paired_md(res)
    lines = md.splitlines()
    assert all(ln.count("|") == 8 for ln in lines)
    assert lines[-1] == ("| K-etsf-controller vs F-etsf-fixed-admit | 3× | 2 | 370 / 390 = 0.95 (F first, 30 s); "
                         "380 / 380 = 1.00 (K first, 30 s); 300 / 400 = 0.75 (F first, 30 s) aborted, not counted "
                         "| 0.97 | 2/2 | 1/2 |")
    text = overload.report_md(res, None)
    assert "**Interleaved** (F-etsf-fixed-admit, K-etsf-controller): one eTSF topology" in text
    assert "**Paired steps**" in text and lines[-1] in text
    assert "repeated steps: the first at each multiple" in text
    assert "| F-etsf-fixed-admit | 3× (round 2) |" in overload.table_md(res)
    del res["interleaved"]
    assert "**Paired steps**" not in overload.report_md(res, None)


def test_interleave_profile_entries_and_flags(tmp_path):
    assert overload.PROFILES["full"]["interleave"] is False and overload.PROFILES["quick"]["repeats"] == 1
    with pytest.raises(ValueError, match=r"repeats must be an integer in 1\.\.10"):
        overload.run(tmp_path, 60, True, interleave=True, repeats=0)
    with pytest.raises(SystemExit):
        overload.main(["--repeats", "2"])
    assert not list(tmp_path.iterdir())


def test_p99_bound_is_one_step_of_sipps_clock():
    """Readings that are all multiples of 4 ms: a p99 of 0 at 0.5x means "under 4 ms", so the
    bound is 8 ms, not 2; one reading off the step brings the step down with it."""
    res = _sweep_result(760.0, k05_p99=0.0, k3_p99=8.0)
    for c in res["configs"]:
        for st in c["steps"]:
            st["invite_200_ms"]["p50"] = 0.0
            st["invite_200_ms"]["p99"] = st["invite_200_ms"]["p99"] or 0.0
    assert overload.rtd_quantum_ms(res) == 4.0
    row = overload.targets(res)[-1]
    assert (row["value"], row["bound"], row["ok"]) == (8.0, 8.0, True)
    res["configs"][3]["steps"][1]["invite_200_ms"]["p99"] = 12.0
    assert overload.targets(res)[-1]["ok"] is False
    res["configs"][0]["steps"][1]["invite_200_ms"]["p99"] = 6.0
    assert overload.rtd_quantum_ms(res) == 2.0 and overload.targets(res)[-1]["bound"] == 4.0
    assert overload.rtd_quantum_ms({"configs": [{"steps": [{"invite_200_ms": {"p50": 0.0, "p99": 0.0}}]}]}) == 1.0


@pytest.mark.parametrize("items,err", [
    (["target_pdd_ms"], "--auto: KEY=VALUE of a scalar overload.auto setting expected (got 'target_pdd_ms')"),
    (["enabled=false"], "--auto: KEY=VALUE of a scalar overload.auto setting expected (got 'enabled=false')"),
    (["target_pdd=20"], "--auto: overload.auto.target_pdd: one of the keys"),
    (["target_pdd_ms=-5"], "--auto: overload.auto.target_pdd_ms:"),
    (["max_step=[1"], "--auto: max_step: a number expected (got '[1')"),
])
def test_auto_settings_refused_in_one_line(capsys, items, err):
    with pytest.raises(SystemExit) as e:
        overload.main([a for it in items for a in ("--auto", it)] + ["--quick", "--out", "/nonexistent/x"])
    assert e.value.code == 2
    msg = capsys.readouterr().err.strip().splitlines()[-1]
    assert err in msg, msg


def test_auto_settings_reach_ks_policy():
    import argparse
    over = overload.auto_settings(argparse.ArgumentParser(), ["target_pdd_ms=20", "target_queue=8192",
                                                              "max_step=0.1"])
    assert over == {"target_pdd_ms": 20, "target_queue": 8192, "max_step": 0.1}
    text = overload.auto_policy({"auto": over})
    assert "    target_pdd_ms: 20\n" in text and "    target_queue: 8192\n" in text and "enabled: true" in text
