"""`python bench/overload.py --quick` (the overload sweep's CI form) works end to end and its
numbers are consistent: D (no eTSF) and F (eTSF admitting new INVITEs at a fixed rate, the
capacity guess), two short steps each (0.5x and 2x of a fixed small capacity guess).

Consistency, not speed: every step accounts for every call it attempted (completed + failed
== attempted: sipp ended every call before it exited), goodput <= achieved <= offered, and
Kamailio's socket counters were read before and after.  For F, eTSF's admission counters and
sipp agree: every new INVITE was decided once (admitted + rejected == attempted), every refused
one was answered by the in-kernel 503 sipp counted, and at 2x the bucket refused some.  Failures
under overload would be data, not errors, so no step is required to be failure-free.  The
sweep's namespaces, processes and BPF pins are gone afterwards.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import cmdlines_with as _cmdlines_with, netns_names as _netns, run_bench_quick


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return run_bench_quick("overload.py", "overload.json", tmp_path_factory.mktemp("bench-overload"),
                           ("sipp", "kamailio", "iptables-nft-restore", "taskset", "nsenter"))


def test_exits_zero_and_writes_files(quick):
    r, out, _work, res = quick
    assert r.returncode == 0, r.stderr[-2000:]
    assert res is not None
    assert (out / "overload_goodput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "overload.md").read_text().startswith("## Overload sweep")
    assert res["plots"] == ["overload_goodput.png"]


def test_quick_form_shape_and_budget(quick):
    res = quick[3]
    assert res["schema"] == "overload/1" and res["profile"] == "quick"
    assert [c["name"] for c in res["configs"]] == ["D-direct", "F-etsf-fixed-admit"]
    assert res["configs"][1]["fixed_admission"] == {"rate": 100, "burst": 10, "retry_after": 5}
    assert res["capacity"]["cps"] == 100 and "fixed guess" in res["capacity"]["from"]
    # the quick form's budget is 90 s and its plan fits in it (a structural check, not a timing one)
    assert res["budget_s"] == 90 and res["plan"]["planned_s"] <= res["plan"]["left_s"] < 90, res["plan"]
    assert res["skipped"] == []
    assert res["host"]["pinning"]["kamailio"] == "cpu1"
    assert res["host"]["pinning"]["sipp_uac_uas_flood"] == "cpu0"
    assert res["host"]["pinning"]["controller"] == "cpu0"


@pytest.mark.parametrize("idx", [0, 1], ids=["D", "F"])
def test_every_step_accounts_for_every_call(quick, idx):
    res = quick[3]
    steps = res["configs"][idx]["steps"]
    assert [s["multiple"] for s in steps] == [0.5, 2]
    assert [s["offered_cps"] for s in steps] == [50, 200]
    for s in steps:
        assert s["planned"] == round(s["offered_cps"] * 5), s
        # a starved load generator may create fewer calls than planned (achieved < offered: data),
        # but sipp ends every call it created before it exits, even at the step's deadline
        assert 0 < s["attempted"] <= s["planned"], s
        assert s["unfinished"] == 0 and not s["sipp_aborted"], s
        assert s["completed"] + s["failed"] == s["attempted"], s
        assert 0 <= s["failed_timeout"] <= s["failed"] and 0 <= s["responses_503"] <= s["failed"], s
        assert 0 <= s["goodput_cps"] <= s["achieved_cps"] <= s["offered_cps"], s
        # creation_s is rounded to ms in the record
        assert s["goodput_cps"] == pytest.approx(s["completed"] / max(s["window_s"], s["creation_s"]), rel=1e-3)
        # Kamailio's socket was found in the pod's /proc/net/udp before and after
        assert isinstance(s["proxy_drops"], int) and s["proxy_drops"] >= 0, s
        assert isinstance(s["retransmissions"], int) and s["retransmissions"] >= 0
        # latencies only from answered calls, and some were answered
        lat = s["invite_200_ms"]
        assert lat["n"] > 0 and lat["n"] >= s["completed"] and lat["p50"] <= lat["p99"], s
        # the machine's load around the step, and a CPU account with the benchmark's own parts
        assert s["loadavg"]["before"] is not None and s["loadavg"]["after"] is not None, s
        parts = s["cpu_acct"]["parts_s"]
        assert parts["kamailio"] > 0 and parts["sipp UAC"] > 0 and parts["sipp UAS"] > 0, parts
        assert s["cpu_acct"]["whole_s"] > 0 and s["cpu_acct"]["tasks_sum_s"] > 0, s["cpu_acct"]
    assert "| D-direct | 2× | 200 |" in res["table_md"]


def test_fixed_admission_counts_agree_with_sipp(quick):
    res = quick[3]
    d, f = res["configs"]
    assert all("admission" not in s for s in d["steps"])
    for s in f["steps"]:
        a = s["admission"]
        # one decision per new INVITE sipp created, on the CPUs that received them
        assert a["admitted"] + a["rejected"] == s["attempted"], (a, s["attempted"])
        assert sum(a["cpus"].values()) == s["attempted"], a
        # every refusal answered in the kernel, and every 503 sipp counted is one of them
        assert a["reply_unfit"] == 0 and a["replied"] == a["rejected"] + a["retrans_rejected"], a
        assert s["responses_503"] == a["rejected"], (s["responses_503"], a)
        assert s["final_codes"].get("503", 0) == s["responses_503"]
    two = f["steps"][1]
    # 200 calls/s against 100/s per CPU, burst 10: the bucket refused some; the answered calls
    # are the admitted ones
    assert two["admission"]["rejected"] > 0 and two["completed"] <= two["admission"]["admitted"], two
    assert "| F-etsf-fixed-admit | 2× |" in res["report_md"]


def test_nothing_left_behind(quick):
    _r, _out, work, res = quick
    assert res["namespaces"] and all(n.startswith("etsf-bn-") for n in res["namespaces"])
    left = set(res["namespaces"]) & _netns()
    assert not left, f"namespaces left behind: {sorted(left)}"
    assert res["pids"], "no process recorded"
    alive = [p for p in res["pids"] if Path(f"/proc/{p}").exists()
             and str(work) in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
    assert not alive, alive
    # sipp, the sipp UAS and Kamailio all ran with files under the work directory
    assert not _cmdlines_with(str(work)), _cmdlines_with(str(work))
