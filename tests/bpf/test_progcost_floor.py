"""bench/bpf/progcost_ref.c's floor programs do the work they stand for: on the benchmark's own
messages they find the Call-ID, hash its value a word at a time, and a request writes the
table line the other side then reads.  A floor that skipped the work would measure nothing."""
from __future__ import annotations

import os
import re
import struct
import sys
from pathlib import Path

import pytest

from etsf import bpf
from etsf.bpfmaps import Map
from etsf.build import build_test_object

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import progcost  # noqa: E402

FNV_OFFSET, FNV_PRIME, M64 = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1
SKB_CTX = (bytes(36) + (1).to_bytes(4, "little")).ljust(192, b"\0")
TC_ACT_UNSPEC = 0xFFFFFFFF


def word_fnv(value: bytes) -> int:
    """FNV-1a over 8-byte little-endian words, the last one zero-padded; a value of a multiple of
    8 bytes ends with the word holding its terminator, masked to 0 (what the program reads)."""
    h = FNV_OFFSET
    for i in range(0, len(value), 8):
        h = ((h ^ int.from_bytes(value[i:i + 8].ljust(8, b"\0"), "little")) * FNV_PRIME) & M64
    if len(value) % 8 == 0:
        h = (h * FNV_PRIME) & M64
    return h


@pytest.fixture(scope="module")
def floor(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("BPF tests need root")
    obj = build_test_object(REPO / "bench" / "bpf", tmp_path_factory.mktemp("progcost-ref"), "progcost_ref.c")
    progs = bpf.load_object(obj, str(tmp_path_factory.mktemp("pins")))
    maps = {}
    for mid in bpf.prog_info(progs["pc_floor_ingress"].id)["map_ids"]:
        m = Map.from_id(mid)
        maps[m.name] = m
    yield progs, maps
    for m in maps.values():
        m.close()
    for p in progs.values():
        p.close()


def last(maps) -> dict:
    raw = maps["pc_floor_last"].lookup_percpu(bytes(4))
    vals = [struct.unpack("<QQIII4x", v) for v in raw]
    # PROG_TEST_RUN runs on the calling CPU: the entry that moved is the one written
    h, table, found, response, voff = max(vals, key=lambda v: v[0] != 0)
    return {"hash": h, "table": table, "found": found, "response": response, "value_off": voff}


def reset(maps):
    ncpu = maps["pc_floor_last"].ncpus
    maps["pc_floor_last"].update_percpu(bytes(4), [bytes(32)] * ncpu)


@pytest.mark.parametrize("kind", ["invite", "ok200"])
def test_floor_finds_and_hashes_the_call_id(floor, kind):
    progs, maps = floor
    payload = progcost.invite(77) if kind == "invite" else progcost.ok200(seq=77)
    m = re.search(rb"\r\nCall-ID: ([^\r\n ]+)", payload)
    want = word_fnv(m.group(1))
    # without the table: the same parse and hash, no line touched
    for prog in ("pc_parse_ingress", "pc_parse_egress"):
        reset(maps)
        bpf.test_run(progs[prog].fd, progcost.frame(payload), ctx=SKB_CTX)
        got = last(maps)
        assert (got["found"], got["hash"], got["table"]) == (1, want, 0)
    reset(maps)
    ret, _out, _ns = bpf.test_run(progs["pc_floor_ingress"].fd, progcost.frame(payload), ctx=SKB_CTX)
    assert ret == TC_ACT_UNSPEC          # hands every packet on
    got = last(maps)
    assert got["found"] == 1
    assert got["value_off"] == m.start(1)
    assert got["hash"] == want
    assert got["response"] == (kind == "ok200")
    if kind == "ok200":                  # a response only reads: its own line was never written
        assert got["table"] != want
        return
    assert got["table"] == want          # the request wrote its line
    # the other side reads the line the request wrote
    reset(maps)
    bpf.test_run(progs["pc_floor_egress"].fd, progcost.frame(payload), ctx=SKB_CTX)
    assert last(maps)["table"] == want


def test_floor_without_call_id_and_off_port(floor):
    progs, maps = floor
    no_cid = progcost.options(3).replace(b"Call-ID:", b"Call-Xx:")
    reset(maps)
    bpf.test_run(progs["pc_floor_ingress"].fd, progcost.frame(no_cid), ctx=SKB_CTX)
    got = last(maps)
    assert got["found"] == 0 and got["hash"] == FNV_OFFSET
    reset(maps)
    bpf.test_run(progs["pc_floor_ingress"].fd, progcost.frame(progcost.invite(4), sport=5070, dport=5070),
                 ctx=SKB_CTX)
    assert last(maps)["hash"] == 0       # not on the SIP port: left before any payload access
