"""The prober's SIP: one OPTIONS request (RFC 3261 section 11) and the reading of its answer.

Pure functions (no sockets), so the unit tests cover every shape of answer.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass, field

from .. import __version__

#: RFC 3261 section 8.1.1.7: a branch starting with the magic cookie
BRANCH_COOKIE = "z9hG4bK"
USER_AGENT = f"etsf-keepalive/{__version__}"
#: compact header names (RFC 3261 section 7.3.3) the prober reads
COMPACT = {"v": "via", "i": "call-id", "f": "from", "t": "to", "l": "content-length"}
_STATUS_RE = re.compile(r"^SIP/2\.0 ([1-6][0-9]{2})(?: (.*))?$")
_MAX_ANSWER = 65535


@dataclass
class Request:
    """One probe transaction: its identifiers and wire bytes."""
    call_id: str
    branch: str
    from_tag: str
    cseq: int
    data: bytes


@dataclass
class Answer:
    """A SIP response: status code, reason phrase, headers (lower-case long names; every
    value of a repeated header in order)."""
    status: int
    reason: str
    headers: dict[str, list[str]] = field(default_factory=dict)

    def first(self, name: str) -> str | None:
        vals = self.headers.get(name)
        return vals[0] if vals else None


def host_text(host: str) -> str:
    """An address as it stands in a SIP URI or Via (IPv6 in brackets)."""
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def options(target: str, port: int, local: str, local_port: int, cseq: int = 1) -> Request:
    """An out-of-dialog OPTIONS to the proxy at target:port from local:local_port (UDP).

    Max-Forwards 70 (RFC 3261 section 8.1.1.6): a proxy that refuses Max-Forwards 0 with a 483
    would look dead.  The Request-URI has no user part: the proxy answers for itself.
    `rport` (RFC 3581) lets the answer come back to the socket's port whatever the path.
    """
    call_id = f"{secrets.token_hex(12)}@etsf-keepalive"
    branch = f"{BRANCH_COOKIE}-etsf-ka-{secrets.token_hex(8)}"
    tag = secrets.token_hex(6)
    ruri = f"sip:{host_text(target)}:{port}"
    lines = [
        f"OPTIONS {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP {host_text(local)}:{local_port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:etsf-keepalive@{host_text(local)}>;tag={tag}",
        f"To: <{ruri}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} OPTIONS",
        "Accept: application/sdp",
        f"User-Agent: {USER_AGENT}",
        "Content-Length: 0",
    ]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return Request(call_id=call_id, branch=branch, from_tag=tag, cseq=cseq, data=data)


def parse(data: bytes) -> Answer | None:
    """A SIP response from one datagram, or None when it is not one (a request, garbage).
    Folded header lines are joined (RFC 3261 section 7.3.1); compact names are expanded."""
    if len(data) > _MAX_ANSWER:
        return None
    head = data.split(b"\r\n\r\n", 1)[0]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    raw = text.split("\r\n")
    m = _STATUS_RE.match(raw[0])
    if not m:
        return None
    lines: list[str] = []
    for ln in raw[1:]:
        if ln[:1] in (" ", "\t") and lines:
            lines[-1] += " " + ln.strip()
        elif ln:
            lines.append(ln)
    headers: dict[str, list[str]] = {}
    for ln in lines:
        name, sep, value = ln.partition(":")
        if not sep:
            return None
        name = name.strip().lower()
        name = COMPACT.get(name, name)
        vals = [value.strip()]
        if name == "via":            # Via values may be comma-separated in one line
            vals = [v.strip() for v in value.split(",") if v.strip()]
        headers.setdefault(name, []).extend(vals)
    return Answer(status=int(m.group(1)), reason=(m.group(2) or "").strip(), headers=headers)


def _param(value: str, name: str) -> str | None:
    for p in value.split(";")[1:]:
        k, _eq, v = p.partition("=")
        if k.strip().lower() == name:
            return v.strip()
    return None


def answers(ans: Answer, req: Request) -> bool:
    """True when `ans` belongs to the probe transaction `req` (RFC 3261 section 17.1.3: the top
    Via's branch and the CSeq method; the Call-ID as well, so a stray answer never counts)."""
    via = ans.first("via")
    cseq = (ans.first("cseq") or "").split()
    return (via is not None and _param(via, "branch") == req.branch
            and ans.first("call-id") == req.call_id
            and len(cseq) == 2 and cseq[0] == str(req.cseq) and cseq[1].upper() == "OPTIONS")
