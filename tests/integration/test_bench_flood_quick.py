"""`python bench/floodcmp.py --quick` (the CI form of the flood baselines) works end to end.

Every configuration runs once; for each the datagrams the generator sent are exactly those
that reached the sink's socket plus those the filter's own counter dropped (eTSF's stats map,
the nft named counter, the iptables rule counter) plus those lost elsewhere (none); every
filter lets the same per-source budget through; what eTSF passed is what the socket got; and
every namespace, process and BPF pin the run made is gone afterwards.  Never speed: the CPU
figures of a CI run on a shared machine are not judged.
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

import floodcmp  # noqa: E402


def _netns() -> set[str]:
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {ln.split()[0] for ln in r.stdout.splitlines() if ln.strip().startswith(floodcmp.NS_PREFIX)}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("needs root (namespaces, BPF)")
    missing = [t for t in ("nft", "iptables", "gcc", "nsenter", "taskset") if not shutil.which(t)]
    assert not missing, f"tools missing (scripts/setup.sh installs them): {missing}"
    out = tmp_path_factory.mktemp("bench-flood")
    before = _netns()
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    r = subprocess.run([sys.executable, str(REPO / "bench" / "floodcmp.py"), "--quick", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=180, check=False)
    print(r.stdout[-3000:])
    print(r.stderr[-3000:])
    res = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    return r, out, res, before, _netns()


def _configs(res):
    return [c for c in floodcmp.PROFILES["quick"]["configs"] if c != "IL" or shutil.which("iptables-legacy")]


def test_exits_zero_every_configuration_ran(quick):
    r, out, res = quick[:3]
    assert r.returncode == 0, r.stderr[-2000:]
    assert not res["errors"] and not [s for s in res["skipped"] if "budget" in s], (res["errors"], res["skipped"])
    for c in _configs(res):
        assert len(res["configs"][c]["runs"]) == 1, c
    text = (out / "report.md").read_text()
    for c in _configs(res):
        assert f"| {c} | {floodcmp.CONFIGS[c]} |" in text


def test_sent_is_reached_plus_dropped_per_configuration(quick):
    res = quick[2]
    p = res["params"]
    for c in _configs(res):
        run = res["configs"][c]["runs"][0]
        assert run["flood_rc"] == 0 and run["send_errors"] == 0, (c, run)
        assert run["sent"] > p["sources"] * (p["burst"] + p["limit_per_source"]), (c, run["sent"])
        assert run["sent"] == run["reached"] + run["filter_dropped"] + run["lost_elsewhere"], (c, run)
        assert run["adds_up"] and run["lost_elsewhere"] == 0, (c, run["udp"], run["links"])
        # the sink read every datagram the socket took (it drains its queue before it exits)
        assert run["sink_received"] == run["udp"]["InDatagrams"] == run["reached"], (c, run)
    n = res["configs"]["N"]["runs"][0]
    assert n["filter_dropped"] == 0 and n["reached"] == n["sent"]


def test_every_filter_lets_the_same_budget_through(quick):
    """Per source: at least the burst, at most burst + rate x (flood time + 1 s); REGISTER only,
    so every datagram over that is the filter's to drop."""
    res = quick[2]
    p = res["params"]
    for c in _configs(res):
        if c == "N":
            continue
        run = res["configs"][c]["runs"][0]
        hi = p["sources"] * (p["burst"] + p["limit_per_source"] * (run["flood_seconds"] + 1))
        assert p["sources"] * p["burst"] <= run["reached"] <= hi, (c, run["reached"], hi)
        assert run["filter_dropped"] == run["sent"] - run["reached"] > 0, c


def test_etsf_passed_exactly_what_reached_the_socket(quick):
    res = quick[2]
    for c in ("X", "T"):
        run = res["configs"][c]["runs"][0]
        assert run["filter_passed"] == run["reached"], (c, run)


def test_cpu_figures_are_within_the_machine(quick):
    res = quick[2]
    for c in _configs(res):
        cpu = res["configs"][c]["runs"][0]["cpu"]
        assert 0 < cpu["flood_ms"] <= cpu["bench_ms"], c
        assert cpu["bench_ms"] <= cpu["elapsed_s"] * res["host"]["cpus"] * 1000 + 50, c
        assert cpu["whole_ms"] <= cpu["elapsed_s"] * res["host"]["cpus"] * 1000 + 50, c
    s = res["summary"]
    assert all("vs_F" in s[c] for c in _configs(res) if c != "F")


def test_nothing_left_behind(quick):
    res, before, after = quick[2], quick[3], quick[4]
    assert after == before
    assert not set(res["resources"]["namespaces"]) & after
    assert not os.path.exists(res["resources"]["pin_root"])
    assert not os.path.exists(res["resources"]["work_dir"])
