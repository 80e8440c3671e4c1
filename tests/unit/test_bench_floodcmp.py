"""The flood baselines' parsers and summary (bench/floodcmp.py) on fixtures: /proc/net/snmp,
`iptables -nvxL` and `etsfctl stats --json` texts, and known per-round figures."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import floodcmp  # noqa: E402

SNMP = """Ip: Forwarding DefaultTTL
Ip: 2 64
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 7562 3 12 0 12 0 0 0 0
UdpLite: InDatagrams NoPorts
UdpLite: 0 0
"""

IPTABLES = """Chain PREROUTING (policy ACCEPT 7600 packets, 3100000 bytes)
    pkts      bytes target     prot opt in     out     source               destination
  192400 78499200 DROP       17   --  *      *       0.0.0.0/0            0.0.0.0/0            udp dpt:5060 \
STRING match  "REGISTER" ALGO name bm TO 65535 limit: above 20/sec burst 5 mode srcip
      17     6000 ACCEPT     17   --  *      *       0.0.0.0/0            0.0.0.0/0
"""


def test_snmp_udp_counters():
    u = floodcmp.parse_snmp_udp(SNMP)
    assert (u["InDatagrams"], u["NoPorts"], u["InErrors"], u["RcvbufErrors"]) == (7562, 3, 12, 12)
    assert floodcmp.parse_snmp_udp("Ip: a\nIp: 1\n") == {}


def test_iptables_drop_counter():
    assert floodcmp.parse_iptables_drops(IPTABLES) == 192400
    assert floodcmp.parse_iptables_drops(IPTABLES.splitlines()[0]) == 0


def test_etsf_counts_only_xdp_register():
    st = {"counters": [
        {"hook": "XDP", "method": "REGISTER", "verdict": "DROP", "reason": "RATE_LIMIT", "packets": 900},
        {"hook": "XDP", "method": "REGISTER", "verdict": "PASS", "reason": "OK", "packets": 100},
        {"hook": "XDP", "method": "OPTIONS", "verdict": "DROP", "reason": "RATE_LIMIT", "packets": 7},
        {"hook": "TC_EGRESS", "method": "REGISTER", "verdict": "PASS", "reason": "OK", "packets": 5}]}
    assert floodcmp.etsf_drops(st) == (900, 100)


def test_rules_are_what_the_docstring_says():
    text = floodcmp.nft_rules()
    assert "@th,64,64 0x5245474953544552" in text and "limit rate over 20/second burst 5 packets" in text
    assert "priority raw" in text and "counter name dropped drop" in text
    rule = floodcmp.iptables_rule()
    assert rule[:4] == ["-t", "raw", "-A", "PREROUTING"]
    assert rule[rule.index("--string") + 1] == "REGISTER" and rule[rule.index("--algo") + 1] == "bm"
    assert rule[rule.index("--hashlimit-above") + 1] == "20/sec" and rule[-1] == "DROP"
    assert "rate: 20, burst: 5" in floodcmp.policy()


def test_nft_rules_parse():
    """nft's own parser accepts the ruleset (check mode: nothing is loaded)."""
    assert shutil.which("nft"), "nft not installed"
    r = subprocess.run(["nft", "-c", "-f", "-"], input=floodcmp.nft_rules(), capture_output=True, text=True,
                       timeout=30, check=False)
    assert r.returncode == 0, r.stderr


def _run(rnd, sent, reached, dropped, whole, bench):
    return {"round": rnd, "sent": sent, "reached": reached, "filter_dropped": dropped, "lost_elsewhere": 0,
            "adds_up": True, "cpu": {"whole_ms": whole, "less_other_tasks_ms": whole, "bench_ms": bench,
                                     "flood_ms": bench, "sink_ms": 0.0, "residual_ratio": 0.0}}


def _two(dropped, first, second):
    """One configuration's two rounds of 1,000 datagrams: (whole ms, bench ms) each."""
    return {"runs": [_run(i, 1000, 1000 - dropped, dropped, *cpu) for i, cpu in ((1, first), (2, second))]}


def _render(res, summary, **params):
    params = {"rate": 1, "seconds": 1, "sources": 1, "port": 5060, "limit_per_source": 20, "burst": 5,
              "rounds": 2, **params}
    return floodcmp.render({"profile": "quick", "params": params,
                            "host": {"kernel": "k", "cpus": 2, "nft": "n", "iptables": "i"},
                            "configs": {c: {"what": floodcmp.CONFIGS[c], **v} for c, v in res["configs"].items()},
                            "summary": summary, "skipped": [], "errors": [], "orders": []})


def test_summary_medians_per_datagram_and_paired_to_f():
    res = {"configs": {
        "N": _two(0, (100, 80), (110, 90)),
        "F": _two(900, (50, 40), (60, 50)),
        "X": _two(900, (70, 60), (80, 70))}}
    s = floodcmp.summarize(res)
    assert s["N"]["whole_ms"] == 105 and s["F"]["bench_ms"] == 45
    assert s["X"]["ns_per_sent_bench"] == pytest.approx(65_000)          # median of 60 and 70 ms / 1000
    assert s["X"]["ns_per_dropped_whole"] == pytest.approx(75e6 / 900)
    assert s["X"]["saved_ns_per_dropped_vs_N"]["bench_ms"] == pytest.approx((85 - 65) * 1e6 / 900)
    assert s["X"]["vs_F"]["bench_ms"]["ratio"] == pytest.approx(65 / 45)
    assert s["X"]["vs_F"]["whole_ms"]["paired"]["diffs"] == [20, 20]
    assert "vs_F" not in s["F"] and "saved_ns_per_dropped_vs_N" not in s["N"]
    text = _render(res, s)
    assert "| X | 65 | 75 |" in text and "1 (baseline)" in text


def test_summary_pairs_t_with_its_base_build():
    """--base: T0 runs T's attach with another tree's programs; T - T0 is paired per round."""
    res = {"configs": {
        "F": _two(900, (50, 40), (60, 50)),
        "T": _two(900, (55, 45), (62, 52)),
        "T0": _two(900, (70, 60), (80, 70))}}
    s = floodcmp.summarize(res)
    assert s["T"]["vs_T0"]["bench_ms"]["paired"]["diffs"] == [-15, -18]
    assert s["T"]["vs_T0"]["bench_ms"]["ns_per_dropped"] == pytest.approx(-16.5e6 / 900)
    assert "vs_T0" not in s["T0"] and "vs_T0" not in s["F"]
    text = _render(res, s, base_ref="v1", base_commit="0123456789abcdef")
    assert "## T - T0: this tree's programs against `v1` (0123456789ab)" in text
    assert "| bench | -16 |" in text or "| bench | -17 |" in text
    del res["configs"]["T0"]
    assert "vs_T0" not in floodcmp.summarize(res)["T"]


def test_base_must_be_a_commit(capsys):
    with pytest.raises(SystemExit) as e:
        floodcmp.main(["--base", "no-such-ref-anywhere"])
    assert e.value.code == 2
    assert "--base: not a commit in this repository: no-such-ref-anywhere" in capsys.readouterr().err
