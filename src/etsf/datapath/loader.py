"""Load, pin and attach/detach the classifier (XDP or TC ingress) and TC egress on an interface."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import Any

from .. import inputs, layout
from ..fastpath.slots import OBJ as TC_IN_OBJ, PROG as TC_IN_PROG
from . import hooks, migrate
from .base import (MODES, TC_OBJ, TC_PROG, XDP_OBJ, XDP_PROG, DatapathError, ifindex,
                   init_ctl, load_state, object_path, pin_root, prog_name, repin, save_state)


def _bpf():
    from .. import bpf
    return bpf


# ---------------------------------------------------------------------------
# attach / detach
# ---------------------------------------------------------------------------


def attach(iface: str, mode: str | None = None, build_dir: str | None = None,
           force: bool = False, hook: str = "auto", tc_api: str = "auto") -> dict[str, Any]:
    """Load (maps pinned & re-used), pin and attach the classifier on `hook` + TC egress.

    hook xdp: xdp_sip at XDP; tc: tc_fastpath at TC ingress, classifying (CLASSIFY in
    etsf_if_cfg); auto: by driver (hooks.resolve).  mode is the XDP mode (default native).
    If our programs are already attached they are replaced atomically (XDP: expected-prog
    replace; TC: same handle/priority replace); pinned maps and their state (counters,
    rate-limit buckets, policy) survive.  Switching hooks attaches the new one before the
    old one goes, so no packet passes unclassified.  A foreign XDP program is never
    replaced unless force=True.  tc_api is how the TC programs are attached: clsact
    filters, or tcx links (kernel 6.6 or later: no qdisc and classifier layers around them);
    auto: tcx where the kernel has it and no other program sits in a clsact filter on iface
    (hooks.resolve_tc_api).
    """
    hooks.check(hook)
    hooks.check_tc_api(tc_api)
    if mode is not None and mode not in MODES:
        raise DatapathError(f"--mode must be one of {', '.join(MODES)} (got {mode!r})")
    if mode is not None and hook == "tc":
        raise DatapathError("--mode is the XDP attach mode: it does not apply to --hook tc")
    idx = ifindex(iface)
    chosen, reason = hooks.resolve(iface, hook)
    tc_api_requested = tc_api
    tc_api, tc_api_reason = hooks.resolve_tc_api(iface, tc_api)
    mode = (mode or "native") if chosen == "xdp" else None
    bpf = _bpf()
    xdp_obj = object_path(build_dir, XDP_OBJ)
    tc_obj = object_path(build_dir, TC_OBJ)
    in_obj = object_path(build_dir, TC_IN_OBJ) if chosen == "tc" else None
    root = pin_root()

    cur = bpf.xdp_query(idx) or {}
    cur_id = int(cur.get("prog_id") or 0)
    cur_mode = cur.get("mode")
    cur_ours = bool(cur_id) and prog_name(cur_id) == XDP_PROG
    in_prev = hooks.tc_ingress_id(idx) if chosen == "tc" else 0
    if cur_id and chosen == "xdp":
        if not cur_ours and not force:
            raise DatapathError(f"{iface} already has a foreign XDP program "
                                f"(id {cur_id}, name {prog_name(cur_id)!r}); detach it first")
        if cur_mode and cur_mode != mode:
            raise DatapathError(f"{iface} has XDP attached in {cur_mode} mode; "
                                f"detach before switching to {mode}")

    objs = [xdp_obj, tc_obj] if chosen == "xdp" else [tc_obj, in_obj]
    progs: dict = {}
    pins_before: set | None = None
    bpf.ensure_bpffs()
    # pinned maps the new objects define differently: carried over or refused, before loading
    mig = migrate.plan(objs, root)
    try:
        os.makedirs(os.path.join(root, "maps"), exist_ok=True)
        os.makedirs(os.path.join(root, "progs"), exist_ok=True)
        pins_before = set(os.listdir(os.path.join(root, "maps")))
        for obj in objs:
            progs.update(bpf.load_object(obj, root, pin_paths=mig.pin_paths()))
    except bpf.BpfError as e:
        mig.drop_tmp()
        mig.close()
        # nothing was attached or re-pinned: the running programs and maps are untouched;
        # drop only map pins this failed load created (never a pre-existing one)
        for p in progs.values():
            with contextlib.suppress(Exception):
                p.close()
        with contextlib.suppress(OSError):
            for name in set(os.listdir(os.path.join(root, "maps"))) - (pins_before or set()):
                if pins_before is None:
                    break
                bpf.unpin(os.path.join(root, "maps", name))
        first = str(e).splitlines()[0] if str(e) else repr(e)
        excerpt = _verifier_excerpt(getattr(e, "log", ""))
        err = DatapathError(f"loading programs failed (running programs unchanged): {first}"
                            + (f"; verifier: {excerpt}" if excerpt else ""))
        err.log = getattr(e, "log", "")  # type: ignore[attr-defined]
        raise err from None
    main_prog = XDP_PROG if chosen == "xdp" else TC_IN_PROG
    if main_prog not in progs or TC_PROG not in progs:
        mig.drop_tmp()
        mig.close()
        for p in progs.values():
            with contextlib.suppress(Exception):
                p.close()
        raise DatapathError(f"objects do not contain {main_prog}/{TC_PROG}")
    attached = False
    try:
        # copied right before the attach: the old programs count on the old maps until then
        migrated = mig.swap()
        init_ctl()
        if chosen == "xdp":
            _attach_xdp(iface, idx, progs[XDP_PROG], mode, cur_id)
        else:
            try:
                hooks.attach_tc_ingress(idx, progs[TC_IN_PROG].fd, tc_api)
            except bpf.BpfError as e:
                raise DatapathError(f"TC ingress attach on {iface} failed: "
                                    f"{str(e).splitlines()[0] if str(e) else e}") from None
        attached = True                 # the new program runs on the new maps from here
        try:
            hooks.tc_attach(idx, progs[TC_PROG].fd, "egress", tc_api)
        except bpf.BpfError as e:
            raise DatapathError(f"TC egress attach on {iface} failed: "
                                f"{str(e).splitlines()[0] if str(e) else e}") from None
        if chosen == "xdp":
            flags = hooks.update_flags(idx, add=layout.IF_F_XDP, clear=layout.IF_F_CLASSIFY)[1]
            if not flags & layout.IF_F_STEER:
                hooks.detach_tc_ingress(idx)        # was the tc hook: XDP classifies from now
        else:
            flags = hooks.update_flags(idx, add=layout.IF_F_CLASSIFY, clear=layout.IF_F_XDP)[1]
            if cur_ours:                            # was the xdp hook: TC classifies from now
                bpf.xdp_detach(idx, mode=cur_mode or "native", expected_prog_id=cur_id)
        # the old programs are gone: what they counted after the copy goes into the new maps
        mig.settle(root)
        repin(progs[main_prog], os.path.join(root, "progs", main_prog))
        repin(progs[TC_PROG], os.path.join(root, "progs", TC_PROG))
        xq = bpf.xdp_query(idx) or {}
        xid = int(xq.get("prog_id") or 0)
        info = {
            "iface": iface, "ifindex": idx, "hook": chosen, "hook_requested": hook, "hook_reason": reason,
            "mode": mode,
            "xdp_prog_id": (xid or progs[XDP_PROG].id) if chosen == "xdp" else None,
            "tc_prog_id": int(hooks.tc_egress_id(idx) or progs[TC_PROG].id),
            "tc_api": tc_api, "tc_api_requested": tc_api_requested, "tc_api_reason": tc_api_reason,
            "tc_ingress_prog_id": hooks.tc_ingress_id(idx) or None,
            "if_flags": hooks.flag_names(flags),
            "replaced_prog_id": (cur_id if chosen == "xdp" else in_prev) or None,
            "attached_at": time.time(),
            "stamp": _object_stamp(tc_obj),
            "migrated_maps": migrated,
            # entries a converted map's new form had no room for (counted, not silently gone)
            "migration_not_carried": dict(mig.not_carried),
        }
    finally:
        if not attached:
            # the old programs still run on the old maps: the pins point at them again
            mig.undo()
        mig.drop_tmp()
        mig.close()
        for p in progs.values():
            with contextlib.suppress(Exception):
                p.close()
    st = load_state()
    st["interfaces"][iface] = info
    st["pin_root"] = root
    save_state(st)
    return {"changed": True, **info}


def _attach_xdp(iface: str, idx: int, prog, mode: str, replace_id: int) -> None:
    bpf = _bpf()
    try:
        bpf.xdp_attach(idx, prog.fd, mode=mode, replace_prog_id=replace_id or None)
    except bpf.BpfError as e:
        hint = " (try --mode generic)" if mode == "native" else ""
        raise DatapathError(f"XDP attach ({mode}) on {iface} failed: "
                            f"{str(e).splitlines()[0] if str(e) else e}{hint}") from None


def _verifier_excerpt(log: str, lines: int = 3) -> str:
    """The verifier's last meaningful lines (the rejection reason), joined on one line."""
    keep = [ln.strip() for ln in (log or "").splitlines()
            if ln.strip() and not ln.lstrip().startswith(";") and "BEGIN PROG LOAD LOG" not in ln
            and "END PROG LOAD LOG" not in ln]
    return " | ".join(keep[-lines:])[:400]


