"""Whole-host operations over the data path: status, revert to the normal stack, boot-time restore.

These sit above attach/detach because they also read the policy and drive the fast path.
"""

from __future__ import annotations

import os
from typing import Any

from .. import inputs, paths
from .. import policy as _policy
from . import held
from ..overload.state import read_state as overload_auto_state
from .hooks import HOOKS, TC_APIS
from .loader import attach, detach, forget, interface_status, pins
from .base import (MODES, DatapathError, build, check_objects, ctl_dict, default_build_dir, load_state,
                   pin_root, read_ctl, set_bypass)


def status() -> dict[str, Any]:
    st = load_state()
    ifaces = interface_status(st.get("interfaces", {}))
    out: dict[str, Any] = {"pin_root": pin_root(), "pins": pins(), "interfaces": ifaces,
                           "build": st.get("build")}
    if _policy.maps_present(pin_root()):
        ctl = read_ctl()
        out["ctl"] = ctl_dict(ctl)
        out["policy_generation"] = int(ctl.generation)
        out["bypass"] = bool(ctl.bypass)
        out["overload_level"] = int(ctl.overload_level)
        out["heartbeat_age_ms"] = out["ctl"]["heartbeat_age_ms"]
        try:
            live = _policy.read_live(pin_root())
        except _policy.PolicyError:
            live = None
        out["policy_applied"] = live is not None
    else:
        out.update(ctl=None, policy_generation=None, bypass=None, overload_level=None,
                   heartbeat_age_ms=None, policy_applied=False)
    out["overload_auto"] = overload_auto_state()
    out["revert_held"] = held.read()
    return out


# ---------------------------------------------------------------------------
# revert and restore (fleet revert, etsf-restore.service)
# ---------------------------------------------------------------------------


REVERT_MODES = ("bypass", "detach")


def revert(mode: str = "bypass") -> dict[str, Any]:
    """Send SIP back to the normal stack: bypass (instant, programs stay) or detach (all interfaces)."""
    if mode not in REVERT_MODES:
        raise DatapathError(f"--mode must be one of {', '.join(REVERT_MODES)} (got {mode!r})")
    if mode == "bypass":
        if not _policy.maps_present(pin_root()):
            return {"changed": False, "mode": mode, "detail": "eTSF maps not loaded: nothing to bypass"}
        res = set_bypass(True)
        kept = held.hold(mode)
        return {"changed": res["changed"] or kept, "mode": mode, "bypass": True}
    detached = {}
    fp_ifaces = sorted(load_state().get("fastpath", {}).get("interfaces", {}))
    if fp_ifaces:
        from .. import fastpath
        present = [i for i in fp_ifaces if os.path.exists(f"/sys/class/net/{i}")]
        res = fastpath.detach(present) if present else {"detached": {}}
        for iface in fp_ifaces:
            detached[f"{iface} (fast path)"] = bool(res["detached"].get(iface))
    for iface in sorted(load_state().get("interfaces", {})):
        try:
            detached[iface] = detach(iface)["changed"]
        except (DatapathError, OSError) as exc:
            if isinstance(exc, OSError) or "does not exist" in str(exc) or "no such" in str(exc).lower():
                forget(iface)
                detached[iface] = False
            else:
                raise
    kept = held.hold(mode)
    return {"changed": any(detached.values()) or kept, "mode": mode, "interfaces": detached}


def read_restore_config(path: str) -> dict[str, Any]:
    try:
        cfg = inputs.load_yaml_file(path, "datapath config") or {}
    except inputs.InputError as exc:
        raise DatapathError(str(exc)) from None
    if not isinstance(cfg, dict) or cfg.get("version") != 1:
        raise DatapathError(f"{path}: version: expected 1")
    ifaces = cfg.get("interfaces")
    if not isinstance(ifaces, list) or not ifaces or not all(isinstance(i, str) for i in ifaces):
        raise DatapathError(f"{path}: interfaces: expected a non-empty list of interface names")
    if cfg.get("mode", "native") not in MODES:
        raise DatapathError(f"{path}: mode: must be one of {', '.join(MODES)}")
    if cfg.get("hook", "auto") not in HOOKS:
        raise DatapathError(f"{path}: hook: must be one of {', '.join(HOOKS)}")
    if cfg.get("tc_api", "auto") not in TC_APIS:
        raise DatapathError(f"{path}: tc_api: must be one of {', '.join(TC_APIS)}")
    fp = cfg.get("fastpath_interfaces")
    if fp is not None and (not isinstance(fp, list) or not all(isinstance(i, str) for i in fp)):
        raise DatapathError(f"{path}: fastpath_interfaces: expected a list of interface names")
    for key in ("policy", "build_dir", "src_dir"):
        # a number here would be taken for a file descriptor by os.path/open
        if cfg.get(key) is not None and (not isinstance(cfg[key], str) or not cfg[key] or "\0" in cfg[key]):
            raise DatapathError(f"{path}: {key}: expected a path")
    if not isinstance(cfg.get("prebuilt", False), bool):
        raise DatapathError(f"{path}: prebuilt: expected true or false")
    return cfg


def restore(config: str | None = None) -> dict[str, Any]:
    """Boot-time restore: build if needed, (re)attach every configured interface, re-apply the policy."""
    cfg = read_restore_config(config or paths.datapath_config())
    rec = held.read()
    if rec and rec["mode"] == "detach":
        # an operator took eTSF off this host: a reboot must not put it back.  The pin root
        # still exists, empty: the exporter's unit bind-mounts it and reports etsf_up 0
        os.makedirs(pin_root(), mode=0o755, exist_ok=True)
        return {"changed": False, "built": False, "attached": {}, "hooks": {}, "fastpath": [],
                "policy_generation": None, "revert_held": rec}
    if cfg.get("prebuilt"):
        # objects built on the controller: this host may have no compiler; refuse them before
        # anything is attached if they do not fit this agent
        out = cfg.get("build_dir") or default_build_dir()
        check_objects(out)
        built = {"out_dir": out, "changed": False}
    else:
        built = build(out_dir=cfg.get("build_dir"), src_dir=cfg.get("src_dir"))
    attached, chosen = {}, {}
    hook = cfg.get("hook", "auto")
    for iface in cfg["interfaces"]:
        res = attach(iface, mode=None if hook == "tc" else cfg.get("mode", "native"), build_dir=built["out_dir"],
                     hook=hook, tc_api=cfg.get("tc_api", "auto"))
        attached[iface] = res["xdp_prog_id"] or res["tc_ingress_prog_id"]
        chosen[iface] = res["hook"]
    fp_ifaces = cfg.get("fastpath_interfaces") or []
    if fp_ifaces:
        from .. import fastpath
        fastpath.attach(list(fp_ifaces), build_dir=built["out_dir"])
    if rec:
        # a held bypass, set before the policy makes the programs enforce anything
        set_bypass(True)
    policy_file = cfg.get("policy")
    applied = None
    if policy_file and os.path.exists(policy_file):
        pol, text = _policy.load_file(policy_file)
        # after a reboot the maps are new: force the write even if an old decode matched
        applied = _policy.apply(pol, source_text=text, force=True, source=policy_file,
                                actor="etsf-restore (boot)")["generation"]
    return {"changed": True, "built": built["changed"], "attached": attached, "hooks": chosen,
            "fastpath": list(fp_ifaces),
            "policy_generation": applied, "revert_held": rec}
