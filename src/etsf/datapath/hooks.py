"""Which hook classifies on an interface, and the per-interface flags that tell the TC ingress
program what to do there.

Hooks: ``xdp`` (xdp_sip classifies before an skb exists; right on a NIC whose driver runs
XDP natively) or ``tc`` (tc_fastpath classifies at TC ingress; right on veth, bridges and
every other software device, where native XDP copies skbs).  ``auto`` picks by driver
(:func:`etsf.preflight.auto_hook`, shared with ``etsfctl preflight``).

``etsf_if_cfg`` (key: ifindex) holds CLASSIFY (datapath hook tc), STEER (fast-path
interface) and XDP (xdp_sip hands its result to TC ingress in XDP metadata).  One TC ingress
program serves both the datapath and the fast path, so whoever removes its own flag detaches
it only when the other flag is not set; an entry with no flag left is deleted (no entry =
steering only, what tc_fastpath did before it could classify).

Each entry also carries the interface's telemetry direction (``tm``: IF_TM_KNOWN | the direction
``etsf_tm_ifcfg`` gives it), so TC ingress reads it with the flags instead of looking
``etsf_tm_ifcfg`` up for every request.  Whoever writes either map keeps it current
(:func:`update_flags`, :func:`refresh_tm`); tm = 0 (an entry of an older release, or no
``etsf_tm_ifcfg`` pinned) makes the program look the direction up itself.
"""

from __future__ import annotations

import os
from typing import Any

from .. import layout, paths
from .. import preflight as _preflight
from ..fastpath.slots import PROG as TC_IN_PROG, TC_EGRESS_HANDLE, TC_HANDLE, TC_PRIO
from .base import DatapathError, prog_name

HOOKS = ("auto", "xdp", "tc")
MAP_IF_CFG = "etsf_if_cfg"
MAP_TM_IFCFG = "etsf_tm_ifcfg"
FLAG_NAMES = ((layout.IF_F_CLASSIFY, "classify"), (layout.IF_F_STEER, "steer"), (layout.IF_F_XDP, "xdp"))


def _bpf():
    from .. import bpf
    return bpf


def check(hook: Any) -> str:
    if hook not in HOOKS:
        raise DatapathError(f"--hook must be one of {', '.join(HOOKS)} (got {hook!r})")
    return hook


def resolve(iface: str, hook: str) -> tuple[str, str]:
    """(xdp|tc, why) for iface: auto decides by driver, xdp/tc are forced."""
    check(hook)
    if hook != "auto":
        return hook, f"{iface}: forced (--hook {hook})"
    choice = _preflight.auto_hook(iface)
    return choice["hook"], choice["reason"]


def flag_names(flags: int) -> list[str]:
    return [n for f, n in FLAG_NAMES if flags & f]


def _key(idx: int) -> bytes:
    return int(idx).to_bytes(4, "little")


def _open(root: str | None = None):
    bpf = _bpf()
    try:
        return bpf.open_map(MAP_IF_CFG, root or paths.pin_root())
    except (OSError, bpf.BpfError):
        return None          # pinned by an older release, or nothing loaded: no entries


def read_flags(idx: int, root: str | None = None) -> int:
    m = _open(root)
    if m is None:
        return 0
    try:
        raw = m.lookup(_key(idx))
    finally:
        m.close()
    return int(layout.IfCfg.from_bytes(raw).flags) if raw else 0


def all_flags(root: str | None = None) -> dict[int, int]:
    """{ifindex: flags} of every entry."""
    m = _open(root)
    if m is None:
        return {}
    try:
        return {int.from_bytes(bytes(k)[:4], "little"): int(layout.IfCfg.from_bytes(v).flags)
                for k, v in m.items()}
    finally:
        m.close()


def tm_directions(root: str | None = None) -> dict[int, int] | None:
    """{ifindex: direction} of etsf_tm_ifcfg (key 0: the default); None when it is not pinned."""
    bpf = _bpf()
    try:
        m = bpf.open_map(MAP_TM_IFCFG, root or paths.pin_root())
    except (OSError, bpf.BpfError):
        return None
    try:
        return {int.from_bytes(bytes(k)[:4], "little"): int(layout.TmIfCfg.from_bytes(v).dir)
                for k, v in m.items()}
    finally:
        m.close()


def tm_field(dirs: dict[int, int] | None, idx: int) -> int:
    """etsf_if_cfg.tm for ifindex idx: the program's own rule (the interface's entry, else key 0,
    else TOWARD; anything past OFF is OFF) with IF_TM_KNOWN; 0 without etsf_tm_ifcfg."""
    if dirs is None:
        return 0
    d = dirs.get(idx, dirs.get(0, int(layout.TmDir.TOWARD)))
    return layout.IF_TM_KNOWN | min(d, int(layout.TmDir.OFF))


def refresh_tm(root: str | None = None) -> int:
    """Rewrite the tm field of every etsf_if_cfg entry from etsf_tm_ifcfg (after a direction
    changed); returns how many entries changed.  The caller holds paths.lock()."""
    m = _open(root)
    if m is None:
        return 0
    dirs = tm_directions(root)
    changed = 0
    try:
        for k, v in list(m.items()):
            cfg = layout.IfCfg.from_bytes(v)
            tm = tm_field(dirs, int.from_bytes(bytes(k)[:4], "little"))
            if cfg.tm != tm:
                cfg.tm = tm
                m.update(bytes(k), bytes(cfg))
                changed += 1
    finally:
        m.close()
    return changed


