"""Hypothesis strategies shared by the unit and integration property tests: valid policy
and fail-safe documents, mutations that make them invalid, and the path resolver used to
check that an error names a place that exists in the input."""

from __future__ import annotations

import copy
import ipaddress
import re

from hypothesis import strategies as st
from hypothesis.internal.conjecture import providers as _providers

# Hypothesis mixes literals from every local module loaded so far into its draws, so the
# examples of a derandomized test would depend on which other test files were collected
# (a CI failure would not reproduce with -k). Without those constants a test draws the
# same examples however it is selected.
if hasattr(_providers, "_get_local_constants"):
    _NO_CONSTANTS = _providers.Constants()
    _providers._get_local_constants = lambda: _NO_CONSTANTS  # pylint: disable=protected-access

from etsf import failsafe as F
from etsf import policy as P

PORTS = st.integers(1, 65535)
U32 = st.integers(0, 0xFFFFFFFF)
PRIO = st.sampled_from(P.PRIO_NAMES)


def _net(version: int, addr: int, plen: int) -> str:
    cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    return str(cls((addr, plen), strict=False))


V4_NETS = st.builds(lambda a, n: _net(4, a, n), st.integers(0, 2**32 - 1), st.integers(P.ACL_MIN_PREFIX_V4, 32))
V6_NETS = st.builds(lambda a, n: _net(6, a, n), st.integers(0, 2**128 - 1), st.integers(P.ACL_MIN_PREFIX_V6, 128))


@st.composite
def services(draw):
    """A few fast-path services over disjoint documentation/benchmark addresses."""
    out = []
    for i in range(draw(st.integers(1, 3))):
        backends = [{"address": f"198.18.{101 + i}.{j + 1}",
                     "port": draw(PORTS), "weight": draw(st.integers(1, P.FP_WEIGHT_MAX))}
                    for j in range(draw(st.integers(1, 3)))]
        out.append({"name": f"svc-{i}", "vip": f"198.18.100.{i + 1}", "port": draw(PORTS),
                    "protocol": draw(st.sampled_from(P.FP_PROTOCOLS)), "backends": backends})
    return out


@st.composite
def policy_docs(draw, with_services=False):
    """A valid version-1 policy document (some sections left to their defaults)."""
    doc = {"version": 1}
    sip = draw(st.lists(PORTS, min_size=1, max_size=P.MAX_SIP_PORTS, unique=True))
    if draw(st.booleans()) or 5061 in sip:
        doc["sip_ports"] = sip
    else:
        sip = [5060]
    if draw(st.booleans()) or 5061 in sip:
        doc["tls_ports"] = draw(st.lists(PORTS.filter(lambda p: p not in sip), max_size=P.MAX_TLS_PORTS,
                                         unique=True))
    nets = draw(st.lists(st.one_of(V4_NETS, V6_NETS), max_size=12, unique=True))
    is_deny = draw(st.lists(st.booleans(), min_size=len(nets), max_size=len(nets)))
    if nets or draw(st.booleans()):
        doc["trust"] = [n for n, d in zip(nets, is_deny) if not d]
        doc["deny"] = [n for n, d in zip(nets, is_deny) if d]
    if draw(st.booleans()):
        doc["acl_guard"] = {"ipv4_min_prefix": draw(st.integers(0, P.ACL_MIN_PREFIX_V4)),
                            "ipv6_min_prefix": draw(st.integers(0, P.ACL_MIN_PREFIX_V6)),
                            "allow_broad": draw(st.booleans())}
        if doc["acl_guard"]["allow_broad"]:
            doc.setdefault("deny", []).append(draw(st.sampled_from(["0.0.0.0/0", "0.0.0.0/1", "128.0.0.0/2"])))
    if draw(st.booleans()):
        rl = {}
        for cls in draw(st.lists(st.sampled_from(P.RL_CLASS_NAMES), unique=True)):
            rl[cls] = {"rate": draw(U32)}
            if draw(st.booleans()):
                rl[cls]["burst"] = draw(st.integers(1, 0xFFFFFFFF))
        doc["rate_limits"] = rl
    if draw(st.booleans()):
        doc["aggregation"] = {"ipv4_prefix": draw(st.integers(1, 32)), "ipv6_prefix": draw(st.integers(1, 128))}
    if draw(st.booleans()):
        methods = draw(st.lists(st.sampled_from(sorted(P.PRIO_DEFAULTS)), unique=True, max_size=6))
        doc["priorities"] = {(m.lower() if draw(st.booleans()) else m): draw(PRIO) for m in methods}
    if draw(st.booleans()):
        shed = sorted(draw(st.lists(st.integers(0, 3), min_size=P.OVERLOAD_LEVELS, max_size=P.OVERLOAD_LEVELS)))
        doc["overload"] = {"level": draw(st.integers(0, P.OVERLOAD_LEVELS - 1)),
                           "shed_below": [P.PRIO_NAMES[i] for i in shed]}
    if draw(st.booleans()):
        doc["marking"] = {"enabled": draw(st.booleans()),
                          "dscp": draw(st.one_of(st.sampled_from(sorted(P.DSCP_NAMES)), st.integers(0, 63))),
                          "skb_priority": draw(U32)}
    if draw(st.booleans()):
        doc["deadman"] = {"timeout_ms": draw(st.integers(0, 86_400_000))}
    if draw(st.booleans()):
        doc["telemetry"] = {"transactions": draw(st.booleans())}
    if with_services and draw(st.booleans()):
        doc["services"] = draw(services())
    if draw(st.booleans()):
        doc["keepalive"] = draw(keepalive())
    return doc


