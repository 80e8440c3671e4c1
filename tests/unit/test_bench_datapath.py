"""The datapath microbenchmark's inputs (bench/datapath.py): the new-call INVITEs and --bpf-src."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import datapath  # noqa: E402


def test_new_call_invites_differ_only_in_call_id():
    a, b = datapath.invite_new_call(0), datapath.invite_new_call(1)
    ref = datapath._eth(datapath.invite_1k())
    assert len(a) == len(b) == len(ref)
    hdr = 14 + 20 + 8                      # Ethernet, IPv4, UDP: the checksum differs too
    diff = [i for i, (x, y) in enumerate(zip(a[hdr:], b[hdr:])) if x != y]
    body = ref[hdr:]
    assert diff and all(body.index(b"Call-ID: ") < i < body.index(b"CSeq: ") for i in diff)
    assert len({datapath.invite_new_call(i) for i in range(datapath.NEW_CALLS)}) == datapath.NEW_CALLS


def test_bpf_src_without_programs_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        datapath.main(["--bpf-src", str(tmp_path)])
    assert e.value.code == 2
    assert "--bpf-src" in capsys.readouterr().err


def test_paired_summary_pairs_by_round():
    """work - base per round: a drift both trees share cancels; the TC ratio is per tree and round."""
    runs = {"base": {"tc_ingress_invite_1k_pass": [300, 600, 310, 620], "tc_count_only": [15, 30, 15, 30]},
            "work": {"tc_ingress_invite_1k_pass": [280, 570, 290, 600], "tc_count_only": [15, 30, 15, 30]}}
    r = datapath.paired_summary(runs)
    inv = r["tc_ingress_invite_1k_pass"]
    assert inv["diff_ns"] == -20 and inv["work_lower_rounds"] == 4 and inv["work_higher_rounds"] == 0
    lo, hi = inv["diff_ci95"]
    assert lo <= -20 <= hi and hi < 0
    assert inv["base_ratio_to_tc_count_only"] == 20.33 and inv["work_ratio_to_tc_count_only"] == 19.17
    assert inv["base_ratio_range"] == [20.0, 20.67]
    assert "base_ratio_to_tc_count_only" not in r["tc_count_only"]
    assert r["tc_count_only"]["diff_ns"] == 0


def test_base_src_and_cpu_are_checked(tmp_path, capsys):
    for args, word in ((["--base-src", str(tmp_path)], "--base-src"), (["--cpu", "4096"], "--cpu"),
                       (["--rounds", "0"], "--rounds")):
        with pytest.raises(SystemExit) as e:
            datapath.main(args)
        assert e.value.code == 2
        assert word in capsys.readouterr().err
