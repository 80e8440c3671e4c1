"""Health gate: is eTSF on this host attached, counting, and dropping only for policy reasons?

Used by ``etsfctl health`` and the rollout's gate after each canary batch.  Three checks:

1. every listed interface has its classifier attached (``xdp_sip`` at XDP, or ``tc_fastpath`` at
   TC ingress for the tc hook) and ``tc_sip_egress`` (TC egress);
2. counters move: the per-interface XDP receive counters or the TC egress counters grow during
   the window.  An optional probe (one SIP OPTIONS over UDP to ``host:port``, sent from the host)
   makes sure there is traffic to see even on a quiet segment: it leaves through TC egress and its
   answer (or the ICMP error, or the ARP exchange before it) comes back through XDP;
3. no drops for reasons other than the policy ones (deny, rate limit, overload) appeared during
   the window, and nothing was counted as an internal failure.
"""

from __future__ import annotations

import ipaddress
import socket
import time
import uuid

from . import datapath
from . import inputs as T
from .output import EXIT_ERROR, emit

POLICY_DROP_REASONS = ("DENY", "RATE_LIMIT", "OVERLOAD", "ADMISSION", "ADMIT_503", "ADMIT_ACK", "NAT_KEEPALIVE")
MAX_WINDOW_S = 60.0
MAX_PROBES = 5


class HealthError(ValueError):
    """Bad arguments (one line)."""


