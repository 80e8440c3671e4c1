"""Telemetry administration: per-interface direction of the latency stamps, pin permissions."""

from __future__ import annotations

import os
import socket

from .. import layout as L
from .. import paths
from ..datapath import hooks
from ..paths import pin_root
from .reader import ExporterError, enum_name


def _bpf():
    from .. import bpf
    return bpf


# ---------------------------------------------------------------------------
# telemetry control (root): direction per interface, pin permissions
# ---------------------------------------------------------------------------


def set_direction(iface: str | None, direction: str, root: str | None = None) -> dict:
    """Where requests are seen on iface (None = the default for every interface)."""
    bpf = _bpf()
    try:
        d = L.TmDir[direction.upper()]
    except KeyError:
        raise ExporterError(f"direction must be toward, from or off (got {direction!r})") from None
    if iface is None:
        idx = 0
    else:
        try:
            idx = socket.if_nametoindex(iface)
        except OSError:
            raise ExporterError(f"interface {iface!r} does not exist") from None
    key = idx.to_bytes(4, "little")
    try:
        m = bpf.open_map("etsf_tm_ifcfg", root or pin_root())
    except (OSError, bpf.BpfError) as e:
        raise ExporterError(f"etsf_tm_ifcfg not pinned (attach first): {e}") from None
    # the copy each etsf_if_cfg entry carries for TC ingress follows, under the lock its writers share
    with paths.lock(), m:
        old = m.lookup(key)
        oldd = L.TmIfCfg.from_bytes(old).dir if old else None
        m.update(key, bytes(L.TmIfCfg(dir=int(d))))
        hooks.refresh_tm(root)
    return {"changed": oldd != int(d), "iface": iface or "default", "ifindex": idx,
            "direction": d.name.lower(),
            "previous": None if oldd is None else enum_name(L.TmDir, oldd).lower()}


def grant(group: str, root: str | None = None, programs: bool = True) -> dict:
    """Let members of group read the pins: directories 0750, map pins 0640 (read
    is enough with BPF_F_RDONLY), program pins 0660 (BPF_OBJ_GET of a program
    requires O_RDWR).  Owner stays root.  Idempotent; reports what changed."""
    import grp
    try:
        gid = grp.getgrnam(group).gr_gid if not str(group).isdigit() else int(group)
    except KeyError:
        raise ExporterError(f"group {group!r} does not exist") from None
    root = root or pin_root()
    if not os.path.isdir(root):
        raise ExporterError(f"{root} does not exist (attach first)")
    changed = []

    def fix(path, mode):
        st = os.lstat(path)
        if st.st_gid != gid or (st.st_mode & 0o7777) != mode:
            os.chown(path, -1, gid)
            os.chmod(path, mode)
            changed.append(path)

    fix(root, 0o750)
    for sub, mode in (("maps", 0o640), ("progs", 0o660)):
        d = os.path.join(root, sub)
        if not os.path.isdir(d):
            continue
        fix(d, 0o750)
        if sub == "progs" and not programs:
            continue
        for n in sorted(os.listdir(d)):
            fix(os.path.join(d, n), mode)
    return {"changed": bool(changed), "group": group, "gid": gid, "paths": changed}
