"""The pure parts of bench/progcost.py: the messages it sends, the ns-per-run arithmetic of
bpf_stats snapshots, and the paired summary over interleaved rounds."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import progcost  # noqa: E402


def test_messages_have_their_sizes_and_own_call_ids():
    a, b = progcost.invite(1), progcost.invite(2)
    assert len(a) == len(b) == 1024
    assert a.startswith(b"INVITE ") and a != b
    assert b"Call-ID: 00000000000001@pc33" in a
    oks = [progcost.ok200(seq=i) for i in (0, 7)]
    assert [len(x) for x in oks] == [350, 350]
    assert oks[0].startswith(b"SIP/2.0 200 OK\r\n") and oks[0] != oks[1]
    assert oks[0].endswith(b"Content-Length: 0\r\n\r\n")
    with pytest.raises(ValueError, match="too small"):
        progcost.ok200(size=100)


def test_per_run_divides_the_differences_and_drops_stray_runs():
    before = {"tc_fastpath": {"run_cnt": 100, "run_time_ns": 50_000},
              "tc_sip_egress": {"run_cnt": 10, "run_time_ns": 9_000}}
    after = {"tc_fastpath": {"run_cnt": 2100, "run_time_ns": 6_050_000},
             "tc_sip_egress": {"run_cnt": 11, "run_time_ns": 12_000},
             "ref_ingress": {"run_cnt": 2000, "run_time_ns": 300_000}}
    r = progcost.per_run(before, after)
    assert r["tc_fastpath"] == {"runs": 2000, "ns_per_run": 3000.0}
    assert r["tc_sip_egress"] == {"runs": 1, "ns_per_run": None}       # one ARP reply
    assert r["ref_ingress"] == {"runs": 2000, "ns_per_run": 150.0}    # absent before: from 0


def _round(base, work):
    return {"base": {"invite": {"tc_fastpath": {"runs": 10, "ns_per_run": base}}},
            "work": {"invite": {"tc_fastpath": {"runs": 10, "ns_per_run": work}}}}


def test_summary_medians_and_paired_differences():
    rounds = [_round(3000, 2000), _round(5000, 4500), _round(4000, 4100), _round(3500, None)]
    s = progcost.summarize(rounds)["invite/tc_fastpath"]
    assert s["base"] == 3750 and s["work"] == 4100
    assert s["diffs"] == [-1000, -500, 100] and s["diff"] == -500
    assert s["rounds"] == 3 and s["lower_in"] == 2


def test_render_names_every_row():
    rounds = [_round(3000, 2000)]
    doc = {"stamp": "20261130T000000Z", "params": {"count": 10, "rate": 500, "rounds": 1},
           "base_ref": "HEAD", "base_commit": "a" * 40, "work_commit": "b" * 40, "work_dirty": False,
           "rounds": rounds, "summary": progcost.summarize(rounds), "lost": 0, "stats_restored_to": "0"}
    text = progcost.render(doc)
    assert "| invite | tc_fastpath | 3000 | 2000 | -1000 | 1/1 |" in text
    assert "restored to 0" in text


def test_options_is_a_keepalive_to_the_node_with_its_own_call_id():
    a, b = progcost.options(1), progcost.options(2)
    assert a.startswith(b"OPTIONS sip:198.18.44.2 SIP/2.0\r\n") and a != b
    assert b"Call-ID: ka-1-progcost@kagen\r\n" in a and b";rport\r\n" in a
    assert b"To: <sip:198.18.44.2>\r\n" in a and b";tag=" not in a.split(b"To:")[1].split(b"\r\n")[0]
    assert a.endswith(b"Content-Length: 0\r\n\r\n")
    # the policy answers it: keep-alive on for the node's address, no sampling, no OPTIONS limit
    assert 'identities: ["198.18.44.2"]' in progcost.POLICY and "sample_every: 0" in progcost.POLICY
    assert "options: {rate: 0}" in progcost.POLICY and "deny: [198.18.44.3]" in progcost.POLICY


def test_frame_wraps_the_payload_in_valid_ipv4_udp():
    from scapy.all import Ether, IP, UDP
    f = progcost.frame(b"hello", sport=5062)
    p = Ether(f)
    assert (p[IP].src, p[IP].dst, p[UDP].sport, p[UDP].dport) == ("198.18.44.1", "198.18.44.2", 5062, 5060)
    assert bytes(p[UDP].payload) == b"hello" and p[UDP].len == 13 and p[IP].len == 33
    chk = p[IP].chksum
    del p[IP].chksum
    assert Ether(bytes(p))[IP].chksum == chk


def _floor_round(etsf, floor, count_only, etsf_eg=None):
    r = _round(etsf + 1, etsf)
    r["work"]["invite"]["tc_sip_egress"] = {"runs": 10, "ns_per_run": etsf_eg}
    r["floor"] = {"invite": {"floor_ingress": {"runs": 10, "ns_per_run": floor},
                             "ref_ingress": {"runs": 10, "ns_per_run": count_only},
                             "floor_egress": {"runs": 10, "ns_per_run": None}},
                  "invite_repeat": {"floor_ingress": {"runs": 9, "ns_per_run": 80},
                                    "ref_ingress": {"runs": 9, "ns_per_run": 16}}}
    r["parse"] = {"invite": {"parse_ingress": {"runs": 10, "ns_per_run": floor // 2},
                             "ref_ingress": {"runs": 10, "ns_per_run": count_only}}}
    return r


def test_floor_summary_pairs_etsf_with_the_floor_of_the_same_round():
    rounds = [_floor_round(2000, 500, 100), _floor_round(1200, 400, 50), _floor_round(900, 300, 100)]
    f = progcost.floor_summary(rounds)
    inv = f["invite/tc_fastpath"]
    assert (inv["etsf"], inv["floor"], inv["count_only"]) == (1200, 400, 100)
    assert inv["parse_only"] == 200                   # the pass without the table: 250, 200, 150
    assert inv["diff"] == 800 and inv["ratio"] == 3.0 and inv["rounds"] == 3   # 1500, 800, 600; 4, 3, 3
    assert inv["floor_over_count_only"] == 5.0                                  # 5, 8, 3
    assert f["invite_repeat/tc_fastpath"]["etsf"] is None       # no repeat in the work pass here
    assert f["invite_repeat/tc_fastpath"]["floor_over_count_only"] == 5.0
    assert "invite/tc_sip_egress" not in f            # no floor figure: no row
    # the floor pass never enters the base/work table
    assert not any("floor" in k or "parse" in k or "ref_" in k for k in progcost.summarize(rounds))


def test_render_has_the_floor_table_when_there_is_a_floor():
    rounds = [_floor_round(2000, 500, 100)]
    doc = {"stamp": "20261130T000000Z", "params": {"count": 10, "rate": 500, "rounds": 1},
           "base_ref": "HEAD", "base_commit": "a" * 40, "work_commit": "b" * 40, "work_dirty": False,
           "rounds": rounds, "summary": progcost.summarize(rounds), "floor": progcost.floor_summary(rounds),
           "lost": 0, "stats_restored_to": "0"}
    text = progcost.render(doc)
    assert "| invite | tc_fastpath | 2000 | 500 | 250 | 100 | +1500 | 4.0 | 5.0 |" in text
    assert "| invite_repeat | tc_fastpath | - | 80 | - | 16 | - | - | 5.0 |" in text
    doc["floor"] = {}
    assert "## The floor" not in progcost.render(doc)


def _repeat_round(base, work, count_only):
    rep = {v: {"invite_repeat": {"tc_fastpath": {"runs": 9, "ns_per_run": e},
                                 "ref_ingress": {"runs": 9, "ns_per_run": count_only}}}
           for v, e in (("base", base), ("work", work))}
    return rep


def test_repeat_ratio_pairs_each_variant_with_the_count_only_run_of_its_pass():
    rounds = [_repeat_round(340, 255, 17), _repeat_round(360, 270, 20), _repeat_round(350, 240, 15)]
    rr = progcost.repeat_ratio(rounds)
    assert rr["work"] == {"ratio": 15.0, "min": 13.5, "max": 16.0, "rounds": 3}      # 15, 13.5, 16
    assert rr["base"]["ratio"] == 20.0 and rr["base"]["rounds"] == 3                  # 20, 18, 23.3
    # a round without the count-only figure is left out, not divided by zero
    rounds.append({"work": {"invite_repeat": {"tc_fastpath": {"runs": 9, "ns_per_run": 1}}}})
    assert progcost.repeat_ratio(rounds)["work"]["rounds"] == 3
    doc = {"stamp": "20261130T000000Z", "params": {"count": 10, "rate": 500, "rounds": 3},
           "base_ref": "HEAD", "base_commit": "a" * 40, "work_commit": "b" * 40, "work_dirty": False,
           "rounds": rounds, "summary": progcost.summarize(rounds), "repeat_ratio": rr,
           "lost": 0, "stats_restored_to": "0"}
    assert "base 20.0 [18.0, 23.3]; work 15.0 [13.5, 16.0]." in progcost.render(doc)