def update_flags(idx: int, add: int = 0, clear: int = 0) -> tuple[int, int]:
    """Set `add` and clear `clear` in ifindex idx's entry (deleted when no flag is left);
    returns (old flags, new flags).  Read-modify-write under the shared ctl lock: the
    datapath and the fast path both write here."""
    with paths.lock():
        m = _open()
        if m is None:
            if add:
                raise DatapathError(f"map {MAP_IF_CFG} not pinned under {paths.pin_root()} "
                                    "(run 'etsfctl attach' with this release first)")
            return 0, 0
        try:
            raw = m.lookup(_key(idx))
            cur = layout.IfCfg.from_bytes(raw) if raw else layout.IfCfg()
            old = int(cur.flags)
            new = (old | add) & ~clear
            if new:
                tm = tm_field(tm_directions(), idx)
                if new != old or tm != cur.tm:
                    m.update(_key(idx), bytes(layout.IfCfg(flags=new, tm=tm)))
            elif raw is not None:
                m.delete(_key(idx))
            return old, new
        finally:
            m.close()


# eTSF's TC slots: a clsact filter (handle, priority) or a tcx link pinned per interface
TC_SLOTS = {"ingress": (TC_HANDLE, TC_PRIO), "egress": (TC_EGRESS_HANDLE, 1)}
TC_APIS = ("auto", "clsact", "tcx")


def link_pin(idx: int, direction: str) -> str:
    """Where the tcx link of idx's direction is pinned: under the pin root, named by the
    network namespace too (an ifindex is only unique within one)."""
    ns = os.stat("/proc/thread-self/ns/net").st_ino
    return os.path.join(paths.pin_root(), "links", f"tc-{direction}-{ns}-{idx}")


def tc_slot(idx: int, direction: str) -> tuple[str | None, int]:
    """(api, program id) at eTSF's TC slot of idx's direction: ("tcx", id) when a tcx link
    runs there (it runs ahead of any clsact filter), else ("clsact", id) or (None, 0)."""
    bpf = _bpf()
    pid = bpf.tcx_query(link_pin(idx, direction), idx, direction)
    if pid:
        return "tcx", pid
    handle, prio = TC_SLOTS[direction]
    pid = int(bpf.tc_query(idx, direction=direction, handle=handle, priority=prio) or 0)
    return ("clsact", pid) if pid else (None, 0)


def check_tc_api(api: Any) -> str:
    if api not in TC_APIS:
        raise DatapathError(f"--tc-api must be one of {', '.join(TC_APIS)} (got {api!r})")
    if api == "tcx" and not _bpf().tcx_supported():
        raise DatapathError(f"--tc-api tcx needs tcx links (kernel 6.6 or later); this kernel is "
                            f"{os.uname().release}: use --tc-api clsact")
    return api


def resolve_tc_api(iface: str, api: str) -> tuple[str, str]:
    """(clsact|tcx, why) for iface.  auto takes tcx links where the kernel has them (no qdisc
    and classifier layers around the programs), except where another BPF program sits in a
    clsact filter on iface: a tcx program that returns a verdict ends the hook before any
    clsact filter runs, so that program would silently stop seeing packets.  eTSF's own
    filters do not count (switching moves them)."""
    check_tc_api(api)
    if api != "auto":
        return api, f"{iface}: forced (--tc-api {api})"
    if not _bpf().tcx_supported():
        return "clsact", f"{iface}: kernel {os.uname().release} has no tcx links -> clsact"
    foreign = [p for p in _preflight.clsact_programs(iface) if p["name"] not in _preflight.OUR_PROGRAMS]
    if foreign:
        names = ", ".join(f"{p['direction']} {p['name']} (id {p['id']})" for p in foreign)
        return "clsact", (f"{iface}: other programs in clsact filters ({names}) would stop running "
                          "behind a tcx link -> clsact")
    return "tcx", f"{iface}: kernel has tcx links, no other clsact program -> tcx"


def tc_attach(idx: int, prog_fd: int, direction: str, api: str | None = None) -> str:
    """Run prog_fd at eTSF's TC slot of idx's direction through api (None: the one in use
    there, clsact when none); returns the api.  Switching api attaches the new slot before the
    old one goes: a tcx link ends the hook before clsact filters, so no packet is classified
    twice or not at all."""
    bpf = _bpf()
    if api is None:
        api = tc_slot(idx, direction)[0] or "clsact"
    handle, prio = TC_SLOTS[direction]
    pin = link_pin(idx, direction)
    if api == "tcx":
        bpf.tcx_attach(pin, idx, prog_fd, direction)
        bpf.tc_detach(idx, direction=direction, handle=handle, priority=prio)
    else:
        bpf.tc_attach(idx, prog_fd, direction=direction, handle=handle, priority=prio)
        bpf.tcx_detach(pin, idx, direction)
    return api


def tc_detach(idx: int, direction: str) -> None:
    """Whatever holds eTSF's TC slot of idx's direction goes (tcx link and clsact filter)."""
    handle, prio = TC_SLOTS[direction]
    _bpf().tcx_detach(link_pin(idx, direction), idx, direction)
    _bpf().tc_detach(idx, direction=direction, handle=handle, priority=prio)


def tc_ingress_id(idx: int) -> int:
    """Id of the program at the TC ingress slot the datapath and fast path share (0: none)."""
    return tc_slot(idx, "ingress")[1]


def tc_egress_id(idx: int) -> int:
    return tc_slot(idx, "egress")[1]


def attach_tc_ingress(idx: int, prog_fd: int, api: str | None = None) -> str:
    return tc_attach(idx, prog_fd, "ingress", api)


def detach_tc_ingress(idx: int) -> bool:
    """Detach tc_fastpath from idx's TC ingress (a foreign program there is left alone)."""
    pid = tc_ingress_id(idx)
    if pid and prog_name(pid) == TC_IN_PROG:
        tc_detach(idx, "ingress")
        return True
    return False
