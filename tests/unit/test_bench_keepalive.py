"""bench/keepalive.py's arithmetic, no network: the generator's JSON line and its consistency
check, CPU and context switches per task group between two snapshots, the marginal cost of a
keep-alive (mix phase minus calls-only phase), E/K ratios over rounds with their interval and
verdict, the max-rate probe criterion and the markdown table."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import keepalive as KA  # noqa: E402  pylint: disable=wrong-import-position

GEN = ('{"sent": 8000, "send_errors": 0, "answered_200": 7990, "duplicate_200": 2, "other_responses": 3, '
       '"responses_by_class": {"1xx": 0, "2xx": 7992, "3xx": 0, "4xx": 0, "5xx": 3, "6xx": 0}, "unmatched": 1, '
       '"datagrams_received": 7996, "send_seconds": 3.991, "seconds": 3.998, "pps": 2004.5, "sources": 1024, '
       '"latency_us": {"p50": 31, "p90": 44, "p99": 90, "max": 1000}, "cpu_s": {"user": 0.04, "sys": 0.12}, '
       '"ctx": {"voluntary": 3724, "involuntary": 205}}')


# -- the generator's result -----------------------------------------------------------------------

def test_parse_gen_takes_the_last_json_line():
    g = KA.parse_gen("kagen: warming up\n" + GEN.replace("8000", "1") + "\n" + GEN + "\n")
    assert g["sent"] == 8000 and g["answered_200"] == 7990 and g["latency_us"]["p50"] == 31


def test_parse_gen_without_a_result():
    assert KA.parse_gen("kagen: bind port 5062: Address already in use\n") is None
    assert KA.parse_gen("") is None
    assert KA.parse_gen("{not json\n") is None


def test_generator_counts_add_up():
    assert not KA.gen_consistent(KA.parse_gen(GEN))


@pytest.mark.parametrize("change, what", [
    ({"answered_200": 9000}, "answered 9000 > sent 8000"),
    ({"duplicate_200": 10}, "2xx 7992 < answered + duplicates 8000"),
    ({"unmatched": 5}, "classes 7995 + unmatched 5 != received 7996"),
])
def test_generator_counts_that_do_not_add_up(change, what):
    g = KA.parse_gen(GEN)
    g.update(change)
    assert what in KA.gen_consistent(g)


# -- CPU and context switches -----------------------------------------------------------------------

def _tasks(**kw):
    """{tid: (pid, comm, ns, voluntary, involuntary, kthread)}."""
    return {int(k[1:]): v for k, v in kw.items()}


def test_group_delta_counts_only_members_and_new_threads_from_zero():
    a = _tasks(t10=(10, "kamailio", 1_000_000_000, 100, 10, False), t11=(10, "kamailio", 0, 0, 0, False),
               t20=(20, "other", 5, 5, 5, False))
    b = _tasks(t10=(10, "kamailio", 1_500_000_000, 150, 12, False), t11=(10, "kamailio", 250_000_000, 7, 1, False),
               t12=(10, "kamailio", 100_000_000, 3, 0, False), t20=(20, "other", 9_000_000_000, 900, 90, False))
    d = KA.group_delta(a, b, lambda pid, _comm: pid == 10)
    assert d["cpu_s"] == pytest.approx(0.5 + 0.25 + 0.1)
    assert d["ctx"] == (50 + 2) + (7 + 1) + 3


def test_group_delta_a_reused_tid_of_another_pid_counts_from_zero():
    a = _tasks(t30=(29, "gone", 7_000_000_000, 70, 7, False))
    b = _tasks(t30=(30, "ksoftirqd/0", 2_000_000_000, 20, 0, True))
    assert KA.group_delta(a, b, lambda _p, comm: comm.startswith("ksoftirqd")) == {"cpu_s": 2.0, "ctx": 20}


def _snap(t, idle, ctxt, tasks, children):
    stat = {"cpus": 2, "user": 0, "nice": 0, "system": 0, "idle": idle, "iowait": 0, "irq": 0, "softirq": 0,
            "steal": 0, "ctxt": ctxt}
    return {"acct": {"t": t, "stat": stat, "tasks": tasks, "reaped": {}}, "children": children}


def test_phase_figures_machine_and_benchmark_tasks():
    hz = KA.cpuacct.HZ
    a = _snap(100.0, 0, 1000, _tasks(t10=(10, "kamailio", 0, 0, 0, False),
                                     t40=(40, "sipp", 0, 0, 0, False),
                                     t2=(2, "ksoftirqd/1", 0, 0, 0, True)), (1.0, 100))
    b = _snap(104.0, 4 * hz, 5000, _tasks(t10=(10, "kamailio", 300_000_000, 900, 100, False),
                                          t40=(40, "sipp", 100_000_000, 50, 0, False),
                                          t2=(2, "ksoftirqd/1", 10_000_000, 4, 0, True),
                                          t99=(99, "tenant", 2_000_000_000, 7, 7, False)), (1.5, 400))
    f = KA.phase_figures(a, b, {10: "kamailio", 40: "sipp uas"})
    assert f["window_s"] == 4.0 and f["busy_s"] == pytest.approx(4.0) and f["ctxt"] == 4000
    assert f["kamailio_s"] == pytest.approx(0.3) and f["kamailio_ctx"] == 1000
    # Kamailio + UAS + ksoftirqd + the children reaped in the window; the tenant is not ours
    assert f["bench_cpu_s"] == pytest.approx(0.3 + 0.1 + 0.01 + 0.5)
    assert f["bench_ctx"] == 1000 + 50 + 4 + 300
    assert set(f["groups"]) == {"kamailio", "sipp uas", "ksoftirqd", "exited children"}
    assert f["node_cpu_busy_s"] is None               # no node CPU named: no figure


def test_phase_figures_node_cpu_by_its_own_idle_time():
    hz = KA.cpuacct.HZ
    a = _snap(100.0, 0, 0, {}, (0.0, 0))
    b = _snap(104.0, 4 * hz, 0, {}, (0.0, 0))
    # per CPU over the 4 s window: cpu0 idle 3.5 s; cpu1 idle 0.5 s and iowait 0.25 s (not busy
    # either), so cpu1 was busy 4 - 0.5 - 0.25 s
    a["acct"]["stat"]["per_cpu"] = {"0": {"idle": 0, "iowait": 0}, "1": {"idle": 0, "iowait": 0}}
    b["acct"]["stat"]["per_cpu"] = {"0": {"idle": int(3.5 * hz), "iowait": 0},
                                    "1": {"idle": int(0.5 * hz), "iowait": int(0.25 * hz)}}
    f = KA.phase_figures(a, b, {}, node_cpu=1)
    assert f["node_cpu"] == 1 and f["node_cpu_busy_s"] == pytest.approx(3.25)
    assert KA.phase_figures(a, b, {}, node_cpu=0)["node_cpu_busy_s"] == pytest.approx(0.5)
    assert KA.phase_figures(a, b, {}, node_cpu=5)["node_cpu_busy_s"] is None


# -- per keep-alive ----------------------------------------------------------------------------------

def _phase(window, **kw):
    base = {"window_s": window, "busy_s": 0.0, "ctxt": 0, "bench_cpu_s": 0.0, "bench_ctx": 0, "kamailio_s": 0.0,
            "kamailio_ctx": 0}
    base.update(kw)
    return base


def test_marginal_normalises_both_phases_to_their_windows():
    calls = _phase(5.0, ctxt=5000)                 # 1000/s without keep-alives
    mix = _phase(6.0, ctxt=18000)                  # 3000/s with them: 2000/s x 6 s = 12000 for 4000 sent
    assert KA.marginal(mix, calls, "ctxt", 4000) == pytest.approx(3.0)
    assert KA.marginal(mix, calls, "ctxt", 0) is None
    assert KA.marginal(mix, {"window_s": 5.0}, "ctxt", 10) is None


def _groups(kam, prober, ksoft, uas, children):
    return {"kamailio": {"cpu_s": 0.0, "ctx": kam}, "prober": {"cpu_s": 0.0, "ctx": prober},
            "ksoftirqd": {"cpu_s": 0.0, "ctx": ksoft}, "sipp uas": {"cpu_s": 0.0, "ctx": uas},
            "exited children": {"cpu_s": 0.0, "ctx": children}}


def test_per_ka_figures_and_generator_subtraction():
    calls = _phase(6.0, bench_ctx=6000, bench_cpu_s=0.6, kamailio_s=0.2, kamailio_ctx=1200, busy_s=1.2, ctxt=9000,
                   groups=_groups(1200, 100, 50, 2000, 2650))
    mix = _phase(6.0, bench_ctx=14000, bench_cpu_s=1.0, kamailio_s=0.5, kamailio_ctx=4200, busy_s=1.8, ctxt=25000,
                 groups=_groups(4200, 100, 250, 2000, 7450),
                 gen={"sent": 10000, "cpu_s": {"user": 0.05, "sys": 0.15}})
    v = KA.per_ka(mix, calls)
    assert v["sent"] == 10000
    # the node's tasks: Kamailio +3000, ksoftirqd +200; the peers (UAS, exited children) are not the node
    assert v["ctx_per_ka_node"] == pytest.approx(0.32)
    assert v["ctx_per_ka_bench"] == pytest.approx(0.8)
    assert v["ctx_per_ka_kamailio"] == pytest.approx(0.3)
    assert v["ctx_per_ka_machine"] == pytest.approx(1.6)
    assert v["cpu_us_per_ka_bench"] == pytest.approx(40.0)
    assert v["cpu_us_per_ka_net_of_generator_user"] == pytest.approx(35.0)
    assert v["cpu_us_per_ka_net_of_generator"] == pytest.approx(20.0)
    assert v["cpu_us_per_ka_kamailio"] == pytest.approx(30.0)
    assert v["cpu_us_per_ka_machine"] == pytest.approx(60.0)
    assert v["cpu_us_per_ka_node_cpu"] is None        # phases without the node CPU's figure


def test_per_ka_node_cpu():
    calls = _phase(6.0, node_cpu_busy_s=0.6, groups=_groups(0, 0, 0, 0, 0))
    mix = _phase(6.0, node_cpu_busy_s=0.9, groups=_groups(0, 0, 0, 0, 0), gen={"sent": 10000, "cpu_s": {}})
    assert KA.per_ka(mix, calls)["cpu_us_per_ka_node_cpu"] == pytest.approx(30.0)


def test_per_ka_without_keepalives_is_empty():
    v = KA.per_ka(_phase(6.0), _phase(6.0))
    assert v["sent"] == 0 and all(v[k] is None for k in KA.PER_KA)


def _ph(config, rnd, phase, **kw):
    base = _phase(6.0, config=config, round=rnd, phase=phase, groups=_groups(0, 0, 0, 0, 0), loadavg=["1.5"],
                  calls={"invite_200_ms": {"p50": 1.0, "p99": 2.0}})
    base.update(kw)
    return base


def test_visits_pair_the_phases_of_each_round_in_run_order():
    gen = {"sent": 100, "cpu_s": {"user": 0.0, "sys": 0.0}, "answered_200": 100, "duplicate_200": 0,
           "other_responses": 0, "send_errors": 0, "consistency": [], "latency_us": {"p50": 30},
           "ctx": {"voluntary": 10, "involuntary": 0}}
    phases = [_ph("K", 0, "calls"), _ph("K", 0, "mix", ctxt=600, gen=gen),
              _ph("E", 0, "calls"), _ph("E", 0, "mix", ctxt=60, gen=gen),
              _ph("E", 1, "calls"), _ph("E", 1, "mix", ctxt=50, gen=gen),
              _ph("K", 1, "calls"), _ph("K", 1, "mix", ctxt=500, gen=gen),
              _ph("K", -1, "search-400", ctxt=9, gen=gen), _ph("E", 2, "calls")]
    vis = KA.visits(phases)
    assert [(v["config"], v["round"]) for v in vis] == [("K", 0), ("E", 0), ("E", 1), ("K", 1)]
    assert [v["ctx_per_ka_machine"] for v in vis] == pytest.approx([6.0, 0.6, 0.5, 5.0])
    res = {"phases": phases}
    KA.analyse(res)
    assert res["analysis"]["ctx_per_ka_machine"]["ratios"] == pytest.approx([0.1, 0.1])
    assert res["observations"][0].startswith("keep-alives: 500 sent, 500 answered 200 (distinct)")


# -- E / K over rounds ---------------------------------------------------------------------------------

def test_ratio_summary_pairs_rounds():
    k = {0: 2.0, 1: 4.0, 2: 2.0, 3: None}
    e = {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.1, 4: 0.1}
    s = KA.ratio_summary(k, e)
    assert s["rounds"] == [0, 1, 2]
    assert s["ratios"] == pytest.approx([0.05, 0.05, 0.15])
    assert s["median"] == pytest.approx(0.05) and s["range"] == pytest.approx([0.05, 0.15])
    assert s["k_median"] == 2.0 and s["e_median"] == pytest.approx(0.2)
    lo, hi = s["ci95"]
    assert 0.05 <= lo <= hi <= 0.15
    assert s["diff"]["diffs"] == pytest.approx([-1.9, -3.8, -1.7])


def test_ratio_summary_ratios_only_where_k_is_positive_differences_everywhere():
    s = KA.ratio_summary({0: 0.0, 1: -1.0, 2: 1.0}, {0: 1.0, 1: 1.0, 2: 0.5})
    assert s["rounds"] == [2] and s["ratios"] == [0.5] and s["ci95"] == [None, None]
    assert s["diff"]["rounds"] == [0, 1, 2] and s["diff"]["diffs"] == [1.0, 2.0, -0.5]
    assert s["k_median"] == 0.0 and s["e_median"] == 1.0


@pytest.mark.parametrize("ratios, target, want", [
    ([0.01, 0.02, 0.03, 0.02], 0.1, "met"),
    ([0.5, 0.6, 0.55, 0.52], 0.1, "not met"),
    ([0.05, 0.15, 0.05, 0.15], 0.1, "not resolved (interval straddles the target)"),
])
def test_verdict(ratios, target, want):
    s = KA.ratio_summary({r: 1.0 for r in range(len(ratios))}, dict(enumerate(ratios)))
    assert KA.verdict(s, target) == want


def test_verdict_one_round_and_no_data():
    assert KA.verdict(KA.ratio_summary({0: 1.0}, {0: 0.05}), 0.1) == "met (one round: point estimate only)"
    assert KA.verdict(KA.ratio_summary({}, {}), 0.1) == "no data"


def test_unchanged():
    assert KA.unchanged({"ci95": [-0.1, 0.2]}) == "no change detected (interval holds 0)"
    assert KA.unchanged({"ci95": [0.1, 0.2]}) == "higher"
    assert KA.unchanged({"ci95": [-0.3, -0.2]}) == "lower"
    assert KA.unchanged({"ci95": [None, None]}) == "one round: no interval"


# -- max-rate probes ---------------------------------------------------------------------------------------

def _probe(rate=1000, seconds=5, ok=500, planned=500, failed=0, sent=5000, answered=5000):
    return {"ka_rate": rate, "seconds": seconds, "calls": {"successful": ok, "planned": planned, "failed": failed},
            "gen": {"sent": sent, "answered_200": answered}}


@pytest.mark.parametrize("rec, ok, why", [
    (_probe(), True, "ok"),
    (_probe(ok=499, failed=1), False, "calls: 499/500 completed, 1 failed"),
    (_probe(ok=499), False, "calls: 499/500 completed, 0 failed"),
    (_probe(sent=4400, answered=4400), False, "generator sent 4400 of 5000 (generator-limited)"),
    (_probe(answered=4949), False, "keep-alives answered 4949/5000"),
    (_probe(answered=4950), True, "ok"),
])
def test_search_ok(rec, ok, why):
    assert KA.search_ok(rec) == (ok, why)


# -- rendering --------------------------------------------------------------------------------------------------

def test_table_md_verdicts_and_max_rate():
    an = {"ctx_per_ka_node": KA.ratio_summary({0: 2.0, 1: 2.0}, {0: 0.02, 1: 0.04}),
          "cpu_us_per_ka_node_cpu": KA.ratio_summary({0: 40.0, 1: 44.0}, {0: 20.0, 1: 22.0}),
          "cpu_us_per_ka_bench": KA.ratio_summary({0: 40.0, 1: 44.0}, {0: 4.0, 1: 4.4})}
    res = {"analysis": an, "max_rate": {"K": {"rate": 8000}, "E": {"rate": 32000, "generator_limited": True}}}
    md = KA.table_md(res)
    row = next(ln for ln in md.splitlines() if "context switches per keep-alive: the node's tasks" in ln)
    assert "| 2.000 | 0.030 |" in row and row.endswith("| ≤ 0.1× | met |")
    row = next(ln for ln in md.splitlines() if "the node's CPU" in ln)
    assert row.endswith("| ≤ 0.2× | not met |")
    # the figures that include the load generators (the peers) carry no target
    row = next(ln for ln in md.splitlines() if "generator included" in ln)
    assert "| 0.100 [" in row and row.endswith("|  |  |")
    row = next(ln for ln in md.splitlines() if ln.startswith("| max keep-alive rate"))
    assert "| 8000 | 32000 (≥: generator-limited) | 4.00 | E > K | met |" in row


# -- the two policies ---------------------------------------------------------------------------------------------

def test_k_and_e_policies_validate_and_differ_only_in_the_responder():
    from etsf.policy.schema import load_text  # pylint: disable=import-outside-toplevel
    prof = KA.PROFILES["full"]
    k, e = load_text(KA.policy_text(False, prof)), load_text(KA.policy_text(True, prof))
    assert k.keepalive["enabled"] is False and e.keepalive["enabled"] is True
    assert e.keepalive["identities"] == [KA.T.VIP] and e.keepalive["sample_every"] == 100
    assert e.keepalive["probe"]["address"] == KA.T.POD and e.keepalive["probe"]["interval_ms"] == 200
    k.keepalive["enabled"] = True
    assert k.to_dict() == e.to_dict()
