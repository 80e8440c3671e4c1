"""The only eTSF module that talks to the kernel's BPF subsystem.

Everything goes through libbpf (libbpf.so.1) via ctypes: object open/load
with pinned-map reuse, map access, pinning, XDP and TC (clsact) attach,
BPF_PROG_TEST_RUN.  Keys and values are raw bytes; callers build them with
the ctypes mirrors in etsf.layout.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import os
import threading
import time

PIN_ROOT = os.environ.get("ETSF_PIN_ROOT", "/sys/fs/bpf/etsf")

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
_lock = threading.Lock()
_libbpf_msgs: list[str] = []

_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


class _ObjectOpenOpts(ctypes.Structure):
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


class _TestRunOpts(ctypes.Structure):
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


class _XdpAttachOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("old_prog_fd", ctypes.c_int)]


class _XdpQueryOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_id", ctypes.c_uint32),
        ("drv_prog_id", ctypes.c_uint32),
        ("hw_prog_id", ctypes.c_uint32),
        ("skb_prog_id", ctypes.c_uint32),
        ("attach_mode", ctypes.c_uint8),
    ]


class _TcHook(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ifindex", ctypes.c_int),
        ("attach_point", ctypes.c_int),
        ("parent", ctypes.c_uint32),
    ]


class _TcOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_fd", ctypes.c_int),
        ("flags", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
    ]


class _BatchOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("elem_flags", ctypes.c_uint64),
                ("flags", ctypes.c_uint64)]


class _MapInfo(ctypes.Structure):
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


class _ProgInfo(ctypes.Structure):
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
MAP_TYPE_LPM_TRIE = 11
_PERCPU_TYPES = {MAP_TYPE_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY, MAP_TYPE_LRU_PERCPU_HASH, 21}
_BATCH_TYPES = {MAP_TYPE_HASH, MAP_TYPE_ARRAY, MAP_TYPE_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY,
                MAP_TYPE_LRU_HASH, MAP_TYPE_LRU_PERCPU_HASH}

PROG_TYPE_NAMES = {1: "socket_filter", 3: "sched_cls", 4: "sched_act", 6: "xdp"}

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4
_XDP_MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "drv": XDP_FLAGS_DRV_MODE,
                   "generic": XDP_FLAGS_SKB_MODE, "skb": XDP_FLAGS_SKB_MODE,
                   "offload": XDP_FLAGS_HW_MODE, "hw": XDP_FLAGS_HW_MODE}
_XDP_ATTACHED = {0: None, 1: "native", 2: "generic", 3: "offload", 4: "multi"}

BPF_TC_INGRESS = 1
BPF_TC_EGRESS = 2
BPF_TC_F_REPLACE = 1 << 0

XDP_PASS = 2
XDP_DROP = 1
TC_ACT_OK = 0

_P = ctypes.c_void_p
_I = ctypes.c_int
_U32 = ctypes.c_uint32


def _lib_init():
    global _lib, _libc
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        path = os.environ.get("ETSF_LIBBPF", "libbpf.so.1")
        try:
            lib = ctypes.CDLL(path, use_errno=True)
        except OSError as e:
            raise BpfError(f"cannot load {path}: {e}") from None
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        sigs = {
            "libbpf_set_print": (_P, [_P]),
            "libbpf_num_possible_cpus": (_I, []),
            "bpf_object__open_file": (_P, [ctypes.c_char_p, _P]),
            "bpf_object__load": (_I, [_P]),
            "bpf_object__close": (None, [_P]),
            "bpf_object__next_program": (_P, [_P, _P]),
            "bpf_program__name": (ctypes.c_char_p, [_P]),
            "bpf_program__fd": (_I, [_P]),
            "bpf_program__set_log_buf": (_I, [_P, _P, ctypes.c_size_t]),
            "bpf_program__set_log_level": (_I, [_P, _U32]),
            "bpf_obj_get": (_I, [ctypes.c_char_p]),
            "bpf_obj_get_opts": (_I, [ctypes.c_char_p, _P]),
            "bpf_obj_pin": (_I, [_I, ctypes.c_char_p]),
            "bpf_obj_get_info_by_fd": (_I, [_I, _P, ctypes.POINTER(_U32)]),
            "bpf_prog_get_fd_by_id": (_I, [_U32]),
            "bpf_map_get_fd_by_id": (_I, [_U32]),
            "bpf_map_lookup_elem": (_I, [_I, _P, _P]),
            "bpf_map_update_elem": (_I, [_I, _P, _P, ctypes.c_uint64]),
            "bpf_map_delete_elem": (_I, [_I, _P]),
            "bpf_map_get_next_key": (_I, [_I, _P, _P]),
            "bpf_map_lookup_batch": (_I, [_I, _P, _P, _P, _P, ctypes.POINTER(_U32), _P]),
            "bpf_prog_test_run_opts": (_I, [_I, _P]),
            "bpf_xdp_attach": (_I, [_I, _I, _U32, _P]),
            "bpf_xdp_detach": (_I, [_I, _U32, _P]),
            "bpf_xdp_query": (_I, [_I, _I, _P]),
            "bpf_tc_hook_create": (_I, [_P]),
            "bpf_tc_hook_destroy": (_I, [_P]),
            "bpf_tc_attach": (_I, [_P, _P]),
            "bpf_tc_detach": (_I, [_P, _P]),
            "bpf_tc_query": (_I, [_P, _P]),
        }
        for name, (res, args) in sigs.items():
            fn = getattr(lib, name)
            fn.restype = res
            fn.argtypes = args
        libc.vsnprintf.restype = _I
        libc.vsnprintf.argtypes = [_P, ctypes.c_size_t, ctypes.c_char_p, _P]
        _libc = libc
        lib._print_cb = _PRINT_FN(_libbpf_print)   # keep a reference
        lib.libbpf_set_print(ctypes.cast(lib._print_cb, _P))
        _lib = lib
    return _lib


def _libbpf_print(level, fmt, va):
    try:
        buf = ctypes.create_string_buffer(4096)
        _libc.vsnprintf(buf, 4096, fmt, va)
        msg = buf.value.decode(errors="replace").rstrip("\n")
        if level <= 1 or os.environ.get("ETSF_LIBBPF_DEBUG"):   # WARN / INFO
            _libbpf_msgs.append(msg)
            del _libbpf_msgs[:-200]
    except Exception:  # pragma: no cover - never raise into C
        pass
    return 0


def _err(ret: int) -> int:
    """libbpf 1.x: negative errno in the return value (errno set as well)."""
    if ret < 0:
        return -ret
    return ctypes.get_errno() or _errno.EINVAL


def _fail(what: str, ret: int, log: str = "") -> BpfError:
    e = _err(ret)
    return BpfError(f"{what}: {os.strerror(e)} (errno {e})", log=log, errno=e)


def _buf(data: bytes):
    return ctypes.create_string_buffer(bytes(data), len(data)) if data else None


def num_possible_cpus() -> int:
    n = _lib_init().libbpf_num_possible_cpus()
    if n <= 0:
        raise _fail("libbpf_num_possible_cpus", n)
    return n


def monotonic_ns() -> int:
    """CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns()."""
    return time.monotonic_ns()


# ---------------------------------------------------------------- bpffs / pins
def _is_bpffs(path: str) -> bool:
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] == path and parts[2] == "bpf":
                    return True
    except OSError:
        pass
    return False


def ensure_bpffs(path: str = "/sys/fs/bpf") -> None:
    """Mount bpffs at path unless one is mounted there already."""
    if _is_bpffs(path):
        return
    os.makedirs(path, exist_ok=True)
    _lib_init()
    _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                            ctypes.c_ulong, ctypes.c_void_p]
    if _libc.mount(b"bpf", path.encode(), b"bpf", 0, None) != 0:
        e = ctypes.get_errno()
        raise BpfError(f"mount bpffs on {path}: {os.strerror(e)}", errno=e)


BPF_F_RDONLY = 1 << 3


class _ObjGetOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("file_flags", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32)]


def obj_get(path, read_only: bool = False) -> int:
    """BPF_OBJ_GET of a pin; read_only opens a map with BPF_F_RDONLY (programs
    always need O_RDWR, i.e. read+write permission on their pin)."""
    path = os.fspath(path)
    if not read_only:
        return _obj_get(path)
    lib = _lib_init()
    opts = _ObjGetOpts(sz=ctypes.sizeof(_ObjGetOpts), file_flags=BPF_F_RDONLY)
    fd = lib.bpf_obj_get_opts(os.fsencode(path), ctypes.byref(opts))
    if fd < 0:
        raise _fail(f"open pinned {path} (read-only)", fd)
    return fd


def _obj_get(path: str) -> int:
    fd = _lib_init().bpf_obj_get(os.fsencode(path))
    if fd < 0:
        raise _fail(f"open pinned {path}", fd)
    return fd


def pin_program(prog: "Program", path) -> None:
    """Pin prog at path (replacing an existing pin atomically via rename)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}_new{os.getpid()}"     # bpffs refuses names with a dot
    if os.path.exists(tmp):
        os.unlink(tmp)
    ret = _lib_init().bpf_obj_pin(prog.fd, os.fsencode(tmp))
    if ret < 0:
        raise _fail(f"pin {path}", ret)
    os.replace(tmp, path)


