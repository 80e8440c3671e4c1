"""Apply a validated policy to the pinned maps as a double-buffered slot swap, and read it back."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import yaml

from .. import layout, paths
from ..errors import PolicyError, policy_maps_missing
from ..paths import lock, state_dir
from ..pinmaps import PinnedMaps
from .image import (compile_policy, decode, decode_acl_key, decode_ctl, decode_ka_key, decode_keepalive,
                    little_endian, u32)
from .consts import MAP_ACL_V4, MAP_ACL_V6, MAP_CTL, MAP_KA_CFG, MAP_KA_ID, MAP_POLICY, POLICY_SLOTS, ROOT
from .changes import diff
from . import history
from .keepalive import keepalive_default
from .schema import Policy, sort_services, validate


# ---------------------------------------------------------------------------
# live maps
# ---------------------------------------------------------------------------


class Maps(PinnedMaps):
    """The pinned maps a policy apply reads and writes (a missing map is a PolicyError)."""

    def __init__(self, pin_root=None):
        super().__init__(pin_root, missing=policy_maps_missing)


def resolve_pin_root(pin_root=None) -> str:
    return paths.pin_root(pin_root)


def maps_present(pin_root=None) -> bool:
    return paths.maps_present(pin_root, (MAP_CTL,))


def _read_ctl(maps):
    raw = maps[MAP_CTL].lookup(u32(0))
    if raw is None:
        raise PolicyError(ROOT, "etsf_ctl has no entry 0")
    return decode_ctl(raw)


def _acl_slot_entries(m, slot):
    out = []
    for k in list(m.keys()):
        s, net = decode_acl_key(bytes(k))
        if s == slot:
            v = m.lookup(k)
            out.append((bytes(k), net, int.from_bytes(v[:4], "little" if little_endian() else "big") if v else 0))
    return out


def _has_ka_maps(maps) -> bool:
    """The keep-alive maps are pinned (a datapath from before them has none)."""
    return paths.maps_present(maps.pin_root, (MAP_KA_CFG, MAP_KA_ID))


def _ka_slot_keys(maps, slot):
    """[(raw key, identity, value)] of the etsf_ka_id entries of a slot."""
    m = maps[MAP_KA_ID]
    out = []
    for k in list(m.keys()):
        s, ident = decode_ka_key(bytes(k))
        if s == slot:
            v = m.lookup(k)
            out.append((bytes(k), ident, int.from_bytes(v[:4], "little" if little_endian() else "big") if v else 0))
    return out


def _read_keepalive(maps, slot, policy_flags, ctl):
    if not _has_ka_maps(maps):
        return None
    ids = [ident for _unused, ident, flag in _ka_slot_keys(maps, slot) if flag & layout.KA_ID_PRIMARY]
    return decode_keepalive(policy_flags, maps[MAP_KA_CFG].lookup(u32(slot)), ids, ctl.ka_sample_every)


def read_live(pin_root=None, maps=None) -> dict[str, Any] | None:
    """Decode the policy the kernel is using now; None when none applied."""
    own = maps is None
    maps = maps or Maps(pin_root)
    try:
        ctl = _read_ctl(maps)
        slot = ctl.active_slot
        raw = maps[MAP_POLICY].lookup(u32(slot))
        if raw is None:
            return None
        acl = [(n, a) for _unused, n, a in _acl_slot_entries(maps[MAP_ACL_V4], slot)]
        acl += [(n, a) for _unused, n, a in _acl_slot_entries(maps[MAP_ACL_V6], slot)]
        pflags = layout.Policy.from_bytes(raw).flags
        out = decode(raw, acl, ctl, _read_keepalive(maps, slot, pflags, ctl))
        if out is not None:
            from .. import fastpath as _fp
            svcs = _fp.decode_slot(slot, maps)
            if svcs:
                out["services"] = sort_services(svcs)
        if out is not None:
            out["active_slot"] = slot
        return out
    finally:
        if own:
            maps.close()


def read_keepalive(pin_root=None) -> dict[str, Any]:
    """The live slot's keepalive section, every key (the defaults when no policy or no keep-alive
    maps are there): what the agent's prober and `etsfctl keepalive status` act on."""
    if not maps_present(pin_root):
        return keepalive_default()
    with Maps(pin_root) as maps:
        ctl = _read_ctl(maps)
        slot = ctl.active_slot & 1
        raw = maps[MAP_POLICY].lookup(u32(slot))
        pol = layout.Policy.from_bytes(raw) if raw is not None else None
        if pol is None or not pol.flags & layout.POL_F_VALID:
            return keepalive_default()
        return _read_keepalive(maps, slot, pol.flags, ctl) or keepalive_default()


def _write_state(text: str | None, p: Policy, result: dict):
    d = state_dir()
    os.makedirs(d, exist_ok=True)
    if text is None:
        text = yaml.safe_dump(p.to_dict(), sort_keys=False)
    for name, data in (("policy.applied.yml", text),
                       ("policy.applied.json", json.dumps(result, indent=2, sort_keys=True) + "\n")):
        fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(d, name))


