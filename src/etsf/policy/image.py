"""Compile a :class:`Policy` into one slot's map entries, and decode the maps back."""

from __future__ import annotations

import ctypes
import ipaddress
from dataclasses import dataclass
from typing import Any

from .. import layout
from .consts import (ACL_DENY, ACL_TRUST, METHODS, POL_F_MARK, POL_F_VALID, POLICY_SLOTS, PRIO_DEFAULTS,
                     PRIO_NAMES, RL_CLASS_NAMES)
from .schema import Policy


# ---------------------------------------------------------------------------
# compile: Policy -> map entries
# ---------------------------------------------------------------------------


@dataclass
class PolicyImage:
    """Everything one policy slot needs in the maps."""

    slot: int
    generation: int
    policy: bytes                                   # struct etsf_policy
    acl_v4: dict[bytes, bytes]                      # key -> u32 action
    acl_v6: dict[bytes, bytes]
    overload_level: int | None
    deadman_ns: int


def _acl_key(net, slot: int) -> bytes:
    if net.version == 4:
        k = layout.AclV4Key()
    else:
        k = layout.AclV6Key()
    k.prefixlen = 8 + net.prefixlen
    k.slot = slot
    raw = net.network_address.packed
    ctypes.memmove(ctypes.addressof(k) + type(k).addr.offset, raw, len(raw))
    return bytes(k)


def u32(v: int) -> bytes:
    return int(v).to_bytes(4, "little" if little_endian() else "big")


def little_endian() -> bool:
    import sys
    return sys.byteorder == "little"


def compile_policy(p: Policy, slot: int, generation: int) -> PolicyImage:
    if slot not in range(POLICY_SLOTS):
        raise ValueError(f"slot {slot} out of range")
    s = layout.Policy()
    s.generation = generation
    s.flags = POL_F_VALID | (POL_F_MARK if p.marking_enabled else 0)
    for i, port in enumerate(sorted(p.sip_ports)):
        s.sip_ports[i] = port
    for i, port in enumerate(sorted(p.tls_ports)):
        s.tls_ports[i] = port
    for m in layout.Method:
        if int(m) >= METHODS:
            continue
        prio = p.priorities.get(m.name, "normal")
        s.method_prio[int(m)] = PRIO_NAMES.index(prio)
    for lvl, name in enumerate(p.shed_below):
        s.shed_below[lvl] = PRIO_NAMES.index(name)
    s.agg_prefix_v4 = p.ipv4_prefix
    s.agg_prefix_v6 = p.ipv6_prefix
    s.dscp = p.dscp
    s.skb_priority = p.skb_priority
    for idx, cls in enumerate(RL_CLASS_NAMES):
        s.rate[idx].rate_pps = p.rate_limits[cls]["rate"]
        s.rate[idx].burst = p.rate_limits[cls]["burst"]
    v4, v6 = {}, {}
    for cidr, action in [(c, ACL_TRUST) for c in p.trust] + [(c, ACL_DENY) for c in p.deny]:
        net = ipaddress.ip_network(cidr)
        (v4 if net.version == 4 else v6)[_acl_key(net, slot)] = u32(action)
    return PolicyImage(slot=slot, generation=generation, policy=bytes(s), acl_v4=v4, acl_v6=v6,
                       overload_level=p.overload_level,
                       deadman_ns=p.deadman_timeout_ms * 1_000_000)


# ---------------------------------------------------------------------------
# decode: maps -> canonical dict (the live policy)
# ---------------------------------------------------------------------------


def decode_ctl(raw: bytes):
    return layout.Ctl.from_buffer_copy(raw)


def decode_acl_key(raw: bytes):
    """Return (slot, ip_network) of an etsf_acl_v4/v6 key."""
    cls = layout.AclV4Key if len(raw) == ctypes.sizeof(layout.AclV4Key) else layout.AclV6Key
    k = cls.from_buffer_copy(raw)
    alen = 4 if cls is layout.AclV4Key else 16
    addr = bytes(raw[cls.addr.offset:cls.addr.offset + alen])
    bits = k.prefixlen - 8
    ipcls = ipaddress.IPv4Network if alen == 4 else ipaddress.IPv6Network
    return k.slot, ipcls((addr, max(0, bits)), strict=False)


def decode(policy_raw: bytes, acl_entries, ctl=None) -> dict[str, Any] | None:
    """Canonical dict of the policy stored in one slot.

    acl_entries: iterable of (ip_network, action) already filtered to the slot.
    Returns None when the slot holds no valid policy.
    """
    s = layout.Policy.from_buffer_copy(policy_raw)
    if not s.flags & POL_F_VALID:
        return None
    trust = [str(n) for n, a in acl_entries if a == ACL_TRUST]
    deny = [str(n) for n, a in acl_entries if a == ACL_DENY]
    prio = {}
    for m in layout.Method:
        if m.name in PRIO_DEFAULTS:
            v = s.method_prio[int(m)]
            prio[m.name] = PRIO_NAMES[v] if v < len(PRIO_NAMES) else str(v)
    p = Policy(
        sip_ports=[x for x in s.sip_ports if x],
        tls_ports=[x for x in s.tls_ports if x],
        trust=trust, deny=deny,
        rate_limits={c: {"rate": s.rate[i].rate_pps, "burst": s.rate[i].burst}
                     for i, c in enumerate(RL_CLASS_NAMES)},
        ipv4_prefix=s.agg_prefix_v4, ipv6_prefix=s.agg_prefix_v6,
        priorities=prio,
        overload_level=(ctl.overload_level if ctl is not None else None),
        shed_below=[PRIO_NAMES[v] if v < len(PRIO_NAMES) else str(v) for v in s.shed_below],
        marking_enabled=bool(s.flags & POL_F_MARK),
        dscp=s.dscp, skb_priority=s.skb_priority,
        deadman_timeout_ms=(ctl.deadman_ns // 1_000_000 if ctl is not None else 0),
    )
    out = p.to_dict()
    out["generation"] = s.generation
    return out
