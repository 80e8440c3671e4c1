"""``etsfctl exporter`` and ``etsfctl telemetry ...``."""

from __future__ import annotations

import sys

from .. import inputs
from .. import kpi as _kpi
from .. import schema_docs
from ..output import emit
from .reader import DEFAULT_PORT, DEFAULT_WINDOW, ExporterError, invite_codes, quantile, snapshot
from .auth import BCRYPT_PASSWORD_MAX
from .server import PASSWORD_MAX, bcrypt_hash, check_config, parse_listen, serve
from .webconfig import BCRYPT_MAX_COST, BCRYPT_MIN_COST
from .admin import grant, set_direction


# ---------------------------------------------------------------------------
# CLI (wired into etsfctl by cli.build_parser)
# ---------------------------------------------------------------------------


def _cmd_exporter(args):
    if args.web_config_reference:
        sys.stdout.write(schema_docs.render("exporter"))
        return
    if args.hash_password:
        line = sys.stdin.readline(PASSWORD_MAX + 2)         # bounded: stdin may be anything
        pw = line.rstrip("\n")
        if not pw:
            raise ExporterError("empty password on stdin")
        if len(pw) > PASSWORD_MAX:
            raise ExporterError(f"password on stdin longer than {PASSWORD_MAX} characters")
        if len(pw.encode()) > BCRYPT_PASSWORD_MAX:
            raise ExporterError(f"password on stdin longer than {BCRYPT_PASSWORD_MAX} bytes "
                                "(bcrypt reads no further)")
        print(bcrypt_hash(pw, args.bcrypt_cost))
        return
    if args.check_config:
        check_config(listen=args.listen, port=args.port, tls_cert=args.tls_cert, tls_key=args.tls_key,
                     basic_auth_file=args.basic_auth_file, web_config_file=args.web_config_file)
        emit(args, {"ok": True}, "ok")
        return
    serve(listen=args.listen, port=args.port, window=args.window,
          sample_interval=args.sample_interval, tls_cert=args.tls_cert, tls_key=args.tls_key,
          basic_auth_file=args.basic_auth_file, web_config_file=args.web_config_file, root=args.pin_root,
          max_seconds=args.max_seconds, ready_file=args.ready_file,
          heartbeat_file=args.heartbeat_file, heartbeat_interval=args.heartbeat_interval)


def _cmd_direction(args):
    res = set_direction(None if args.default else args.iface, args.direction)
    emit(args, res, f"telemetry on {res['iface']}: requests {res['direction']}")


def _cmd_grant(args):
    res = grant(args.group, programs=not args.maps_only)
    emit(args, res, f"{len(res['paths'])} pin(s) changed for group {args.group}")


def _cmd_show(args):
    snap = snapshot()
    out = {"latency": {f"{m}/{st}": {"count": h["count"],
                                     "p50_ms": _ms(quantile(0.5, h["slots"])),
                                     "p90_ms": _ms(quantile(0.9, h["slots"])),
                                     "p99_ms": _ms(quantile(0.99, h["slots"]))}
                       for (m, st), h in sorted(snap["hist"].items())},
           "responses": {f"{m}/{c}": n for (m, c), n in sorted(snap["codes"].items())},
           "events": snap["events"],
           "kpi": _kpi.compute(invite_codes(snap)),
           "maps": snap["maps"], "cost": snap["cost"]}
    emit(args, out)


def _ms(v):
    return None if v is None else round(v * 1000, 3)


