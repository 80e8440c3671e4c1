"""Fast-path map layout: ctypes mirrors of bpf/etsf_fastpath.h (program tc_fastpath), checked
against the layout object's BTF by tests/bpf/test_fastpath_layout.py.  Part of
:mod:`etsf.layout`, which re-exports every name."""
from __future__ import annotations

import ctypes
from enum import IntEnum

from .core import POLICY_SLOTS, Struct

FP_SVC_MAX = 16
FP_BACKENDS_MAX = 256
FP_RING = 4093
FP_AFF_MAX = 131072
FP_FLOW_MAX = 131072
FP_RETRIES = 8
FP_NONE = 0xFFFF
FP_STATS_SLOTS = 16
FP_B_PEER = 0x1
FP_B_L2 = 0x2
FP_S_CALLID = 0x1
FP_NAME_LEN = 32


def fp_b_slot(slot: int) -> int:
    """ETSF_FP_B_SLOT(slot): backend member of the service set in that policy slot."""
    return 0x10 << (int(slot) & 1)


class FpReason(IntEnum):
    FWD = 0
    RET = 1
    NOT_SERVICE = 2
    BYPASS = 3
    DEADMAN = 4
    NOT_L4 = 5
    FRAGMENT = 6
    NOT_SIP = 7
    NO_BACKEND = 8
    FIB_FAIL = 9
    INTERNAL = 10
    TCP_NO_FLOW = 11


FP_REASONS = 12


class FpSvcKey(Struct):
    _fields_ = [
        ("slot", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("proto", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8),
        ("port", ctypes.c_uint16),
        ("_pad1", ctypes.c_uint16),
        ("addr", ctypes.c_uint8 * 16),
    ]


class FpSvc(Struct):
    _fields_ = [
        ("ring", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("n_backends", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("name", ctypes.c_char * FP_NAME_LEN),
    ]


class FpRing(Struct):
    _fields_ = [
        ("backend", ctypes.c_uint16 * FP_RING),
        ("_pad", ctypes.c_uint16 * 3),
    ]


class FpBackend(Struct):
    _fields_ = [
        ("addr", ctypes.c_uint8 * 16),
        ("port", ctypes.c_uint16),
        ("family", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("ifindex", ctypes.c_uint32),
        ("mac", ctypes.c_uint8 * 6),
        ("smac", ctypes.c_uint8 * 6),
        ("up", ctypes.c_uint32),
        ("weight", ctypes.c_uint16 * POLICY_SLOTS),
        ("svc", ctypes.c_uint8 * POLICY_SLOTS),
        ("_pad", ctypes.c_uint8 * 2),
    ]


class FpBstat(Struct):
    _fields_ = [
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
        ("dialogs", ctypes.c_uint64),
        ("ret_packets", ctypes.c_uint64),
        ("ret_bytes", ctypes.c_uint64),
    ]


class FpAffKey(Struct):
    _fields_ = [
        ("callid_hash", ctypes.c_uint64),
        ("vip", ctypes.c_uint8 * 16),
        ("vport", ctypes.c_uint16),
        ("family", ctypes.c_uint8),
        ("proto", ctypes.c_uint8),
        ("_pad", ctypes.c_uint32),
    ]


class FpAff(Struct):
    _fields_ = [
        ("backend", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("generation", ctypes.c_uint64),
    ]


class FpFlowKey(Struct):
    _fields_ = [
        ("a", ctypes.c_uint8 * 16),
        ("b", ctypes.c_uint8 * 16),
        ("aport", ctypes.c_uint16),
        ("bport", ctypes.c_uint16),
        ("family", ctypes.c_uint8),
        ("proto", ctypes.c_uint8),
        ("dir", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8),
    ]


class FpFlow(Struct):
    _fields_ = [
        ("vip", ctypes.c_uint8 * 16),
        ("vport", ctypes.c_uint16),
        ("_pad", ctypes.c_uint16),
        ("backend", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("cmac", ctypes.c_uint8 * 6),
        ("lmac", ctypes.c_uint8 * 6),
        ("generation", ctypes.c_uint64),
    ]


FP_STRUCTS = {
    "etsf_fp_svc_key": FpSvcKey,
    "etsf_fp_svc": FpSvc,
    "etsf_fp_ring": FpRing,
    "etsf_fp_backend": FpBackend,
    "etsf_fp_bstat": FpBstat,
    "etsf_fp_aff_key": FpAffKey,
    "etsf_fp_aff": FpAff,
    "etsf_fp_flow_key": FpFlowKey,
    "etsf_fp_flow": FpFlow,
}

FP_ENUMS = {
    "etsf_fp_reason": (FpReason, "ETSF_FP_"),
}
