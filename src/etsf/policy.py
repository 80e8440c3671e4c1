"""eTSF policy: the ONLY module that knows the policy schema.

YAML (``version: 1``) -> validated, normalised :class:`Policy` -> compiled
:class:`PolicyImage` (``struct etsf_policy`` bytes + ACL LPM entries for one
slot) -> applied to the pinned maps as a double-buffered swap:

1. take the policy lock (``$ETSF_RUN_DIR/policy.lock``, default ``/run/etsf``);
2. write the INACTIVE slot: delete its stale ACL entries, insert the new ones,
   write its ``etsf_policy`` struct (generation + 1, flags VALID|MARK);
3. flip ``etsf_ctl`` (active_slot, generation, overload level, deadman) with a
   single map update -- from here on packets see the new policy, never half;
4. delete the previously active slot's ACL entries.

Every validation error is a :class:`PolicyError` whose ``str()`` is one line
naming the field path, e.g.
``policy.rate_limits.register.rate: must be an integer >= 0 (got -5)``.
Validation and compilation finish before any map is touched, so a rejected
policy changes nothing already applied.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import ipaddress
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import inputs, layout

SCHEMA_VERSION = 1

# ---------------------------------------------------------------------------
# constants mirrored from bpf/etsf.h through etsf.layout
# ---------------------------------------------------------------------------


def _const(*names: str, default: int) -> int:
    for n in names:
        v = getattr(layout, n, None)
        if v is not None:
            return int(v)
    return default


MAX_SIP_PORTS = _const("MAX_SIP_PORTS", "ETSF_MAX_SIP_PORTS", default=8)
MAX_TLS_PORTS = _const("MAX_TLS_PORTS", "ETSF_MAX_TLS_PORTS", default=4)
POLICY_SLOTS = _const("POLICY_SLOTS", "ETSF_POLICY_SLOTS", default=2)
RL_CLASSES = _const("RL_CLASSES", "ETSF_RL_CLASSES", default=4)
OVERLOAD_LEVELS = _const("OVERLOAD_LEVELS", "ETSF_OVERLOAD_LEVELS", default=4)
ACL_MAX = _const("ACL_MAX", "ETSF_ACL_MAX", default=16384)
METHODS = _const("METHODS", "ETSF_METHODS", default=17)
POL_F_VALID = _const("POL_F_VALID", "ETSF_POL_F_VALID", default=0x1)
POL_F_MARK = _const("POL_F_MARK", "ETSF_POL_F_MARK", default=0x2)
ACL_DENY = int(layout.AclAction.DENY) if hasattr(layout, "AclAction") else 1
ACL_TRUST = int(layout.AclAction.TRUST) if hasattr(layout, "AclAction") else 2

# one policy must fit next to the other slot's entries during the swap
ACL_PER_SLOT = ACL_MAX // POLICY_SLOTS

MAP_CTL = "etsf_ctl"
MAP_POLICY = "etsf_policy"
MAP_ACL_V4 = "etsf_acl_v4"
MAP_ACL_V6 = "etsf_acl_v6"

PRIO_NAMES = ("low", "normal", "high", "critical")  # index == enum etsf_prio
RL_CLASS_NAMES = ("register", "options", "invite", "other")  # == enum etsf_rl_class

# settable method priorities: every SIP method of enum etsf_method except UNKNOWN
_METHOD_NAMES = [m.name for m in sorted(layout.Method, key=int)
                 if m.name not in ("UNKNOWN",) and int(m) < METHODS]
PRIO_DEFAULTS: dict[str, str] = {}
for _m in _METHOD_NAMES:
    PRIO_DEFAULTS[_m] = "normal"
PRIO_DEFAULTS.update({
    "INVITE": "high",
    "ACK": "critical", "BYE": "critical", "CANCEL": "critical",
    "PRACK": "critical", "UPDATE": "critical", "RESPONSE": "critical",
    "REGISTER": "low", "OPTIONS": "low", "SUBSCRIBE": "low", "PUBLISH": "low",
})
PRIO_DEFAULTS = {k: v for k, v in PRIO_DEFAULTS.items() if k in _METHOD_NAMES}

SHED_DEFAULTS = ["low", "normal", "high", "critical"]  # level L sheds prio < [L]

# RFC 4594 / RFC 2474 DSCP names
DSCP_NAMES: dict[str, int] = {"DF": 0, "BE": 0, "EF": 46, "VA": 44, "LE": 1}
for _i in range(8):
    DSCP_NAMES[f"CS{_i}"] = 8 * _i
for _c in range(1, 5):
    for _d in range(1, 4):
        DSCP_NAMES[f"AF{_c}{_d}"] = 8 * _c + 2 * _d
DSCP_DEFAULT = "CS3"  # RFC 4594 "Signaling" service class

TOP_KEYS = ("version", "sip_ports", "tls_ports", "trust", "deny", "rate_limits",
            "aggregation", "priorities", "overload", "marking", "deadman", "services", "acl_guard")

# trust/deny prefixes shorter than these cover (almost) everything: one typo would drop
# every SIP packet (deny) or lift every limit (trust). acl_guard in the policy moves them
# or, with allow_broad: true, switches the guard off.
ACL_MIN_PREFIX_V4 = 8
ACL_MIN_PREFIX_V6 = 16
ACL_GUARD_KEYS = ("ipv4_min_prefix", "ipv6_min_prefix", "allow_broad")
ROOT = "policy"


class PolicyError(ValueError):
    """A policy rejected by validation (or the maps refused it)."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


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
    services: list[dict[str, Any]] = field(default_factory=list)   # fast path (issue 5)
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
            "trust": _sort_cidrs(self.trust),
            "deny": _sort_cidrs(self.deny),
            "rate_limits": {c: dict(self.rate_limits[c]) for c in RL_CLASS_NAMES},
            "aggregation": {"ipv4_prefix": self.ipv4_prefix, "ipv6_prefix": self.ipv6_prefix},
            "priorities": {m: self.priorities[m] for m in _METHOD_NAMES},
            "overload": {"level": self.overload_level, "shed_below": list(self.shed_below)},
            "marking": {"enabled": self.marking_enabled, "dscp": self.dscp,
                        "skb_priority": self.skb_priority},
            "deadman": {"timeout_ms": self.deadman_timeout_ms},
            **({"services": _sort_services(self.services)} if self.services else {}),
            **({"acl_guard": guard} if guard else {}),
        }


