"""Compile a :class:`Policy` into one slot's map entries, and decode the maps back."""

from __future__ import annotations

import ctypes
import ipaddress
from dataclasses import dataclass
from typing import Any

from .. import layout
from .consts import (ACL_DENY, ACL_TRUST, METHODS, POL_F_KA, POL_F_MARK, POL_F_NAT_DROP, POL_F_NO_ACL4,
                     POL_F_NO_ACL6, POL_F_TM_OFF, POL_F_VALID, POLICY_SLOTS, PRIO_DEFAULTS, PRIO_NAMES, RL_CLASS_NAMES)
from .keepalive import KA_HEADERS, ka_header_block, ka_identity_hosts, keepalive_canonical, keepalive_default
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
    ka_cfg: bytes = b""                             # struct etsf_ka_cfg
    ka_ids: dict[bytes, bytes] | None = None        # etsf_ka_id key -> u32 ETSF_KA_ID_*
    ka_sample_every: int = 0                        # etsf_ctl.ka_sample_every at the swap


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
    if not p.telemetry_transactions:
        s.flags |= POL_F_TM_OFF
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
    # the programs skip the trie lookup for a family the slot has no entry for
    if not v4:
        s.flags |= POL_F_NO_ACL4
    if not v6:
        s.flags |= POL_F_NO_ACL6
    ka = p.keepalive
    if ka["enabled"]:
        s.flags |= POL_F_KA
    if ka["nat_keepalive"] == "drop":
        s.flags |= POL_F_NAT_DROP
    return PolicyImage(slot=slot, generation=generation, policy=bytes(s), acl_v4=v4, acl_v6=v6,
                       overload_level=p.overload_level,
                       deadman_ns=p.deadman_timeout_ms * 1_000_000,
                       ka_cfg=_ka_cfg(ka), ka_ids=_ka_ids(ka, slot), ka_sample_every=ka["sample_every"])


def _ka_cfg(ka) -> bytes:
    c = layout.KaCfg()
    hdr = ka_header_block(ka)
    c.hdr_len = len(hdr)
    ctypes.memmove(ctypes.addressof(c) + layout.KaCfg.hdr.offset, hdr, len(hdr))
    pr = ka["probe"]
    addr = ipaddress.ip_address(pr["address"])
    c.probe_interval_ms, c.probe_timeout_ms, c.probe_alive_ms = pr["interval_ms"], pr["timeout_ms"], pr["alive_ms"]
    c.probe_port, c.probe_family = pr["port"], addr.version
    ctypes.memmove(ctypes.addressof(c) + layout.KaCfg.probe_addr.offset, addr.packed, len(addr.packed))
    return bytes(c)


def _ka_ids(ka, slot: int) -> dict[bytes, bytes]:
    """Every Request-URI text form of every identity: the first as written (decoded back), the
    others (an IPv6 address expanded) as aliases."""
    out = {}
    for ident in ka["identities"]:
        user, hosts = ka_identity_hosts(ident)
        for i, host in enumerate(hosts):
            flag = layout.KA_ID_PRIMARY if i == 0 else layout.KA_ID_ALIAS
            out[layout.ka_id_key(slot, host.encode(), user.encode())] = u32(flag)
    return out


def decode_ka_key(raw: bytes) -> tuple[int, str]:
    """(slot, identity text) of an etsf_ka_id key written by _ka_ids."""
    k = layout.KaIdKey.from_bytes(raw)
    host = bytes(k.host[:k.host_len]).decode("ascii", "replace")
    user = bytes(k.user[:k.user_len]).decode("ascii", "replace")
    if host.startswith("{") and host.endswith("}"):     # the fold of an IPv6 reference's brackets
        host = host[1:-1]
    return k.slot, f"{user}@{host}" if user else host


def decode_keepalive(policy_flags: int, cfg_raw: bytes | None, identities, sample_every: int) -> dict[str, Any]:
    """The canonical keepalive section from the maps (identities: the slot's primary keys)."""
    ka = keepalive_default()
    if cfg_raw is None:
        return ka
    c = layout.KaCfg.from_bytes(cfg_raw)
    hdr = bytes(c.hdr[:min(c.hdr_len, layout.KA_HDR_MAX)]).decode("ascii", "replace")
    names = {name.lower(): key for key, name in KA_HEADERS}
    for line in hdr.split("\r\n"):
        name, sep, value = line.partition(": ")
        if sep and name.lower() in names:
            ka[names[name.lower()]] = value
    fam = c.probe_family
    addr = ipaddress.ip_address(bytes(c.probe_addr[:4 if fam == 4 else 16])) if fam in (4, 6) else None
    ka.update(enabled=bool(policy_flags & POL_F_KA), identities=sorted(identities), sample_every=sample_every,
              nat_keepalive="drop" if policy_flags & POL_F_NAT_DROP else "pass")
    if addr is not None:
        ka["probe"] = {"address": str(addr), "port": c.probe_port, "interval_ms": c.probe_interval_ms,
                       "timeout_ms": c.probe_timeout_ms, "alive_ms": c.probe_alive_ms}
    return keepalive_canonical(ka)


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


def decode(policy_raw: bytes, acl_entries, ctl=None, keepalive=None) -> dict[str, Any] | None:
    """Canonical dict of the policy stored in one slot.

    acl_entries: iterable of (ip_network, action) already filtered to the slot.
    keepalive: the slot's decoded keepalive section (decode_keepalive), None: the default.
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
        telemetry_transactions=not s.flags & POL_F_TM_OFF,
        dscp=s.dscp, skb_priority=s.skb_priority,
        deadman_timeout_ms=(ctl.deadman_ns // 1_000_000 if ctl is not None else 0),
        keepalive=keepalive or keepalive_default(),
    )
    out = p.to_dict()
    out["generation"] = s.generation
    return out
