"""Load, pin and attach/detach the XDP ingress and TC egress programs on an interface."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import Any

from .. import inputs
from . import migrate
from .base import (MODES, TC_OBJ, TC_PROG, XDP_OBJ, XDP_PROG, DatapathError, ifindex,
                   init_ctl, load_state, object_path, pin_root, prog_name, repin, save_state)


def _bpf():
    from .. import bpf
    return bpf


# ---------------------------------------------------------------------------
# attach / detach
# ---------------------------------------------------------------------------


def attach(iface: str, mode: str = "native", build_dir: str | None = None,
           force: bool = False) -> dict[str, Any]:
    """Load (maps pinned & re-used), pin and attach XDP ingress + TC egress.

    If our programs are already attached they are replaced atomically
    (XDP: expected-prog replace; TC: same handle/priority replace); pinned
    maps and their state (counters, rate-limit buckets, policy) survive.
    A foreign XDP program is never replaced unless force=True.
    """
    if mode not in MODES:
        raise DatapathError(f"--mode must be one of {', '.join(MODES)} (got {mode!r})")
    idx = ifindex(iface)
    bpf = _bpf()
    xdp_obj = object_path(build_dir, XDP_OBJ)
    tc_obj = object_path(build_dir, TC_OBJ)
    root = pin_root()

    cur = bpf.xdp_query(idx) or {}
    cur_id = int(cur.get("prog_id") or 0)
    cur_mode = cur.get("mode")
    if cur_id:
        name = prog_name(cur_id)
        if name != XDP_PROG and not force:
            raise DatapathError(f"{iface} already has a foreign XDP program "
                                f"(id {cur_id}, name {name!r}); detach it first")
        if cur_mode and cur_mode != mode:
            raise DatapathError(f"{iface} has XDP attached in {cur_mode} mode; "
                                f"detach before switching to {mode}")

    xprogs: dict = {}
    pins_before: set | None = None
    bpf.ensure_bpffs()
    # pinned maps the new objects define differently: carried over or refused, before loading
    mig = migrate.plan([xdp_obj, tc_obj], root)
    try:
        os.makedirs(os.path.join(root, "maps"), exist_ok=True)
        os.makedirs(os.path.join(root, "progs"), exist_ok=True)
        pins_before = set(os.listdir(os.path.join(root, "maps")))
        xprogs = bpf.load_object(xdp_obj, root, pin_paths=mig.pin_paths())
        tprogs = bpf.load_object(tc_obj, root, pin_paths=mig.pin_paths())
    except bpf.BpfError as e:
        mig.drop_tmp()
        mig.close()
        # nothing was attached or re-pinned: the running programs and maps are untouched;
        # drop only map pins this failed load created (never a pre-existing one)
        for p in xprogs.values():
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
    if XDP_PROG not in xprogs or TC_PROG not in tprogs:
        mig.drop_tmp()
        mig.close()
        raise DatapathError(f"objects do not contain {XDP_PROG}/{TC_PROG}")
    xprog, tprog = xprogs[XDP_PROG], tprogs[TC_PROG]
    attached = False
    try:
        # copied right before the attach: the old programs count on the old maps until then
        migrated = mig.swap()
        init_ctl()
        try:
            bpf.xdp_attach(idx, xprog.fd, mode=mode, replace_prog_id=cur_id or None)
        except bpf.BpfError as e:
            hint = " (try --mode generic)" if mode == "native" else ""
            raise DatapathError(f"XDP attach ({mode}) on {iface} failed: "
                                f"{str(e).splitlines()[0] if str(e) else e}{hint}") from None
        attached = True                 # the new XDP program runs on the new maps from here
        try:
            bpf.tc_attach(idx, tprog.fd, direction="egress")
        except bpf.BpfError as e:
            raise DatapathError(f"TC egress attach on {iface} failed: "
                                f"{str(e).splitlines()[0] if str(e) else e}") from None
        repin(xprog, os.path.join(root, "progs", XDP_PROG))
        repin(tprog, os.path.join(root, "progs", TC_PROG))
        xq = bpf.xdp_query(idx) or {}
        info = {
            "iface": iface, "ifindex": idx, "mode": mode,
            "xdp_prog_id": int(xq.get("prog_id") or xprog.id),
            "tc_prog_id": int(bpf.tc_query(idx, direction="egress") or tprog.id),
            "replaced_prog_id": cur_id or None,
            "attached_at": time.time(),
            "stamp": _object_stamp(xdp_obj),
            "migrated_maps": migrated,
        }
    finally:
        if not attached:
            # the old programs still run on the old maps: the pins point at them again
            mig.undo()
        mig.drop_tmp()
        mig.close()
        for p in list(xprogs.values()) + list(tprogs.values()):
            with contextlib.suppress(Exception):
                p.close()
    st = load_state()
    st["interfaces"][iface] = info
    st["pin_root"] = root
    save_state(st)
    return {"changed": True, **info}


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
    """Detach our XDP and TC programs from iface (maps and pins stay)."""
    idx = ifindex(iface)
    bpf = _bpf()
    changed = False
    cur = bpf.xdp_query(idx) or {}
    cur_id = int(cur.get("prog_id") or 0)
    if cur_id:
        name = prog_name(cur_id)
        if name != XDP_PROG:
            raise DatapathError(f"{iface} XDP program id {cur_id} ({name!r}) is not ours; not detaching")
        bpf.xdp_detach(idx, mode=cur.get("mode") or "native", expected_prog_id=cur_id)
        changed = True
    tc_id = int(bpf.tc_query(idx, direction="egress") or 0)
    if tc_id and prog_name(tc_id) == TC_PROG:
        bpf.tc_detach(idx, direction="egress")
        changed = True
    st = load_state()
    st["interfaces"].pop(iface, None)
    save_state(st)
    return {"changed": changed, "iface": iface, "ifindex": idx, "xdp_prog_id": cur_id or None,
            "tc_prog_id": tc_id or None}


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
    ifaces = {}
    for name in sorted(set(names)):
        rec = managed.get(name, {})
        row = {"ifindex": rec.get("ifindex"), "mode": rec.get("mode"), "present": True,
               "managed": name in managed, "stamp": rec.get("stamp"), "attached": False}
        try:
            idx = socket.if_nametoindex(name)
        except OSError:
            row["present"] = False
            ifaces[name] = row
            continue
        q = bpf.xdp_query(idx) or {}
        xid = int(q.get("prog_id") or 0)
        tid = int(bpf.tc_query(idx, direction="egress") or 0)
        row.update(ifindex=idx, xdp_prog_id=xid or None, xdp_prog_name=prog_name(xid),
                   xdp_mode=q.get("mode") if xid else None,
                   tc_prog_id=tid or None, tc_prog_name=prog_name(tid))
        row["attached"] = bool(xid and row["xdp_prog_name"] == XDP_PROG)
        ifaces[name] = row
    return ifaces


def forget(iface: str) -> dict[str, Any]:
    """Stop managing an interface that no longer carries our programs (or no longer exists)."""
    st = load_state()
    changed = st["interfaces"].pop(iface, None) is not None
    save_state(st)
    return {"changed": changed, "iface": iface}
