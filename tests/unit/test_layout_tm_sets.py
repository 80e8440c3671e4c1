"""The transaction and admission tables' placement as the agent computes it (etsf.layout):
the upgrade's converter places old LRU entries with it, the exporter counts the live
transactions with it.  That it is the programs' own placement is tested against the programs
in tests/bpf/test_telemetry.py and tests/bpf/test_admission.py."""
from __future__ import annotations

import ctypes

from etsf import layout as L


def test_a_set_is_one_cache_line_of_four_ways():
    assert ctypes.sizeof(L.TmSet) == 64 and L.TM_WAYS == 4
    assert L.TM_SETS * L.TM_WAYS == L.TM_TXN_MAX and L.TM_SETS & (L.TM_SETS - 1) == 0


def test_slot_tag_is_never_zero_and_sets_spread():
    keys = [L.TmTxnKey(callid_hash=L.fnv1a64(f"c{i}".encode()), cseq=1, ifindex=3, method=L.Method.INVITE)
            for i in range(4096)]
    slots = [L.tm_slot(k) for k in keys]
    assert all(tag & 1 and 0 <= idx < L.TM_SETS for idx, tag in slots)
    assert len({idx for idx, _t in slots}) > 3000            # 4096 keys over 8192 sets
    # every field of the key moves the slot
    k = keys[0]
    for f, v in (("cseq", 2), ("ifindex", 4), ("method", int(L.Method.BYE))):
        other = L.TmTxnKey.from_bytes(bytes(k))
        setattr(other, f, v)
        assert L.tm_slot(other) != L.tm_slot(k), f


def test_place_fills_free_ways_then_replaces_the_oldest():
    s = L.TmSet()
    for tag, start in ((3, 500), (5, 100), (7, 300), (9, 400)):
        assert L.tm_place(s, tag, start)
    assert L.tm_open(s) == 4
    assert L.tm_place(s, 11, 600)                            # the oldest (tag 5, 100) goes
    assert L.tm_find(s, 5) is None and L.tm_find(s, 11).start_ns == 600
    assert not L.tm_place(s, 13, 50)                         # older than every way: not placed
    assert L.tm_find(s, 13) is None
    assert L.tm_place(s, 7, 700, seen=0x80)                  # its own way, updated
    assert (L.tm_find(s, 7).start_ns, L.tm_find(s, 7).seen) == (700, 0x80) and L.tm_open(s) == 4


def test_open_counts_only_live_transactions():
    s = L.TmSet()
    now = 100 * 10**9
    L.tm_place(s, 3, now - L.TM_TXN_LIFE_NS - 1)
    L.tm_place(s, 5, now - 1)
    assert L.tm_open(s) == 2 and L.tm_open(s, now) == 1


def test_open_in_a_table_read_at_once_is_the_sum_over_its_sets():
    now = 100 * 10**9
    sets = [L.TmSet() for _i in range(3)]
    L.tm_place(sets[0], 3, now - 5)
    L.tm_place(sets[0], 5, now - L.TM_TXN_LIFE_NS)          # exactly a life old: gone
    L.tm_place(sets[2], 7, now - 1)
    L.tm_place(sets[2], 9, now - 2, seen=0x80)
    raw = b"".join(bytes(s) for s in sets)
    assert L.tm_open_in(raw, now) == sum(L.tm_open(s, now) for s in sets) == 3


def test_admission_sets_are_lines_of_four_ways_placed_alike():
    """Admission's decisions: the same set shape and placement, keyed by the mixed admit_key
    (so an upgrade can place what an LRU of those keys held)."""
    assert ctypes.sizeof(L.AdmitSet) == 64 and L.ADMIT_SETS * L.SET_WAYS == L.ADMIT_TXN_MAX
    assert L.ADMIT_SETS & (L.ADMIT_SETS - 1) == 0
    slots = [L.admit_slot(L.admit_key(L.fnv1a64(f"a{i}".encode()), 1)) for i in range(4096)]
    assert all(tag & 1 and 0 <= idx < L.ADMIT_SETS for idx, tag in slots)
    assert len({idx for idx, _t in slots}) > 3500            # 4096 keys over 16,384 sets
    assert L.admit_slot(L.admit_key(7, 1)) != L.admit_slot(L.admit_key(7, 2))
    s = L.AdmitSet()
    for tag, ts in ((3, 500), (5, 100), (7, 300), (9, 400)):
        assert L.way_place(s.way, tag, ts, tag & 2)
    assert L.way_place(s.way, 11, 600, 1)                    # the oldest (tag 5) goes
    assert L.way_find(s.way, 5) is None
    assert (L.way_find(s.way, 11).ts_ns, L.way_find(s.way, 11).admitted) == (600, 1)