def add_cli(sub, common) -> None:
    T = inputs  # pylint: disable=invalid-name
    s = sub.add_parser("exporter", parents=[common],
                       help="Prometheus exporter: /metrics and /healthz (daemon)")
    s.add_argument("--listen", type=T.parsed_by(parse_listen, "host:port", "127.0.0.1:9761"),
                   default="127.0.0.1", metavar="HOST:PORT",
                   help=f"127.0.0.1:{DEFAULT_PORT}, [::1]:{DEFAULT_PORT}, :{DEFAULT_PORT} (every address), "
                        "or an address alone with --port")
    s.add_argument("--port", type=T.listen_port, default=None,
                   help=f"TCP port 0..65535 when --listen gives none (default {DEFAULT_PORT}; "
                        "0: any free port, see --ready-file)")
    s.add_argument("--window", type=T.long_seconds, default=DEFAULT_WINDOW, metavar="S",
                   help="KPI window in seconds (SER/SEER/NER/ASR)")
    s.add_argument("--sample-interval", type=T.seconds, default=15.0, metavar="S")
    s.add_argument("--web.config.file", dest="web_config_file", type=T.path, metavar="FILE",
                   help="TLS and basic auth (bcrypt) in the Prometheus exporters' web configuration "
                        "format (docs/reference/exporter.md)")
    s.add_argument("--web.config.reference", dest="web_config_reference", action="store_true",
                   help="print the web configuration's reference (Markdown, docs/reference/exporter.md)")
    s.add_argument("--tls-cert", type=T.path, metavar="FILE", help="older form of tls_server_config.cert_file")
    s.add_argument("--tls-key", type=T.path, metavar="FILE", help="older form of tls_server_config.key_file")
    s.add_argument("--basic-auth-file", type=T.path, metavar="FILE",
                   help="older 'user:pbkdf2_sha256$...' lines (same hash budget as --web.config.file)")
    s.add_argument("--pin-root", type=T.path, metavar="DIR", help="default $ETSF_PIN_ROOT or /sys/fs/bpf/etsf")
    s.add_argument("--heartbeat-file", type=T.path, metavar="FILE",
                   help="rewrite FILE every --heartbeat-interval seconds while the maps are readable "
                        "(watched by the fail-safe heartbeat rule)")
    s.add_argument("--heartbeat-interval", type=T.seconds, default=5.0, metavar="S")
    s.add_argument("--max-seconds", type=T.long_seconds, metavar="S", help=argparse_suppress())
    s.add_argument("--ready-file", type=T.path, metavar="FILE", help=argparse_suppress())
    s.add_argument("--hash-password", action="store_true",
                   help="read a password on stdin, print its bcrypt hash for basic_auth_users")
    s.add_argument("--check-config", action="store_true",
                   help="check --listen and the web configuration (or the older files), then exit")
    s.add_argument("--bcrypt-cost", type=T.int_range(BCRYPT_MIN_COST, BCRYPT_MAX_COST), default=10,
                   metavar="N", help="cost of --hash-password (default 10)")
    s.set_defaults(func=_cmd_exporter)

    s = sub.add_parser("top", parents=[common],
                       help="live view: rates per method, drops by reason, latency quantiles")
    s.add_argument("--interval", type=T.seconds, default=2.0, metavar="S")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--once", action="store_true", help="one sample over --interval, then exit")
    g.add_argument("--iterations", type=T.count, metavar="N", help="refresh N times, then exit")
    s.set_defaults(func=lambda a: __import__("etsf.top", fromlist=["main"]).main(a))

    s = sub.add_parser("telemetry", help="latency tracking direction, pin permissions, summary")
    tsub = s.add_subparsers(dest="tcmd", metavar="ACTION", parser_class=sub._parser_class)
    tsub.required = True
    a = tsub.add_parser("direction", parents=[common],
                        help="where requests are seen: toward (XDP in), from (TC out), off")
    grp_ = a.add_mutually_exclusive_group(required=True)
    grp_.add_argument("--iface", type=T.iface, metavar="IF")
    grp_.add_argument("--default", action="store_true", help="every interface without its own entry")
    a.add_argument("direction", choices=("toward", "from", "off"))
    a.set_defaults(func=_cmd_direction)
    a = tsub.add_parser("grant", parents=[common],
                        help="let a group read the pins (for the unprivileged exporter)")
    a.add_argument("--group", type=T.group, default="etsf")
    a.add_argument("--maps-only", action="store_true",
                   help="leave program pins root-only (no per-program metrics)")
    a.set_defaults(func=_cmd_grant)
    a = tsub.add_parser("show", parents=[common], help="latency quantiles, response codes, KPIs")
    a.set_defaults(func=_cmd_show)


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS
