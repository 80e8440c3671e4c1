"""etsf.layout mirrors == BTF of the test-only layout object etsf_alignchecker.c
(sizes, members, offsets, enum values); the production objects use those same
layouts and carry no anchor; the pinned maps match the constants of etsf.h."""
import ctypes
import json
import subprocess

import pytest

from etsf import layout as L


def _btf(obj):
    out = subprocess.run(["bpftool", "btf", "dump", "file", obj, "-j"], check=True,
                         capture_output=True, text=True).stdout
    types = json.loads(out)["types"]
    return {t["id"]: t for t in types}, types


@pytest.fixture(scope="module")
def btf(layout_object):
    return _btf(layout_object)


def _find(types, kind, name):
    hits = [t for t in types if t["kind"] == kind and t["name"] == name]
    assert hits, f"{kind} {name} not in BTF"
    return hits[0]


def _resolve_size(by_id, tid):
    t = by_id[tid]
    while t["kind"] in ("TYPEDEF", "VOLATILE", "CONST"):
        t = by_id[t["type_id"]]
    if t["kind"] == "ARRAY":
        return _resolve_size(by_id, t["type_id"]) * t["nr_elems"]
    return t["size"]


def _members(by_id, st):
    return [(m["name"], m["bits_offset"] // 8, _resolve_size(by_id, m["type_id"]))
            for m in st["members"]]


def check_struct(btf, cname, py):
    """The BTF struct cname has the mirror py's size, members and offsets, no holes."""
    by_id, types = btf
    st = _find(types, "STRUCT", cname)
    assert st["size"] == ctypes.sizeof(py), cname
    members = _members(by_id, st)
    mirror = [(name, getattr(py, name).offset, getattr(py, name).size)
              for name, *_unused in py._fields_]
    assert members == mirror
    # no implicit padding: members tile the struct exactly
    end = 0
    for _unused, off, size in members:
        assert off == end, (cname, off, end)
        end = off + size
    assert end == st["size"]


@pytest.mark.parametrize("cname", sorted(L.STRUCTS))
def test_struct_matches_btf(btf, cname):
    check_struct(btf, cname, L.STRUCTS[cname])


@pytest.mark.parametrize("cname", sorted(L.ENUMS))
def test_enum_matches_btf(btf, cname):
    _unused, types = btf
    en = _find(types, "ENUM", cname)
    py, prefix = L.ENUMS[cname]
    btf_vals = {v["name"][len(prefix):]: v["val"] for v in en["values"]
                if v["name"].startswith(prefix)}
    count_names = {"METHODS": L.METHODS, "REASONS_USED": L.REASONS_USED}
    for name, val in btf_vals.items():
        if name in count_names:
            assert val == count_names[name]
            continue
        assert py[name] == val, (cname, name)
    assert {m.name for m in py} == set(btf_vals) - set(count_names)


def test_anchor_covers_every_mirror(btf):
    """Every etsf_* struct and enum of the layout object has a mirror and back."""
    _unused, types = btf
    structs = {t["name"] for t in types if t["kind"] == "STRUCT" and t["name"].startswith("etsf_")}
    enums = {t["name"] for t in types if t["kind"] == "ENUM" and t["name"].startswith("etsf_")}
    assert structs - {"etsf_layout_anchor"} == set(L.STRUCTS) | set(L.FP_STRUCTS)
    assert enums == set(L.ENUMS) | set(L.FP_ENUMS)


@pytest.mark.parametrize("obj", ["xdp_sip.bpf.o", "tc_sip.bpf.o", "tc_fastpath.bpf.o"])
def test_production_objects_use_checked_layouts(btf, objects, obj):
    """A mirrored struct in a program object is the one the layout object
    checks (same headers), and no program object carries a BTF anchor."""
    by_id, types = btf
    p_by_id, p_types = _btf(objects[obj])
    mirrored = set(L.STRUCTS) | set(L.FP_STRUCTS)
    seen = [t for t in p_types if t["kind"] == "STRUCT" and t["name"] in mirrored]
    assert seen, obj
    for st in seen:
        ref = _find(types, "STRUCT", st["name"])
        assert (st["size"], _members(p_by_id, st)) == (ref["size"], _members(by_id, ref))
    assert not [t["name"] for t in p_types if "anchor" in (t.get("name") or "")]


def test_stats_idx_and_fnv():
    assert L.STATS_SLOTS == 3 * 17 * 4 * 32
    assert L.stats_idx(2, 16, 3, 31) == L.STATS_SLOTS - 1
    # the TC ingress hook was appended: the XDP and TC egress indices did not move
    assert L.stats_idx(1, 16, 3, 31) == 2 * 17 * 4 * 32 - 1
    assert L.stats_unidx(L.stats_idx(1, 5, 1, 21)) == (1, 5, 1, 21)
    # FNV-1a 64 reference vectors
    assert L.fnv1a64(b"") == 0xCBF29CE484222325
    assert L.fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert L.fnv1a64(b"foobar") == 0x85944171F73967E8


MAPS = {
    # name: (type, key_size, value struct/size, max_entries)
    "etsf_ctl": (2, 4, L.Ctl, 1),
    "etsf_policy": (2, 4, L.Policy, L.POLICY_SLOTS),
    "etsf_acl_v4": (11, ctypes.sizeof(L.AclV4Key), 4, L.ACL_MAX),
    "etsf_acl_v6": (11, ctypes.sizeof(L.AclV6Key), 4, L.ACL_MAX),
    "etsf_rl": (9, ctypes.sizeof(L.RlKey), L.RlState, L.RL_MAX),
    "etsf_stats": (6, 4, L.Counter, L.STATS_SLOTS),
    "etsf_ifstats": (5, 4, L.IfStat, L.IF_MAX),
    "etsf_last": (2, 4, L.SipInfo, 1),
    "etsf_admit": (6, 4, L.Admit, 1),
    "etsf_admit_txn": (2, 4, L.AdmitSet, L.ADMIT_SETS),
    "etsf_ka_cfg": (2, 4, L.KaCfg, L.POLICY_SLOTS),
    "etsf_ka_id": (1, ctypes.sizeof(L.KaIdKey), 4, L.KA_ID_MAX),
    "etsf_ka_stats": (6, 4, L.KaStats, 1),
}


@pytest.mark.parametrize("name", sorted(MAPS))
def test_pinned_map_shapes(loaded, name):
    m = loaded["maps"][name]
    mtype, ks, vs, maxe = MAPS[name]
    vs = vs if isinstance(vs, int) else ctypes.sizeof(vs)
    assert (m.map_type, m.key_size, m.value_size, m.max_entries) == (mtype, ks, vs, maxe)


def test_objects_share_pinned_maps(loaded):
    from etsf import bpf
    ids = {}
    for pname in ("xdp_sip", "tc_sip_egress"):
        info = bpf.prog_info(loaded["progs"][pname].id)
        ids[pname] = set(info["map_ids"])
    shared = {loaded["maps"][n].id for n in ("etsf_ctl", "etsf_policy", "etsf_stats")}
    assert shared <= ids["xdp_sip"] and shared <= ids["tc_sip_egress"]
