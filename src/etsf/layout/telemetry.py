"""Telemetry map layout: ctypes mirrors of the transaction tracker, latency histograms and
response-code counters of bpf/etsf_telemetry.h (constants in bpf/etsf_consts.h).  Part of
:mod:`etsf.layout`, which re-exports every name."""
from __future__ import annotations

import ctypes
from enum import IntEnum

from .core import Method, Struct

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
    _fields_ = [
        ("start_ns", ctypes.c_uint64),
        ("seen", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


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
    "etsf_tm_hist": TmHist,
}

TM_ENUMS = {
    "etsf_tm_stage": (TmStage, "ETSF_TM_"),
    "etsf_tm_dir": (TmDir, "ETSF_TM_"),
    "etsf_tm_event": (TmEvent, "ETSF_TM_EV_"),
}
