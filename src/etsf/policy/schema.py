"""The policy document: strict YAML loading, validation into a normalised :class:`Policy`.

The document is described once, by :data:`POLICY` (nodes of :mod:`etsf.schema`); the validator,
docs/reference/policy.md and the role's argument_specs check all come from it.  Every
validation error is a :class:`PolicyError` whose ``str()`` is one line naming the field path,
e.g. ``policy.rate_limits.register.rate: an integer 0..4294967295 expected (got -5)``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from .. import inputs
from .. import schema as S
from ..errors import PolicyError
from .consts import (ACL_MIN_PREFIX_V4, ACL_MIN_PREFIX_V6, ACL_PER_SLOT, DSCP_DEFAULT, DSCP_NAMES, FP_AFFINITIES,
                     FP_BACKENDS_PER_POLICY, FP_PROTOCOLS, FP_SVC_MAX, FP_WEIGHT_MAX, MAX_SIP_PORTS, MAX_TLS_PORTS,
                     METHOD_NAMES, OVERLOAD_LEVELS, PRIO_DEFAULTS, PRIO_NAMES, RL_CLASS_NAMES, ROOT, SCHEMA_VERSION,
                     SHED_DEFAULTS, KA_HDR_MAX)
from .keepalive import KEEPALIVE, check_keepalive, keepalive_canonical, keepalive_default


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
    telemetry_transactions: bool = True      # False: ETSF_POL_F_TM_OFF
    services: list[dict[str, Any]] = field(default_factory=list)   # fast path
    # the overload controller's settings (read by `etsfctl overload auto`, not in the maps)
    overload_auto: dict[str, Any] = field(default_factory=lambda: dict(AUTO.default_value()))
    # validation-only settings (not in the maps): see ACL_MIN_PREFIX_V4
    acl_min_prefix_v4: int = ACL_MIN_PREFIX_V4
    acl_min_prefix_v6: int = ACL_MIN_PREFIX_V6
    acl_allow_broad: bool = False
    # keep-alive OPTIONS answered in the kernel, NAT keep-alives (docs/keepalive.md)
    keepalive: dict[str, Any] = field(default_factory=keepalive_default)

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
            "sip_ports": sorted(self.sip_ports), "tls_ports": sorted(self.tls_ports),
            "trust": sort_cidrs(self.trust), "deny": sort_cidrs(self.deny),
            "rate_limits": {c: dict(self.rate_limits[c]) for c in RL_CLASS_NAMES},
            "aggregation": {"ipv4_prefix": self.ipv4_prefix, "ipv6_prefix": self.ipv6_prefix},
            "priorities": {m: self.priorities[m] for m in METHOD_NAMES},
            "overload": {"level": self.overload_level, "shed_below": list(self.shed_below)},
            "marking": {"enabled": self.marking_enabled, "dscp": self.dscp,
                        "skb_priority": self.skb_priority},
            "deadman": {"timeout_ms": self.deadman_timeout_ms},
            **({"telemetry": {"transactions": False}} if not self.telemetry_transactions else {}),
            **({"services": sort_services(self.services)} if self.services else {}),
            **({"keepalive": keepalive_canonical(self.keepalive)}
               if keepalive_canonical(self.keepalive) != keepalive_default() else {}),
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


def sort_services(svcs):
    out = []
    for sv in sorted(svcs, key=lambda x: x["name"]):
        sv = dict(sv)
        sv["backends"] = sorted((dict(b) for b in sv["backends"]),
                                key=lambda b: (ipaddress.ip_address(b["address"]).version,
                                               int(ipaddress.ip_address(b["address"])), b["port"]))
        out.append(sv)
    return out


# ---------------------------------------------------------------------------
# the schema: the one description of a version-1 policy document
# ---------------------------------------------------------------------------


def _ip(v, parse, what):
    """`parse` of an unscoped IP string; ValueError naming what was expected otherwise."""
    if not isinstance(v, str):
        raise ValueError("")
    if "%" in v:
        raise ValueError(f"an unscoped IPv4/IPv6 {what} (the maps cannot hold a %zone)")
    try:
        return parse(v.strip())
    except ValueError:
        raise ValueError("") from None


def _network(v):
    """A trust/deny entry: an unscoped IPv4/IPv6 network without host bits."""
    net = _ip(v, lambda t: ipaddress.ip_network(t, strict=False), "network")
    if ipaddress.ip_interface(v.strip()).ip != net.network_address:
        raise ValueError(f"a network without host bits ({net})")
    return net


def _address(v):
    return _ip(v, ipaddress.ip_address, "address")


def _unicast(v):
    a = _address(v)
    if a.is_multicast or a.is_unspecified or a.is_loopback:
        raise ValueError("")
    return a


def _prio(v):
    if isinstance(v, str) and v.lower() in PRIO_NAMES:
        return v.lower()
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(PRIO_NAMES):
        return PRIO_NAMES[v]
    raise ValueError("")


def _dscp(v):
    if isinstance(v, str) and v.strip().upper() in DSCP_NAMES:
        return DSCP_NAMES[v.strip().upper()]
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 63:
        return v
    raise ValueError("")


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,30}$")
_U32 = 0xFFFFFFFF

_PRIO_WHAT = f"one of {', '.join(PRIO_NAMES)} (or 0..{len(PRIO_NAMES) - 1})"
_PRIO_LABEL = " \\| ".join(f"`{n}`" for n in PRIO_NAMES) + f" or 0..{len(PRIO_NAMES) - 1}"
PRIO = S.Custom(_PRIO_WHAT, _prio, label=_PRIO_LABEL)
_PRIO_DEFAULT_TEXT = "; ".join(
    f"`{c}`: " + ", ".join(m for m in METHOD_NAMES if PRIO_DEFAULTS[m] == c)
    for c in reversed(PRIO_NAMES) if c in PRIO_DEFAULTS.values())
PORT = S.Int(1, 65535)
NETWORKS = ("IPv4/IPv6 networks (a bare address is /32 or /128); no host bits, no %zone scope, no prefix shorter "
            "than the `acl_guard` minimums; the same prefix in `trust` and `deny` is an error; at most "
            f"{ACL_PER_SLOT} entries per address family in both together (the other slot needs room during the swap)")

BACKEND = S.Map({
    "address": S.Custom("an IPv4/IPv6 address", _address, "same address family as the VIP, not the VIP; an "
                        "address:port serves one service", required=True, ansible="str",
                        label="IPv4/IPv6 address"),
    "port": S.Int(1, 65535, "backend port", default_text="the service port"),
    "weight": S.Int(1, FP_WEIGHT_MAX, "share of new dialogs", default=1),
}, label="backend")

SERVICE = S.Map({
    "name": S.Text("a name of 1..31 characters [A-Za-z0-9_.-] starting with a letter or digit", _NAME_RE,
                   "1..31 characters `[A-Za-z0-9_.-]` starting with a letter or digit; unique among services",
                   required=True, label="string"),
    "vip": S.Custom("a unicast IPv4/IPv6 address", _unicast, "VIP:port/protocol unique among services",
                    required=True, ansible="str", label="unicast IPv4/IPv6 address"),
    "port": S.Int(1, 65535, "service port", required=True),
    "protocol": S.Choice(FP_PROTOCOLS, "transport", default="udp"),
    "backends": S.List(BACKEND, f"local proxy backends (at most {FP_BACKENDS_PER_POLICY} in all services)",
                       min_len=1, what="backends", required=True),
    "affinity": S.Choice(FP_AFFINITIES, "every message of a Call-ID reaches the same backend", default="call-id"),
}, label="service")


_ADMIT_MAX = 10_000_000
AUTO = S.Map({
    "enabled": S.Bool("run the adaptive overload controller (`etsfctl overload auto`, unit etsf-overload)",
                      default=False),
    "proxy_ports": S.List(PORT, "UDP ports of the local proxy sockets whose receive queue and drops are "
                          "watched (empty: `sip_ports`)", unique=lambda p: p, what="ports", default=[]),
    "target_queue": S.Int(0, _U32, "proxy socket receive queue (bytes) the controller holds (0: not watched)",
                          default=65536),
    "target_pdd_ms": S.Int(0, 600_000, "INVITE -> 100 Trying latency (ms) the controller holds (0: not "
                           "watched)", default=200),
    "target_5xx_ratio": S.Num(0, 1, "5xx share of INVITE final responses held (0: not watched)", default=0.05),
    "target_cpu": S.Num(0, 1, "host CPU busy share held (0: not watched)", default=0),
    "min_rate": S.Int(1, _ADMIT_MAX, "lowest admission rate of new INVITEs (tokens/s per CPU)", default=10),
    "max_rate": S.Int(1, _ADMIT_MAX, "admission rate when the controller engages; back above it, admission "
                      "is switched off", default=2000),
    "dwell_s": S.Num(0, 3600, "seconds a level is held before it changes again", default=5),
    "max_step": S.Num(0.01, 1, "largest change of the admission rate per tick, as a share of the rate "
                      "(up: at least `min_rate`)", default=0.25),
    "hysteresis": S.Num(0, 0.9, "a level is left when the pressure is this share below its threshold",
                        default=0.2),
    "probe_hold_s": S.Num(0, 3600, "seconds after a cut during which the admission rate probes no higher than "
                          "`1 - max_step / 4` of the rate that congested the proxy (0: at once)", default=0),
    "interval_ms": S.Int(50, 60_000, "milliseconds between controller ticks", default=500),
    "retry_after_s": S.Int(0, 86_400, "`Retry-After` of the in-kernel 503 to new INVITEs the controller "
                           "refuses (0: header left out)", default=5),
    "rfc7339": S.Map({
        "enabled": S.Bool("advertise the reduction `100 x (1 - admission rate / max_rate)` to clients whose "
                          "top Via carries `oc` (responses rewritten at TC egress)", default=False),
        "validity_ms": S.Int(1, 86_400_000, "`oc-validity` while shedding: how long a client applies the "
                             "reduction without a newer one (0 is sent when nothing is shed)", default=5000),
    }, "RFC 7339 loss-based overload control advertised to upstream peers (docs/overload.md)",
        nullable=True),
}, "adaptive overload controller (docs/overload.md)", nullable=True)


def _rate_class(name):
    return S.Map({
        "rate": S.Int(0, _U32, "requests per second per aggregated source (0 = unlimited)", required=True),
        "burst": S.Int(1, _U32, "bucket depth", default_text="max(1, rate)"),
    }, f"token bucket of the `{name}` class", default={"rate": 0, "burst": 1}, nullable=True)


POLICY = S.Map({
    "version": S.Choice((SCHEMA_VERSION,), "schema version", required=True),
    "sip_ports": S.List(PORT, "ports carrying cleartext SIP (UDP/TCP)", min_len=1, max_len=MAX_SIP_PORTS,
                        unique=lambda p: p, what="ports", default=[5060]),
    "tls_ports": S.List(PORT, "SIP-over-TLS ports (counted, never parsed); none also in `sip_ports`",
                        max_len=MAX_TLS_PORTS, unique=lambda p: p, what="ports", default=[5061]),
    "trust": S.List(S.Custom("an IPv4/IPv6 network", _network, ansible="str", label="IPv4/IPv6 network"),
                    "sources exempt from rate limits and shedding: " + NETWORKS, unique=lambda n: n,
                    default=[], nullable=True),
    "deny": S.List(S.Custom("an IPv4/IPv6 network", _network, ansible="str", label="IPv4/IPv6 network"),
                   "sources whose SIP is dropped at XDP (reason DENY); as `trust`", unique=lambda n: n,
                   default=[], nullable=True),
    "rate_limits": S.Map({c: _rate_class(c) for c in RL_CLASS_NAMES},
                         "per-source token buckets per method class: REGISTER, OPTIONS, INVITE, every other "
                         "request", nullable=True),
    "aggregation": S.Map({
        "ipv4_prefix": S.Int(1, 32, "rate-limit source prefix of IPv4 addresses", default=32),
        "ipv6_prefix": S.Int(1, 128, "rate-limit source prefix of IPv6 addresses", default=64),
    }, "rate-limit source aggregation", nullable=True),
    "priorities": S.MapOf(METHOD_NAMES, S.Custom(_PRIO_WHAT, _prio, "the method's priority class; METHOD is "
                                                 "one of " + ", ".join(METHOD_NAMES) + " (any case)",
                                                 label=_PRIO_LABEL),
                          "priority class per SIP method (RESPONSE: every response)", key_what="SIP methods",
                          key_label="METHOD", key_norm=str.upper, default=dict(PRIO_DEFAULTS),
                          default_text=_PRIO_DEFAULT_TEXT, nullable=True),
    "overload": S.Map({
        "level": S.Int(0, OVERLOAD_LEVELS - 1, "written to etsf_ctl with the swap; null keeps the running level",
                       default=None, nullable=True),
        "shed_below": S.List(PRIO, "non-decreasing; level L sheds requests of a priority below entry L "
                             "(responses, ACK/BYE/CANCEL and in-dialog requests are never shed)",
                             min_len=OVERLOAD_LEVELS, max_len=OVERLOAD_LEVELS, what="priority classes",
                             default=list(SHED_DEFAULTS)),
        "auto": AUTO,
    }, "overload shedding", nullable=True),
    "marking": S.Map({
        "enabled": S.Bool("mark SIP the host sends (TC egress)", default=True),
        "dscp": S.Custom("a DSCP name (CS0..CS7, EF, VA, LE, AF11..AF43, DF, BE) or an integer 0..63", _dscp,
                         "DSCP of marked packets: CS0..CS7, EF, VA, LE, AF11..AF43, DF, BE or 0..63",
                         label="DSCP name or integer 0..63", default=DSCP_NAMES[DSCP_DEFAULT],
                         default_text=f"`{DSCP_DEFAULT}` ({DSCP_NAMES[DSCP_DEFAULT]})"),
        "skb_priority": S.Int(0, _U32, "skb->priority of marked packets (qdisc class)", default=0),
    }, "TC egress marking", nullable=True),
    "deadman": S.Map({
        "timeout_ms": S.Int(0, 86_400_000, "every program passes everything when the agent heartbeat is older "
                            "than this (0 = off)", default=0),
    }, "dead-man switch", nullable=True),
    "telemetry": S.Map({
        "transactions": S.Bool("time SIP transactions in the kernel, one LRU insert per request "
                               "(docs/telemetry.md); false: none", default=True),
    }, "in-kernel transaction telemetry", nullable=True),
    "services": S.List(SERVICE, "fast path to local proxy backends (docs/fastpath.md)", max_len=FP_SVC_MAX,
                       what="services", default=[]),
    "acl_guard": S.Map({
        "ipv4_min_prefix": S.Int(0, 32, "shortest IPv4 `trust`/`deny` prefix accepted", default=ACL_MIN_PREFIX_V4),
        "ipv6_min_prefix": S.Int(0, 128, "shortest IPv6 `trust`/`deny` prefix accepted",
                                 default=ACL_MIN_PREFIX_V6),
        "allow_broad": S.Bool("accept prefixes shorter than the minimums (e.g. `deny: [0.0.0.0/0]`)",
                              default=False),
    }, "guard against `trust`/`deny` prefixes that cover (almost) everything; steers validation only",
        nullable=True),
    "keepalive": KEEPALIVE,
})

TOP_KEYS = tuple(POLICY.fields)
SERVICE_KEYS = tuple(SERVICE.fields)
BACKEND_KEYS = tuple(BACKEND.fields)
ACL_GUARD_KEYS = tuple(POLICY.fields["acl_guard"].fields)


# ---------------------------------------------------------------------------
# rules that span fields
# ---------------------------------------------------------------------------

#: the rules below, as the reference (docs/reference/policy.md) lists them
CROSS_RULES = (
    "a `tls_ports` entry is not also in `sip_ports`;",
    f"`trust`/`deny` prefixes are no shorter than `acl_guard.ipv4_min_prefix` (IPv4, default "
    f"/{ACL_MIN_PREFIX_V4}) and `acl_guard.ipv6_min_prefix` (IPv6, default /{ACL_MIN_PREFIX_V6}) unless "
    "`acl_guard.allow_broad` is true;",
    "the same prefix is not in both `trust` and `deny` (a longer prefix inside a shorter one is fine: "
    "matching is longest-prefix);",
    f"at most {ACL_PER_SLOT} IPv4 and {ACL_PER_SLOT} IPv6 entries in `trust` and `deny` together;",
    "`overload.shed_below` is non-decreasing;",
    "`overload.auto.min_rate` is at most `overload.auto.max_rate`;",
    "`rate_limits.<class>.burst` defaults to the class's rate, at least 1;",
    "`services[].name` and `services[].vip`:`port`/`protocol` are unique among services; a backend has the "
    "VIP's address family, is not the VIP, and an `address`:`port` is a backend of one service only;",
    f"at most {FP_BACKENDS_PER_POLICY} backends in all services; `services[].backends[].port` defaults to the "
    "service port;",
    "`keepalive.identities` is not empty when `keepalive.enabled` is true; `keepalive.probe.alive_ms` is at "
    f"least `keepalive.probe.interval_ms`; the `allow`/`accept`/`supported`/`server` lines together are at most "
    f"{KA_HDR_MAX} bytes.",
)


def _check_acl(d):
    guard = d["acl_guard"]
    if not guard["allow_broad"]:
        for name in ("trust", "deny"):
            for i, n in enumerate(d[name]):
                low = guard["ipv4_min_prefix"] if n.version == 4 else guard["ipv6_min_prefix"]
                if n.prefixlen < low:
                    effect = "drops SIP from" if name == "deny" else "lifts every limit for"
                    raise S.Invalid(f"{ROOT}.{name}[{i}]", f"a prefix of /{low} or longer (the IPv{n.version} "
                                    f"minimum: a shorter one {effect} a large part of the Internet; "
                                    "acl_guard.allow_broad: true allows it)", str(n))
    trust = {n: i for i, n in enumerate(d["trust"])}
    for i, n in enumerate(d["deny"]):
        if n in trust:
            raise S.Invalid(f"{ROOT}.deny[{i}]", f"a prefix other than trust[{trust[n]}]", str(n))
    for fam in (4, 6):
        cnt = sum(1 for n in d["trust"] + d["deny"] if n.version == fam)
        if cnt > ACL_PER_SLOT:
            raise S.Invalid(f"{ROOT}.deny" if d["deny"] else f"{ROOT}.trust",
                            f"at most {ACL_PER_SLOT} IPv{fam} entries in trust and deny together", cnt)


def _check_services(svcs):
    path = f"{ROOT}.services"
    names, vips, owners, total = {}, {}, {}, 0
    for i, sv in enumerate(svcs):
        sp = f"{path}[{i}]"
        if sv["name"] in names:
            raise S.Invalid(f"{sp}.name", f"no duplicate of {path}[{names[sv['name']]}].name", sv["name"])
        names[sv["name"]] = i
        vip = sv["vip"]
        vk = (vip, sv["port"], sv["protocol"])
        if vk in vips:
            raise S.Invalid(f"{sp}.vip", f"a VIP:port/protocol other than {path}[{vips[vk]}]'s "
                            f"({vip} port {sv['port']}/{sv['protocol']})", str(vip))
        vips[vk] = i
        for j, b in enumerate(sv["backends"]):
            bp = f"{sp}.backends[{j}]"
            if b["address"].version != vip.version:
                raise S.Invalid(f"{bp}.address", f"an IPv{vip.version} address like the service vip",
                                str(b["address"]))
            if b["address"] == vip:
                raise S.Invalid(f"{bp}.address", "an address other than the service vip", str(b["address"]))
            b.setdefault("port", sv["port"])
            bk = (b["address"], b["port"])
            if bk in owners:
                raise S.Invalid(f"{bp}.address", f"an address:port not already a backend of {owners[bk]} "
                                "(a backend serves one service)", f"{b['address']} port {b['port']}")
            owners[bk] = f"{sp}.backends"
        total += len(sv["backends"])
        if total > FP_BACKENDS_PER_POLICY:
            raise S.Invalid(f"{sp}.backends", f"at most {FP_BACKENDS_PER_POLICY} backends in all services", total)
    return [{"name": sv["name"], "vip": str(sv["vip"]), "port": sv["port"], "protocol": sv["protocol"],
             "affinity": sv["affinity"],
             "backends": [{"address": str(b["address"]), "port": b["port"], "weight": b["weight"]}
                          for b in sv["backends"]]}
            for sv in svcs]


def _policy(d) -> Policy:
    """Cross-field rules over the schema-checked document `d`, then the normalised Policy."""
    for i, port in enumerate(d["tls_ports"]):
        if port in d["sip_ports"]:
            raise S.Invalid(f"{ROOT}.tls_ports[{i}]", "a port not in sip_ports", port)
    _check_acl(d)
    shed = d["overload"]["shed_below"]
    for i in range(1, len(shed)):
        if PRIO_NAMES.index(shed[i]) < PRIO_NAMES.index(shed[i - 1]):
            raise S.Invalid(f"{ROOT}.overload.shed_below[{i}]",
                            f"a class no lower than level {i - 1}'s ({shed[i - 1]})", shed[i])
    p = Policy()
    p.sip_ports, p.tls_ports = d["sip_ports"], d["tls_ports"]
    p.trust, p.deny = [str(n) for n in d["trust"]], [str(n) for n in d["deny"]]
    p.rate_limits = {c: {"rate": v["rate"], "burst": v.get("burst", max(1, v["rate"]))}
                     for c, v in d["rate_limits"].items()}
    p.ipv4_prefix, p.ipv6_prefix = d["aggregation"]["ipv4_prefix"], d["aggregation"]["ipv6_prefix"]
    p.priorities = d["priorities"]
    p.overload_level, p.shed_below = d["overload"]["level"], shed
    auto = d["overload"]["auto"]
    if auto["min_rate"] > auto["max_rate"]:
        raise S.Invalid(f"{ROOT}.overload.auto.min_rate", f"at most max_rate ({auto['max_rate']})",
                        auto["min_rate"])
    p.overload_auto = auto
    p.marking_enabled, p.dscp, p.skb_priority = (d["marking"]["enabled"], d["marking"]["dscp"],
                                                 d["marking"]["skb_priority"])
    p.deadman_timeout_ms = d["deadman"]["timeout_ms"]
    p.telemetry_transactions = d["telemetry"]["transactions"]
    p.services = _check_services(d["services"])
    g = d["acl_guard"]
    p.acl_min_prefix_v4, p.acl_min_prefix_v6, p.acl_allow_broad = (g["ipv4_min_prefix"], g["ipv6_min_prefix"],
                                                                   g["allow_broad"])
    p.keepalive = check_keepalive(d["keepalive"])
    return p


def validate(doc: Any) -> Policy:
    """Validate a parsed YAML document; return the normalised Policy (PolicyError naming the
    first mistake: ``<path>: <what was expected> expected (got <value>)``)."""
    try:
        if doc is None:
            raise S.Invalid(ROOT, f"a mapping with version: {SCHEMA_VERSION}", None)
        return _policy(POLICY.check(doc, ROOT))
    except S.Invalid as e:
        raise PolicyError(e.path, e.message) from None
