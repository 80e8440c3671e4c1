"""Telemetry maps (bpf/etsf_telemetry.h) are pinned with the shapes of etsf.h / etsf.layout."""
import ctypes

import pytest

from etsf import bpf
from etsf import layout as L

TM_MAPS = {
    # name: (type, key_size, value size, max_entries)
    "etsf_tm_ifcfg": (bpf.MAP_TYPE_HASH, 4, ctypes.sizeof(L.TmIfCfg), L.IF_MAX + 1),
    "etsf_tm_txn": (bpf.MAP_TYPE_ARRAY, 4, ctypes.sizeof(L.TmSet), L.TM_SETS),
    "etsf_tm_hist": (bpf.MAP_TYPE_PERCPU_ARRAY, 4, ctypes.sizeof(L.TmHist),
                     L.METHODS * L.TM_STAGES),
    "etsf_tm_codes": (bpf.MAP_TYPE_PERCPU_ARRAY, 4, 8, L.TM_CODE_METHODS * L.TM_CODES),
    "etsf_tm_events": (bpf.MAP_TYPE_PERCPU_ARRAY, 4, 8, L.TM_EVENTS),
}


@pytest.mark.parametrize("name", sorted(TM_MAPS))
def test_tm_map_shapes(loaded, name):
    with bpf.open_map(name, loaded["root"]) as m:
        assert (m.map_type, m.key_size, m.value_size, m.max_entries) == TM_MAPS[name]


def test_tm_maps_shared_by_both_programs(loaded):
    ids = {}
    for pname in ("xdp_sip", "tc_sip_egress"):
        ids[pname] = set(bpf.prog_info(loaded["progs"][pname].id)["map_ids"])
    for name in ("etsf_tm_txn", "etsf_tm_hist", "etsf_tm_codes", "etsf_tm_ifcfg"):
        with bpf.open_map(name, loaded["root"]) as m:
            assert m.id in ids["xdp_sip"] and m.id in ids["tc_sip_egress"], name


def test_tm_index_helpers():
    assert L.tm_hist_idx(L.Method.RESPONSE, L.TmStage.FINAL_6XX) == L.METHODS * L.TM_STAGES - 1
    assert L.tm_code_idx(L.Method.INVITE, 100) == 0
    assert L.tm_code_idx(L.Method.REGISTER, 699) == L.TM_CODE_METHODS * L.TM_CODES - 1
    assert L.tm_code_idx(L.Method.BYE, 200) is None
    assert L.tm_code_idx(L.Method.INVITE, 700) is None
