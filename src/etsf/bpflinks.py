"""tcx links (kernel >= 6.6): eTSF's TC programs at a device's ingress or egress without the
clsact qdisc and classifier layers around them.

A tcx link runs ahead of any clsact filter and lives as long as a reference to it: a pin keeps it
after the attaching process exits.  libbpf 1.1 has no tcx API; bpf_link_create passes the attach
type through."""

from __future__ import annotations

import ctypes
import functools
import os

from .bpfmaps import obj_get_rw, unpin
from .libbpf import U32, BpfError, fail, get_lib

TCX_ATTACH = {"ingress": 46, "egress": 47}      # BPF_TCX_INGRESS / BPF_TCX_EGRESS
BPF_LINK_TYPE_TCX = 11


@functools.lru_cache(maxsize=1)
@functools.lru_cache(maxsize=None)
def tcx_supported() -> bool:
    """Whether this kernel has tcx links (the BPF_TCX_* attach types, kernel 6.6).  Read once per
    process: every attach asks (--tc-api auto), and the answer is in the whole vmlinux BTF."""
    try:
        with open("/sys/kernel/btf/vmlinux", "rb") as f:
            return b"BPF_TCX_INGRESS" in f.read()
    except OSError:
        try:
            return tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2]) >= (6, 6)
        except ValueError:
            return False


def _link_info(fd: int) -> tuple[int, int, int, int]:
    """(link type, prog id, ifindex, attach type) of a link (the last two for tcx)."""
    buf = ctypes.create_string_buffer(256)
    ln = U32(256)
    ret = get_lib().bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(ln))
    if ret < 0:
        raise fail("link info", ret)
    typ, _lid, prog_id, _pad, ifindex, atype = (int.from_bytes(buf.raw[i:i + 4], "little")
                                                for i in range(0, 24, 4))
    return typ, prog_id, ifindex, atype


def _tcx_open(pin: str, ifindex: int, direction: str) -> int | None:
    """fd of the live tcx link pinned at pin for (ifindex, direction), else None (the pin of a
    link whose device went away is removed)."""
    if not os.path.exists(pin):
        return None
    fd = obj_get_rw(pin)
    try:
        typ, _prog, idx, atype = _link_info(fd)
    except BpfError:
        os.close(fd)
        raise
    if typ == BPF_LINK_TYPE_TCX and idx == ifindex and atype == TCX_ATTACH[direction]:
        return fd
    os.close(fd)
    if typ == BPF_LINK_TYPE_TCX and idx == 0:
        unpin(pin)              # its device is gone: the link detached itself
    return None


def tcx_query(pin: str, ifindex: int, direction: str) -> int:
    """Id of the program on the tcx link pinned at pin (0: no live link there)."""
    fd = _tcx_open(pin, ifindex, direction)
    if fd is None:
        return 0
    try:
        return _link_info(fd)[1]
    finally:
        os.close(fd)


def tcx_attach(pin: str, ifindex: int, prog_fd: int, direction: str) -> None:
    """Run prog_fd on a tcx link at ifindex's direction, pinned at pin: the link already
    pinned there gets the program atomically (no packet sees none or both)."""
    if direction not in TCX_ATTACH:
        raise BpfError(f"unknown TC direction {direction!r}")
    lib = get_lib()
    fd = _tcx_open(pin, ifindex, direction)
    if fd is not None:
        try:
            ret = lib.bpf_link_update(fd, prog_fd, None)
            if ret < 0:
                raise fail(f"tcx {direction} update on ifindex {ifindex}", ret)
        finally:
            os.close(fd)
        return
    fd = lib.bpf_link_create(prog_fd, ifindex, TCX_ATTACH[direction], None)
    if fd < 0:
        raise fail(f"tcx {direction} attach on ifindex {ifindex}", fd)
    try:
        os.makedirs(os.path.dirname(pin), exist_ok=True)
        ret = lib.bpf_obj_pin(fd, os.fsencode(pin))
        if ret < 0:
            lib.bpf_link_detach(fd)
            raise fail(f"pin tcx link {pin}", ret)
    finally:
        os.close(fd)


def tcx_detach(pin: str, ifindex: int, direction: str) -> bool:
    """Detach the tcx link pinned at pin and remove the pin; False when there was none."""
    fd = _tcx_open(pin, ifindex, direction)
    if fd is None:
        return False
    try:
        ret = get_lib().bpf_link_detach(fd)
        if ret < 0:
            raise fail(f"tcx {direction} detach on ifindex {ifindex}", ret)
    finally:
        os.close(fd)
    unpin(pin)
    return True


def tcx_prog_ids(ifindex: int, direction: str) -> list[int]:
    """Every program at ifindex's tcx attach point of direction, in run order (anyone's, not
    only eTSF's): BPF_PROG_QUERY, as the kernel lists them."""
    ids = (U32 * 64)()
    cnt = U32(64)
    flags = U32(0)
    ret = get_lib().bpf_prog_query(ifindex, TCX_ATTACH[direction], 0, ctypes.byref(flags), ids, ctypes.byref(cnt))
    if ret < 0:
        raise fail(f"tcx {direction} query on ifindex {ifindex}", ret)
    return list(ids[:cnt.value])