def _object_stamp(obj_path: str) -> str | None:
    """Build stamp of the objects next to obj_path (None when built by hand)."""
    from .. import build as _build
    try:
        return inputs.read_text(os.path.join(os.path.dirname(obj_path), _build.STAMP_FILE),
                                "build stamp").strip() or None
    except (OSError, ValueError):
        return None


def detach(iface: str) -> dict[str, Any]:
    """Detach our classifier (XDP or TC ingress) and TC egress from iface (maps and pins
    stay).  The TC ingress program stays while the fast path steers on iface."""
    idx = ifindex(iface)
    bpf = _bpf()
    changed = False
    cur = bpf.xdp_query(idx) or {}
    cur_id = int(cur.get("prog_id") or 0)
    if cur_id:
        name = prog_name(cur_id)
        if name != XDP_PROG:
            raise DatapathError(f"{iface} XDP program id {cur_id} ({name!r}) is not ours; not detaching")
    # the fast path's TC ingress stops expecting XDP metadata before the XDP program goes
    old, flags = hooks.update_flags(idx, clear=layout.IF_F_XDP | layout.IF_F_CLASSIFY)
    if cur_id:
        bpf.xdp_detach(idx, mode=cur.get("mode") or "native", expected_prog_id=cur_id)
        changed = True
    in_id = hooks.tc_ingress_id(idx)
    # the state's record too: a map re-created without our entry must not leave the program behind
    was_tc = bool(old & layout.IF_F_CLASSIFY) or load_state()["interfaces"].get(iface, {}).get("hook") == "tc"
    if was_tc and not flags & layout.IF_F_STEER:
        changed = hooks.detach_tc_ingress(idx) or changed
    tc_id = hooks.tc_egress_id(idx)
    if tc_id and prog_name(tc_id) == TC_PROG:
        hooks.tc_detach(idx, "egress")
        changed = True
    st = load_state()
    st["interfaces"].pop(iface, None)
    save_state(st)
    return {"changed": changed, "iface": iface, "ifindex": idx, "xdp_prog_id": cur_id or None,
            "tc_prog_id": tc_id or None,
            "tc_ingress_prog_id": (in_id or None) if was_tc else None,
            "if_flags": hooks.flag_names(flags)}


