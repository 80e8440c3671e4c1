"""The policy document: strict YAML loading, validation into a normalised :class:`Policy`.

Every validation error is a :class:`PolicyError` whose ``str()`` is one line naming the
field path, e.g. ``policy.rate_limits.register.rate: must be an integer >= 0 (got -5)``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from .. import inputs
from ..errors import PolicyError
from .consts import (ACL_GUARD_KEYS, ACL_MIN_PREFIX_V4, ACL_MIN_PREFIX_V6, ACL_PER_SLOT, BACKEND_KEYS,
                     DSCP_DEFAULT, DSCP_NAMES, FP_AFFINITIES, FP_BACKENDS_PER_POLICY, FP_PROTOCOLS, FP_SVC_MAX,
                     FP_WEIGHT_MAX, MAX_SIP_PORTS, MAX_TLS_PORTS, METHOD_NAMES, OVERLOAD_LEVELS, PRIO_DEFAULTS,
                     PRIO_NAMES, RL_CLASS_NAMES, ROOT, SCHEMA_VERSION, SERVICE_KEYS, SHED_DEFAULTS, TOP_KEYS)


# ---------------------------------------------------------------------------
# normalised policy
# ---------------------------------------------------------------------------


@dataclass
class Policy:
    version: int = SCHEMA_VERSION
    sip_ports: list[int] = field(default_factory=lambda: [5060])
    tls_ports: list[int] = field(default_factory=lambda: [5061])
    trust: list[str] = field(default_factory=list)   # canonical CIDR strings
    deny: list[str] = field(default_factory=list)
    rate_limits: dict[str, dict[str, int]] = field(
        default_factory=lambda: {c: {"rate": 0, "burst": 1} for c in RL_CLASS_NAMES})
    ipv4_prefix: int = 32
    ipv6_prefix: int = 64
    priorities: dict[str, str] = field(default_factory=lambda: dict(PRIO_DEFAULTS))
    overload_level: int | None = None          # None: keep the running level
    shed_below: list[str] = field(default_factory=lambda: list(SHED_DEFAULTS))
    marking_enabled: bool = True
    dscp: int = DSCP_NAMES[DSCP_DEFAULT]
    skb_priority: int = 0
    deadman_timeout_ms: int = 0
    services: list[dict[str, Any]] = field(default_factory=list)   # fast path
    # validation-only settings (not in the maps): see ACL_MIN_PREFIX_V4
    acl_min_prefix_v4: int = ACL_MIN_PREFIX_V4
    acl_min_prefix_v6: int = ACL_MIN_PREFIX_V6
    acl_allow_broad: bool = False

    def acl_guard(self) -> dict[str, Any] | None:
        """The acl_guard section when it differs from the defaults, else None."""
        g = {"ipv4_min_prefix": self.acl_min_prefix_v4, "ipv6_min_prefix": self.acl_min_prefix_v6,
             "allow_broad": self.acl_allow_broad}
        return None if g == {"ipv4_min_prefix": ACL_MIN_PREFIX_V4, "ipv6_min_prefix": ACL_MIN_PREFIX_V6,
                             "allow_broad": False} else g

    def to_dict(self) -> dict[str, Any]:
        """Canonical, fully defaulted form (used by show/diff/JSON). acl_guard appears only
        when not the default: it is not in the maps, so the live policy never shows it."""
        guard = self.acl_guard()
        return {
            "version": self.version,
            "sip_ports": sorted(self.sip_ports),
            "tls_ports": sorted(self.tls_ports),
            "trust": sort_cidrs(self.trust),
            "deny": sort_cidrs(self.deny),
            "rate_limits": {c: dict(self.rate_limits[c]) for c in RL_CLASS_NAMES},
            "aggregation": {"ipv4_prefix": self.ipv4_prefix, "ipv6_prefix": self.ipv6_prefix},
            "priorities": {m: self.priorities[m] for m in METHOD_NAMES},
            "overload": {"level": self.overload_level, "shed_below": list(self.shed_below)},
            "marking": {"enabled": self.marking_enabled, "dscp": self.dscp,
                        "skb_priority": self.skb_priority},
            "deadman": {"timeout_ms": self.deadman_timeout_ms},
            **({"services": sort_services(self.services)} if self.services else {}),
            **({"acl_guard": guard} if guard else {}),
        }


def sort_cidrs(cidrs):
    nets = [ipaddress.ip_network(c) for c in cidrs]
    nets.sort(key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    return [str(n) for n in nets]


# ---------------------------------------------------------------------------
# YAML loading and validation
# ---------------------------------------------------------------------------


class _StrictLoader(inputs.BoundedLoader):  # pylint: disable=too-many-ancestors
    """SafeLoader that rejects duplicate mapping keys (and deep nesting)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _unused in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hashable = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "unhashable mapping key", key_node.start_mark)
        if hashable:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_text(text: str) -> Policy:
    """Parse and validate policy YAML text."""
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (strict safe loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise PolicyError(ROOT, f"invalid YAML{where}: {problem}") from None
    return validate(doc)


def load_file(path: str) -> tuple[Policy, str]:
    """Read (size-capped before parsing, see etsf.inputs) and validate a policy file."""
    try:
        text = inputs.read_text(path, "policy")
    except OSError as e:
        raise PolicyError(ROOT, f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise PolicyError(ROOT, f"{path} is not UTF-8 text") from None
    except inputs.InputTooLarge as e:
        raise PolicyError(ROOT, str(e)) from None
    return load_text(text), text


def fmt_value(v: Any) -> str:
    if isinstance(v, str):
        return repr(v)
    try:
        return json.dumps(v)
    except (TypeError, ValueError):
        return repr(v)


def _int(v, path, lo=None, hi=None, what=None):
    if isinstance(v, bool) or not isinstance(v, int):
        raise PolicyError(path, f"must be {what or _range_text(lo, hi)} (got {fmt_value(v)})")
    if lo is not None and v < lo:
        raise PolicyError(path, f"must be {what or _range_text(lo, hi)} (got {v})")
    if hi is not None and v > hi:
        raise PolicyError(path, f"must be {_range_text(lo, hi)} (got {v})")
    return v


def _range_text(lo, hi):
    if lo is not None and hi is not None:
        return f"an integer in {lo}..{hi}"
    if lo is not None:
        return f"an integer >= {lo}"
    return "an integer"


def _mapping(v, path, keys):
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise PolicyError(path, f"must be a mapping (got {type(v).__name__})")
    for k in v:
        if not isinstance(k, str):
            raise PolicyError(path, f"keys must be strings (got {fmt_value(k)})")
        if keys is not None and k not in keys:
            raise PolicyError(f"{path}.{k}", f"unknown key (allowed: {', '.join(keys)})")
    return v


def _list(v, path):
    if not isinstance(v, list):
        raise PolicyError(path, f"must be a list (got {type(v).__name__})")
    return v


def _bool(v, path):
    if not isinstance(v, bool):
        raise PolicyError(path, f"must be true or false (got {fmt_value(v)})")
    return v


def _ports(v, path, max_n, min_n):
    lst = _list(v, path)
    if len(lst) < min_n:
        raise PolicyError(path, f"must list at least {min_n} port(s)")
    if len(lst) > max_n:
        raise PolicyError(path, f"at most {max_n} ports are supported (got {len(lst)})")
    out = []
    for i, p in enumerate(lst):
        p = _int(p, f"{path}[{i}]", 1, 65535)
        if p in out:
            raise PolicyError(f"{path}[{i}]", f"duplicate port {p}")
        out.append(p)
    return out


def _cidrs(v, path):
    lst = _list(v, path)
    out = []
    seen = {}
    for i, c in enumerate(lst):
        p = f"{path}[{i}]"
        if not isinstance(c, str):
            raise PolicyError(p, f"must be an IPv4/IPv6 CIDR string (got {fmt_value(c)})")
        if "%" in c:
            raise PolicyError(p, f"scoped IPv6 address in {fmt_value(c)}: the ACL maps cannot hold a "
                                 "scope (zone); drop the %zone") from None
        try:
            net = ipaddress.ip_network(c.strip(), strict=False)
        except ValueError:
            raise PolicyError(p, f"not a valid IPv4/IPv6 CIDR (got {fmt_value(c)})") from None
        try:
            ipaddress.ip_network(c.strip(), strict=True)
        except ValueError:
            raise PolicyError(p, f"host bits set in {fmt_value(c)} (did you mean '{net}'?)") from None
        if net in seen:
            raise PolicyError(p, f"duplicate of {path}[{seen[net]}] ({net})")
        seen[net] = i
        out.append(net)
    return out


def _prio(v, path):
    if isinstance(v, str) and v.lower() in PRIO_NAMES:
        return v.lower()
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(PRIO_NAMES):
        return PRIO_NAMES[v]
    raise PolicyError(path, f"must be one of {'|'.join(PRIO_NAMES)} (got {fmt_value(v)})")


def _dscp(v, path):
    if isinstance(v, str):
        name = v.strip().upper()
        if name in DSCP_NAMES:
            return DSCP_NAMES[name]
        raise PolicyError(path, f"unknown DSCP name {fmt_value(v)} (use e.g. CS3, EF, AF31 or 0..63)")
    return _int(v, path, 0, 63, what="a DSCP name (CS0..CS7, EF, AFxy) or an integer in 0..63")


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,30}$")


def _ip(v, path):
    if not isinstance(v, str):
        raise PolicyError(path, f"must be an IPv4/IPv6 address string (got {fmt_value(v)})")
    if "%" in v:
        raise PolicyError(path, f"scoped IPv6 address {fmt_value(v)}: the maps cannot hold a scope "
                                "(zone); drop the %zone")
    try:
        return ipaddress.ip_address(v.strip())
    except ValueError:
        raise PolicyError(path, f"not a valid IPv4/IPv6 address (got {fmt_value(v)})") from None


def sort_services(svcs):
    out = []
    for sv in sorted(svcs, key=lambda x: x["name"]):
        sv = dict(sv)
        sv["backends"] = sorted((dict(b) for b in sv["backends"]),
                                key=lambda b: (ipaddress.ip_address(b["address"]).version,
                                               int(ipaddress.ip_address(b["address"])), b["port"]))
        out.append(sv)
    return out


def _services(v, path):
    """policy.services: [{name, vip, port, protocol, backends: [{address, port, weight}], affinity}]"""
    lst = _list(v, path)
    if len(lst) > FP_SVC_MAX:
        raise PolicyError(path, f"at most {FP_SVC_MAX} services are supported (got {len(lst)})")
    out, names, vips, owners = [], {}, {}, {}
    total = 0
    for i, sv in enumerate(lst):
        sp = f"{path}[{i}]"
        sd = _mapping(sv, sp, SERVICE_KEYS)
        for req in ("name", "vip", "port", "backends"):
            if req not in sd:
                raise PolicyError(f"{sp}.{req}", "required")
        name = sd["name"]
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise PolicyError(f"{sp}.name", "must be 1..31 characters [A-Za-z0-9_.-], starting "
                                            f"with a letter or digit (got {fmt_value(name)})")
        if name in names:
            raise PolicyError(f"{sp}.name", f"duplicate of {path}[{names[name]}].name ({name!r})")
        names[name] = i
        vip = _ip(sd["vip"], f"{sp}.vip")
        if vip.is_multicast or vip.is_unspecified or vip.is_loopback:
            raise PolicyError(f"{sp}.vip", f"must be a unicast address (got {fmt_value(sd['vip'])})")
        port = _int(sd["port"], f"{sp}.port", 1, 65535)
        proto = sd.get("protocol", "udp")
        if proto not in FP_PROTOCOLS:
            raise PolicyError(f"{sp}.protocol", f"must be one of {'|'.join(FP_PROTOCOLS)} (got {fmt_value(proto)})")
        aff = sd.get("affinity", "call-id")
        if aff not in FP_AFFINITIES:
            raise PolicyError(f"{sp}.affinity", f"must be one of {'|'.join(FP_AFFINITIES)} (got {fmt_value(aff)})")
        vk = (str(vip), port, proto)
        if vk in vips:
            raise PolicyError(f"{sp}.vip", f"{vip} port {port}/{proto} is also the VIP of {path}[{vips[vk]}]")
        vips[vk] = i
        bl = _list(sd["backends"], f"{sp}.backends")
        if not bl:
            raise PolicyError(f"{sp}.backends", "must list at least 1 backend")
        backends = []
        for j, b in enumerate(bl):
            bp = f"{sp}.backends[{j}]"
            bd = _mapping(b, bp, BACKEND_KEYS)
            if "address" not in bd:
                raise PolicyError(f"{bp}.address", "required")
            addr = _ip(bd["address"], f"{bp}.address")
            if addr.version != vip.version:
                raise PolicyError(f"{bp}.address", f"must be IPv{vip.version} like the service vip (got {addr})")
            if addr == vip:
                raise PolicyError(f"{bp}.address", f"must not be the service vip ({vip})")
            bport = _int(bd.get("port", port), f"{bp}.port", 1, 65535)
            weight = _int(bd.get("weight", 1), f"{bp}.weight", 1, FP_WEIGHT_MAX)
            bk = (str(addr), bport)
            if bk in owners:
                raise PolicyError(f"{bp}.address", f"{addr} port {bport} is already a backend of "
                                                   f"{owners[bk]} (a backend serves one service)")
            owners[bk] = f"{sp}.backends"
            backends.append({"address": str(addr), "port": bport, "weight": weight})
        total += len(backends)
        if total > FP_BACKENDS_PER_POLICY:
            raise PolicyError(f"{sp}.backends", f"too many backends in all services "
                                                f"({total} > {FP_BACKENDS_PER_POLICY})")
        out.append({"name": name, "vip": str(vip), "port": port, "protocol": proto,
                    "affinity": aff, "backends": backends})
    return out


def validate(doc: Any) -> Policy:
    """Validate a parsed YAML document; return the normalised Policy."""
    if doc is None:
        raise PolicyError(ROOT, "empty policy document (expected a mapping with 'version: 1')")
    d = _mapping(doc, ROOT, TOP_KEYS)
    if "version" not in d:
        raise PolicyError(f"{ROOT}.version", "required (use 'version: 1')")
    ver = d["version"]
    if isinstance(ver, bool) or ver != SCHEMA_VERSION or not isinstance(ver, int):
        raise PolicyError(f"{ROOT}.version", f"unsupported schema version {fmt_value(ver)} (supported: {SCHEMA_VERSION})")
    p = Policy()

    if "sip_ports" in d:
        p.sip_ports = _ports(d["sip_ports"], f"{ROOT}.sip_ports", MAX_SIP_PORTS, 1)
    if "tls_ports" in d:
        p.tls_ports = _ports(d["tls_ports"], f"{ROOT}.tls_ports", MAX_TLS_PORTS, 0)
    for i, port in enumerate(p.tls_ports):
        if port in p.sip_ports:
            raise PolicyError(f"{ROOT}.tls_ports[{i}]", f"port {port} is also listed in sip_ports")

    if "acl_guard" in d:
        ag = _mapping(d["acl_guard"], f"{ROOT}.acl_guard", ACL_GUARD_KEYS)
        if "ipv4_min_prefix" in ag:
            p.acl_min_prefix_v4 = _int(ag["ipv4_min_prefix"], f"{ROOT}.acl_guard.ipv4_min_prefix", 0, 32)
        if "ipv6_min_prefix" in ag:
            p.acl_min_prefix_v6 = _int(ag["ipv6_min_prefix"], f"{ROOT}.acl_guard.ipv6_min_prefix", 0, 128)
        if "allow_broad" in ag:
            p.acl_allow_broad = _bool(ag["allow_broad"], f"{ROOT}.acl_guard.allow_broad")
    trust = _cidrs(d.get("trust") or [], f"{ROOT}.trust") if "trust" in d else []
    deny = _cidrs(d.get("deny") or [], f"{ROOT}.deny") if "deny" in d else []
    if not p.acl_allow_broad:
        for name, nets in (("trust", trust), ("deny", deny)):
            for i, n in enumerate(nets):
                low = p.acl_min_prefix_v4 if n.version == 4 else p.acl_min_prefix_v6
                if n.prefixlen < low:
                    effect = "drops SIP from" if name == "deny" else "lifts every limit for"
                    raise PolicyError(f"{ROOT}.{name}[{i}]",
                                      f"{n} is shorter than /{low} (the IPv{n.version} minimum) and "
                                      f"{effect} a large part of the Internet; set "
                                      f"acl_guard.allow_broad: true if that is intended")
    tset = {n: i for i, n in enumerate(trust)}
    for i, n in enumerate(deny):
        if n in tset:
            raise PolicyError(f"{ROOT}.deny[{i}]", f"{n} is also listed in trust[{tset[n]}]")
    for fam in (4, 6):
        cnt = sum(1 for n in trust + deny if n.version == fam)
        if cnt > ACL_PER_SLOT:
            raise PolicyError(f"{ROOT}.deny" if deny else f"{ROOT}.trust",
                              f"too many IPv{fam} entries in trust+deny ({cnt} > {ACL_PER_SLOT})")
    p.trust = [str(n) for n in trust]
    p.deny = [str(n) for n in deny]

    if "rate_limits" in d:
        rl = _mapping(d["rate_limits"], f"{ROOT}.rate_limits", RL_CLASS_NAMES)
        for cls, spec in rl.items():
            path = f"{ROOT}.rate_limits.{cls}"
            s = _mapping(spec, path, ("rate", "burst"))
            if "rate" not in s:
                raise PolicyError(f"{path}.rate", "required (requests per second per source, 0 = unlimited)")
            rate = _int(s["rate"], f"{path}.rate", 0, 0xFFFFFFFF, what="an integer >= 0")
            if "burst" in s:
                burst = _int(s["burst"], f"{path}.burst", 1, 0xFFFFFFFF, what="an integer >= 1")
            else:
                burst = max(1, rate)
            p.rate_limits[cls] = {"rate": rate, "burst": burst}

    if "aggregation" in d:
        ag = _mapping(d["aggregation"], f"{ROOT}.aggregation", ("ipv4_prefix", "ipv6_prefix"))
        if "ipv4_prefix" in ag:
            p.ipv4_prefix = _int(ag["ipv4_prefix"], f"{ROOT}.aggregation.ipv4_prefix", 1, 32)
        if "ipv6_prefix" in ag:
            p.ipv6_prefix = _int(ag["ipv6_prefix"], f"{ROOT}.aggregation.ipv6_prefix", 1, 128)

    if "priorities" in d:
        pr = _mapping(d["priorities"], f"{ROOT}.priorities", None)
        for k, v in pr.items():
            name = k.upper()
            if name not in PRIO_DEFAULTS:
                raise PolicyError(f"{ROOT}.priorities.{k}",
                                  f"unknown SIP method (allowed: {', '.join(METHOD_NAMES)})")
            p.priorities[name] = _prio(v, f"{ROOT}.priorities.{k}")

    if "overload" in d:
        ov = _mapping(d["overload"], f"{ROOT}.overload", ("level", "shed_below"))
        if "level" in ov and ov["level"] is not None:
            p.overload_level = _int(ov["level"], f"{ROOT}.overload.level", 0, OVERLOAD_LEVELS - 1)
        if "shed_below" in ov:
            sb = _list(ov["shed_below"], f"{ROOT}.overload.shed_below")
            if len(sb) != OVERLOAD_LEVELS:
                raise PolicyError(f"{ROOT}.overload.shed_below",
                                  f"must list exactly {OVERLOAD_LEVELS} priority classes, one per level 0..{OVERLOAD_LEVELS - 1} (got {len(sb)})")
            vals = [_prio(v, f"{ROOT}.overload.shed_below[{i}]") for i, v in enumerate(sb)]
            for i in range(1, len(vals)):
                if PRIO_NAMES.index(vals[i]) < PRIO_NAMES.index(vals[i - 1]):
                    raise PolicyError(f"{ROOT}.overload.shed_below[{i}]",
                                      f"must not be lower than level {i - 1} ({vals[i]} < {vals[i - 1]})")
            p.shed_below = vals

    if "marking" in d:
        mk = _mapping(d["marking"], f"{ROOT}.marking", ("enabled", "dscp", "skb_priority"))
        if "enabled" in mk:
            p.marking_enabled = _bool(mk["enabled"], f"{ROOT}.marking.enabled")
        if "dscp" in mk:
            p.dscp = _dscp(mk["dscp"], f"{ROOT}.marking.dscp")
        if "skb_priority" in mk:
            p.skb_priority = _int(mk["skb_priority"], f"{ROOT}.marking.skb_priority", 0, 0xFFFFFFFF)

    if "deadman" in d:
        dm = _mapping(d["deadman"], f"{ROOT}.deadman", ("timeout_ms",))
        if "timeout_ms" in dm:
            p.deadman_timeout_ms = _int(dm["timeout_ms"], f"{ROOT}.deadman.timeout_ms", 0, 86_400_000)

    if "services" in d:
        p.services = _services(d["services"], f"{ROOT}.services")
    return p
