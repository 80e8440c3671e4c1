"""Telemetry map layout: ctypes mirrors of the transaction tracker, latency histograms and
response-code counters of bpf/etsf_telemetry.h (constants in bpf/etsf_consts.h).  Part of
:mod:`etsf.layout`, which re-exports every name."""
from __future__ import annotations

import ctypes
from enum import IntEnum
from itertools import compress

from .core import Method, mix64, SET_WAYS, set_key, set_slot, Struct, way_find, way_place

TM_TXN_MAX = 32768
TM_WAYS = SET_WAYS
TM_SETS = TM_TXN_MAX // TM_WAYS
TM_TXN_LIFE_NS = 32 * 1_000_000_000
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


class TmIfCfg(Struct):
    _fields_ = [
        ("dir", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class TmTxnKey(Struct):
    _fields_ = [
        ("callid_hash", ctypes.c_uint64),
        ("cseq", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("method", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 7),
    ]


class TmTxn(Struct):
    """One way of an etsf_tm_txn set: a transaction; tag 0 = free."""
    _fields_ = [
        ("start_ns", ctypes.c_uint64),
        ("tag", ctypes.c_uint32),
        ("seen", ctypes.c_uint32),
    ]


class TmSet(Struct):
    """The value of etsf_tm_txn (an ARRAY of TM_SETS sets, one cache line each)."""
    _fields_ = [
        ("way", TmTxn * TM_WAYS),
    ]


_M64 = (1 << 64) - 1


def tm_hash(key: TmTxnKey) -> int:
    """etsf_tm_hash(): the 64-bit mix of a transaction key (low bits: set, high 32: tag)."""
    h = key.callid_hash
    h ^= (((key.cseq << 32) | key.ifindex) * 0x9E3779B97F4A7C15) & _M64
    h ^= (key.method * 0xC2B2AE3D27D4EB4F) & _M64
    return mix64(h)


def tm_slot(key: TmTxnKey) -> tuple[int, int]:
    """(set index, tag) of a transaction in etsf_tm_txn."""
    return set_slot(tm_hash(key), TM_SETS)


tm_set_key = set_key                    # the etsf_tm_txn (array) key of a set


def tm_find(tm_set: TmSet, tag: int) -> TmTxn | None:
    """The way of a set holding tag (etsf_tm_way()), else None."""
    return way_find(tm_set.way, tag)


def tm_get(lookup, key: TmTxnKey) -> TmTxn | None:
    """The transaction of key where the programs look for it: lookup(set key bytes) is the
    table's lookup (a pinned etsf_tm_txn's Map.lookup)."""
    idx, tag = tm_slot(key)
    return tm_find(TmSet.from_bytes(lookup(tm_set_key(idx))), tag)


def tm_place(tm_set: TmSet, tag: int, start_ns: int, seen: int = 0) -> bool:
    """Put a transaction into a set as the programs do (way_place)."""
    return way_place(tm_set.way, tag, start_ns, seen)


def tm_open_in(raw: bytes, now_ns: int) -> int:
    """tm_open(..., now_ns) summed over sets laid end to end in raw (the table read at once):
    one pass over its u64 words, no struct per set."""
    words = memoryview(bytes(raw)).cast("Q")
    life = TM_TXN_LIFE_NS
    tagseen = words[1::2]
    # compress() drops the empty ways (most of a table) before any Python-level test
    return sum(1 for start, ts in compress(zip(words[0::2], tagseen), tagseen)
               if ts & 0xFFFFFFFF and now_ns - start < life)


def tm_open(tm_set: TmSet, now_ns: int | None = None) -> int:
    """Ways of a set that hold a transaction; with now_ns (CLOCK_MONOTONIC), only those
    started less than TM_TXN_LIFE_NS before it."""
    if now_ns is not None:
        return tm_open_in(bytes(tm_set), now_ns)    # one place says what "live" is
    return sum(1 for w in tm_set.way if w.tag)


class TmHist(Struct):
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


TM_STRUCTS = {
    "etsf_tm_ifcfg": TmIfCfg,
    "etsf_tm_txn_key": TmTxnKey,
    "etsf_tm_txn": TmTxn,
    "etsf_tm_set": TmSet,
    "etsf_tm_hist": TmHist,
}

TM_ENUMS = {
    "etsf_tm_stage": (TmStage, "ETSF_TM_"),
    "etsf_tm_dir": (TmDir, "ETSF_TM_"),
    "etsf_tm_event": (TmEvent, "ETSF_TM_EV_"),
}
