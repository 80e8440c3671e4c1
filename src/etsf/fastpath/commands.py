"""``etsfctl fastpath ...``."""

from __future__ import annotations

import ipaddress

from .. import inputs
from ..output import emit
from .slots import FastpathError
from .runtime import backends, run_prober, set_health, stats
from .loader import attach, detach, status


# ---------------------------------------------------------------------------
# etsfctl fastpath ...
# ---------------------------------------------------------------------------


def _parse_backend(text: str) -> tuple[str, int]:
    host, _sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        if "%" in host:          # a scope cannot be expressed in the backend map
            raise ValueError
        ipaddress.ip_address(host)
        p = int(port)
        if not 0 < p < 65536:
            raise ValueError
    except ValueError:
        raise FastpathError(f"expected ADDRESS:PORT (IPv6 as [ADDR]:PORT), got {text!r}") from None
    return host, p


def add_cli(sub, common) -> None:
    """Register ``etsfctl fastpath ...`` (called from etsf.cli.build_parser)."""
    T = inputs  # pylint: disable=invalid-name
    s = sub.add_parser("fastpath", help="in-kernel fast path to local proxy backends")
    fsub = s.add_subparsers(dest="fcmd", metavar="ACTION",
                            parser_class=sub._parser_class)  # noqa: SLF001 - etsfctl's one-line-error parser
    fsub.required = True

    def _attach(a):
        res = attach(a.iface, a.build_dir)
        emit(a, res, "fast path attached (tc ingress) on " + ", ".join(a.iface))

    def _detach(a):
        res = detach(a.iface)
        emit(a, res, "detached from " + ", ".join(k for k, v in res["detached"].items() if v)
             if res["changed"] else "nothing attached")

    def _stats(a):
        res = stats()
        lines = [f"forward: {res['forward']['packets']} packets, return: {res['return']['packets']} packets",
                 "fallback: " + (", ".join(f"{k}={v}" for k, v in res["fallback"].items()) or "none")]
        for b in res["backends"]:
            lines.append(f"  {b['service']} {b['address']}:{b['port']} {'up' if b['up'] else 'DOWN'} "
                         f"dialogs={b['dialogs']} packets={b['packets']} return={b['ret_packets']}")
        emit(a, res, "\n".join(lines))

    def _status(a):
        emit(a, status())

    def _health(a):
        if a.backend is None:
            res = backends()
            emit(a, res, "\n".join(f"{b['address']}:{b['port']} {'up' if b['up'] else 'DOWN'}"
                                   for b in res) or "no backends")
            return
        if a.state is None:
            raise FastpathError("health: give the state (up|down) after ADDRESS:PORT")
        host, port = _parse_backend(a.backend)
        res = set_health(host, port, a.state == "up")
        emit(a, res, f"{a.backend} {a.state}")

    def _probe(a):
        res = run_prober(a.interval, a.threshold, a.rounds, a.timeout)
        emit(a, res)

    a = fsub.add_parser("attach", parents=[common], help="attach tc_fastpath (TC ingress) on interfaces")
    a.add_argument("--iface", type=T.iface, action="append", required=True, metavar="IF",
                   help="uplink and every backend's host-end veth (repeatable)")
    a.add_argument("--build-dir", type=T.path, metavar="DIR")
    a.set_defaults(func=_attach)
    a = fsub.add_parser("detach", parents=[common], help="detach tc_fastpath from interfaces")
    a.add_argument("--iface", type=T.iface, action="append", required=True, metavar="IF")
    a.set_defaults(func=_detach)
    a = fsub.add_parser("stats", parents=[common], help="fast-path packets, fallbacks by reason, per backend")
    a.set_defaults(func=_stats)
    a = fsub.add_parser("status", parents=[common], help="fast-path attachments")
    a.set_defaults(func=_status)
    a = fsub.add_parser("health", parents=[common], help="show backends' health, or set ADDRESS:PORT up|down")
    a.add_argument("backend", nargs="?", type=T.parsed_by(_parse_backend, "ADDRESS:PORT", "127.0.0.1:5060"),
                   metavar="ADDRESS:PORT")
    a.add_argument("state", nargs="?", choices=("up", "down"))
    a.set_defaults(func=_health)
    a = fsub.add_parser("probe", parents=[common], help="SIP OPTIONS health prober (bounded)")
    a.add_argument("--interval", type=T.float_range(0, 3600, lo_open=False), default=1.0, metavar="S")
    a.add_argument("--threshold", type=T.int_range(1, 1000), default=3, metavar="N")
    a.add_argument("--rounds", type=T.count, default=10, metavar="N")
    a.add_argument("--timeout", type=T.float_range(0, 60), default=0.5, metavar="S")
    a.set_defaults(func=_probe)
