"""Core map layout: ctypes mirrors of bpf/etsf_consts.h and bpf/etsf_structs.h (control block,
policy slots, ACL, rate limiter, counters), the constants and enums they use, and the stats
index helpers.  Part of :mod:`etsf.layout`, which re-exports every name."""
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
HOOKS = 3
VERDICTS = 4
REASONS = 32
ACL_MAX = 16384
RL_MAX = 65536
IF_MAX = 64
SET_WAYS = 4                           # ways of a set-associative table: one 64-byte line
ADMIT_TXN_MAX = 65536
ADMIT_SETS = ADMIT_TXN_MAX // SET_WAYS
ADMIT_TXN_NS = 32_000_000_000
RESP_MAX = 1400

CTL_F_RECORD = 0x1
CTL_F_ADMIT_SILENT = 0x2
CTL_F_OC = 0x4
POL_F_VALID = 0x1
POL_F_MARK = 0x2
POL_F_KA = 0x4
POL_F_NAT_DROP = 0x8
POL_F_TM_OFF = 0x10
POL_F_NO_ACL4 = 0x20
POL_F_NO_ACL6 = 0x40
IF_F_CLASSIFY = 0x1
IF_F_STEER = 0x2
IF_F_XDP = 0x4
IF_TM_KNOWN = 0x80
META_MAGIC = 0x46535445
META_F_CALLID = 0x1
CB_OWN_ANSWER = 0x41535445

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
    ADMISSION = 27
    ADMIT_503 = 28
    KA_ANSWERED = 29
    NAT_KEEPALIVE = 30
    ADMIT_ACK = 31


REASONS_USED = 32


class Hook(IntEnum):
    XDP = 0
    TC_EGRESS = 1
    TC_INGRESS = 2


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


class OcResult(IntEnum):
    """enum etsf_oc_result: index of the etsf_oc_stats counters (RFC 7339 rewrite at TC egress)."""
    REWRITTEN = 0
    TOO_LONG = 1
    UNSUPPORTED = 2
    ERROR = 3


OC_RESULTS = 4

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


class Struct(ctypes.Structure):
    """Base of every mirror: repr for debugging, from_bytes for map values."""

    def __repr__(self):  # pragma: no cover - debugging aid
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n, *_unused in self._fields_
                           if not n.startswith("_"))
        return f"{type(self).__name__}({fields})"

    @classmethod
    def from_bytes(cls, data: bytes):
        return cls.from_buffer_copy(bytes(data)[: ctypes.sizeof(cls)])


