"""Load tc_fastpath and attach/detach it (TC ingress on the uplink and the backends' host-end veths)."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from .. import layout as L
from ..datapath import hooks, migrate
from ..datapath.base import (DatapathError, ifindex, init_ctl, load_state, object_path, prog_name, repin,
                             save_state)
from ..paths import pin_root
from .slots import FP_MAPS, OBJ, PROG, FastpathError, maps_present


def _bpf():
    from .. import bpf
    return bpf


# ---------------------------------------------------------------------------
# attach / detach (TC ingress on the uplink and on the backends' host-end veths)
# ---------------------------------------------------------------------------


def load(build_dir: str | None = None):
    """Load tc_fastpath (pins/re-uses every map); returns the Program and the Migration of
    the fast path's own maps whose definition changed (their new maps are loaded against
    temporary pins; ``Migration.swap()`` carries the entries over, right before the attach)."""
    bpf = _bpf()
    obj = object_path(build_dir, OBJ)
    root = pin_root()
    bpf.ensure_bpffs()
    try:
        mig = migrate.plan([obj], root)
    except DatapathError as e:
        raise FastpathError(str(e)) from None
    shared = sorted(n for n in mig.maps if n not in FP_MAPS)
    if shared:
        mig.close()
        # the XDP/TC programs share these maps: carrying them over is `etsfctl attach`'s job
        raise FastpathError(f"pinned map(s) {', '.join(shared)} have an older layout: "
                            "run `etsfctl attach` with this release first")
    try:
        progs = bpf.load_object(obj, root, pin_paths=mig.pin_paths())
    except bpf.BpfError as e:
        mig.drop_tmp()
        mig.close()
        raise FastpathError(f"loading {OBJ} failed: {str(e).splitlines()[0] if str(e) else e}") from None
    for n, p in progs.items():
        if n != PROG:
            p.close()
    if PROG not in progs:
        mig.drop_tmp()
        mig.close()
        raise FastpathError(f"{OBJ} does not contain {PROG}")
    return progs[PROG], mig


def attach(ifaces: list[str], build_dir: str | None = None) -> dict[str, Any]:
    bpf = _bpf()
    idx = {i: ifindex(i) for i in ifaces}
    prog, mig = load(build_dir)
    attached = False
    try:
        # copied right before the attach: the old program counts on the old maps until then
        try:
            migrated = mig.swap()
        except DatapathError as e:
            raise FastpathError(str(e)) from None
        init_ctl()                               # heartbeat = now
        for name, ix in idx.items():
            try:
                # the API already in use there (the datapath's tc hook may have put a tcx link)
                hooks.attach_tc_ingress(ix, prog.fd)
            except bpf.BpfError as e:
                raise FastpathError(f"TC ingress attach on {name} failed: {e}") from None
            attached = True
            try:
                hooks.update_flags(ix, add=L.IF_F_STEER)
            except DatapathError as e:
                raise FastpathError(str(e)) from None
        repin(prog, os.path.join(pin_root(), "progs", PROG))
        pid = prog.id
    finally:
        if not attached:
            mig.undo()                           # the old program's maps under their pins again
        mig.drop_tmp()
        mig.close()
        prog.close()
    st = load_state()
    fp = st.setdefault("fastpath", {"interfaces": {}})
    for name, ix in idx.items():
        fp["interfaces"][name] = {"ifindex": ix, "prog_id": pid, "attached_at": time.time()}
        rec = st["interfaces"].get(name)
        if rec and rec.get("hook") == "tc":
            rec["tc_ingress_prog_id"] = pid      # the one program classifies there too
    save_state(st)
    return {"changed": True, "interfaces": {n: {"ifindex": ix, "prog_id": pid} for n, ix in idx.items()},
            "migrated_maps": migrated}


def detach(ifaces: list[str]) -> dict[str, Any]:
    out = {}
    for name in ifaces:
        ix = ifindex(name)
        old, flags = hooks.update_flags(ix, clear=L.IF_F_STEER)
        if flags & L.IF_F_CLASSIFY:
            # the datapath's tc hook classifies here: the program stays, it only stops steering
            out[name] = bool(old & L.IF_F_STEER)
            continue
        pid = hooks.tc_ingress_id(ix)
        if pid and prog_name(pid) == PROG:
            hooks.tc_detach(ix, "ingress")
            out[name] = True
        else:
            out[name] = False
    st = load_state()
    for name in ifaces:
        st.get("fastpath", {}).get("interfaces", {}).pop(name, None)
    save_state(st)
    return {"changed": any(out.values()), "detached": out}


def status() -> dict[str, Any]:
    rows = {}
    for name, rec in sorted(load_state().get("fastpath", {}).get("interfaces", {}).items()):
        try:
            ix = socket.if_nametoindex(name)
            pid = hooks.tc_ingress_id(ix)
            rows[name] = {"ifindex": ix, "prog_id": pid or None,
                          "attached": bool(pid) and prog_name(pid) == PROG}
        except OSError:
            rows[name] = {"ifindex": rec.get("ifindex"), "present": False, "attached": False}
    return {"interfaces": rows, "maps": maps_present()}
