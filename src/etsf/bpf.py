"""The only eTSF module that talks to the kernel's BPF subsystem (with etsf.libbpf and etsf.bpfmaps).

Everything goes through libbpf (libbpf.so.1) via ctypes: object open/load
with pinned-map reuse, map access, pinning, XDP and TC (clsact) attach,
BPF_PROG_TEST_RUN.  Keys and values are raw bytes; callers build them with
the ctypes mirrors in etsf.layout.  This module holds programs (load, info,
attach, test run) and re-exports the binding's and the maps' public names.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import os

from . import paths
from .libbpf import (BPF_F_NO_COMMON_LRU, BPF_F_RDONLY, BPF_TC_EGRESS, BPF_TC_F_REPLACE, BPF_TC_INGRESS,
                     LIBBPF_MSGS, LOCK, LOG_SIZE, LOG_TAIL_LINES, MAP_TYPE_ARRAY, MAP_TYPE_HASH, MAP_TYPE_LPM_TRIE,
                     MAP_TYPE_LRU_HASH, MAP_TYPE_LRU_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY, MAP_TYPE_PERCPU_HASH,
                     P, PIN_ROOT, PROG_TYPE_NAMES, TC_ACT_OK, U32, XDP_ATTACHED, XDP_DROP, XDP_FLAGS_DRV_MODE,
                     XDP_FLAGS_HW_MODE, XDP_FLAGS_REPLACE, XDP_FLAGS_SKB_MODE, XDP_FLAGS_UPDATE_IF_NOEXIST,
                     XDP_MODE_FLAGS, XDP_PASS, XDP_TX, BpfError, errno_of, fail, get_lib, monotonic_ns,
                     num_possible_cpus, ObjectOpenOpts, ProgInfo, TcHook, TcOpts, TestRunOpts, XdpAttachOpts,
                     XdpQueryOpts)
from .bpfmaps import ensure_bpffs, Map, obj_get, obj_get_rw, open_map, pin_program, unpin
from .bpflinks import tcx_attach, tcx_detach, tcx_prog_ids, tcx_query, tcx_supported


# ---------------------------------------------------------------- programs
def _hex(b) -> str:
    return bytes(b).hex()


def _prog_info_fd(fd: int) -> ProgInfo:
    info = ProgInfo()
    ln = U32(ctypes.sizeof(info))
    ret = get_lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(ln))
    if ret < 0:
        raise fail("prog info", ret)
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
        return cls(obj_get_rw(os.fspath(path)))

    @classmethod
    def from_id(cls, prog_id: int) -> "Program":
        fd = get_lib().bpf_prog_get_fd_by_id(prog_id)
        if fd < 0:
            raise fail(f"prog id {prog_id}", fd)
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


def _open_object(lib, obj_path: str, opts):
    obj = lib.bpf_object__open_file(obj_path.encode(), ctypes.byref(opts))
    if not obj:
        e = ctypes.get_errno() or _errno.EINVAL
        raise BpfError(f"open {os.path.basename(obj_path)}: {os.strerror(e)}",
                       log="\n".join(LIBBPF_MSGS[-20:]), errno=e)
    return obj


def _object_maps(lib, obj) -> list:
    out = []
    m = lib.bpf_object__next_map(obj, None)
    while m:
        out.append(m)
        m = lib.bpf_object__next_map(obj, m)
    return out


def lru_max_entries(map_type: int, max_entries: int, map_flags: int, ncpus: int) -> int:
    """max_entries as the kernel creates the map: an LRU hash with one list per CPU
    (BPF_F_NO_COMMON_LRU) gets a multiple of the possible CPUs (every list the same length;
    rounded down when rounding up would overflow).  libbpf re-uses a pinned map only when
    max_entries equals the object's, so the object asks for this figure itself."""
    if map_type not in (MAP_TYPE_LRU_HASH, MAP_TYPE_LRU_PERCPU_HASH) or not map_flags & BPF_F_NO_COMMON_LRU:
        return max_entries
    up = -(-max_entries // ncpus) * ncpus
    return up if up <= 0xFFFFFFFF else max_entries // ncpus * ncpus


def _lru_normalize(lib, m) -> None:
    want = lru_max_entries(lib.bpf_map__type(m), lib.bpf_map__max_entries(m), lib.bpf_map__map_flags(m),
                           num_possible_cpus())
    if want != lib.bpf_map__max_entries(m):
        ret = lib.bpf_map__set_max_entries(m, want)
        if ret < 0:
            raise fail(f"set max_entries of {lib.bpf_map__name(m).decode()}", ret)


def object_maps(obj_path, pin_root=None) -> list[dict]:
    """The pinned (by-name) maps an object defines, as libbpf would create them: name,
    type, key_size, value_size, max_entries, map_flags, pin_path.  Nothing is loaded."""
    lib = get_lib()
    obj_path = os.fspath(obj_path)
    if not os.path.exists(obj_path):
        raise BpfError(f"object {obj_path} not found")
    maps_dir = os.path.join(paths.pin_root(pin_root), "maps")
    opts = ObjectOpenOpts(sz=ctypes.sizeof(ObjectOpenOpts), pin_root_path=maps_dir.encode())
    out = []
    with LOCK:
        del LIBBPF_MSGS[:]
        obj = _open_object(lib, obj_path, opts)
        try:
            for m in _object_maps(lib, obj):
                pin = lib.bpf_map__pin_path(m)
                if not pin:
                    continue
                _lru_normalize(lib, m)
                out.append({"name": lib.bpf_map__name(m).decode(), "type": lib.bpf_map__type(m),
                            "key_size": lib.bpf_map__key_size(m),
                            "value_size": lib.bpf_map__value_size(m),
                            "max_entries": lib.bpf_map__max_entries(m),
                            "map_flags": lib.bpf_map__map_flags(m), "pin_path": pin.decode()})
        finally:
            lib.bpf_object__close(obj)
    return out


def load_object(obj_path, pin_root=None, pin_paths=None) -> dict[str, Program]:
    """Open and load a BPF object; maps with pinning=by-name are pinned under
    (or re-used from) <pin_root>/maps.  pin_paths {map name: path} pins (or re-uses)
    those maps elsewhere instead.  Nothing attached is touched."""
    lib = get_lib()
    obj_path = os.fspath(obj_path)
    if not os.path.exists(obj_path):
        raise BpfError(f"object {obj_path} not found")
    root = paths.pin_root(pin_root)
    maps_dir = os.path.join(root, "maps")
    if root.startswith("/sys/fs/bpf"):
        ensure_bpffs("/sys/fs/bpf")
    os.makedirs(maps_dir, exist_ok=True)
    logbuf = ctypes.create_string_buffer(LOG_SIZE)
    pin_b = maps_dir.encode()
    opts = ObjectOpenOpts(sz=ctypes.sizeof(ObjectOpenOpts), pin_root_path=pin_b,
                          kernel_log_buf=ctypes.cast(logbuf, P), kernel_log_size=LOG_SIZE,
                          kernel_log_level=0)
    with LOCK:
        del LIBBPF_MSGS[:]
        obj = _open_object(lib, obj_path, opts)
        try:
            for m in _object_maps(lib, obj):
                _lru_normalize(lib, m)
            for m in _object_maps(lib, obj) if pin_paths else ():
                path = pin_paths.get(lib.bpf_map__name(m).decode())
                if path:
                    ret = lib.bpf_map__set_pin_path(m, os.fsencode(path))
                    if ret < 0:
                        raise fail(f"set pin path {path}", ret)
            ret = lib.bpf_object__load(obj)
            if ret < 0:
                vlog = logbuf.value.decode(errors="replace")
                msgs = "\n".join(m for m in LIBBPF_MSGS if "BEGIN PROG LOAD LOG" not in m)
                log = _log_tail(vlog) if vlog.strip() else _log_tail(msgs)
                first = next((m.strip() for m in LIBBPF_MSGS if "failed" in m
                              or "couldn't" in m or "error" in m.lower()), "")
                e = errno_of(ret)
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


def _prog_dict(info, **extra) -> dict:
    return {
        "id": info.id,
        "name": info.name.decode(),
        "tag": _hex(info.tag),
        "type": PROG_TYPE_NAMES.get(info.type, str(info.type)),
        "run_cnt": info.run_cnt,
        "run_time_ns": info.run_time_ns,
        "loaded_at": info.load_time,
        "verified_insns": info.verified_insns,
        **extra,
    }


def prog_info_pinned(path) -> dict:
    """Info of a pinned program, opened with BPF_OBJ_GET (file permission on the
    pin; no CAP_SYS_ADMIN as BPF_PROG_GET_FD_BY_ID would need).  run_cnt /
    run_time_ns count only while kernel.bpf_stats_enabled = 1."""
    fd = obj_get_rw(os.fspath(path))
    try:
        info = _prog_info_fd(fd)
    finally:
        os.close(fd)
    return _prog_dict(info, recursion_misses=info.recursion_misses, jited=bool(info.jited_prog_len))


def bpf_stats_enabled() -> bool | None:
    """kernel.bpf_stats_enabled (None when unreadable)."""
    try:
        with open("/proc/sys/kernel/bpf_stats_enabled", encoding="ascii") as f:
            return f.read().strip() == "1"
    except OSError:
        return None


def prog_info(prog_id: int) -> dict:
    fd = get_lib().bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        raise fail(f"prog id {prog_id}", fd)
    try:
        info = _prog_info_fd(fd)
        n = info.nr_map_ids
        map_ids = []
        if n:
            arr = (U32 * n)()
            info2 = ProgInfo()
            info2.nr_map_ids = n
            info2.map_ids = ctypes.addressof(arr)
            ln = U32(ctypes.sizeof(info2))
            if get_lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info2), ctypes.byref(ln)) == 0:
                map_ids = list(arr)[: min(n, info2.nr_map_ids)]
    finally:
        os.close(fd)
    return _prog_dict(info, map_ids=map_ids)


