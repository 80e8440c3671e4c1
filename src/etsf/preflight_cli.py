"""``etsfctl preflight``.

Kept apart from etsf.preflight, which is also the collection's module_utils (a symlink)
and so imports nothing from the agent.
"""

from __future__ import annotations

from . import inputs as T
from .output import EXIT_ERROR, emit


def cmd_preflight(args):
    from . import preflight
    res = preflight.run(args.iface or [], min_kernel=args.min_kernel)
    if args.json:
        emit(args, res)
    else:
        lines = [f"{'ok ' if c['ok'] else ('WARN' if c['severity'] == 'warning' else 'FAIL')} {c['name']}: {c['detail']}"
                 for c in res["checks"]]
        lines.append(res["message"])
        print("\n".join(lines))
    if not res["ok"]:
        raise SystemExit(EXIT_ERROR)


def add_cli(sub, common) -> None:
    """Register ``etsfctl preflight`` (called from etsf.cli.build_parser)."""
    s = sub.add_parser("preflight", parents=[common], help="can this host run eTSF? (every unmet requirement)")
    s.add_argument("--iface", type=T.iface, action="append", metavar="IF", help="interface to check (repeatable)")
    s.add_argument("--min-kernel", type=T.kernel_version, default="5.18", metavar="VER")
    s.set_defaults(func=cmd_preflight)