# ---------------------------------------------------------------------------
# status / stats
# ---------------------------------------------------------------------------


def pins() -> dict[str, list[str]]:
    root = pin_root()
    out = {}
    for sub in ("maps", "progs"):
        d = os.path.join(root, sub)
        out[sub] = sorted(os.listdir(d)) if os.path.isdir(d) else []
    return out


def interface_status(names) -> dict[str, dict[str, Any]]:
    """What is attached to each named interface (managed by eTSF or not)."""
    bpf = _bpf()
    managed = load_state().get("interfaces", {})
    cfg = hooks.all_flags()
    ifaces = {}
    for name in sorted(set(names)):
        rec = managed.get(name, {})
        row = {"ifindex": rec.get("ifindex"), "mode": rec.get("mode"), "present": True,
               "hook_recorded": rec.get("hook"), "hook_requested": rec.get("hook_requested"),
               "hook_reason": rec.get("hook_reason"), "tc_api_requested": rec.get("tc_api_requested"),
               "tc_api_reason": rec.get("tc_api_reason"),
               "managed": name in managed, "stamp": rec.get("stamp"), "attached": False}
        try:
            idx = socket.if_nametoindex(name)
        except OSError:
            row["present"] = False
            ifaces[name] = row
            continue
        q = bpf.xdp_query(idx) or {}
        xid = int(q.get("prog_id") or 0)
        eapi, tid = hooks.tc_slot(idx, "egress")
        iapi, iid = hooks.tc_slot(idx, "ingress")
        flags = cfg.get(idx, 0)
        row.update(ifindex=idx, xdp_prog_id=xid or None, xdp_prog_name=prog_name(xid),
                   xdp_mode=q.get("mode") if xid else None,
                   tc_prog_id=tid or None, tc_prog_name=prog_name(tid),
                   tc_ingress_prog_id=iid or None, tc_ingress_prog_name=prog_name(iid),
                   tc_api=eapi, tc_ingress_api=iapi,
                   if_flags=hooks.flag_names(flags))
        xdp_on = bool(xid and row["xdp_prog_name"] == XDP_PROG)
        tc_on = bool(iid and row["tc_ingress_prog_name"] == TC_IN_PROG and flags & layout.IF_F_CLASSIFY)
        # the hook that classifies now (an XDP program of ours wins: it sees packets first)
        row["hook"] = "xdp" if xdp_on else "tc" if tc_on else None
        row["attached"] = xdp_on or tc_on
        ifaces[name] = row
    return ifaces


def forget(iface: str) -> dict[str, Any]:
    """Stop managing an interface that no longer carries our programs (or no longer exists)."""
    st = load_state()
    changed = st["interfaces"].pop(iface, None) is not None
    save_state(st)
    return {"changed": changed, "iface": iface}
