"""Per-CPU LRU lists (BPF_F_NO_COMMON_LRU) in the layout: the kernel's max_entries rounding the
loader asks for, and which flag changes an upgrade carries over (src/etsf/datapath/migrate.py)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from etsf import bpf
from etsf.datapath import migrate
from etsf.datapath.base import DatapathError

LRU, HASH = bpf.MAP_TYPE_LRU_HASH, bpf.MAP_TYPE_HASH
PER_CPU = bpf.BPF_F_NO_COMMON_LRU


@pytest.mark.parametrize("mtype,entries,flags,ncpus,want", [
    (LRU, 65536, PER_CPU, 2, 65536),
    (LRU, 65536, PER_CPU, 6, 65538),            # up to a multiple of the possible CPUs
    (LRU, 5, PER_CPU, 8, 8),                    # every CPU's list at least one entry
    (LRU, 0xFFFFFFFF, PER_CPU, 2, 0xFFFFFFFE),  # rounding up would overflow: down
    (LRU, 65537, 0, 6, 65537),                  # the common list: as asked
    (HASH, 65537, PER_CPU, 6, 65537),           # not an LRU: the flag means nothing here
    (bpf.MAP_TYPE_LRU_PERCPU_HASH, 10, PER_CPU, 4, 12),
])
def test_lru_max_entries(mtype, entries, flags, ncpus, want):
    assert bpf.lru_max_entries(mtype, entries, flags, ncpus) == want


def _old(mtype=LRU, flags=0, entries=65536):
    return SimpleNamespace(map_type=mtype, map_flags=flags, key_size=8, value_size=16, max_entries=entries,
                           keys=lambda: [])


def _new(mtype=LRU, flags=PER_CPU, entries=65536):
    return {"type": mtype, "key_size": 8, "value_size": 16, "max_entries": entries, "map_flags": flags}


def test_per_cpu_lists_are_carried_over_both_ways_and_with_a_new_size():
    migrate._check("etsf_fp_aff", _old(), _new(entries=131072))   # pylint: disable=protected-access
    migrate._check("etsf_fp_aff", _old(flags=PER_CPU), _new(flags=0))   # pylint: disable=protected-access


@pytest.mark.parametrize("old,new,why", [
    (_old(), _new(flags=PER_CPU | bpf.BPF_F_RDONLY), "map flags changed (0x0 -> 0xa)"),
    (_old(mtype=HASH), _new(mtype=HASH), "map flags changed (0x0 -> 0x2)"),
    (_old(flags=1), _new(flags=PER_CPU), "map flags changed (0x1 -> 0x2)"),
])
def test_other_flag_changes_are_refused_with_one_line(old, new, why):
    with pytest.raises(DatapathError) as e:
        migrate._check("etsf_x", old, new)                        # pylint: disable=protected-access
    assert str(e.value) == f"cannot upgrade pinned map etsf_x: {why} (running programs unchanged)"