def parse_probe(text: str) -> tuple[str, int]:
    """'ADDR', 'ADDR:PORT', '[V6ADDR]:PORT' or a bare IPv6 address (port 5060)."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]")
        port = port[1:] if sep and port.startswith(":") else ("5060" if sep and not port else "x")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, "5060"
    try:
        if "%" in host:
            raise ValueError
        ipaddress.ip_address(host)
        port_num = int(port)
    except ValueError:
        raise HealthError(f"probe: expected ADDRESS[:PORT] with a literal, unscoped IP address "
                          f"(IPv6 as [ADDRESS]:PORT) (got {text!r})") from None
    if not 0 < port_num < 65536:
        raise HealthError(f"probe: port out of range (got {port_num})")
    return host, port_num


def options_request(host: str, port: int, local: tuple[str, int]) -> bytes:
    """One SIP OPTIONS (RFC 3261 §11) from ``local`` to host:port."""
    branch = "z9hG4bK-etsf-" + uuid.uuid4().hex[:16]
    call_id = f"etsf-health-{uuid.uuid4().hex}"
    lhost, lport = local
    return (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {lhost}:{lport};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:etsf-health@{lhost}>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:{host}:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Accept: application/sdp\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def send_probe(host: str, port: int, iface: str | None = None) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if iface:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
        sock.settimeout(0.2)
        sock.connect((host, port))
        local = sock.getsockname()[:2]
        sock.send(options_request(host, port, local))
        try:
            sock.recv(4096)
        except OSError:
            pass  # no answer (or ICMP error): the packets crossed the hooks anyway


def _snapshot() -> tuple[dict, dict]:
    st = datapath.stats()
    drops = {}
    for row in st["counters"]:
        if row["verdict"] == "DROP" or row["reason"] == "INTERNAL":
            key = (row["hook"], row["reason"])
            drops[key] = drops.get(key, 0) + row["packets"]
    per_if = {name: (row.get("rx_packets", 0), row.get("tx_marked", 0)) for name, row in st["interfaces"].items()}
    egress = sum(r["packets"] for r in st["counters"] if r["hook"] == "TC_EGRESS")
    per_if["*tc_egress*"] = (0, egress)
    return drops, per_if


def check(interfaces: list[str], window: float = 2.0, probe: str | None = None,
          allowed_drop_reasons=POLICY_DROP_REASONS, require_traffic: bool = True) -> dict:
    if not interfaces:
        raise HealthError("interfaces: at least one interface is required")
    if not 0 < window <= MAX_WINDOW_S:
        raise HealthError(f"window: must be in (0, {MAX_WINDOW_S:g}] seconds (got {window})")
    target = parse_probe(probe) if probe else None
    problems = []

    status = datapath.interface_status(interfaces)
    for iface in interfaces:
        row = status.get(iface, {})
        if not row.get("present", True):
            problems.append(f"{iface}: interface missing")
        elif not row.get("attached"):
            if row.get("hook_recorded") == "tc":
                problems.append(f"{iface}: tc_fastpath not attached on TC ingress "
                                f"(TC ingress prog {row.get('tc_ingress_prog_name')})")
            else:
                problems.append(f"{iface}: xdp_sip not attached (XDP prog {row.get('xdp_prog_name')})")
        elif row.get("tc_prog_name") != datapath.TC_PROG:
            problems.append(f"{iface}: tc_sip_egress not attached on egress")

    try:
        if datapath.read_ctl().bypass:
            problems.append("bypass is ON (a revert or the fail-safe): SIP is on the normal path; "
                            "clear it with 'etsfctl failsafe ack' "
                            "(a fleet: playbooks/revert.yml -e etsf_revert_mode=off)")
        drops0, if0 = _snapshot()
    except datapath.DatapathError as exc:
        problems.append(f"datapath maps not loaded ({exc})")
        return _report(problems, window, 0, {}, 0, {}, status)
    deadline = time.monotonic() + window
    probes = 0
    while True:
        if target and probes < MAX_PROBES:
            for iface in interfaces:
                try:
                    send_probe(target[0], target[1], iface)
                except OSError as exc:
                    problems.append(f"probe to {probe} via {iface} failed: {exc.strerror or exc}")
                    target = None
                    break
            probes += 1
        time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            break
    drops1, if1 = _snapshot()

    moved = {}
    for iface in interfaces:
        rx0, tx0 = if0.get(iface, (0, 0))
        rx1, tx1 = if1.get(iface, (0, 0))
        moved[iface] = {"rx_packets": rx1 - rx0, "tx_marked": tx1 - tx0}
    egress_delta = if1["*tc_egress*"][1] - if0["*tc_egress*"][1]
    if require_traffic:
        for iface, delta in moved.items():
            if delta["rx_packets"] <= 0 and egress_delta <= 0:
                problems.append(f"{iface}: counters did not move in {window:g}s")

    new_drops = {}
    for key, value in drops1.items():
        delta = value - drops0.get(key, 0)
        if delta > 0:
            new_drops[f"{key[0]}/{key[1]}"] = delta
            if key[1] not in allowed_drop_reasons:
                problems.append(f"{delta} packets dropped/failed for unexpected reason {key[1]} ({key[0]})")
    return _report(problems, window, probes if target else 0, moved, egress_delta, new_drops, status)


def _report(problems, window, probes, moved, egress_delta, drops, status) -> dict:
    return {
        "ok": not problems,
        "problems": problems,
        "message": "healthy" if not problems else "; ".join(problems),
        "window_s": window,
        "probes_sent": probes,
        "counters_moved": moved,
        "tc_egress_packets": egress_delta,
        "drops": drops,
        "interfaces": status,
    }


# ---------------------------------------------------------------------------
# etsfctl health
# ---------------------------------------------------------------------------


def cmd_health(args):
    res = check(args.iface, window=args.window, probe=args.probe,
                require_traffic=not args.no_traffic)
    emit(args, res, res["message"])
    if not res["ok"]:
        raise SystemExit(EXIT_ERROR)


def add_cli(sub, common) -> None:
    """Register ``etsfctl health`` (called from etsf.cli.build_parser)."""
    s = sub.add_parser("health", parents=[common], help="health gate: attached, counters moving, no unexpected drops")
    s.add_argument("--iface", type=T.iface, action="append", required=True, metavar="IF")
    s.add_argument("--window", type=T.seconds, default=2.0, metavar="S")
    s.add_argument("--probe", type=T.parsed_by(parse_probe, "ADDR[:PORT]", "127.0.0.1:5060"),
                   metavar="ADDR[:PORT]", help="send bounded SIP OPTIONS probes here")
    s.add_argument("--no-traffic", action="store_true", help="do not require the counters to move")
    s.set_defaults(func=cmd_health)