def unpin(path) -> None:
    try:
        os.unlink(os.fspath(path))
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------- maps
def _map_info(fd: int) -> _MapInfo:
    info = _MapInfo()
    ln = _U32(ctypes.sizeof(info))
    ret = _lib_init().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(ln))
    if ret < 0:
        raise _fail("map info", ret)
    return info


class Map:
    """A BPF map opened by fd.  Per-CPU maps: lookup() returns every CPU's value
    concatenated (each rounded up to 8 bytes); lookup_percpu() splits them."""

    def __init__(self, fd: int, path: str | None = None):
        self.fd = fd
        self.path = path
        info = _map_info(fd)
        self.name = info.name.decode()
        self.map_type = info.type
        self.key_size = info.key_size
        self.value_size = info.value_size
        self.max_entries = info.max_entries
        self.map_flags = info.map_flags
        self.id = info.id
        self.percpu = self.map_type in _PERCPU_TYPES
        self.ncpus = num_possible_cpus() if self.percpu else 1
        self._stride = (self.value_size + 7) & ~7 if self.percpu else self.value_size
        self._vbuf_size = self._stride * self.ncpus
        self.last_batch_calls = 0      # BPF_MAP_LOOKUP_BATCH calls of the last items()

    @classmethod
    def open_pinned(cls, path, read_only: bool = False) -> "Map":
        """read_only: BPF_OBJ_GET with BPF_F_RDONLY (needs only read permission on
        the pin; lookups work, updates fail with EPERM)."""
        path = os.fspath(path)
        return cls(obj_get(path, read_only=read_only), path)

    @classmethod
    def from_id(cls, map_id: int) -> "Map":
        fd = _lib_init().bpf_map_get_fd_by_id(map_id)
        if fd < 0:
            raise _fail(f"map id {map_id}", fd)
        return cls(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"Map({self.name!r}, id={self.id}, type={self.map_type})"

    def _key(self, key: bytes):
        key = bytes(key)
        if len(key) != self.key_size:
            raise BpfError(f"map {self.name}: key is {len(key)} bytes, expected {self.key_size}")
        return ctypes.create_string_buffer(key, len(key))

    def lookup(self, key: bytes) -> bytes | None:
        k = self._key(key)
        v = ctypes.create_string_buffer(self._vbuf_size)
        ret = _lib_init().bpf_map_lookup_elem(self.fd, k, v)
        if ret < 0:
            if _err(ret) == _errno.ENOENT:
                return None
            raise _fail(f"lookup in {self.name}", ret)
        return v.raw

    def lookup_percpu(self, key: bytes) -> list[bytes] | None:
        raw = self.lookup(key)
        if raw is None:
            return None
        return [raw[i * self._stride: i * self._stride + self.value_size]
                for i in range(self.ncpus)]

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        k = self._key(key)
        value = bytes(value)
        if self.percpu:
            if len(value) == self.value_size:      # same value on every CPU
                one = value + b"\0" * (self._stride - self.value_size)
                value = one * self.ncpus
            elif len(value) != self._vbuf_size:
                raise BpfError(f"map {self.name}: per-CPU value must be {self.value_size} "
                               f"or {self._vbuf_size} bytes")
        elif len(value) != self.value_size:
            raise BpfError(f"map {self.name}: value is {len(value)} bytes, "
                           f"expected {self.value_size}")
        v = ctypes.create_string_buffer(value, len(value))
        ret = _lib_init().bpf_map_update_elem(self.fd, k, v, flags)
        if ret < 0:
            raise _fail(f"update in {self.name}", ret)

    def delete(self, key: bytes) -> bool:
        k = self._key(key)
        ret = _lib_init().bpf_map_delete_elem(self.fd, k)
        if ret < 0:
            if _err(ret) == _errno.ENOENT:
                return False
            raise _fail(f"delete in {self.name}", ret)
        return True

    def keys(self) -> list[bytes]:
        lib = _lib_init()
        out = []
        cur = None
        nxt = ctypes.create_string_buffer(self.key_size)
        for _unused in range(self.max_entries + 1):
            ret = lib.bpf_map_get_next_key(self.fd, cur, nxt)
            if ret < 0:
                if _err(ret) == _errno.ENOENT:
                    break
                raise _fail(f"next key in {self.name}", ret)
            out.append(nxt.raw)
            cur = ctypes.create_string_buffer(nxt.raw, self.key_size)
        return out

    def items(self) -> list[tuple[bytes, bytes]]:
        if self.map_type in _BATCH_TYPES:
            try:
                return self._items_batch()
            except BpfError as e:
                if e.errno not in (_errno.EINVAL, _errno.ENOTSUPP if hasattr(_errno, "ENOTSUPP")
                                   else 524, 524, _errno.EOPNOTSUPP):
                    raise
        res = []
        for k in self.keys():
            v = self.lookup(k)
            if v is not None:
                res.append((k, v))
        return res

    def items_percpu(self) -> list[tuple[bytes, list[bytes]]]:
        """items() with per-CPU values split (one value per CPU; non-per-CPU maps: one).
        Arrays and hash maps use BPF_MAP_LOOKUP_BATCH: ceil(entries / 4096) + 1
        syscalls, not one per entry."""
        out = []
        stride, vs = self._stride, self.value_size
        for k, raw in self.items():
            out.append((k, [raw[i * stride: i * stride + vs] for i in range(self.ncpus)]))
        return out

    def _items_batch(self) -> list[tuple[bytes, bytes]]:
        lib = _lib_init()
        chunk = max(1, min(self.max_entries, 4096))
        keys = ctypes.create_string_buffer(self.key_size * chunk)
        vals = ctypes.create_string_buffer(self._vbuf_size * chunk)
        opts = _BatchOpts(sz=ctypes.sizeof(_BatchOpts))
        # hash maps need a batch token the size of a key (arrays: 4 bytes)
        tok_size = max(self.key_size, 8)
        in_b = ctypes.create_string_buffer(tok_size)
        out_b = ctypes.create_string_buffer(tok_size)
        first = True
        res = []
        self.last_batch_calls = 0
        while True:
            self.last_batch_calls += 1
            count = _U32(chunk)
            ret = lib.bpf_map_lookup_batch(self.fd, None if first else in_b, out_b, keys, vals,
                                           ctypes.byref(count), ctypes.byref(opts))
            n = count.value
            kr, vr = keys.raw, vals.raw
            for i in range(n):
                res.append((kr[i * self.key_size:(i + 1) * self.key_size],
                            vr[i * self._vbuf_size:(i + 1) * self._vbuf_size]))
            if ret < 0:
                if _err(ret) == _errno.ENOENT:
                    break
                raise _fail(f"batch lookup in {self.name}", ret)
            ctypes.memmove(in_b, out_b, tok_size)
            first = False
        return res

    def close(self):
        if self.fd is not None and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


def open_map(name: str, pin_root=None, read_only: bool = False) -> Map:
    root = pin_root or PIN_ROOT
    return Map.open_pinned(os.path.join(root, "maps", name), read_only=read_only)


# ---------------------------------------------------------------- programs
def _hex(b) -> str:
    return bytes(b).hex()


def _prog_info_fd(fd: int) -> _ProgInfo:
    info = _ProgInfo()
    ln = _U32(ctypes.sizeof(info))
    ret = _lib_init().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(ln))
    if ret < 0:
        raise _fail("prog info", ret)
    return info