def _sort_cidrs(cidrs):
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


def _fmt(v: Any) -> str:
    if isinstance(v, str):
        return repr(v)
    try:
        return json.dumps(v)
    except (TypeError, ValueError):
        return repr(v)


def _int(v, path, lo=None, hi=None, what=None):
    if isinstance(v, bool) or not isinstance(v, int):
        raise PolicyError(path, f"must be {what or _range_text(lo, hi)} (got {_fmt(v)})")
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
            raise PolicyError(path, f"keys must be strings (got {_fmt(k)})")
        if keys is not None and k not in keys:
            raise PolicyError(f"{path}.{k}", f"unknown key (allowed: {', '.join(keys)})")
    return v


def _list(v, path):
    if not isinstance(v, list):
        raise PolicyError(path, f"must be a list (got {type(v).__name__})")
    return v


def _bool(v, path):
    if not isinstance(v, bool):
        raise PolicyError(path, f"must be true or false (got {_fmt(v)})")
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
            raise PolicyError(p, f"must be an IPv4/IPv6 CIDR string (got {_fmt(c)})")
        if "%" in c:
            raise PolicyError(p, f"scoped IPv6 address in {_fmt(c)}: the ACL maps cannot hold a "
                                 "scope (zone); drop the %zone") from None
        try:
            net = ipaddress.ip_network(c.strip(), strict=False)
        except ValueError:
            raise PolicyError(p, f"not a valid IPv4/IPv6 CIDR (got {_fmt(c)})") from None
        try:
            ipaddress.ip_network(c.strip(), strict=True)
        except ValueError:
            raise PolicyError(p, f"host bits set in {_fmt(c)} (did you mean '{net}'?)") from None
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
    raise PolicyError(path, f"must be one of {'|'.join(PRIO_NAMES)} (got {_fmt(v)})")


def _dscp(v, path):
    if isinstance(v, str):
        name = v.strip().upper()
        if name in DSCP_NAMES:
            return DSCP_NAMES[name]
        raise PolicyError(path, f"unknown DSCP name {_fmt(v)} (use e.g. CS3, EF, AF31 or 0..63)")
    return _int(v, path, 0, 63, what="a DSCP name (CS0..CS7, EF, AFxy) or an integer in 0..63")


# ---- fast-path services (issue 5); compiled to maps by etsf.fastpath ----------
FP_SVC_MAX = int(getattr(layout, "FP_SVC_MAX", 16))
FP_BACKENDS_PER_POLICY = int(getattr(layout, "FP_BACKENDS_MAX", 256)) // POLICY_SLOTS
SERVICE_KEYS = ("name", "vip", "port", "protocol", "backends", "affinity")
BACKEND_KEYS = ("address", "port", "weight")
FP_PROTOCOLS = ("udp", "tcp")
FP_AFFINITIES = ("call-id",)
FP_WEIGHT_MAX = 1000
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,30}$")


