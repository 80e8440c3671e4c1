"""The ``keepalive:`` policy section (docs/keepalive.md): its schema node, the identity and header
rules, the canonical form show/diff/decode use, and the text forms the kernel matches."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from .. import schema as S
from .consts import KA_HDR_MAX, KA_HOST_LEN, KA_IDENTITIES_MAX, KA_USER_LEN, ROOT

_U32 = 0xFFFFFFFF


def _address(v):
    if not isinstance(v, str) or "%" in v:
        raise ValueError("")
    try:
        return ipaddress.ip_address(v.strip())
    except ValueError:
        raise ValueError("") from None


_HOST_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_USER_RE = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]{1," + str(KA_USER_LEN) + r"}$")
_HDR_VALUE_RE = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$")


def ka_identity(v):
    """A keep-alive identity: ``[user@]host``, host an IPv4/IPv6 address (IPv6 with or without
    brackets) or a DNS name; returned canonical: host lower case, IPv6 compressed without brackets."""
    if not isinstance(v, str):
        raise ValueError("")
    text = v.strip()
    user, at, host = text.rpartition("@")
    if at and not _USER_RE.match(user):
        raise ValueError(f"a SIP user part of 1..{KA_USER_LEN} unreserved characters before '@'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        a = ipaddress.ip_address(host)
        host = str(a)
    except ValueError:
        host = host.lower().rstrip(".")
        if not host or len(host) > KA_HOST_LEN or not all(_HOST_LABEL_RE.match(x) for x in host.split(".")):
            raise ValueError("") from None
    else:
        if "%" in v:
            raise ValueError("")
    return f"{user}@{host}" if at else host


def ka_identity_hosts(ident: str) -> tuple[str, list[str]]:
    """(user, Request-URI host texts) of a canonical identity: the first is the primary form,
    IPv6 addresses also in the expanded form; IPv6 in brackets as a SIP URI writes them."""
    user, _unused, host = ident.rpartition("@")
    try:
        a = ipaddress.ip_address(host)
    except ValueError:
        return user, [host]
    if a.version == 4:
        return user, [host]
    forms = [f"[{a.compressed}]"]
    if a.exploded != a.compressed:
        forms.append(f"[{a.exploded}]")
    return user, forms


def _ka_header(name):
    return S.Text("printable ASCII without line breaks, no leading or trailing space", _HDR_VALUE_RE,
                  f"value of the `{name}` header line of the 200 (null: line left out)", default=None,
                  nullable=True, label="string")


KA_NAT_MODES = ("pass", "drop")
KEEPALIVE = S.Map({
    "enabled": S.Bool("answer keep-alive OPTIONS to the node in the kernel (UDP; TCP stays with the proxy)",
                      default=False),
    "identities": S.List(S.Custom("[user@]host with an IPv4/IPv6 address or a DNS name as host",
                                  ka_identity, "Request-URI `[user@]host` answered; a bare host answers any "
                                  "user part; host at most 64 characters, user at most 32",
                                  ansible="str", label="[user@]host"),
                         f"identities of the node (at most {KA_IDENTITIES_MAX}); required when enabled",
                         max_len=KA_IDENTITIES_MAX, unique=lambda x: x, what="identities", default=[]),
    "allow": _ka_header("Allow"),
    "accept": _ka_header("Accept"),
    "supported": _ka_header("Supported"),
    "server": _ka_header("Server"),
    "sample_every": S.Int(0, _U32, "1 in N answerable OPTIONS (per CPU) still goes to the proxy (0: none)",
                          default=0),
    "nat_keepalive": S.Choice(KA_NAT_MODES, "NAT keep-alives over UDP on a SIP port (CRLF, CRLFCRLF, 4 zero "
                              "bytes): counted always, dropped at XDP with `drop`", default="pass"),
    "probe": S.Map({
        "address": S.Custom("an IPv4/IPv6 address", _address, "the local proxy the agent probes with OPTIONS",
                            default="127.0.0.1", ansible="str", label="IPv4/IPv6 address"),
        "port": S.Int(1, 65535, "UDP port of the probed proxy", default=5060),
        "interval_ms": S.Int(100, 600_000, "milliseconds between probes", default=1000),
        "timeout_ms": S.Int(10, 600_000, "a probe without a 200 within this is failed", default=500),
        "alive_ms": S.Int(100, 3_600_000, "a 200 to a probe keeps in-kernel answers on for this long (at least "
                          "`interval_ms`)", default=3000),
    }, "the agent's probe of the local proxy: answers stop when it fails", nullable=True),
}, "keep-alive OPTIONS answered in the kernel (docs/keepalive.md)", nullable=True)


def keepalive_default() -> dict[str, Any]:
    """The keepalive section of a policy without one (canonical form)."""
    return keepalive_canonical(KEEPALIVE.check({}, f"{ROOT}.keepalive"))


def keepalive_canonical(ka: dict[str, Any]) -> dict[str, Any]:
    """JSON-able, ordered form of a checked keepalive section (what show/diff/decode use)."""
    pr = ka["probe"]
    return {
        "enabled": bool(ka["enabled"]),
        "identities": sorted(ka["identities"]),
        "allow": ka["allow"], "accept": ka["accept"], "supported": ka["supported"], "server": ka["server"],
        "sample_every": ka["sample_every"],
        "nat_keepalive": ka["nat_keepalive"],
        "probe": {"address": str(pr["address"]), "port": pr["port"], "interval_ms": pr["interval_ms"],
                  "timeout_ms": pr["timeout_ms"], "alive_ms": pr["alive_ms"]},
    }


#: the header lines of the 200, in this order (name in the policy, header name on the wire)
KA_HEADERS = (("allow", "Allow"), ("accept", "Accept"), ("supported", "Supported"), ("server", "Server"))


def ka_header_block(ka: dict[str, Any]) -> bytes:
    """The configured header lines of the 200 as the kernel appends them."""
    return b"".join(f"{name}: {ka[key]}\r\n".encode() for key, name in KA_HEADERS if ka[key] is not None)


def check_keepalive(ka):
    """Cross-field rules of a schema-checked keepalive section; its canonical form."""
    path = f"{ROOT}.keepalive"
    if ka["enabled"] and not ka["identities"]:
        raise S.Invalid(f"{path}.identities", "at least one identity when keepalive.enabled is true",
                        ka["identities"])
    pr = ka["probe"]
    if pr["alive_ms"] < pr["interval_ms"]:
        raise S.Invalid(f"{path}.probe.alive_ms", f"at least interval_ms ({pr['interval_ms']})", pr["alive_ms"])
    n = len(ka_header_block(ka))
    if n > KA_HDR_MAX:
        raise S.Invalid(f"{path}.server" if ka["server"] else f"{path}.allow",
                        f"allow/accept/supported/server lines of at most {KA_HDR_MAX} bytes together", n)
    return keepalive_canonical(ka)
