"""`python bench/pingpong.py --quick` (the CI form of the pinned ping-pong) works end to end.

Every filter runs once per round on path b, the D path a alongside it in the same run; every exchange is
answered (none lost, none stale); eTSF passes every INVITE at the hook `attach` chose (TC on a
veth by default, XDP when forced) and parses each packet once: the INVITE at that ingress hook,
the 200 OK at TC egress; the bpf_stats pass counts one program run per packet and direction and
puts the sysctl back; nothing the run made is left.  Never speed: a CI run's figures are not judged.
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
sys.path.insert(0, str(REPO / "bench"))

import pingpong  # noqa: E402

QUICK = pingpong.PROFILES["quick"]


def _netns() -> set[str]:
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {ln.split()[0] for ln in r.stdout.splitlines() if ln.strip().startswith(pingpong.NS_PREFIX)}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("needs root (namespaces, BPF)")
    missing = [t for t in ("nft", "gcc", "nsenter", "taskset") if not shutil.which(t)]
    assert not missing, f"tools missing (scripts/setup.sh installs them): {missing}"
    out = tmp_path_factory.mktemp("bench-pingpong")
    before = _netns()
    stats_before = pingpong.STATS.read_text()
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    r = subprocess.run([sys.executable, str(REPO / "bench" / "pingpong.py"), "--quick", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=240, check=False)
    print(r.stdout[-3000:])
    print(r.stderr[-3000:])
    res = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    return r, out, res, before, _netns(), stats_before


def test_exits_zero_every_filter_ran_each_round_with_d_alongside(quick):
    r, out, res = quick[:3]
    assert r.returncode == 0, r.stderr[-2000:]
    assert not res["errors"] and not res["skipped"], (res["errors"], res["skipped"])
    filters = [c for c in QUICK["configs"] if c != "D"]
    for c in filters:
        assert sorted(x["round"] for x in res["configs"][c]["runs"]) == list(range(1, QUICK["rounds"] + 1)), c
    d = res["configs"]["D"]["runs"]
    assert len(d) == QUICK["rounds"] * len(filters)
    assert sorted(x["alongside"] for x in d) == sorted(filters * QUICK["rounds"])
    text = (out / "report.md").read_text()
    for c in QUICK["configs"]:
        assert f"| {c} | {pingpong.CONFIGS[c]} |" in text
    assert set(res["summary"]["paired"]) >= {f"{c} - D" for c in filters} | {"T - F", "T - X"}


def test_every_exchange_answered_once(quick):
    res = quick[2]
    for c, cfg in res["configs"].items():
        for run in cfg["runs"]:
            assert run["sent"] == QUICK["count"] + QUICK["warmup"], (c, run)
            assert run["timed"] == QUICK["count"] and run["lost"] == 0 and run["stale"] == 0, (c, run)
            assert 0 < run["min_ns"] <= run["p50_ns"] <= run["p90_ns"] <= run["p99_ns"], (c, run)


def test_etsf_passes_every_invite_and_parses_each_packet_once(quick):
    res = quick[2]
    assert res["configs"]["T"]["hook"] == "tc"        # auto on a veth
    assert res["configs"]["X"]["hook"] == "xdp"
    where = {"T": "TC_INGRESS", "X": "XDP"}
    for c, ingress in where.items():
        for run in res["configs"][c]["runs"]:
            n = run["sent"]
            assert run["invites_passed"] == n and run["counts_add_up"], (c, run)
            parses = {h: v["sip_parses"] for h, v in run["parses"].items()}
            assert parses[ingress] == n and parses["TC_EGRESS"] == n, (c, parses)
            assert sum(parses.values()) == 2 * n, (c, parses)


def test_bpf_stats_pass_counts_one_run_per_packet_and_restores_the_sysctl(quick):
    res, stats_before = quick[2], quick[5]
    n = QUICK["count"] + QUICK["warmup"]
    bs = res["bpf_stats"]["in_traffic"]
    t = bs["T"]["programs"]
    assert t["tc_fastpath"]["run_cnt"] == n and t["tc_sip_egress"]["run_cnt"] == n, t
    assert t["tc_fastpath"]["ns_per_run"] > 0 and t["tc_sip_egress"]["ns_per_run"] > 0
    k = bs["K"]["programs"]
    assert k["pc_ref_ingress"]["run_cnt"] == n and k["pc_ref_egress"]["run_cnt"] == n, k
    assert pingpong.STATS.read_text() == stats_before
    assert res["bpf_stats"]["sysctl_restored_to"] == stats_before.strip()


def test_nothing_left_behind(quick):
    res, before, after = quick[2], quick[3], quick[4]
    assert after == before
    assert not set(res["resources"]["namespaces"]) & after
    assert not os.path.exists(res["resources"]["pin_root"])
    assert not os.path.exists(res["resources"]["work_dir"])


@pytest.fixture(scope="module")
def with_base(tmp_path_factory):
    """One short round of T against T0 built from a copy of bpf/ whose TC programs are known to
    differ: the L3 offset bound raised from 18 (one VLAN tag) to 22 changes the bounds checks the
    programs carry, not what an untagged packet meets.  A base taken from git history need not
    differ (a commit may touch bpf/ and compile to the same programs), so T0 would not be tested."""
    out = tmp_path_factory.mktemp("bench-pingpong-base")
    src = tmp_path_factory.mktemp("base-src") / "bpf"
    shutil.copytree(REPO / "bpf", src, ignore=shutil.ignore_patterns("*.o", "__pycache__"))
    hdr = src / "etsf_parse.h"
    text = hdr.read_text()
    assert text.count("#define ETSF_L3_OFF_MAX 18\n") == 1, "etsf_parse.h: the bound this test raises moved"
    hdr.write_text(text.replace("#define ETSF_L3_OFF_MAX 18\n", "#define ETSF_L3_OFF_MAX 22\n"))
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    r = subprocess.run([sys.executable, str(REPO / "bench" / "pingpong.py"), "--quick", "--configs", "T", "--rounds", "1",
                        "--count", "50", "--base-src", str(src), "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=300, check=False)
    print(r.stdout[-2000:])
    print(r.stderr[-2000:])
    return r, json.loads((out / "results.json").read_text())


def test_t0_runs_the_base_trees_programs(with_base):
    r, res = with_base
    assert r.returncode == 0, r.stderr[-2000:]
    t, t0 = res["configs"]["T"], res["configs"]["T0"]
    assert res["params"]["base_src"] and res["params"]["base_ref"] is None
    assert t["prog_tags"]["tc_ingress_prog_id"] != t0["prog_tags"]["tc_ingress_prog_id"], (t, t0)
    for cfg in (t, t0):
        run = cfg["runs"][0]
        assert run["counts_add_up"] and run["invites_passed"] == run["sent"], run