# ---------------------------------------------------------------- XDP
def _xdp_flags(mode: str) -> int:
    try:
        return XDP_MODE_FLAGS[mode]
    except KeyError:
        raise BpfError(f"unknown XDP mode {mode!r}") from None


def _xdp_call(what: str, ifindex: int, mode: str, old_prog_id, call) -> None:
    """call(lib, flags, opts) for XDP attach/detach; with old_prog_id the kernel acts only if
    that program is the one attached (XDP_FLAGS_REPLACE)."""
    lib = get_lib()
    flags = _xdp_flags(mode)
    opts = XdpAttachOpts(sz=ctypes.sizeof(XdpAttachOpts), old_prog_fd=-1)
    old_fd = -1
    try:
        if old_prog_id:
            old_fd = lib.bpf_prog_get_fd_by_id(old_prog_id)
            if old_fd < 0:
                raise fail(f"prog id {old_prog_id}", old_fd)
            opts.old_prog_fd = old_fd
            flags |= XDP_FLAGS_REPLACE
        ret = call(lib, flags, ctypes.byref(opts))
        if ret < 0:
            raise fail(f"XDP {what} ({mode}) on ifindex {ifindex}", ret)
    finally:
        if old_fd >= 0:
            os.close(old_fd)


def xdp_attach(ifindex: int, prog_fd: int, mode: str = "native", replace_prog_id=None) -> None:
    """Attach; with replace_prog_id swap atomically (XDP_FLAGS_REPLACE)."""
    _xdp_call("attach", ifindex, mode, replace_prog_id,
              lambda lib, flags, opts: lib.bpf_xdp_attach(ifindex, prog_fd, flags, opts))


