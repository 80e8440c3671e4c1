"""`python bench/keepalive.py --quick` (the keep-alive benchmark's CI form) works end to end and
its counts add up: one paired round (K: Kamailio answers, E: eTSF answers in the kernel), a
calls-only and a calls + keep-alives phase in each, then one max-rate probe per configuration.

Consistency, not speed: every keep-alive the generator sent got exactly one 200 (counted by the
generator from the answers it received, matched by Call-ID), every call completed, in E the
kernel answered what the proxy did not (answered + sampled = sent), in K it answered none, and
the per keep-alive figures exist for both.  Nothing is left behind.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import cmdlines_with as _cmdlines_with, netns_names as _netns, run_bench_quick


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return run_bench_quick("keepalive.py", "keepalive.json", tmp_path_factory.mktemp("bench-keepalive"),
                           ("sipp", "kamailio", "iptables-nft-restore", "gcc", "taskset", "nsenter"))


def test_exits_zero_and_writes_files(quick):
    r, out, _work, res = quick
    assert r.returncode == 0, r.stderr[-2000:]
    assert res is not None and res["errors"] == [] and res["skipped"] == []
    assert (out / "keepalive.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "keepalive.md").read_text().startswith("## Keep-alive benchmark")
    assert res["schema"] == "keepalive/1" and res["profile"] == "quick" and res["budget_s"] == 90
    assert res["host"]["pinning"]["kamailio"] == "cpu1"
    assert res["host"]["pinning"]["keepalive_generator"] == "cpu0"


def test_one_paired_round_both_phases(quick):
    res = quick[3]
    assert [(p["config"], p["phase"]) for p in res["phases"]] == [("K", "calls"), ("K", "mix"),
                                                                  ("E", "calls"), ("E", "mix")]
    for p in res["phases"]:
        assert p["calls"]["planned"] == 40 and p["calls"]["successful"] == 40 and p["calls"]["failed"] == 0, p
        assert p["calls"]["invite_200_ms"]["n"] == 40, p
        assert len(p["loadavg"]) == 3 and p["window_s"] >= p["seconds"]
        assert {"kamailio", "sipp uas", "prober", "ksoftirqd", "exited children"} <= set(p["groups"]), p["groups"]
        assert p["bench_cpu_s"] > 0 and p["bench_ctx"] > 0 and p["kamailio_s"] > 0
        assert ("gen" in p) == (p["phase"] == "mix")


def test_every_keepalive_answered_exactly_once(quick):
    res = quick[3]
    for p in [*res["phases"], *(s for c in "KE" for s in res["max_rate"][c]["probes"])]:
        g = p.get("gen")
        if g is None:
            continue
        assert g["sent"] == int(p["ka_rate"] * p["seconds"]) and g["send_errors"] == 0, g
        assert g["answered_200"] == g["sent"] and g["duplicate_200"] == 0 and g["other_responses"] == 0, g
        assert g["unmatched"] == 0 and g["consistency"] == [], g
        assert g["sources"] == 1024


def test_who_answered(quick):
    """K: the kernel answers none (the proxy does); E: it answers every keep-alive but the
    sampled ones, which the proxy answers (so the generator still counts a 200 for each)."""
    res = quick[3]
    for p in res["phases"]:
        if p["phase"] != "mix":
            continue
        ka, sent = p["etsf_keepalive"], p["gen"]["sent"]
        if p["config"] == "K":
            assert ka["answered"] == 0, ka
        else:
            assert ka["answered"] > 0 and ka["passed_proxy_stale"] == 0, ka
            assert ka["answered"] + ka["passed_sampled"] == sent, (ka, sent)
            assert ka["passed_sampled"] <= sent // res["params"]["sample_every"] + 2, ka


def test_per_keepalive_figures_and_max_rate(quick):
    res = quick[3]
    assert [(v["config"], v["round"]) for v in res["visits"]] == [("K", 0), ("E", 0)]
    for v in res["visits"]:
        assert v["sent"] == 800
        for k in ("ctx_per_ka_bench", "cpu_us_per_ka_bench", "cpu_us_per_ka_kamailio", "ctx_per_ka_kamailio"):
            assert isinstance(v[k], float), (k, v)
    for c in "KE":
        m = res["max_rate"][c]
        assert [s["ka_rate"] for s in m["probes"]] == [400] and m["probes"][0]["ok"], m
        assert m["rate"] == 400 and m["capped"]
    assert "| max keep-alive rate with 0 failed calls, /s | 400 (≥: search cap) |" in res["table_md"]


def test_nothing_left_behind(quick):
    _r, _out, work, res = quick
    assert res["namespaces"] and all(n.startswith("etsf-bn-") for n in res["namespaces"])
    left = set(res["namespaces"]) & _netns()
    assert not left, f"namespaces left behind: {sorted(left)}"
    assert res["pids"], "no process recorded"
    assert not Path(res["pin_root"]).exists()
    alive = [p for p in res["pids"] if Path(f"/proc/{p}").exists()
             and str(work) in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
    assert not alive, alive
    assert not _cmdlines_with(str(work)), _cmdlines_with(str(work))
