"""Keep-alive answer layout: ctypes mirrors of the etsf_ka_* structs of bpf/etsf_structs.h (per-slot
configuration, identity keys, counters) and the Request-URI host fold the kernel applies.  Part of
:mod:`etsf.layout`, which re-exports every name."""
from __future__ import annotations

import ctypes

from .core import Struct

KA_ID_MAX = 512
KA_HOST_LEN = 64
KA_USER_LEN = 32
KA_HDR_MAX = 512
KA_ID_PRIMARY = 0x1
KA_ID_ALIAS = 0x2


class KaCfg(Struct):
    _fields_ = [
        ("hdr_len", ctypes.c_uint32),
        ("probe_interval_ms", ctypes.c_uint32),
        ("probe_timeout_ms", ctypes.c_uint32),
        ("probe_alive_ms", ctypes.c_uint32),
        ("probe_addr", ctypes.c_uint8 * 16),
        ("probe_port", ctypes.c_uint16),
        ("probe_family", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 5),
        ("hdr", ctypes.c_uint8 * KA_HDR_MAX),
    ]


class KaIdKey(Struct):
    _fields_ = [
        ("slot", ctypes.c_uint8),
        ("host_len", ctypes.c_uint8),
        ("user_len", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 5),
        ("host", ctypes.c_uint8 * KA_HOST_LEN),
        ("user", ctypes.c_uint8 * KA_USER_LEN),
    ]


class KaStats(Struct):
    _fields_ = [
        ("answered", ctypes.c_uint64),
        ("passed_proxy_stale", ctypes.c_uint64),
        ("passed_sampled", ctypes.c_uint64),
        ("passed_not_matching", ctypes.c_uint64),
        ("nat_keepalive_seen", ctypes.c_uint64),
        ("nat_keepalive_dropped", ctypes.c_uint64),
        ("sample_seq", ctypes.c_uint64),
    ]


def ka_host_fold(host: bytes) -> bytes:
    """The kernel's case fold of a Request-URI host: every byte OR 0x20."""
    return bytes(b | 0x20 for b in host)


def ka_id_key(slot: int, host: bytes, user: bytes = b"") -> bytes:
    """An etsf_ka_id key: host folded (ka_host_fold), user as it is (empty: any user)."""
    if not 0 < len(host) <= KA_HOST_LEN or len(user) > KA_USER_LEN:
        raise ValueError(f"host 1..{KA_HOST_LEN} and user 0..{KA_USER_LEN} bytes")
    k = KaIdKey(slot=slot, host_len=len(host), user_len=len(user))
    folded = ka_host_fold(host)
    ctypes.memmove(ctypes.addressof(k) + KaIdKey.host.offset, folded, len(folded))
    ctypes.memmove(ctypes.addressof(k) + KaIdKey.user.offset, user, len(user))
    return bytes(k)


# C struct name -> mirror (checked against BTF by tests/bpf/test_layout.py)
KA_STRUCTS = {
    "etsf_ka_cfg": KaCfg,
    "etsf_ka_id_key": KaIdKey,
    "etsf_ka_stats": KaStats,
}