_KA_HOSTS = st.one_of(
    st.builds(lambda a: str(ipaddress.IPv4Address(a)), st.integers(1, 2**32 - 2)),
    st.builds(lambda a: str(ipaddress.IPv6Address(a)), st.integers(1, 2**128 - 1)),
    st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True), min_size=1, max_size=4).map(".".join))
_KA_IDENT = st.builds(lambda u, h: f"{u}@{h}" if u else h,
                      st.one_of(st.just(""), st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True)), _KA_HOSTS)
_KA_HDR = st.from_regex(r"[!-~]([ -~]{0,40}[!-~])?", fullmatch=True)
KA_DEFAULT = {"enabled": False, "identities": [], "allow": None, "accept": None, "supported": None, "server": None,
              "sample_every": 0, "nat_keepalive": "pass",
              "probe": {"address": "127.0.0.1", "port": 5060, "interval_ms": 1000, "timeout_ms": 500,
                        "alive_ms": 3000}}


@st.composite
def keepalive(draw):
    """A valid keepalive section in canonical spelling (identities lower case, IPv6 compressed)."""
    ka = {}
    ids = draw(st.lists(_KA_IDENT, max_size=4, unique=True))
    if ids:
        ka["identities"] = ids
        if draw(st.booleans()):
            ka["enabled"] = True
    for key in ("allow", "accept", "supported", "server"):
        if draw(st.booleans()):
            ka[key] = draw(_KA_HDR)
    if draw(st.booleans()):
        ka["sample_every"] = draw(U32)
    if draw(st.booleans()):
        ka["nat_keepalive"] = draw(st.sampled_from(["pass", "drop"]))
    if draw(st.booleans()):
        interval = draw(st.integers(100, 600_000))
        ka["probe"] = {"address": draw(st.sampled_from(["127.0.0.1", "::1", "198.18.0.7"])),
                       "port": draw(PORTS), "interval_ms": interval,
                       "timeout_ms": draw(st.integers(10, 600_000)),
                       "alive_ms": draw(st.integers(interval, 3_600_000))}
    return ka


def expected_live(doc: dict) -> dict:
    """The canonical policy the maps must hold for `doc`, worked out from the document alone
    (an oracle independent of etsf.policy's normalisation code)."""
    def sort_nets(nets):
        ns = [ipaddress.ip_network(n) for n in nets]
        return [str(n) for n in sorted(ns, key=lambda n: (n.version, int(n.network_address), n.prefixlen))]
    prio = dict(P.PRIO_DEFAULTS)
    for k, v in (doc.get("priorities") or {}).items():
        prio[k.upper()] = v
    rl = {c: {"rate": 0, "burst": 1} for c in P.RL_CLASS_NAMES}
    for c, spec in (doc.get("rate_limits") or {}).items():
        rl[c] = {"rate": spec["rate"], "burst": spec.get("burst", max(1, spec["rate"]))}
    mk = doc.get("marking") or {}
    dscp = mk.get("dscp", "CS3")
    ov = doc.get("overload") or {}
    ag = doc.get("aggregation") or {}
    return {
        "version": 1,
        "sip_ports": sorted(doc.get("sip_ports", [5060])),
        "tls_ports": sorted(doc.get("tls_ports", [5061])),
        "trust": sort_nets(doc.get("trust") or []),
        "deny": sort_nets(doc.get("deny") or []),
        "rate_limits": rl,
        "aggregation": {"ipv4_prefix": ag.get("ipv4_prefix", 32), "ipv6_prefix": ag.get("ipv6_prefix", 64)},
        "priorities": prio,
        "overload": {"level": ov.get("level"), "shed_below": ov.get("shed_below", list(P.SHED_DEFAULTS))},
        "marking": {"enabled": mk.get("enabled", True),
                    "dscp": P.DSCP_NAMES[dscp] if isinstance(dscp, str) else dscp,
                    "skb_priority": mk.get("skb_priority", 0)},
        "deadman": {"timeout_ms": (doc.get("deadman") or {}).get("timeout_ms", 0)},
        **({} if (doc.get("telemetry") or {}).get("transactions", True) else {"telemetry": {"transactions": False}}),
        **_expected_keepalive(doc.get("keepalive")),
    }


