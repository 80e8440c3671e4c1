"""etsf.layout fast-path mirrors (FP_STRUCTS / FP_ENUMS) == BTF of the layout object
(etsf_alignchecker.c); tc_fastpath.bpf.o shares the core structs."""
import ctypes

import pytest

from etsf import layout as L

from .test_layout import _btf, _find, check_struct


@pytest.fixture(scope="module")
def btf(layout_object):
    return _btf(layout_object)


@pytest.mark.parametrize("cname", sorted(L.FP_STRUCTS))
def test_fp_struct_matches_btf(btf, cname):
    check_struct(btf, cname, L.FP_STRUCTS[cname])


def test_fp_reason_enum_matches_btf(btf):
    types = btf[1]
    en = _find(types, "ENUM", "etsf_fp_reason")
    vals = {v["name"][len("ETSF_FP_"):]: v["val"] for v in en["values"]}
    assert vals.pop("REASONS") == L.FP_REASONS
    assert vals == {m.name: int(m) for m in L.FpReason}
    assert L.FP_REASONS <= L.FP_STATS_SLOTS


def test_fp_core_structs_match_btf_too(objects):
    """tc_fastpath shares etsf_ctl / etsf_counter with the classifier."""
    types = _btf(objects["tc_fastpath.bpf.o"])[1]
    for cname in ("etsf_ctl", "etsf_counter"):
        assert _find(types, "STRUCT", cname)["size"] == ctypes.sizeof(L.STRUCTS[cname])