def _ip(v, path):
    if not isinstance(v, str):
        raise PolicyError(path, f"must be an IPv4/IPv6 address string (got {_fmt(v)})")
    if "%" in v:
        raise PolicyError(path, f"scoped IPv6 address {_fmt(v)}: the maps cannot hold a scope "
                                "(zone); drop the %zone")
    try:
        return ipaddress.ip_address(v.strip())
    except ValueError:
        raise PolicyError(path, f"not a valid IPv4/IPv6 address (got {_fmt(v)})") from None


def _sort_services(svcs):
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
                                            f"with a letter or digit (got {_fmt(name)})")
        if name in names:
            raise PolicyError(f"{sp}.name", f"duplicate of {path}[{names[name]}].name ({name!r})")
        names[name] = i
        vip = _ip(sd["vip"], f"{sp}.vip")
        if vip.is_multicast or vip.is_unspecified or vip.is_loopback:
            raise PolicyError(f"{sp}.vip", f"must be a unicast address (got {_fmt(sd['vip'])})")
        port = _int(sd["port"], f"{sp}.port", 1, 65535)
        proto = sd.get("protocol", "udp")
        if proto not in FP_PROTOCOLS:
            raise PolicyError(f"{sp}.protocol", f"must be one of {'|'.join(FP_PROTOCOLS)} (got {_fmt(proto)})")
        aff = sd.get("affinity", "call-id")
        if aff not in FP_AFFINITIES:
            raise PolicyError(f"{sp}.affinity", f"must be one of {'|'.join(FP_AFFINITIES)} (got {_fmt(aff)})")
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
        raise PolicyError(f"{ROOT}.version", f"unsupported schema version {_fmt(ver)} (supported: {SCHEMA_VERSION})")
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
                                  f"unknown SIP method (allowed: {', '.join(_METHOD_NAMES)})")
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


def _u32(v: int) -> bytes:
    return int(v).to_bytes(4, "little" if _little() else "big")


def _little() -> bool:
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
        (v4 if net.version == 4 else v6)[_acl_key(net, slot)] = _u32(action)
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


# ---------------------------------------------------------------------------
# diff
# ---------------------------------------------------------------------------


def _flatten(d, prefix=""):
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = d
    return out


def diff(old: dict | None, new: dict) -> list[dict[str, Any]]:
    """Field-level changes between two canonical dicts.

    Lists of CIDRs are diffed per element ("added"/"removed"); everything else
    as old -> new values.  ``overload.level: None`` in *new* means "keep".
    """
    # acl_guard only steers validation: the maps never hold it
    new = {k: v for k, v in new.items() if k not in ("generation", "acl_guard")}
    old = {k: v for k, v in (old or {}).items() if k not in ("generation", "acl_guard")}
    changes = []
    fo, fn = _flatten(old), _flatten(new)
    for path in fn:
        nv = fn[path]
        ov = fo.get(path)
        if path == "overload.level" and nv is None:
            continue
        if path in ("trust", "deny"):
            oset, nset = set(ov or []), set(nv or [])
            for c in _sort_cidrs(nset - oset):
                changes.append({"path": path, "op": "add", "value": c})
            for c in _sort_cidrs(oset - nset):
                changes.append({"path": path, "op": "remove", "value": c})
            continue
        if path not in fo:
            changes.append({"path": path, "op": "set", "old": None, "new": nv})
        elif ov != nv:
            changes.append({"path": path, "op": "change", "old": ov, "new": nv})
    if fo.get("services") and "services" not in fn:      # all fast-path services removed
        changes.append({"path": "services", "op": "change", "old": fo["services"], "new": []})
    return changes


