"""The kernel's own view of the BPF programs at an interface's TC hooks, without eTSF's code:

    python3 lab/tcview.py IFACE            # or: python3 -c "$(cat lab/tcview.py)" IFACE

prints {"tcx": {"ingress": [...], "egress": [...]}, "clsact": {...}}, each program as
{"id": N, "name": "..."}, in the order the kernel runs them.  tcx links are read with a raw
BPF_PROG_QUERY (tc does not list them, and Debian 12's bpftool 7.1 does not know them);
clsact filters with `tc -j filter show`.  Standard library only and none of eTSF's code (the
tests' oracle must not be the agent's own reading), so a test can run it inside any namespace,
lab host or Molecule host that has python3 and iproute2.
"""
import ctypes
import json
import socket
import subprocess
import sys

SYS_BPF = 321                     # x86_64
BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD, BPF_PROG_QUERY = 13, 15, 16
TCX = {"ingress": 46, "egress": 47}     # BPF_TCX_INGRESS, BPF_TCX_EGRESS
MAX_PROGS = 64

_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(cmd: int, attr) -> int:
    return _libc.syscall(SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))


def prog_name(prog_id: int) -> str:
    """The program's name (bpf_prog_info.name, at offset 64), or "?" when it is gone."""
    attr = (ctypes.c_uint32 * 32)()
    attr[0] = prog_id
    fd = _bpf(BPF_PROG_GET_FD_BY_ID, attr)
    if fd < 0:
        return "?"
    try:
        info = (ctypes.c_uint8 * 256)()
        attr = (ctypes.c_uint64 * 16)()
        a32 = ctypes.cast(attr, ctypes.POINTER(ctypes.c_uint32))
        a32[0], a32[1] = fd, ctypes.sizeof(info)
        attr[1] = ctypes.addressof(info)
        if _bpf(BPF_OBJ_GET_INFO_BY_FD, attr) < 0:
            return "?"
        return bytes(info[64:80]).split(b"\0", 1)[0].decode()
    finally:
        _libc.close(fd)


def tcx_ids(ifindex: int, direction: str) -> list[int]:
    ids = (ctypes.c_uint32 * MAX_PROGS)()
    attr = (ctypes.c_uint64 * 16)()
    a32 = ctypes.cast(attr, ctypes.POINTER(ctypes.c_uint32))
    a32[0], a32[1] = ifindex, TCX[direction]       # target_ifindex, attach_type
    attr[2] = ctypes.addressof(ids)                # prog_ids
    a32[6] = MAX_PROGS                             # count
    if _bpf(BPF_PROG_QUERY, attr) < 0:
        return []                                  # a kernel without tcx: nothing there
    return list(ids[:a32[6]])


def clsact(iface: str, direction: str) -> list[dict]:
    out = subprocess.run(["tc", "-j", "filter", "show", "dev", iface, direction], capture_output=True,
                         text=True, timeout=10, check=False).stdout
    return [{"id": f["options"]["prog"].get("id"), "name": f["options"]["prog"].get("name")}
            for f in (json.loads(out) if out.strip() else [])
            if f.get("kind") == "bpf" and (f.get("options") or {}).get("prog")]


def view(iface: str) -> dict:
    idx = socket.if_nametoindex(iface)
    return {"tcx": {d: [{"id": i, "name": prog_name(i)} for i in tcx_ids(idx, d)] for d in TCX},
            "clsact": {d: clsact(iface, d) for d in TCX}}


if __name__ == "__main__":
    print(json.dumps(view(sys.argv[1])))