def apply(p: Policy, *, pin_root=None, check=False, source_text=None, force=False, actor=None, source=None,
          history_keep=None, _rollback_to=None) -> dict[str, Any]:
    """Apply a validated policy as an atomic slot swap.

    Returns {"changed", "check", "generation", "slot", "diff", "live_exists"}.
    With check=True nothing is written (diff only; no datapath needed).
    A real change is kept in the policy history (newest `history_keep`) and audited.
    """
    keep = history.check_keep(history_keep)
    new = p.to_dict()
    if check and not maps_present(pin_root):
        ch = diff(None, new)
        return {"changed": True, "check": True, "generation": None, "slot": None,
                "diff": ch, "live_exists": False}

    with lock(), Maps(pin_root) as maps:
        live = read_live(maps=maps)
        ch = diff(live, new)
        ctl = _read_ctl(maps)
        changed = bool(ch) or live is None or force
        res = {"changed": changed, "check": check, "diff": ch, "live_exists": live is not None,
               "generation": ctl.generation, "slot": ctl.active_slot}
        if check:
            return res
        if not changed:
            if not os.path.exists(os.path.join(state_dir(), "policy.applied.yml")):
                _write_state(source_text, p, {"generation": ctl.generation, "slot": ctl.active_slot,
                                              "policy": new})
            if not history.entries():      # a host applied before history was kept: seed it
                history.record(generation=ctl.generation, slot=ctl.active_slot, doc=new, action="adopt",
                               actor=actor, source=source, keep=keep, previous=None)
            return res
        active = ctl.active_slot if ctl.active_slot < POLICY_SLOTS else 0
        target = (active + 1) % POLICY_SLOTS
        prev_gen = ctl.generation if live is not None else None
        if live is not None and not history.kept(prev_gen):
            # the live policy came from before the history was kept (or was pruned): keep it
            # first, so this change can be rolled back
            history.record(generation=prev_gen, slot=ctl.active_slot, action="adopt", actor=actor,
                           source="live maps", keep=keep + 1, previous=None,
                           doc={k: v for k, v in live.items() if k not in ("generation", "active_slot")})
        # maps made new at boot start from generation 0: counting on from the kept history keeps
        # generations growing, so a restore never overwrites the record of an earlier apply
        gen = max(ctl.generation, history.newest_generation()) + 1
        img = compile_policy(p, target, gen)
        from .. import fastpath as _fp      # services: compiled before any map is written
        fp_plan = _fp.plan_slot(p.services, target, active, maps)
        ka_maps = _has_ka_maps(maps)
        if not ka_maps and (p.keepalive["enabled"] or p.keepalive["nat_keepalive"] != "pass"):
            raise PolicyError(f"{ROOT}.keepalive", "a datapath with the keep-alive maps (etsf_ka_cfg, "
                              "etsf_ka_id) expected: re-attach ('etsfctl attach') to use keepalive")
        # 1. inactive slot: stale ACL entries out, new ones in, then its policy struct
        for mname, entries in ((MAP_ACL_V4, img.acl_v4), (MAP_ACL_V6, img.acl_v6)):
            m = maps[mname]
            for k, _unused1, _unused2 in _acl_slot_entries(m, target):
                m.delete(k)
            for k, v in entries.items():
                m.update(k, v)
        _fp.write_slot(fp_plan, maps)
        if ka_maps:
            for k, _unused1, _unused2 in _ka_slot_keys(maps, target):
                maps[MAP_KA_ID].delete(k)
            for k, v in img.ka_ids.items():
                maps[MAP_KA_ID].update(k, v)
            maps[MAP_KA_CFG].update(u32(target), img.ka_cfg)
        maps[MAP_POLICY].update(u32(target), img.policy)
        # 2. one update flips the live slot
        ctl = _read_ctl(maps)
        ctl.active_slot = target
        ctl.generation = gen
        if img.overload_level is not None:
            ctl.overload_level = img.overload_level
        ctl.deadman_ns = img.deadman_ns
        ctl.ka_sample_every = img.ka_sample_every
        if p.keepalive["enabled"] and not ctl.node_secret:     # the To-tag of the 200s
            ctl.node_secret = int.from_bytes(os.urandom(8), "little") or 1
        if img.deadman_ns and not ctl.heartbeat_ns:
            from .. import bpf
            ctl.heartbeat_ns = bpf.monotonic_ns()
        maps[MAP_CTL].update(u32(0), bytes(ctl))
        # 3. the old slot's ACL entries (and fast-path services) are garbage now
        _fp.release_slot(active, maps, fp_plan)
        for mname in (MAP_ACL_V4, MAP_ACL_V6):
            m = maps[mname]
            for k, _unused1, _unused2 in _acl_slot_entries(m, active):
                m.delete(k)
        if ka_maps:
            for k, _unused1, _unused2 in _ka_slot_keys(maps, active):
                maps[MAP_KA_ID].delete(k)
        res.update(generation=gen, slot=target)
        history.record(generation=gen, slot=target, doc=new, keep=keep, actor=actor, source=source,
                       action="rollback" if _rollback_to is not None else "apply",
                       previous=prev_gen,
                       rollback_to=_rollback_to, changes=len(ch))
    _write_state(source_text, p, {"generation": gen, "slot": target, "policy": new})
    return res


def rollback(generation: int | None = None, *, pin_root=None, check=False, actor=None,
             history_keep=None) -> dict[str, Any]:
    """Re-apply a kept policy (default: the newest one older than the live generation).

    Exactly an apply of that document (same lock, same slot swap, a new generation), kept in
    the history as a rollback and audited.  A generation not kept is a one-line PolicyError
    and nothing is written.
    """
    history.check_keep(history_keep)
    live_gen = None
    if maps_present(pin_root):
        with Maps(pin_root) as maps:
            live_gen = _read_ctl(maps).generation
    entry = history.pick(live_gen, generation)
    p = validate(entry["policy"])
    res = apply(p, pin_root=pin_root, check=check, actor=actor, history_keep=history_keep,
                source=f"rollback to generation {entry['generation']}", _rollback_to=entry["generation"])
    res["rollback_to"] = entry["generation"]
    res["document"] = entry["policy"]
    return res
