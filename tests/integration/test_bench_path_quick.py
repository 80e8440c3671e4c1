"""`python bench/path.py --quick` (the CI form of `make bench-path`) works end to end.

Every call completes; the configurations are what they claim (which eTSF programs ran in
traffic); the numbers are internally consistent (every datagram sighted at both edges of the
node, CPU parts within the whole); the machine-wide sysctl it touches is restored; and every
namespace, process and BPF pin it started is gone afterwards.  Never speed: the figures of a
CI run on a shared machine are not judged.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KEY = ("D", "A-ipt-nft-200", "C-200", "C-xdp-200", "E0", "E0-tc", "R")
SWEEP = ("A-ipt-legacy-0", "A'-nft-vmap-0", "A-ipt-legacy-200", "A'-nft-vmap-200")
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def _netns() -> set[str]:
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {ln.split()[0] for ln in r.stdout.splitlines() if ln.strip().startswith("etsf-bn-")}


def _procs_naming(token: str) -> list[str]:
    """Command lines of live processes naming token (the run's work dir: the responder
    binary and sipp's files are in it)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if token.encode() in cmd:
                out.append(cmd.replace(b"\0", b" ").decode(errors="replace"))
    return out


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("needs root (namespaces, BPF)")
    missing = [t for t in ("sipp", "iptables-nft-restore", "nft", "gcc", "nsenter", "taskset") if not shutil.which(t)]
    assert not missing, f"tools missing (scripts/setup.sh installs them): {missing}"
    out = tmp_path_factory.mktemp("bench-path")
    before = (_netns(), STATS.read_text())
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    # the overload sweep's quick form has its own test (test_bench_overload_quick.py)
    r = subprocess.run([sys.executable, str(REPO / "bench" / "path.py"), "--quick", "--out", str(out),
                        "--set", "overload=false"],
                       capture_output=True, text=True, env=env, timeout=420, check=False)
    print(r.stdout[-4000:])
    print(r.stderr[-4000:])
    after = (_netns(), STATS.read_text())
    res = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    return r, out, res, before, after


def _runs(res):
    for name, c in res["configs"].items():
        for tr, rs in c["runs"].items():
            for r in rs:
                yield name, tr, r


def test_exits_zero_and_writes_report_and_plots(quick):
    r, out, res = quick[:3]
    assert r.returncode == 0, r.stderr[-2000:]
    assert not res["errors"], res["errors"]
    for f in ("results.json", "report.md", "headline.md", "transit_vs_services.png", "transit_cdf_200.png",
              "cpu_per_call_stacked.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert (out / "transit_cdf_200.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "report.md").read_text()
    assert "## Headline" in text and "| C-xdp: XDP classifier + fast path (N=200) |" in text
    assert "| E0-tc TC classifier alone, direct path |" in text
    assert (out / "headline.md").read_text() in text
    # not run when asked not to, and the report says so
    assert res["overload"] == {"available": False,
                               "note": "overload sweep: not run (overload=false; bench/overload.py runs it alone)"}
    assert "overload sweep: not run (overload=false" in text


def test_every_configuration_ran_and_every_call_completed(quick):
    res = quick[2]
    for name in KEY:
        runs = res["configs"][name]["runs"]
        assert set(runs) == {"un", "u1"} and all(len(v) == 1 for v in runs.values()), name
    for name in SWEEP:
        if name.startswith("A-ipt-legacy") and any("legacy not installed" in s for s in res["skipped"]):
            continue
        assert list(res["configs"][name]["runs"]) == ["un"] and len(res["configs"][name]["runs"]["un"]) == 1, name
    for name, tr, r in _runs(res):
        assert r["successful"] == r["calls_planned"] > 0, (name, tr, r["fail_causes"], r["error_causes"])
        assert r["failed_or_unfinished"] == 0 and r["retransmissions"] == 0, (name, tr)


def test_every_datagram_is_matched_at_both_edges(quick):
    res = quick[2]
    for name, tr, r in _runs(res):
        ok = r["successful"]
        req, resp = r["transit"]["request"], r["transit"]["response"]
        # INVITE, ACK, BYE one way; 100, 180, 200 (INVITE), 200 (BYE) the other
        assert req["n"] == 3 * ok and resp["n"] == 4 * ok, (name, tr, req["n"], resp["n"], ok)
        assert {k: req["by_message"][k]["n"] for k in req["by_message"]} == {"INVITE": ok, "ACK": ok, "BYE": ok}
        assert {k: resp["by_message"][k]["n"] for k in resp["by_message"]} == {"100": ok, "180": ok, "200": 2 * ok}
        for d in (req, resp):
            assert d["unmatched_departures"] == d["unmatched_arrivals"] == d["ambiguous"] == d["negative"] == 0
            assert 0 < d["p50"] <= d["p99"] <= d["p999"], (name, tr, d)
        assert r["transit_counters"]["map_full"] == 0


def test_cpu_parts_within_the_whole_and_context_switches_counted(quick):
    res = quick[2]
    for name, tr, r in _runs(res):
        c = r["cpu"]
        assert 0 < c["whole_s"] <= c["elapsed_s"] * c["cpus"] + 0.05, (name, tr)
        assert all(v >= 0 for v in c["parts_s"].values()), (name, tr, c["parts_s"])
        own = c["parts_s"]["sipp (UAC)"] + c["parts_s"]["responder"]
        assert 0 < own <= c["whole_s"], (name, tr, own, c["whole_s"])
        assert c["adds_up"] == (abs(c["residual_ratio"]) <= 0.10)
        assert c["tasks_sum_s"] == pytest.approx(sum(c["parts_s"].values()), rel=1e-6)
        for role in ("sipp (UAC)", "responder"):
            cs = r["ctx_switches"][role]
            assert cs["voluntary"] + cs["involuntary"] > 0 and cs["per_transaction"] > 0, (name, tr, role)


def test_configurations_run_the_programs_they_claim(quick):
    res = quick[2]
    bs = res["bpf_stats"]["in_traffic"]

    def ran(cfg, prog):
        return bs[cfg]["programs"].get(prog, {}).get("run_cnt", 0) > 0

    # the default hook on a veth is TC: one TC ingress program classifies and steers
    assert bs["C-200"]["hook"] == "tc" and bs["C-xdp-200"]["hook"] == "xdp", bs
    assert ran("C-200", "tc_fastpath") and ran("C-200", "tc_sip_egress") and not ran("C-200", "xdp_sip")
    assert ran("C-xdp-200", "xdp_sip") and ran("C-xdp-200", "tc_fastpath")
    assert ran("E0", "xdp_sip") and not ran("E0", "tc_fastpath")
    assert ran("E0-tc", "tc_fastpath") and not ran("E0-tc", "xdp_sip")
    # one SIP parse per datagram per node: requests at the hook that classifies, replies at egress
    for cfg, hook in (("C-200", "TC_INGRESS"), ("C-xdp-200", "XDP"), ("E0", "XDP"), ("E0-tc", "TC_INGRESS")):
        ps = bs[cfg]["parses"]
        other = "XDP" if hook == "TC_INGRESS" else "TC_INGRESS"
        assert ps[hook]["sip_parses"] >= 3 * bs[cfg]["calls_ok"] and ps[other]["sip_parses"] == 0, (cfg, ps)
        assert ps["TC_EGRESS"]["sip_parses"] >= 4 * bs[cfg]["calls_ok"], (cfg, ps)
    assert bs["C-xdp-200"]["parses"]["TC_INGRESS"]["meta_used"] >= 3 * bs["C-xdp-200"]["calls_ok"]
    for cfg in bs:
        assert bs[cfg]["calls_ok"] == bs[cfg]["calls"] > 0
        assert ran(cfg, "(bench) transit_uac_egress") and ran(cfg, "(bench) transit_pod_ingress")
    assert res["prog_test_run"]["invite_1k_pass"] > 0


def test_sysctl_restored_and_nothing_left_behind(quick):
    _r, _out, res, before, after = quick
    assert after[1] == before[1], "kernel.bpf_stats_enabled not restored"
    own = res["resources"]
    assert len(own["namespaces"]) == 4 and all(n.startswith("etsf-bn-") for n in own["namespaces"])
    assert not set(own["namespaces"]) & after[0], f"namespaces left: {set(own['namespaces']) & after[0]}"
    assert not any(Path(p).exists() for p in own["pin_roots"]), own["pin_roots"]
    assert not Path(own["work_dir"]).exists()
    assert _procs_naming(own["work_dir"]) == []


def test_keepalive_pass_answers_every_options_where_the_configuration_says(quick):
    ka = quick[2]["keepalive"]
    assert ka["params"]["sources"] >= 1000
    phases = {(p["round"], p["config"], p["phase"]): p for p in ka["phases"]}
    assert {(c, ph) for _r, c, ph in phases} == {(c, ph) for c in "RE" for ph in ("calls", "mix")}
    for (_r, cfg, label), p in phases.items():
        c, ct, et = p["calls"], p["call_transit"], p["etsf_keepalive"]
        assert c["successful"] == c["planned"] > 0 and c["failed"] == 0, (cfg, label, c)
        # the calls' own messages, every one matched at both edges: INVITE, ACK, BYE; 100, 180
        assert ct["request"]["n"] == 3 * c["successful"] and ct["response"]["n"] == 2 * c["successful"], (cfg, label)
        assert et["passed_not_matching"] == 0, (cfg, label, et)
        if label == "calls":
            assert "gen" not in p and ct["options_to_pod"] == 0 and et["answered"] == 0, (cfg, label)
            continue
        g = p["gen"]
        assert g["sent"] == g["answered_200"] > 0 and g["duplicate_200"] == 0 and not g["consistency"], (cfg, g)
        if cfg == "R":
            # the pod answered every OPTIONS: each one crossed the node into the pod
            assert et["answered"] == 0 and ct["options_to_pod"] == g["sent"], (et, ct["options_to_pod"])
        else:
            # the kernel answered them, the sampled ones (and any while the gate was stale) went on
            assert et["answered"] > 0, et
            assert et["answered"] + et["passed_sampled"] + et["passed_proxy_stale"] == g["sent"], et
            assert ct["options_to_pod"] == g["sent"] - et["answered"], (et, ct["options_to_pod"])
    an = ka["analysis"]
    assert an["ctx_per_ka_node"]["diff"]["rounds"] == [0] and an["call_request_p50_us"]["diff"]["rounds"] == [0]
    assert [v["config"] for v in ka["visits"]] == ["R", "E"]
    text = (quick[1] / "report.md").read_text()
    assert "## Keep-alive mix: the pod answers OPTIONS (R) vs eTSF answers them in the kernel (E)" in text