class Program:
    """A loaded program.  Holds its own fd (dup'ed), independent of the object."""

    def __init__(self, fd: int, name: str | None = None):
        self.fd = fd
        info = _prog_info_fd(fd)
        self.id = info.id
        self.tag = _hex(info.tag)
        self.name = name or info.name.decode()
        self.prog_type = info.type

    @classmethod
    def open_pinned(cls, path) -> "Program":
        return cls(_obj_get(os.fspath(path)))

    @classmethod
    def from_id(cls, prog_id: int) -> "Program":
        fd = _lib_init().bpf_prog_get_fd_by_id(prog_id)
        if fd < 0:
            raise _fail(f"prog id {prog_id}", fd)
        return cls(fd)

    def __repr__(self):
        return f"Program({self.name!r}, id={self.id}, tag={self.tag})"

    def close(self):
        if self.fd is not None and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


def _log_tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    ls = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(ls[-lines:])


def load_object(obj_path, pin_root=None) -> dict[str, Program]:
    """Open and load a BPF object; maps with pinning=by-name are pinned under
    (or re-used from) <pin_root>/maps.  Nothing attached is touched."""
    lib = _lib_init()
    obj_path = os.fspath(obj_path)
    if not os.path.exists(obj_path):
        raise BpfError(f"object {obj_path} not found")
    root = pin_root or PIN_ROOT
    maps_dir = os.path.join(root, "maps")
    if root.startswith("/sys/fs/bpf"):
        ensure_bpffs("/sys/fs/bpf")
    os.makedirs(maps_dir, exist_ok=True)
    logbuf = ctypes.create_string_buffer(LOG_SIZE)
    pin_b = maps_dir.encode()
    opts = _ObjectOpenOpts(sz=ctypes.sizeof(_ObjectOpenOpts), pin_root_path=pin_b,
                           kernel_log_buf=ctypes.cast(logbuf, _P), kernel_log_size=LOG_SIZE,
                           kernel_log_level=0)
    with _lock:
        del _libbpf_msgs[:]
        obj = lib.bpf_object__open_file(obj_path.encode(), ctypes.byref(opts))
        if not obj:
            e = ctypes.get_errno() or _errno.EINVAL
            raise BpfError(f"open {os.path.basename(obj_path)}: {os.strerror(e)}",
                           log="\n".join(_libbpf_msgs[-20:]), errno=e)
        try:
            ret = lib.bpf_object__load(obj)
            if ret < 0:
                vlog = logbuf.value.decode(errors="replace")
                msgs = "\n".join(m for m in _libbpf_msgs if "BEGIN PROG LOAD LOG" not in m)
                log = _log_tail(vlog) if vlog.strip() else _log_tail(msgs)
                first = next((m.strip() for m in _libbpf_msgs if "failed" in m
                              or "couldn't" in m or "error" in m.lower()), "")
                e = _err(ret)
                raise BpfError(f"load {os.path.basename(obj_path)}: {os.strerror(e)}"
                               + (f" ({first})" if first else ""), log=log, errno=e)
            progs = {}
            p = lib.bpf_object__next_program(obj, None)
            while p:
                name = lib.bpf_program__name(p).decode()
                fd = lib.bpf_program__fd(p)
                if fd >= 0:
                    progs[name] = Program(os.dup(fd), name)
                p = lib.bpf_object__next_program(obj, p)
        finally:
            lib.bpf_object__close(obj)   # programs stay alive through our dup'ed fds
    return progs