def xdp_detach(ifindex: int, mode: str = "native", expected_prog_id=None) -> None:
    _xdp_call("detach", ifindex, mode, expected_prog_id,
              lambda lib, flags, opts: lib.bpf_xdp_detach(ifindex, flags, opts))


def xdp_query(ifindex: int) -> dict:
    opts = XdpQueryOpts(sz=ctypes.sizeof(XdpQueryOpts))
    ret = get_lib().bpf_xdp_query(ifindex, 0, ctypes.byref(opts))
    if ret < 0:
        raise fail(f"XDP query ifindex {ifindex}", ret)
    mode = XDP_ATTACHED.get(opts.attach_mode)
    prog_id = opts.prog_id
    if not prog_id:
        prog_id = opts.drv_prog_id or opts.skb_prog_id or opts.hw_prog_id
    return {"prog_id": int(prog_id), "mode": mode if prog_id else None,
            "drv_prog_id": opts.drv_prog_id, "skb_prog_id": opts.skb_prog_id,
            "hw_prog_id": opts.hw_prog_id}


# ---------------------------------------------------------------- TC (clsact)
def _tc_hook(ifindex: int, direction: str) -> TcHook:
    if direction not in ("egress", "ingress"):
        raise BpfError(f"unknown TC direction {direction!r}")
    return TcHook(sz=ctypes.sizeof(TcHook), ifindex=ifindex,
                  attach_point=BPF_TC_EGRESS if direction == "egress" else BPF_TC_INGRESS)


def tc_attach(ifindex: int, prog_fd: int, direction: str = "egress", handle: int = 0xE75F,
              priority: int = 1) -> None:
    """Create clsact if needed; attach (or atomically replace) a direct-action
    cls_bpf filter at (handle, priority)."""
    lib = get_lib()
    hook = _tc_hook(ifindex, direction)
    ret = lib.bpf_tc_hook_create(ctypes.byref(hook))
    if ret < 0 and errno_of(ret) != _errno.EEXIST:
        raise fail(f"create clsact on ifindex {ifindex}", ret)
    opts = TcOpts(sz=ctypes.sizeof(TcOpts), prog_fd=prog_fd, flags=BPF_TC_F_REPLACE,
                  handle=handle, priority=priority)
    ret = lib.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts))
    if ret < 0:
        raise fail(f"TC {direction} attach on ifindex {ifindex}", ret)


