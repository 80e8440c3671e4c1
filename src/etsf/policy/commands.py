"""``etsfctl policy apply|show|history|rollback``."""

from __future__ import annotations

import sys
import time

from .. import inputs as T
from ..output import emit


def _load_layered(args):
    """FILE alone, or --defaults/--group files deep-merged under it (etsf.policy.layers rules)."""
    from .. import policy
    if not args.defaults and not args.group:
        pol, text = policy.load_file(args.file)
        return pol, text, None
    import yaml
    layers = []
    for name, fname in (("defaults", args.defaults), ("group", args.group), ("host", args.file)):
        if fname is None:
            continue
        try:
            doc = T.load_yaml_file(fname, "policy")
        except T.InputError as e:
            raise policy.PolicyError(name, str(e)) from None
        layers.append((f"{name} ({fname})", doc))
    merged = policy.merge_layers(layers)
    pol = policy.validate(merged)
    return pol, yaml.safe_dump(merged, sort_keys=False), merged


def _result_lines(policy, args, res, verb="applied"):
    lines = []
    if args.diff or args.check:
        lines.append(policy.format_diff(res["diff"], res["live_exists"]))
    if args.check:
        lines.append("policy valid; " + ("would change" if res["changed"] else "no changes")
                     + " (check mode, nothing written)")
    elif res["changed"]:
        lines.append(f"{verb}: generation {res['generation']} live in slot {res['slot']}")
    else:
        lines.append(f"unchanged: generation {res['generation']} already live")
    return lines


def cmd_policy_apply(args):
    from .. import policy
    pol, text, merged = _load_layered(args)
    source = args.file if merged is None else " < ".join(
        f for f in (args.defaults, args.group, args.file) if f is not None)
    res = policy.apply(pol, check=args.check, source_text=text, source=source, history_keep=args.history_keep)
    if merged is not None:
        res["merged"] = merged
    if args.json:
        emit(args, res)
        return
    lines = []
    if merged is not None and (args.diff or args.check):
        import yaml
        lines.append("merged policy (defaults < group < host):")
        lines.append(yaml.safe_dump(merged, sort_keys=False).rstrip())
    lines += _result_lines(policy, args, res)
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


def _live_generation():
    from .. import policy
    if not policy.maps_present():
        return None
    live = policy.read_live()
    return None if live is None else live.get("generation")


def cmd_policy_history(args):
    from .. import policy
    rows = policy.history_entries()
    live = _live_generation()
    for r in rows:
        r["live"] = r["generation"] == live
    if args.json:
        emit(args, rows)
        return
    if not rows:
        emit(args, rows, "no policy history kept yet")
        return
    out = [f"  {'GEN':>5}  {'TIME (UTC)':<19}  {'ACTION':<8}  {'ACTOR':<16}  {'SHA256':<12}  SOURCE"]
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.get("time", 0)))
        src = r.get("source") or "-"
        if r.get("rollback_to") is not None:
            src = f"rollback to {r['rollback_to']}"
        out.append(f"{'*' if r['live'] else ' '} {r['generation']:>5}  {when:<19}  {r.get('action', '?'):<8}  "
                   f"{str(r.get('actor', '?'))[:16]:<16}  {str(r.get('sha256', ''))[:12]:<12}  {src}")
    emit(args, rows, "\n".join(out))


def cmd_policy_rollback(args):
    from .. import policy
    res = policy.rollback(args.generation, check=args.check, history_keep=args.history_keep)
    if args.json:
        emit(args, res)
        return
    lines = [f"rollback to generation {res['rollback_to']}"]
    lines += _result_lines(policy, args, res, verb="rolled back")
    emit(args, res, "\n".join(lines))


def add_cli(sub, common) -> None:
    """Register ``etsfctl policy ...`` (called from etsf.cli.build_parser)."""
    from .history import MAX_KEEP
    keep = T.int_range(1, MAX_KEEP)
    s = sub.add_parser("policy", help="policy apply / show / history / rollback")
    psub = s.add_subparsers(dest="pcmd", metavar="ACTION", parser_class=type(s))
    psub.required = True
    a = psub.add_parser("apply", parents=[common], help="validate and atomically apply a policy file")
    a.add_argument("file", type=T.path, metavar="FILE", help="the policy (with layers: the host layer, on top)")
    a.add_argument("--defaults", type=T.path, metavar="F", help="fleet-wide layer, merged under the others")
    a.add_argument("--group", type=T.path, metavar="F", help="group layer, merged over --defaults")
    a.add_argument("--check", action="store_true", help="validate and diff only; write nothing")
    a.add_argument("--diff", action="store_true", help="print the change against the live policy")
    a.add_argument("--history-keep", type=keep, metavar="N",
                   help="applied policies to keep for rollback (default $ETSF_POLICY_HISTORY or 10)")
    a.set_defaults(func=cmd_policy_apply)
    a = psub.add_parser("show", parents=[common], help="print the live policy decoded from the maps")
    a.set_defaults(func=cmd_policy_show)
    a = psub.add_parser("history", parents=[common], help="the applied policies kept for rollback (* = live)")
    a.set_defaults(func=cmd_policy_history)
    a = psub.add_parser("rollback", parents=[common],
                        help="re-apply a kept policy atomically (default: the one before the live one)")
    a.add_argument("generation", type=T.int_range(1, 2**32 - 1), nargs="?", metavar="GENERATION")
    a.add_argument("--check", action="store_true", help="show what would change; write nothing")
    a.add_argument("--diff", action="store_true", help="print the change against the live policy")
    a.add_argument("--history-keep", type=keep, metavar="N",
                   help="applied policies to keep (default $ETSF_POLICY_HISTORY or 10)")
    a.set_defaults(func=cmd_policy_rollback)