def _expected_keepalive(ka) -> dict:
    """{"keepalive": section} when it differs from the default (the live policy omits a default one)."""
    out = copy.deepcopy(KA_DEFAULT)
    for k, v in (ka or {}).items():
        if k == "probe":
            out["probe"].update(v)
        else:
            out[k] = v
    out["identities"] = sorted(out["identities"])
    return {} if out == KA_DEFAULT else {"keepalive": out}


# ---- mutations: each one makes a valid document invalid --------------------------------

UNKNOWN_KEY = "zz_unknown"


def _nodes(doc, path=()):
    yield path, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _nodes(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _nodes(v, (*path, i))


def _replace(doc, path, value):
    out = copy.deepcopy(doc)
    node = out
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return out


def mutations(doc, duplicates=True):
    """Every (kind, mutated document) that must be refused:
    - poison: any node replaced by [[]] (a list holding a list: no field takes that);
    - unknown: an unknown key added to any mapping;
    - negative: any number set to -1 (every numeric field is >= 0);
    - garbage: any string set to '\\x00?' (no name, address or choice contains NUL);
    - duplicate (policy lists only): the first element of any non-empty list appended again."""
    out = []
    for path, node in _nodes(doc):
        if path:
            out.append(("poison", path, _replace(doc, path, [[]])))
        if isinstance(node, dict):
            m = copy.deepcopy(doc)
            tgt = m
            for p in path:
                tgt = tgt[p]
            tgt[UNKNOWN_KEY] = 1
            out.append(("unknown", (*path, UNKNOWN_KEY), m))
        elif isinstance(node, list) and node and duplicates:
            out.append(("duplicate", path, _replace(doc, path, [*node, copy.deepcopy(node[0])])))
        elif isinstance(node, bool):
            continue
        elif isinstance(node, (int, float)):
            out.append(("negative", path, _replace(doc, path, -1)))
        elif isinstance(node, str):
            out.append(("garbage", path, _replace(doc, path, "\x00?")))
    return out


_PART = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


def resolve(doc, error_path: str, root: str):
    """The node `error_path` ('policy.a.b[0].c') names in doc; KeyError/IndexError if none."""
    assert error_path == root or error_path.startswith(root + ".") or error_path.startswith(root + "["), error_path
    rest = error_path[len(root):]
    node = doc
    pos = 0
    while pos < len(rest):
        m = _PART.match(rest, pos)
        assert m, (error_path, rest[pos:])
        if m.group(1) is not None:
            if not isinstance(node, dict):
                raise KeyError(error_path)
            node = node[m.group(1)]
        else:
            if not isinstance(node, list):
                raise KeyError(error_path)
            node = node[int(m.group(2))]
        pos = m.end()
    return node


# ---- fail-safe configuration --------------------------------------------------------------


def _num(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


@st.composite
def failsafe_docs(draw):
    """A valid fail-safe config: a random subset of the fields, each in its range."""
    doc = {}
    if draw(st.booleans()):
        doc["version"] = 1
    if draw(st.booleans()):
        doc["interfaces"] = draw(st.lists(st.from_regex(r"\A[a-z][a-z0-9]{0,14}\Z"), max_size=3))
    if draw(st.booleans()):
        doc["interval_s"] = draw(_num(0.01, 60))
    if draw(st.booleans()):
        doc["heartbeat"] = draw(st.booleans())
    if draw(st.booleans()):
        doc["actions"] = {"recovery": draw(st.sampled_from(["manual", "auto"])),
                          "detach_after_s": draw(st.one_of(st.none(), _num(0, 86400))),
                          "cooldown_s": draw(_num(0, 86400)), "backoff": draw(_num(1, 100)),
                          "max_auto_reengage": draw(st.integers(0, 1000))}
    if draw(st.booleans()):
        rules = {}
        for r in draw(st.lists(st.sampled_from(F.RULES), unique=True)):
            spec = {"enabled": draw(st.booleans())}
            if "window_s" in F.DEFAULTS["rules"][r]:
                spec["window_s"] = draw(_num(0, 3600))
            if "threshold_pct" in F.DEFAULTS["rules"][r]:
                spec["threshold_pct"] = draw(_num(0, 100))
            if r == "ser":
                spec["min_attempts"] = draw(st.integers(1, 10**9))
                spec["baseline_alpha"] = draw(_num(0.001, 1))
            if r == "heartbeat":
                spec["files"] = [{"path": f"/run/etsf-hb-{i}", "max_age_s": draw(_num(0.01, 86400))}
                                 for i in range(draw(st.integers(0, 2)))]
            if r == "drop_ratio":
                spec["excused_reasons"] = draw(st.lists(st.sampled_from(["RATE_LIMIT", "ACL_DENY"]), unique=True))
            rules[r] = spec
        doc["rules"] = rules
    return doc