def prog_info_pinned(path) -> dict:
    """Info of a pinned program, opened with BPF_OBJ_GET (file permission on the
    pin; no CAP_SYS_ADMIN as BPF_PROG_GET_FD_BY_ID would need).  run_cnt /
    run_time_ns count only while kernel.bpf_stats_enabled = 1."""
    fd = _obj_get(os.fspath(path))
    try:
        info = _prog_info_fd(fd)
    finally:
        os.close(fd)
    return {
        "id": info.id,
        "name": info.name.decode(),
        "tag": _hex(info.tag),
        "type": PROG_TYPE_NAMES.get(info.type, str(info.type)),
        "run_cnt": info.run_cnt,
        "run_time_ns": info.run_time_ns,
        "recursion_misses": info.recursion_misses,
        "loaded_at": info.load_time,
        "verified_insns": info.verified_insns,
        "jited": bool(info.jited_prog_len),
    }


def bpf_stats_enabled() -> bool | None:
    """kernel.bpf_stats_enabled (None when unreadable)."""
    try:
        with open("/proc/sys/kernel/bpf_stats_enabled", encoding="ascii") as f:
            return f.read().strip() == "1"
    except OSError:
        return None


def prog_info(prog_id: int) -> dict:
    fd = _lib_init().bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        raise _fail(f"prog id {prog_id}", fd)
    try:
        info = _prog_info_fd(fd)
        n = info.nr_map_ids
        map_ids = []
        if n:
            arr = (_U32 * n)()
            info2 = _ProgInfo()
            info2.nr_map_ids = n
            info2.map_ids = ctypes.addressof(arr)
            ln = _U32(ctypes.sizeof(info2))
            if _lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info2), ctypes.byref(ln)) == 0:
                map_ids = list(arr)[: min(n, info2.nr_map_ids)]
    finally:
        os.close(fd)
    return {
        "id": info.id,
        "name": info.name.decode(),
        "tag": _hex(info.tag),
        "type": PROG_TYPE_NAMES.get(info.type, str(info.type)),
        "run_cnt": info.run_cnt,
        "run_time_ns": info.run_time_ns,
        "loaded_at": info.load_time,
        "map_ids": map_ids,
        "verified_insns": info.verified_insns,
    }