def format_diff(changes: list[dict[str, Any]], live_exists: bool = True) -> str:
    if not changes:
        return "no changes"
    lines = [] if live_exists else ["(no policy applied yet)"]
    for c in changes:
        if c["op"] == "add":
            lines.append(f"+ {c['path']}: {c['value']}")
        elif c["op"] == "set":
            lines.append(f"+ {c['path']}: {_fmt(c['new'])}")
        elif c["op"] == "remove":
            lines.append(f"- {c['path']}: {c['value']}")
        else:
            lines.append(f"~ {c['path']}: {_fmt(c['old'])} -> {_fmt(c['new'])}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# live maps
# ---------------------------------------------------------------------------


def state_dir() -> str:
    return os.environ.get("ETSF_STATE_DIR", "/var/lib/etsf")


def run_dir() -> str:
    return os.environ.get("ETSF_RUN_DIR", "/run/etsf")


@contextlib.contextmanager
def lock(name: str = "policy.lock"):
    """Exclusive advisory lock shared by every writer of etsf_ctl/etsf_policy."""
    d = run_dir()
    os.makedirs(d, exist_ok=True)
    fd = os.open(os.path.join(d, name), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class _Maps:
    def __init__(self, pin_root=None):
        from . import bpf
        self.bpf = bpf
        self.pin_root = resolve_pin_root(pin_root)
        self._open = {}

    def __getitem__(self, name):
        if name not in self._open:
            try:
                self._open[name] = self.bpf.open_map(name, self.pin_root)
            except (OSError, self.bpf.BpfError) as e:
                root = self.pin_root
                raise PolicyError(ROOT, f"datapath maps not found under {root} "
                                        f"(run 'etsfctl attach' first): {e}") from None
        return self._open[name]

    def close(self):
        for m in self._open.values():
            with contextlib.suppress(Exception):
                m.close()
        self._open.clear()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def resolve_pin_root(pin_root=None) -> str:
    if pin_root:
        return pin_root
    env = os.environ.get("ETSF_PIN_ROOT")
    if env:
        return env
    from . import bpf
    return bpf.PIN_ROOT


def maps_present(pin_root=None) -> bool:
    root = resolve_pin_root(pin_root)
    return os.path.exists(os.path.join(root, "maps", MAP_CTL))


def _read_ctl(maps):
    raw = maps[MAP_CTL].lookup(_u32(0))
    if raw is None:
        raise PolicyError(ROOT, "etsf_ctl has no entry 0")
    return decode_ctl(raw)


def _acl_slot_entries(m, slot):
    out = []
    for k in list(m.keys()):
        s, net = decode_acl_key(bytes(k))
        if s == slot:
            v = m.lookup(k)
            out.append((bytes(k), net, int.from_bytes(v[:4], "little" if _little() else "big") if v else 0))
    return out


def read_live(pin_root=None, maps=None) -> dict[str, Any] | None:
    """Decode the policy the kernel is using now; None when none applied."""
    own = maps is None
    maps = maps or _Maps(pin_root)
    try:
        ctl = _read_ctl(maps)
        slot = ctl.active_slot
        raw = maps[MAP_POLICY].lookup(_u32(slot))
        if raw is None:
            return None
        acl = [(n, a) for _unused, n, a in _acl_slot_entries(maps[MAP_ACL_V4], slot)]
        acl += [(n, a) for _unused, n, a in _acl_slot_entries(maps[MAP_ACL_V6], slot)]
        out = decode(raw, acl, ctl)
        if out is not None:
            from . import fastpath as _fp
            svcs = _fp.decode_slot(slot, maps)
            if svcs:
                out["services"] = _sort_services(svcs)
        if out is not None:
            out["active_slot"] = slot
        return out
    finally:
        if own:
            maps.close()


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


def apply(p: Policy, *, pin_root=None, check=False, source_text=None, force=False) -> dict[str, Any]:
    """Apply a validated policy as an atomic slot swap.

    Returns {"changed", "check", "generation", "slot", "diff", "live_exists"}.
    With check=True nothing is written (diff only; no datapath needed).
    """
    new = p.to_dict()
    if check and not maps_present(pin_root):
        ch = diff(None, new)
        return {"changed": True, "check": True, "generation": None, "slot": None,
                "diff": ch, "live_exists": False}

    with lock(), _Maps(pin_root) as maps:
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
            return res
        active = ctl.active_slot if ctl.active_slot < POLICY_SLOTS else 0
        target = (active + 1) % POLICY_SLOTS
        gen = ctl.generation + 1
        img = compile_policy(p, target, gen)
        from . import fastpath as _fp      # services: compiled before any map is written
        fp_plan = _fp.plan_slot(p.services, target, active, maps)
        # 1. inactive slot: stale ACL entries out, new ones in, then its policy struct
        for mname, entries in ((MAP_ACL_V4, img.acl_v4), (MAP_ACL_V6, img.acl_v6)):
            m = maps[mname]
            for k, _unused1, _unused2 in _acl_slot_entries(m, target):
                m.delete(k)
            for k, v in entries.items():
                m.update(k, v)
        _fp.write_slot(fp_plan, maps)
        maps[MAP_POLICY].update(_u32(target), img.policy)
        # 2. one update flips the live slot
        ctl = _read_ctl(maps)
        ctl.active_slot = target
        ctl.generation = gen
        if img.overload_level is not None:
            ctl.overload_level = img.overload_level
        ctl.deadman_ns = img.deadman_ns
        if img.deadman_ns and not ctl.heartbeat_ns:
            from . import bpf
            ctl.heartbeat_ns = bpf.monotonic_ns()
        maps[MAP_CTL].update(_u32(0), bytes(ctl))
        # 3. the old slot's ACL entries (and fast-path services) are garbage now
        _fp.release_slot(active, maps, fp_plan)
        for mname in (MAP_ACL_V4, MAP_ACL_V6):
            m = maps[mname]
            for k, _unused1, _unused2 in _acl_slot_entries(m, active):
                m.delete(k)
        res.update(generation=gen, slot=target)
    _write_state(source_text, p, {"generation": gen, "slot": target, "policy": new})
    return res
