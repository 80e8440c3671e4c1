"""ctypes mirrors of bpf/etsf.h (etsf_consts.h + etsf_structs.h) - the one
definition of every eTSF map layout.

tests/bpf/test_layout*.py prove these equal the BTF of the test-only layout
object bpf/etsf_alignchecker.c, built from the same headers and flags as the
programs (sizes, member names and offsets, enum values), and that the program
objects use those same structs.  Change both together.
"""
from __future__ import annotations

import ctypes
from enum import IntEnum

ABI_VERSION = 1

MAX_SIP_PORTS = 8
MAX_TLS_PORTS = 4
PARSE_BYTES = 2048
POLICY_SLOTS = 2
RL_CLASSES = 4
OVERLOAD_LEVELS = 4
PRIO_CLASSES = 4
HOOKS = 2
VERDICTS = 4
REASONS = 32
ACL_MAX = 16384
RL_MAX = 65536
IF_MAX = 64

CTL_F_RECORD = 0x1
POL_F_VALID = 0x1
POL_F_MARK = 0x2

FNV64_OFFSET = 0xCBF29CE484222325
FNV64_PRIME = 0x100000001B3
_U64 = (1 << 64) - 1


class Method(IntEnum):
    UNKNOWN = 0
    INVITE = 1
    ACK = 2
    BYE = 3
    CANCEL = 4
    REGISTER = 5
    OPTIONS = 6
    PRACK = 7
    SUBSCRIBE = 8
    NOTIFY = 9
    PUBLISH = 10
    INFO = 11
    REFER = 12
    MESSAGE = 13
    UPDATE = 14
    OTHER = 15
    RESPONSE = 16


METHODS = 17


class Verdict(IntEnum):
    PASS = 0
    DROP = 1
    REDIRECT = 2
    MARK = 3


class Reason(IntEnum):
    OK = 0
    BYPASS = 1
    DEADMAN = 2
    NOT_IP = 3
    VLAN_NESTED = 4
    TRUNC_L2L3 = 5
    BAD_IP = 6
    IPV6_EXTHDR = 7
    NOT_UDP_TCP = 8
    NOT_SIP_PORT = 9
    FRAGMENT = 10
    TRUNC_L4 = 11
    TLS = 12
    TCP_CONT = 13
    NOT_SIP = 14
    SIP_TRUNC = 15
    NO_CALLID = 16
    NO_CSEQ = 17
    PARSE_LIMIT = 18
    TRUSTED = 19
    DENY = 20
    RATE_LIMIT = 21
    OVERLOAD = 22
    PROTECTED = 23
    NO_POLICY = 24
    INTERNAL = 25
    EMPTY = 26


REASONS_USED = 27


class Hook(IntEnum):
    XDP = 0
    TC_EGRESS = 1


class RlClass(IntEnum):
    REGISTER = 0
    OPTIONS = 1
    INVITE = 2
    OTHER = 3


class Prio(IntEnum):
    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3


class AclAction(IntEnum):
    DENY = 1
    TRUST = 2


STATS_SLOTS = HOOKS * METHODS * VERDICTS * REASONS


def stats_idx(hook: int, method: int, verdict: int, reason: int) -> int:
    """ETSF_STATS_IDX(hook, method, verdict, reason)."""
    return ((int(hook) * METHODS + int(method)) * VERDICTS + int(verdict)) * REASONS + int(reason)


def stats_unidx(idx: int) -> tuple[int, int, int, int]:
    """Inverse of stats_idx: (hook, method, verdict, reason)."""
    idx, reason = divmod(int(idx), REASONS)
    idx, verdict = divmod(idx, VERDICTS)
    hook, method = divmod(idx, METHODS)
    return hook, method, verdict, reason


def fnv1a64(data: bytes) -> int:
    """FNV-1a 64 as computed by the kernel parser for the Call-ID value."""
    h = FNV64_OFFSET
    for b in data:
        h ^= b
        h = (h * FNV64_PRIME) & _U64
    return h


class _S(ctypes.Structure):
    def __repr__(self):  # pragma: no cover - debugging aid
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n, *_unused in self._fields_
                           if not n.startswith("_"))
        return f"{type(self).__name__}({fields})"

    @classmethod
    def from_bytes(cls, data: bytes):
        return cls.from_buffer_copy(bytes(data)[: ctypes.sizeof(cls)])