# ---------------------------------------------------------------- XDP
def _xdp_flags(mode: str) -> int:
    try:
        return _XDP_MODE_FLAGS[mode]
    except KeyError:
        raise BpfError(f"unknown XDP mode {mode!r}") from None


def xdp_attach(ifindex: int, prog_fd: int, mode: str = "native", replace_prog_id=None) -> None:
    """Attach; with replace_prog_id swap atomically (XDP_FLAGS_REPLACE)."""
    lib = _lib_init()
    flags = _xdp_flags(mode)
    opts = _XdpAttachOpts(sz=ctypes.sizeof(_XdpAttachOpts), old_prog_fd=-1)
    old_fd = -1
    try:
        if replace_prog_id:
            old_fd = lib.bpf_prog_get_fd_by_id(replace_prog_id)
            if old_fd < 0:
                raise _fail(f"prog id {replace_prog_id}", old_fd)
            opts.old_prog_fd = old_fd
            flags |= XDP_FLAGS_REPLACE
        ret = lib.bpf_xdp_attach(ifindex, prog_fd, flags, ctypes.byref(opts))
        if ret < 0:
            raise _fail(f"XDP attach ({mode}) on ifindex {ifindex}", ret)
    finally:
        if old_fd >= 0:
            os.close(old_fd)


