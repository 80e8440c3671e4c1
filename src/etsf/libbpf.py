"""The ctypes binding of libbpf (libbpf.so.1): signatures, option structs, constants, errors.

Loaded on first use (``get_lib()``), so importing the agent needs no libbpf.  Everything
above this module (etsf.bpfmaps, etsf.bpf) calls libbpf only through what it defines here.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import os
import threading
import time

from .paths import pin_root


# the pin root at import time, kept for callers of etsf.bpf.PIN_ROOT; lookups use paths.pin_root()
PIN_ROOT = pin_root()

LOG_SIZE = 4 * 1024 * 1024
LOG_TAIL_LINES = 40


class BpfError(Exception):
    """One-line message; .log holds a verifier / libbpf log excerpt when relevant."""

    def __init__(self, message: str, log: str = "", errno: int = 0):
        super().__init__(message.splitlines()[0] if message else "bpf error")
        self.log = log
        self.errno = errno


# ---------------------------------------------------------------- libbpf binding
_lib = None
_libc = None
LOCK = threading.Lock()
LIBBPF_MSGS: list[str] = []

PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


class ObjectOpenOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("object_name", ctypes.c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", ctypes.c_char_p),
        ("_stub", ctypes.c_uint32),
        ("kconfig", ctypes.c_char_p),
        ("btf_custom_path", ctypes.c_char_p),
        ("kernel_log_buf", ctypes.c_void_p),
        ("kernel_log_size", ctypes.c_size_t),
        ("kernel_log_level", ctypes.c_uint32),
    ]


class TestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class XdpAttachOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("old_prog_fd", ctypes.c_int)]


class XdpQueryOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_id", ctypes.c_uint32),
        ("drv_prog_id", ctypes.c_uint32),
        ("hw_prog_id", ctypes.c_uint32),
        ("skb_prog_id", ctypes.c_uint32),
        ("attach_mode", ctypes.c_uint8),
    ]


class TcHook(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ifindex", ctypes.c_int),
        ("attach_point", ctypes.c_int),
        ("parent", ctypes.c_uint32),
    ]


class TcOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_fd", ctypes.c_int),
        ("flags", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
    ]


class BatchOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("elem_flags", ctypes.c_uint64),
                ("flags", ctypes.c_uint64)]


class MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("btf_vmlinux_id", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    ]


class ProgInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("recursion_misses", ctypes.c_uint64),
        ("verified_insns", ctypes.c_uint32),
        ("attach_btf_obj_id", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
    ]


# enum bpf_map_type values used here
MAP_TYPE_HASH = 1
MAP_TYPE_ARRAY = 2
MAP_TYPE_PERCPU_HASH = 5
MAP_TYPE_PERCPU_ARRAY = 6
MAP_TYPE_LRU_HASH = 9
MAP_TYPE_LRU_PERCPU_HASH = 10
BPF_F_NO_COMMON_LRU = 1 << 1
MAP_TYPE_LPM_TRIE = 11
PERCPU_TYPES = {MAP_TYPE_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY, MAP_TYPE_LRU_PERCPU_HASH, 21}
BATCH_TYPES = {MAP_TYPE_HASH, MAP_TYPE_ARRAY, MAP_TYPE_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY,
               MAP_TYPE_LRU_HASH, MAP_TYPE_LRU_PERCPU_HASH}

PROG_TYPE_NAMES = {1: "socket_filter", 3: "sched_cls", 4: "sched_act", 6: "xdp"}

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4
XDP_MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "drv": XDP_FLAGS_DRV_MODE,
                  "generic": XDP_FLAGS_SKB_MODE, "skb": XDP_FLAGS_SKB_MODE,
                  "offload": XDP_FLAGS_HW_MODE, "hw": XDP_FLAGS_HW_MODE}
XDP_ATTACHED = {0: None, 1: "native", 2: "generic", 3: "offload", 4: "multi"}

BPF_TC_INGRESS = 1
BPF_TC_EGRESS = 2
BPF_TC_F_REPLACE = 1 << 0

XDP_PASS = 2
XDP_DROP = 1
XDP_TX = 3
TC_ACT_OK = 0

P = ctypes.c_void_p
INT = ctypes.c_int
U32 = ctypes.c_uint32


def get_lib():
    global _lib, _libc
    if _lib is not None:
        return _lib
    with LOCK:
        if _lib is not None:
            return _lib
        path = os.environ.get("ETSF_LIBBPF", "libbpf.so.1")
        try:
            lib = ctypes.CDLL(path, use_errno=True)
        except OSError as e:
            raise BpfError(f"cannot load {path}: {e}") from None
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        sigs = {
            "libbpf_set_print": (P, [P]),
            "libbpf_num_possible_cpus": (INT, []),
            "bpf_object__open_file": (P, [ctypes.c_char_p, P]),
            "bpf_object__load": (INT, [P]),
            "bpf_object__close": (None, [P]),
            "bpf_object__next_program": (P, [P, P]),
            "bpf_object__next_map": (P, [P, P]),
            "bpf_map__name": (ctypes.c_char_p, [P]),
            "bpf_map__type": (INT, [P]),
            "bpf_map__key_size": (U32, [P]),
            "bpf_map__value_size": (U32, [P]),
            "bpf_map__max_entries": (U32, [P]),
            "bpf_map__map_flags": (U32, [P]),
            "bpf_map__set_max_entries": (INT, [P, U32]),
            "bpf_map__pin_path": (ctypes.c_char_p, [P]),
            "bpf_map__set_pin_path": (INT, [P, ctypes.c_char_p]),
            "bpf_program__name": (ctypes.c_char_p, [P]),
            "bpf_program__fd": (INT, [P]),
            "bpf_program__set_log_buf": (INT, [P, P, ctypes.c_size_t]),
            "bpf_program__set_log_level": (INT, [P, U32]),
            "bpf_obj_get": (INT, [ctypes.c_char_p]),
            "bpf_obj_get_opts": (INT, [ctypes.c_char_p, P]),
            "bpf_obj_pin": (INT, [INT, ctypes.c_char_p]),
            "bpf_obj_get_info_by_fd": (INT, [INT, P, ctypes.POINTER(U32)]),
            "bpf_prog_get_fd_by_id": (INT, [U32]),
            "bpf_map_get_fd_by_id": (INT, [U32]),
            "bpf_map_lookup_elem": (INT, [INT, P, P]),
            "bpf_map_update_elem": (INT, [INT, P, P, ctypes.c_uint64]),
            "bpf_map_delete_elem": (INT, [INT, P]),
            "bpf_map_get_next_key": (INT, [INT, P, P]),
            "bpf_map_lookup_batch": (INT, [INT, P, P, P, P, ctypes.POINTER(U32), P]),
            "bpf_prog_test_run_opts": (INT, [INT, P]),
            "bpf_xdp_attach": (INT, [INT, INT, U32, P]),
            "bpf_xdp_detach": (INT, [INT, U32, P]),
            "bpf_xdp_query": (INT, [INT, INT, P]),
            "bpf_tc_hook_create": (INT, [P]),
            "bpf_tc_hook_destroy": (INT, [P]),
            "bpf_tc_attach": (INT, [P, P]),
            "bpf_tc_detach": (INT, [P, P]),
            "bpf_tc_query": (INT, [P, P]),
            "bpf_link_create": (INT, [INT, INT, U32, P]),
            "bpf_link_update": (INT, [INT, INT, P]),
            "bpf_link_detach": (INT, [INT]),
            "bpf_prog_query": (INT, [INT, U32, U32, P, P, P]),
        }
        for name, (res, args) in sigs.items():
            fn = getattr(lib, name)
            fn.restype = res
            fn.argtypes = args
        libc.vsnprintf.restype = INT
        libc.vsnprintf.argtypes = [P, ctypes.c_size_t, ctypes.c_char_p, P]
        _libc = libc
        lib._print_cb = PRINT_FN(_libbpf_print)   # keep a reference
        lib.libbpf_set_print(ctypes.cast(lib._print_cb, P))
        _lib = lib
    return _lib


def _libbpf_print(level, fmt, va):
    try:
        buf = ctypes.create_string_buffer(4096)
        _libc.vsnprintf(buf, 4096, fmt, va)
        msg = buf.value.decode(errors="replace").rstrip("\n")
        if level <= 1 or os.environ.get("ETSF_LIBBPF_DEBUG"):   # WARN / INFO
            LIBBPF_MSGS.append(msg)
            del LIBBPF_MSGS[:-200]
    except Exception:  # pragma: no cover - never raise into C
        pass
    return 0


def errno_of(ret: int) -> int:
    """libbpf 1.x: negative errno in the return value (errno set as well)."""
    if ret < 0:
        return -ret
    return ctypes.get_errno() or _errno.EINVAL


def fail(what: str, ret: int, log: str = "") -> BpfError:
    e = errno_of(ret)
    return BpfError(f"{what}: {os.strerror(e)} (errno {e})", log=log, errno=e)


def cbuf(data: bytes):
    return ctypes.create_string_buffer(bytes(data), len(data)) if data else None


def num_possible_cpus() -> int:
    n = get_lib().libbpf_num_possible_cpus()
    if n <= 0:
        raise fail("libbpf_num_possible_cpus", n)
    return n


def monotonic_ns() -> int:
    """CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns()."""
    return time.monotonic_ns()


def get_libc():
    """The C library handle (loaded together with libbpf)."""
    get_lib()
    return _libc


BPF_F_RDONLY = 1 << 3


class ObjGetOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("file_flags", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32)]
