"""One probe of the local proxy: an OPTIONS over a connected UDP socket, retransmitted as a
non-INVITE client transaction does (RFC 3261 section 17.1.2.2: T1, doubling, at most T2)
until a final answer or the timeout.

Outcomes:

``ok``        a 2xx final answer: the proxy would take a call (RFC 3261 section 11.2);
``rejected``  a final answer other than 2xx (e.g. 503, 486, 404, 483);
``refused``   the kernel reported the port closed (ICMP port unreachable -> ECONNREFUSED on
              the connected socket: nothing listens, the proxy process is gone);
``unreachable`` the host or network is unreachable (ICMP or no route);
``error``     any other socket error;
``timeout``   no final answer within the timeout (provisional answers are waited through).

A connected UDP socket receives the ICMP errors of its peer without any privilege: no raw
socket, no CAP_NET_RAW.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from dataclasses import dataclass
from typing import Callable

from . import sip

T1_S = 0.5
T2_S = 4.0
OUTCOMES = ("ok", "rejected", "refused", "unreachable", "error", "timeout")
#: outcomes after which the kernel stops answering at once (nothing is left to expire)
CLEAR_FAILURES = ("rejected", "refused", "unreachable", "error")
_UNREACH = (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN)


@dataclass
class Result:
    outcome: str
    status: int | None = None
    reason: str = ""
    rtt_ms: float | None = None
    sent: int = 0              # datagrams sent (1 + retransmissions)

    def as_dict(self) -> dict:
        return {"outcome": self.outcome, "status": self.status, "reason": self.reason,
                "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 3), "sent": self.sent}


def _failure(exc: OSError, sent: int) -> Result:
    if isinstance(exc, ConnectionRefusedError):
        return Result("refused", reason="connection refused (ICMP port unreachable)", sent=sent)
    if exc.errno in _UNREACH:
        return Result("unreachable", reason=exc.strerror or str(exc), sent=sent)
    return Result("error", reason=exc.strerror or str(exc), sent=sent)


def probe(target: str, port: int, timeout_s: float, cseq: int = 1,
          clock: Callable[[], float] = time.monotonic) -> Result:
    """Send one OPTIONS to target:port and wait for its final answer (at most timeout_s)."""
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    sent = 0
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((target, port))
            local, lport = s.getsockname()[:2]
            req = sip.options(target, port, local, lport, cseq=cseq)
            start = clock()
            deadline = start + timeout_s
            next_tx, gap = start, T1_S
            while True:
                now = clock()
                if now >= deadline:
                    return Result("timeout", reason=f"no final answer in {timeout_s:g} s", sent=sent)
                if now >= next_tx:
                    s.send(req.data)
                    sent += 1
                    next_tx, gap = now + gap, min(gap * 2, T2_S)
                readable = select.select([s], [], [], max(0.0, min(deadline, next_tx) - now))[0]
                if not readable:
                    continue
                data = s.recv(65535)
                ans = sip.parse(data)
                if ans is None or not sip.answers(ans, req) or ans.status < 200:
                    continue          # a provisional answer, or not ours: keep waiting
                rtt = (clock() - start) * 1000
                outcome = "ok" if 200 <= ans.status < 300 else "rejected"
                return Result(outcome, status=ans.status, reason=ans.reason, rtt_ms=rtt, sent=sent)
        except OSError as exc:
            return _failure(exc, sent)