class Ctl(Struct):
    _fields_ = [
        ("bypass", ctypes.c_uint32),
        ("overload_level", ctypes.c_uint32),
        ("active_slot", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("heartbeat_ns", ctypes.c_uint64),
        ("deadman_ns", ctypes.c_uint64),
        ("generation", ctypes.c_uint64),
        ("invite_admit_rate", ctypes.c_uint32),
        ("invite_admit_burst", ctypes.c_uint32),
        ("retry_after_s", ctypes.c_uint32),
        ("_pad0", ctypes.c_uint32),
        ("node_secret", ctypes.c_uint64),
        ("oc_reduction_pct", ctypes.c_uint32),
        ("oc_validity_ms", ctypes.c_uint32),
        ("oc_seq", ctypes.c_uint64),
        ("proxy_alive_until_ns", ctypes.c_uint64),
        ("ka_sample_every", ctypes.c_uint32),
        ("_pad1", ctypes.c_uint32),
    ]


# Pinned maps whose value struct only ever grows by appending fields: map name -> the value
# sizes releases gave it, oldest first.  An old value is a prefix of the new one, so an
# upgrade copies it zero-extended (new fields 0) into a map of the new size.  A map not
# listed here whose value size changed cannot be carried over.
APPEND_ONLY = {
    "etsf_ctl": (40, 64, ctypes.sizeof(Ctl)),
}


class Rate(Struct):
    _fields_ = [
        ("rate_pps", ctypes.c_uint32),
        ("burst", ctypes.c_uint32),
    ]


class Policy(Struct):
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


class AclV4Key(Struct):
    _fields_ = [
        ("prefixlen", ctypes.c_uint32),
        ("slot", ctypes.c_uint8),
        ("addr", ctypes.c_uint8 * 4),
        ("_pad", ctypes.c_uint8 * 3),
    ]


class AclV6Key(Struct):
    _fields_ = [
        ("prefixlen", ctypes.c_uint32),
        ("slot", ctypes.c_uint8),
        ("addr", ctypes.c_uint8 * 16),
        ("_pad", ctypes.c_uint8 * 3),
    ]


class RlKey(Struct):
    _fields_ = [
        ("family", ctypes.c_uint8),
        ("rl_class", ctypes.c_uint8),
        ("prefix", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8),
        ("addr", ctypes.c_uint8 * 16),
    ]


class RlState(Struct):
    _fields_ = [
        ("tat_ns", ctypes.c_uint64),
        ("passed", ctypes.c_uint64),
        ("dropped", ctypes.c_uint64),
    ]


class Counter(Struct):
    _fields_ = [
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
    ]


class IfCfg(Struct):
    """struct etsf_if_cfg: IF_F_* flags; tm = IF_TM_KNOWN | the interface's telemetry direction
    (TmDir) as etsf_tm_ifcfg gives it, or 0 (not known: the program looks etsf_tm_ifcfg up)."""
    _fields_ = [("flags", ctypes.c_uint32), ("tm", ctypes.c_uint32)]


class ParseState(Struct):
    """struct etsf_parse_state: the SIP parser's state at the start of the per-CPU etsf_scratch
    value; iters = bpf_loop steps of the last parse (read by tests and benchmarks)."""
    _fields_ = [
        ("len", ctypes.c_uint32),
        ("pos", ctypes.c_uint32),
        ("state", ctypes.c_uint32),
        ("next", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("tok", ctypes.c_uint32),
        ("ndig", ctypes.c_uint32),
        ("hlen", ctypes.c_uint32),
        ("cseq", ctypes.c_uint64),
        ("hash", ctypes.c_uint64),
        ("method", ctypes.c_uint32),
        ("cseq_method", ctypes.c_uint32),
        ("iters", ctypes.c_uint32),
        ("tmp", ctypes.c_uint32),
    ]


class ParseStat(Struct):
    _fields_ = [
        ("sip_parses", ctypes.c_uint64),
        ("meta_used", ctypes.c_uint64),
        ("meta_missing", ctypes.c_uint64),
        ("early", ctypes.c_uint64),
    ]


class Meta(Struct):
    _fields_ = [
        ("magic", ctypes.c_uint32),
        ("method", ctypes.c_uint8),
        ("verdict", ctypes.c_uint8),
        ("reason", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("callid_hash", ctypes.c_uint64),
    ]


class IfStat(Struct):
    _fields_ = [
        ("rx_packets", ctypes.c_uint64),
        ("rx_bytes", ctypes.c_uint64),
        ("sip_packets", ctypes.c_uint64),
        ("dropped", ctypes.c_uint64),
        ("tx_marked", ctypes.c_uint64),
        ("tx_bytes", ctypes.c_uint64),
    ]


class SipInfo(Struct):
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


class Admit(Struct):
    _fields_ = [
        ("tat_ns", ctypes.c_uint64),
        ("admitted", ctypes.c_uint64),
        ("rejected", ctypes.c_uint64),
        ("retrans_admitted", ctypes.c_uint64),
        ("retrans_rejected", ctypes.c_uint64),
        ("replied", ctypes.c_uint64),
        ("reply_unfit", ctypes.c_uint64),
    ]


class AdmitTxn(Struct):
    """One way of an etsf_admit_txn set: a decision; tag 0 = free."""
    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("tag", ctypes.c_uint32),
        ("admitted", ctypes.c_uint32),
    ]


class AdmitSet(Struct):
    """The value of etsf_admit_txn (an ARRAY of ADMIT_SETS sets, one cache line each)."""
    _fields_ = [
        ("way", AdmitTxn * SET_WAYS),
    ]


_MIX_M = 0xFF51AFD7ED558CCD


def mix64(h: int) -> int:
    """etsf_mix64(): the last steps of splitmix64's finalizer."""
    h ^= h >> 31
    h = (h * 0xBF58476D1CE4E5B9) & _U64
    h ^= h >> 29
    return h


def set_slot(h: int, sets: int) -> tuple[int, int]:
    """(set index, tag) of a mixed key h in a table of `sets` sets (a power of two)."""
    return h & (sets - 1), ((h >> 32) & 0xFFFFFFFF) | 1


def set_key(index: int) -> bytes:
    """The array key of set `index` of a set-associative table."""
    return int(index).to_bytes(4, "little")


def way_find(ways, tag: int):
    """The way holding tag (etsf_way_match()), else None."""
    for w in ways:
        if w.tag == tag:
            return w
    return None


def way_place(ways, tag: int, ts: int, word: int) -> bool:
    """Put an entry into a set's ways (structs of time, tag, word) as the programs do: its own
    way if the tag is there, else a free one, else the oldest's.  Returns False when it is
    older than every way of a full set (it is the one that would go)."""
    ts_name, _tag, word_name = (f[0] for f in ways[0]._fields_)
    w = way_find(ways, tag) or min(ways, key=lambda x: getattr(x, ts_name))
    if w.tag not in (0, tag) and getattr(w, ts_name) > ts:
        return False
    setattr(w, ts_name, ts)
    w.tag = tag
    setattr(w, word_name, word)
    return True


def admit_key(callid_hash: int, cseq: int) -> int:
    """etsf_admit_key(): the key of an INVITE transaction's admission decision."""
    return (callid_hash ^ ((cseq * 0x9E3779B97F4A7C15) & _U64)) & _U64


def admit_slot(key: int) -> tuple[int, int]:
    """(set index, tag) in etsf_admit_txn of a decision keyed admit_key(...)."""
    return set_slot(mix64(key), ADMIT_SETS)


def admit_get(lookup, callid_hash: int, cseq: int) -> AdmitTxn | None:
    """The decision for an INVITE where the programs look for it: lookup(set key bytes) is the
    table's lookup (a pinned etsf_admit_txn's Map.lookup)."""
    idx, tag = admit_slot(admit_key(callid_hash, cseq))
    return way_find(AdmitSet.from_bytes(lookup(set_key(idx))).way, tag)


def resp_tag(callid_hash: int, secret: int) -> str:
    """etsf_resp_tag(): the To-tag of an in-kernel response (16 lowercase hex digits)."""
    h = (callid_hash ^ secret) & _U64
    h ^= h >> 33
    h = (h * _MIX_M) & _U64
    h ^= h >> 33
    return f"{h:016x}"


# ACL LPM value: enum etsf_acl_action stored as __u32
AclValue = ctypes.c_uint32


# C struct name -> mirror, C enum name -> IntEnum (checked against BTF by tests/bpf/test_layout.py)
CORE_STRUCTS = {
    "etsf_ctl": Ctl,
    "etsf_rate": Rate,
    "etsf_policy": Policy,
    "etsf_acl_v4_key": AclV4Key,
    "etsf_acl_v6_key": AclV6Key,
    "etsf_rl_key": RlKey,
    "etsf_rl_state": RlState,
    "etsf_counter": Counter,
    "etsf_ifstat": IfStat,
    "etsf_if_cfg": IfCfg,
    "etsf_parse_stat": ParseStat,
    "etsf_parse_state": ParseState,
    "etsf_meta": Meta,
    "etsf_sip_info": SipInfo,
    "etsf_admit": Admit,
    "etsf_admit_txn": AdmitTxn,
    "etsf_admit_set": AdmitSet,
}

CORE_ENUMS = {
    "etsf_method": (Method, "ETSF_M_"),
    "etsf_verdict": (Verdict, "ETSF_V_"),
    "etsf_reason": (Reason, "ETSF_R_"),
    "etsf_hook": (Hook, "ETSF_HOOK_"),
    "etsf_rl_class": (RlClass, "ETSF_RL_"),
    "etsf_prio": (Prio, "ETSF_PRIO_"),
    "etsf_acl_action": (AclAction, "ETSF_ACL_"),
    "etsf_oc_result": (OcResult, "ETSF_OC_"),
}
