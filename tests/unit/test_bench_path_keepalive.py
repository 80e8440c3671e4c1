"""The path benchmark's keep-alive pass, no network: the calls' transit out of matched
sightings (OPTIONS and 200s kept out), the per keep-alive figures of a visit, E against R over
paired rounds with the verdicts, and the report section."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import path as P  # noqa: E402  pylint: disable=wrong-import-position
import path_report  # noqa: E402  pylint: disable=wrong-import-position


def _match(req: dict, resp: dict) -> dict:
    """A transit.match() result with by_what in ns."""
    return {"request": {"by_what": req}, "response": {"by_what": resp}}


def test_call_transit_keeps_only_the_calls_own_messages():
    m = _match({"INVITE": [10_000, 30_000], "ACK": [20_000], "BYE": [40_000, 50_000], "OPTIONS": [1_000] * 7},
               {"100": [5_000], "180": [7_000, 6_000], "200": [1_000] * 9})
    ct = P.call_transit(m)
    assert ct["request"]["n"] == 5 and ct["request"]["p50"] == pytest.approx(30.0)
    assert ct["response"]["n"] == 3 and ct["response"]["p50"] == pytest.approx(6.0)
    assert ct["options_to_pod"] == 7


def test_call_transit_of_an_empty_phase():
    ct = P.call_transit({})
    assert ct["request"]["n"] == ct["response"]["n"] == ct["options_to_pod"] == 0
    assert ct["request"]["p50"] is None


def _phase(config, rnd, label, ctxt, busy, resp_ctx, resp_s, bench_ctx, bench_s, sent=None, p50=20.0, window=4.0):
    ph = {"config": config, "round": rnd, "phase": label, "window_s": window, "ctxt": ctxt, "busy_s": busy,
          "bench_ctx": bench_ctx, "bench_cpu_s": bench_s,
          "groups": {"responder": {"cpu_s": resp_s, "ctx": resp_ctx}},
          "call_transit": {"request": {"p50": p50, "p99": 3 * p50}, "response": {"p50": p50 / 2, "p99": p50}}}
    if sent is not None:
        ph["gen"] = {"sent": sent}
    return ph


def test_ka_visit_is_the_marginal_cost_per_keep_alive():
    calls = _phase("R", 0, "calls", ctxt=10_000, busy=1.0, resp_ctx=200, resp_s=0.05, bench_ctx=4_000, bench_s=0.8)
    mix = _phase("R", 0, "mix", ctxt=60_000, busy=3.0, resp_ctx=2_200, resp_s=0.45, bench_ctx=24_000, bench_s=2.6,
                 sent=10_000, p50=22.0)
    v = P.ka_visit(calls, mix)
    assert (v["config"], v["round"], v["sent"]) == ("R", 0, 10_000)
    assert v["ctx_per_ka_node"] == pytest.approx(5.0)
    assert v["ctx_per_ka_bench"] == pytest.approx(2.0)
    assert v["ctx_per_ka_node_tasks"] == pytest.approx(0.2)       # the responder alone in this fixture
    assert v["ctx_per_ka_responder"] == pytest.approx(0.2)
    assert v["cpu_us_per_ka_node"] == pytest.approx(200.0)
    assert v["cpu_us_per_ka_bench"] == pytest.approx(180.0)
    assert v["cpu_us_per_ka_responder"] == pytest.approx(40.0)
    assert v["call_request_p50_us"] == 22.0 and v["call_request_p99_us"] == 66.0
    assert v["call_response_p50_us"] == 11.0


def test_ka_visit_without_keep_alives_sent_has_no_per_keep_alive_figure():
    calls = _phase("E", 0, "calls", 1, 1.0, 1, 0.1, 1, 0.1)
    mix = _phase("E", 0, "mix", 2, 2.0, 2, 0.2, 2, 0.2, sent=0)
    v = P.ka_visit(calls, mix)
    assert v["sent"] == 0 and all(v[k] is None for k in P.KA_PER)


def _visits(r_ctx, e_ctx, r_lat, e_lat):
    out = []
    for rnd, (rc, ec, rl, el) in enumerate(zip(r_ctx, e_ctx, r_lat, e_lat)):
        base = {k: 1.0 for k in P.KA_PER}
        out.append({**base, "config": "R", "round": rnd, "ctx_per_ka_node": rc,
                    **{k: rl for k in P.KA_LATENCY}})
        out.append({**base, "config": "E", "round": rnd, "ctx_per_ka_node": ec, "cpu_us_per_ka_node": 0.1,
                    **{k: el for k in P.KA_LATENCY}})
    return out


def test_ka_analyse_ratios_verdicts_and_unchanged_latency():
    an = P.ka_analyse(_visits([5.0, 5.2, 4.8, 5.1, 4.9, 5.0], [0.20, 0.25, 0.15, 0.22, 0.18, 0.2],
                              [20.0, 21.0, 19.0, 20.5, 19.5, 20.0], [20.1, 20.9, 19.1, 20.4, 19.6, 20.0]))
    s = an["ctx_per_ka_node"]
    assert s["rounds"] == list(range(6)) and s["median"] == pytest.approx(0.04, abs=0.005)
    assert s["target"] == 0.1 and s["verdict"] == "met"
    assert an["cpu_us_per_ka_node"]["verdict"] == "met"            # 0.1 / 1.0 every round
    assert an["ctx_per_ka_responder"]["verdict"] is None             # no target: figures only
    assert an["ctx_per_ka_node_tasks"]["verdict"] == "not met"       # 1.0 / 1.0 every round
    assert an["ctx_per_ka_bench"]["verdict"] is None
    lat = an["call_request_p50_us"]
    assert lat["target"] is None and lat["verdict"].startswith("no change detected")
    assert lat["diff"]["mde"] is not None


def test_ka_analyse_does_not_judge_a_ratio_to_noise():
    # R's machine-wide cost negative in two rounds (other tenants' work): the ratios of the other
    # rounds alone would look like a met target
    an = P.ka_analyse(_visits([5.0, -3.0, 4.0, -1.0, 6.0, 5.0], [0.1] * 6, [20.0] * 6, [20.0] * 6))
    assert an["ctx_per_ka_node"]["verdict"].startswith("not resolved")
    an = P.ka_analyse(_visits([-5.0, -3.0, -4.0, -1.0, -6.0, -5.0], [0.1] * 6, [20.0] * 6, [20.0] * 6))
    assert an["ctx_per_ka_node"]["verdict"].startswith("not resolved")


def test_ka_visits_pairs_the_phases_of_each_visit_in_run_order():
    phases = []
    for rnd, order in ((0, "RE"), (1, "ER")):
        for c in order:
            phases += [_phase(c, rnd, "calls", 100, 1.0, 10, 0.1, 50, 0.5),
                       _phase(c, rnd, "mix", 1100, 2.0, 20, 0.2, 150, 0.9, sent=1000)]
    phases.append(_phase("R", 2, "calls", 100, 1.0, 10, 0.1, 50, 0.5))       # a visit cut short: no mix
    vs = P.ka_visits(phases)
    assert [(v["round"], v["config"]) for v in vs] == [(0, "R"), (0, "E"), (1, "E"), (1, "R")]
    assert all(v["ctx_per_ka_node"] == pytest.approx(1.0) for v in vs)


def test_ka_analyse_detects_slower_calls():
    an = P.ka_analyse(_visits([5.0] * 6, [0.2] * 6, [20.0, 21.0, 19.0, 20.5, 19.5, 20.0],
                              [30.0, 31.0, 29.5, 30.5, 29.0, 30.2]))
    assert an["call_request_p99_us"]["verdict"] == "higher"


def test_report_section_renders_the_pass_and_says_when_it_did_not_run():
    assert "not run" in "\n".join(path_report.keepalive_section({}))
    none = {"params": {"rounds": 0}, "phases": [], "visits": [], "analysis": {}}
    assert "not run (0 rounds asked for)" in "\n".join(path_report.keepalive_section({"keepalive": none}))
    calls = _phase("R", 0, "calls", 10_000, 1.0, 200, 0.05, 4_000, 0.8)
    mix = _phase("R", 0, "mix", 60_000, 3.0, 2_200, 0.45, 24_000, 2.6, sent=10_000)
    for ph in (calls, mix):
        ph["calls"] = {"successful": 160, "planned": 160}
        ph["call_transit"]["options_to_pod"] = 10_000 if ph is mix else 0
        ph["adds_up"], ph["residual_ratio"] = True, 0.03
    mix["gen"].update(answered_200=10_000, consistency=[])
    e_calls, e_mix = ({**ph, "config": "E"} for ph in (calls, mix))
    e_mix["ctxt"] = 15_000                                  # 0.5 switches per keep-alive: E / R 0.1
    visits = [P.ka_visit(calls, mix), P.ka_visit(e_calls, e_mix)]
    ka = {"params": {"config": "C-0", "sample_every": 100, "phase_s": 4.0, "call_rate": 200, "ka_rate": 4000,
                     "ka_per_call": 20, "sources": 4096},
          "phases": [calls, mix, e_calls, e_mix], "visits": visits, "analysis": P.ka_analyse(visits)}
    text = "\n".join(path_report.keepalive_section({"keepalive": ka}))
    row = "| context switches per keep-alive: node (/proc/stat ctxt, the whole machine) |"
    assert f"{row} 5.000 | 0.500 | 0.100 –" in text
    assert "| 1 | R | mix | 160 / 160 | 10000 / 10000 |" in text
    assert "Generator counts consistent" in text and "4096 source addresses" in text


def test_telemetry_off_kind_is_e0_tc_with_telemetry_off_in_its_policy():
    from etsf.policy import schema
    base = "version: 1\nsip_ports: [5060]\ntrust: [198.18.40.0/30]\n"
    off, on = P.node_policy(base, P.KINDS["E0-tc-nt"]), P.node_policy(base, P.KINDS["E0-tc"])
    assert schema.load_text(off).telemetry_transactions is False
    assert schema.load_text(on).telemetry_transactions is True
    assert {k: v for k, v in P.KINDS["E0-tc-nt"].items() if k != "telemetry"} == P.KINDS["E0-tc"]
    assert P.cfg_name("E0-tc-nt", 0) == "E0-tc-nt"