class Ctl(_S):
    _fields_ = [
        ("bypass", ctypes.c_uint32),
        ("overload_level", ctypes.c_uint32),
        ("active_slot", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("heartbeat_ns", ctypes.c_uint64),
        ("deadman_ns", ctypes.c_uint64),
        ("generation", ctypes.c_uint64),
    ]


class Rate(_S):
    _fields_ = [
        ("rate_pps", ctypes.c_uint32),
        ("burst", ctypes.c_uint32),
    ]


class Policy(_S):
    _fields_ = [
        ("generation", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("sip_ports", ctypes.c_uint16 * MAX_SIP_PORTS),
        ("tls_ports", ctypes.c_uint16 * MAX_TLS_PORTS),
        ("method_prio", ctypes.c_uint8 * METHODS),
        ("shed_below", ctypes.c_uint8 * OVERLOAD_LEVELS),
        ("agg_prefix_v4", ctypes.c_uint8),
        ("agg_prefix_v6", ctypes.c_uint8),
        ("dscp", ctypes.c_uint8),
        ("_pad0", ctypes.c_uint8 * 4),
        ("skb_priority", ctypes.c_uint32),
        ("rate", Rate * RL_CLASSES),
        ("_pad1", ctypes.c_uint32),
    ]


class AclV4Key(_S):
    _fields_ = [
        ("prefixlen", ctypes.c_uint32),
        ("slot", ctypes.c_uint8),
        ("addr", ctypes.c_uint8 * 4),
        ("_pad", ctypes.c_uint8 * 3),
    ]


class AclV6Key(_S):
    _fields_ = [
        ("prefixlen", ctypes.c_uint32),
        ("slot", ctypes.c_uint8),
        ("addr", ctypes.c_uint8 * 16),
        ("_pad", ctypes.c_uint8 * 3),
    ]


class RlKey(_S):
    _fields_ = [
        ("family", ctypes.c_uint8),
        ("rl_class", ctypes.c_uint8),
        ("prefix", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8),
        ("addr", ctypes.c_uint8 * 16),
    ]


class RlState(_S):
    _fields_ = [
        ("tat_ns", ctypes.c_uint64),
        ("passed", ctypes.c_uint64),
        ("dropped", ctypes.c_uint64),
    ]


class Counter(_S):
    _fields_ = [
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
    ]


class IfStat(_S):
    _fields_ = [
        ("rx_packets", ctypes.c_uint64),
        ("rx_bytes", ctypes.c_uint64),
        ("sip_packets", ctypes.c_uint64),
        ("dropped", ctypes.c_uint64),
        ("tx_marked", ctypes.c_uint64),
        ("tx_bytes", ctypes.c_uint64),
    ]


class SipInfo(_S):
    _fields_ = [
        ("callid_hash", ctypes.c_uint64),
        ("cseq", ctypes.c_uint32),
        ("status", ctypes.c_uint16),
        ("method", ctypes.c_uint8),
        ("cseq_method", ctypes.c_uint8),
        ("has_callid", ctypes.c_uint8),
        ("has_to_tag", ctypes.c_uint8),
        ("verdict", ctypes.c_uint8),
        ("reason", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("l4proto", ctypes.c_uint8),
        ("payload_len", ctypes.c_uint16),
    ]


# ACL LPM value: enum etsf_acl_action stored as __u32
AclValue = ctypes.c_uint32

# ---- telemetry (bpf/etsf_telemetry.h) --------------------------------------
TM_TXN_MAX = 32768
TM_BUCKETS = 32
TM_CODE_MIN = 100
TM_CODES = 600
TM_CODE_METHODS = 2


class TmStage(IntEnum):
    TRYING = 0
    RINGING = 1
    FINAL_2XX = 2
    FINAL_3XX = 3
    FINAL_4XX = 4
    FINAL_5XX = 5
    FINAL_6XX = 6


TM_STAGES = 7


class TmDir(IntEnum):
    TOWARD = 0
    FROM = 1
    OFF = 2


class TmEvent(IntEnum):
    TXN_START = 0
    REQ_RETRANS = 1
    RESP_MATCHED = 2
    RESP_RETRANS = 3
    RESP_NOMATCH = 4
    TXN_FULL = 5


TM_EVENTS = 6


class TmIfCfg(_S):
    _fields_ = [
        ("dir", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class TmTxnKey(_S):
    _fields_ = [
        ("callid_hash", ctypes.c_uint64),
        ("cseq", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("method", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 7),
    ]


class TmTxn(_S):
    _fields_ = [
        ("start_ns", ctypes.c_uint64),
        ("seen", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class TmHist(_S):
    _fields_ = [
        ("count", ctypes.c_uint64),
        ("sum_ns", ctypes.c_uint64),
        ("slot", ctypes.c_uint64 * TM_BUCKETS),
    ]


def tm_hist_idx(method: int, stage: int) -> int:
    """Index into etsf_tm_hist: method * ETSF_TM_STAGES + stage."""
    return int(method) * TM_STAGES + int(stage)


def tm_code_idx(method: int, code: int) -> int | None:
    """Index into etsf_tm_codes (INVITE / REGISTER, codes 100..699), else None."""
    if not TM_CODE_MIN <= int(code) < TM_CODE_MIN + TM_CODES:
        return None
    if method == Method.INVITE:
        return int(code) - TM_CODE_MIN
    if method == Method.REGISTER:
        return TM_CODES + int(code) - TM_CODE_MIN
    return None


# C struct name -> mirror, C enum name -> IntEnum (used by test_layout)
STRUCTS = {
    "etsf_ctl": Ctl,
    "etsf_rate": Rate,
    "etsf_policy": Policy,
    "etsf_acl_v4_key": AclV4Key,
    "etsf_acl_v6_key": AclV6Key,
    "etsf_rl_key": RlKey,
    "etsf_rl_state": RlState,
    "etsf_counter": Counter,
    "etsf_ifstat": IfStat,
    "etsf_sip_info": SipInfo,
    "etsf_tm_ifcfg": TmIfCfg,
    "etsf_tm_txn_key": TmTxnKey,
    "etsf_tm_txn": TmTxn,
    "etsf_tm_hist": TmHist,
}

ENUMS = {
    "etsf_method": (Method, "ETSF_M_"),
    "etsf_verdict": (Verdict, "ETSF_V_"),
    "etsf_reason": (Reason, "ETSF_R_"),
    "etsf_hook": (Hook, "ETSF_HOOK_"),
    "etsf_rl_class": (RlClass, "ETSF_RL_"),
    "etsf_prio": (Prio, "ETSF_PRIO_"),
    "etsf_acl_action": (AclAction, "ETSF_ACL_"),
    "etsf_tm_stage": (TmStage, "ETSF_TM_"),
    "etsf_tm_dir": (TmDir, "ETSF_TM_"),
    "etsf_tm_event": (TmEvent, "ETSF_TM_EV_"),
}

# ---- fast path (bpf/etsf_fastpath.h, program tc_fastpath) -------------------
# Checked against the layout object's BTF by tests/bpf/test_fastpath_layout.py
FP_SVC_MAX = 16
FP_BACKENDS_MAX = 256
FP_RING = 4093
FP_AFF_MAX = 65536
FP_FLOW_MAX = 65536
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


class FpSvcKey(_S):
    _fields_ = [
        ("slot", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("proto", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8),
        ("port", ctypes.c_uint16),
        ("_pad1", ctypes.c_uint16),
        ("addr", ctypes.c_uint8 * 16),
    ]


class FpSvc(_S):
    _fields_ = [
        ("ring", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("n_backends", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("name", ctypes.c_char * FP_NAME_LEN),
    ]


class FpRing(_S):
    _fields_ = [
        ("backend", ctypes.c_uint16 * FP_RING),
        ("_pad", ctypes.c_uint16 * 3),
    ]


class FpBackend(_S):
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


class FpBstat(_S):
    _fields_ = [
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
        ("dialogs", ctypes.c_uint64),
        ("ret_packets", ctypes.c_uint64),
        ("ret_bytes", ctypes.c_uint64),
    ]


class FpAffKey(_S):
    _fields_ = [
        ("callid_hash", ctypes.c_uint64),
        ("vip", ctypes.c_uint8 * 16),
        ("vport", ctypes.c_uint16),
        ("family", ctypes.c_uint8),
        ("proto", ctypes.c_uint8),
        ("_pad", ctypes.c_uint32),
    ]


class FpAff(_S):
    _fields_ = [
        ("backend", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("generation", ctypes.c_uint64),
    ]


class FpFlowKey(_S):
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


class FpFlow(_S):
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