def xdp_detach(ifindex: int, mode: str = "native", expected_prog_id=None) -> None:
    lib = _lib_init()
    flags = _xdp_flags(mode)
    opts = _XdpAttachOpts(sz=ctypes.sizeof(_XdpAttachOpts), old_prog_fd=-1)
    old_fd = -1
    try:
        if expected_prog_id:
            old_fd = lib.bpf_prog_get_fd_by_id(expected_prog_id)
            if old_fd < 0:
                raise _fail(f"prog id {expected_prog_id}", old_fd)
            opts.old_prog_fd = old_fd
            flags |= XDP_FLAGS_REPLACE
        ret = lib.bpf_xdp_detach(ifindex, flags, ctypes.byref(opts))
        if ret < 0:
            raise _fail(f"XDP detach ({mode}) on ifindex {ifindex}", ret)
    finally:
        if old_fd >= 0:
            os.close(old_fd)


def xdp_query(ifindex: int) -> dict:
    opts = _XdpQueryOpts(sz=ctypes.sizeof(_XdpQueryOpts))
    ret = _lib_init().bpf_xdp_query(ifindex, 0, ctypes.byref(opts))
    if ret < 0:
        raise _fail(f"XDP query ifindex {ifindex}", ret)
    mode = _XDP_ATTACHED.get(opts.attach_mode)
    prog_id = opts.prog_id
    if not prog_id:
        prog_id = opts.drv_prog_id or opts.skb_prog_id or opts.hw_prog_id
    return {"prog_id": int(prog_id), "mode": mode if prog_id else None,
            "drv_prog_id": opts.drv_prog_id, "skb_prog_id": opts.skb_prog_id,
            "hw_prog_id": opts.hw_prog_id}


# ---------------------------------------------------------------- TC (clsact)
def _tc_hook(ifindex: int, direction: str) -> _TcHook:
    if direction not in ("egress", "ingress"):
        raise BpfError(f"unknown TC direction {direction!r}")
    return _TcHook(sz=ctypes.sizeof(_TcHook), ifindex=ifindex,
                   attach_point=BPF_TC_EGRESS if direction == "egress" else BPF_TC_INGRESS)


