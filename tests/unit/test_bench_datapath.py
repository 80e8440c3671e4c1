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
