"""``etsfctl policy apply|show``."""

from __future__ import annotations

import sys

from .. import inputs as T
from ..output import emit


def cmd_policy_apply(args):
    from .. import policy
    pol, text = policy.load_file(args.file)
    res = policy.apply(pol, check=args.check, source_text=text)
    if args.json:
        emit(args, res)
        return
    lines = []
    if args.diff or args.check:
        lines.append(policy.format_diff(res["diff"], res["live_exists"]))
    if args.check:
        lines.append("policy valid; " + ("would change" if res["changed"] else "no changes")
                     + " (check mode, nothing written)")
    elif res["changed"]:
        lines.append(f"applied: generation {res['generation']} live in slot {res['slot']}")
    else:
        lines.append(f"unchanged: generation {res['generation']} already live")
    emit(args, res, "\n".join(lines))


def cmd_policy_show(args):
    from .. import policy
    live = policy.read_live()
    if live is None:
        if args.json:
            emit(args, None)
        else:
            print("no policy applied (classifier passes everything)")
        return
    if args.json:
        emit(args, live)
    else:
        import yaml
        sys.stdout.write(yaml.safe_dump(live, sort_keys=False))


def add_cli(sub, common) -> None:
    """Register ``etsfctl policy ...`` (called from etsf.cli.build_parser)."""
    s = sub.add_parser("policy", help="policy apply / show")
    psub = s.add_subparsers(dest="pcmd", metavar="ACTION", parser_class=type(s))
    psub.required = True
    a = psub.add_parser("apply", parents=[common], help="validate and atomically apply a policy file")
    a.add_argument("file", type=T.path, metavar="FILE")
    a.add_argument("--check", action="store_true", help="validate and diff only; write nothing")
    a.add_argument("--diff", action="store_true", help="print the change against the live policy")
    a.set_defaults(func=cmd_policy_apply)
    a = psub.add_parser("show", parents=[common], help="print the live policy decoded from the maps")
    a.set_defaults(func=cmd_policy_show)