# what bpf_tc_detach/bpf_tc_query return when no such hook or filter exists
_TC_ABSENT = (_errno.ENOENT, _errno.EINVAL)


def _tc_filter_call(func: str, ifindex: int, direction: str, handle: int, priority: int):
    """libbpf `func` (bpf_tc_detach / bpf_tc_query) on one filter: (return code, opts)."""
    hook = _tc_hook(ifindex, direction)
    opts = TcOpts(sz=ctypes.sizeof(TcOpts), handle=handle, priority=priority)
    return getattr(get_lib(), func)(ctypes.byref(hook), ctypes.byref(opts)), opts


def tc_detach(ifindex: int, direction: str = "egress", handle: int = 0xE75F,
              priority: int = 1) -> None:
    ret, _opts = _tc_filter_call("bpf_tc_detach", ifindex, direction, handle, priority)
    if ret < 0 and errno_of(ret) not in _TC_ABSENT:
        raise fail(f"TC {direction} detach on ifindex {ifindex}", ret)


def tc_query(ifindex: int, direction: str = "egress", handle: int = 0xE75F,
             priority: int = 1) -> int:
    ret, opts = _tc_filter_call("bpf_tc_query", ifindex, direction, handle, priority)
    if ret < 0:
        if errno_of(ret) in _TC_ABSENT:
            return 0
        raise fail(f"TC {direction} query on ifindex {ifindex}", ret)
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
    lib = get_lib()
    data = bytes(data)
    din = ctypes.create_string_buffer(data, len(data))
    out_size = len(data) + 4096
    dout = ctypes.create_string_buffer(out_size)
    opts = TestRunOpts(sz=ctypes.sizeof(TestRunOpts), data_in=ctypes.cast(din, P),
                       data_out=ctypes.cast(dout, P), data_size_in=len(data),
                       data_size_out=out_size, repeat=max(1, int(repeat)))
    cin = cout = None
    if ctx is not None:
        ctx = bytes(ctx)
        cin = ctypes.create_string_buffer(ctx, len(ctx))
        csz = ctx_out_size or len(ctx)
        cout = ctypes.create_string_buffer(csz)
        opts.ctx_in = ctypes.cast(cin, P)
        opts.ctx_size_in = len(ctx)
        opts.ctx_out = ctypes.cast(cout, P)
        opts.ctx_size_out = csz
    ret = lib.bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts))
    if ret < 0:
        raise fail("BPF_PROG_TEST_RUN", ret)
    ctx_out = cout.raw[: opts.ctx_size_out] if cout is not None else None
    return opts.retval, dout.raw[: opts.data_size_out], opts.duration, ctx_out


# hide the pytest-collectable names when this module is imported in tests
test_run.__test__ = False
test_run_ctx.__test__ = False


__all__ = [
    "BPF_F_NO_COMMON_LRU", "BPF_F_RDONLY", "BPF_TC_EGRESS", "BPF_TC_F_REPLACE", "BPF_TC_INGRESS", "BpfError",
    "LOG_SIZE", "LOG_TAIL_LINES", "MAP_TYPE_ARRAY", "MAP_TYPE_HASH", "MAP_TYPE_LPM_TRIE", "MAP_TYPE_LRU_HASH",
    "MAP_TYPE_LRU_PERCPU_HASH", "MAP_TYPE_PERCPU_ARRAY", "MAP_TYPE_PERCPU_HASH", "Map", "PIN_ROOT",
    "PROG_TYPE_NAMES", "Program", "TC_ACT_OK", "XDP_DROP", "XDP_FLAGS_DRV_MODE", "XDP_FLAGS_HW_MODE",
    "XDP_FLAGS_REPLACE", "XDP_FLAGS_SKB_MODE", "XDP_FLAGS_UPDATE_IF_NOEXIST", "XDP_PASS", "XDP_TX",
    "bpf_stats_enabled", "ensure_bpffs", "load_object", "lru_max_entries", "monotonic_ns", "num_possible_cpus",
    "obj_get", "object_maps", "open_map", "pin_program", "prog_info", "prog_info_pinned", "tc_attach", "tc_detach", "tc_query",
    "tcx_attach", "tcx_detach", "tcx_prog_ids", "tcx_query", "tcx_supported", "test_run", "test_run_ctx", "unpin", "xdp_attach", "xdp_detach", "xdp_query",
]