def tc_attach(ifindex: int, prog_fd: int, direction: str = "egress", handle: int = 0xE75F,
              priority: int = 1) -> None:
    """Create clsact if needed; attach (or atomically replace) a direct-action
    cls_bpf filter at (handle, priority)."""
    lib = _lib_init()
    hook = _tc_hook(ifindex, direction)
    ret = lib.bpf_tc_hook_create(ctypes.byref(hook))
    if ret < 0 and _err(ret) != _errno.EEXIST:
        raise _fail(f"create clsact on ifindex {ifindex}", ret)
    opts = _TcOpts(sz=ctypes.sizeof(_TcOpts), prog_fd=prog_fd, flags=BPF_TC_F_REPLACE,
                   handle=handle, priority=priority)
    ret = lib.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts))
    if ret < 0:
        raise _fail(f"TC {direction} attach on ifindex {ifindex}", ret)


def tc_detach(ifindex: int, direction: str = "egress", handle: int = 0xE75F,
              priority: int = 1) -> None:
    lib = _lib_init()
    hook = _tc_hook(ifindex, direction)
    opts = _TcOpts(sz=ctypes.sizeof(_TcOpts), handle=handle, priority=priority)
    ret = lib.bpf_tc_detach(ctypes.byref(hook), ctypes.byref(opts))
    if ret < 0 and _err(ret) not in (_errno.ENOENT, _errno.EINVAL):
        raise _fail(f"TC {direction} detach on ifindex {ifindex}", ret)


def tc_query(ifindex: int, direction: str = "egress", handle: int = 0xE75F,
             priority: int = 1) -> int:
    lib = _lib_init()
    hook = _tc_hook(ifindex, direction)
    opts = _TcOpts(sz=ctypes.sizeof(_TcOpts), handle=handle, priority=priority)
    ret = lib.bpf_tc_query(ctypes.byref(hook), ctypes.byref(opts))
    if ret < 0:
        if _err(ret) in (_errno.ENOENT, _errno.EINVAL):
            return 0
        raise _fail(f"TC {direction} query on ifindex {ifindex}", ret)
    return int(opts.prog_id)


# ---------------------------------------------------------------- test run
def test_run(prog_fd: int, data: bytes, repeat: int = 1, ctx: bytes | None = None,
             ctx_out_size: int | None = None):
    """BPF_PROG_TEST_RUN: returns (retval, data_out, avg duration ns).
    With ctx given, the output context is available via test_run_ctx()."""
    r = test_run_ctx(prog_fd, data, repeat, ctx, ctx_out_size)
    return r[0], r[1], r[2]


def test_run_ctx(prog_fd: int, data: bytes, repeat: int = 1, ctx: bytes | None = None,
                 ctx_out_size: int | None = None):
    """Like test_run, plus the output context: (retval, data_out, ns, ctx_out)."""
    lib = _lib_init()
    data = bytes(data)
    din = ctypes.create_string_buffer(data, len(data))
    out_size = len(data) + 4096
    dout = ctypes.create_string_buffer(out_size)
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_in=ctypes.cast(din, _P),
                        data_out=ctypes.cast(dout, _P), data_size_in=len(data),
                        data_size_out=out_size, repeat=max(1, int(repeat)))
    cin = cout = None
    if ctx is not None:
        ctx = bytes(ctx)
        cin = ctypes.create_string_buffer(ctx, len(ctx))
        csz = ctx_out_size or len(ctx)
        cout = ctypes.create_string_buffer(csz)
        opts.ctx_in = ctypes.cast(cin, _P)
        opts.ctx_size_in = len(ctx)
        opts.ctx_out = ctypes.cast(cout, _P)
        opts.ctx_size_out = csz
    ret = lib.bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts))
    if ret < 0:
        raise _fail("BPF_PROG_TEST_RUN", ret)
    ctx_out = cout.raw[: opts.ctx_size_out] if cout is not None else None
    return opts.retval, dout.raw[: opts.data_size_out], opts.duration, ctx_out


# hide the pytest-collectable names when this module is imported in tests
test_run.__test__ = False
test_run_ctx.__test__ = False
