"""``etsfctl policy apply|show|history|rollback``."""

from __future__ import annotations

import os
import sys
import time

from .. import inputs as T
from .. import paths
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


def _configured_boot_file() -> tuple[str | None, str]:
    """(the policy file etsf-restore.service re-applies at boot, or None and why there is none)."""
    from .. import policy
    from ..datapath import DatapathError, read_restore_config
    config = paths.datapath_config()
    if not os.path.exists(config):
        return None, f"no {config}: nothing re-applies a policy at boot"
    try:
        cfg = read_restore_config(config)
    except DatapathError as exc:
        raise policy.PolicyError("boot file", f"{exc} (the boot-time policy file is named there; "
                                 "--boot-file FILE or --no-boot-file to roll back without it)") from None
    if not cfg.get("policy"):
        return None, f"{config} names no policy: nothing re-applies one at boot"
    return cfg["policy"], ""


def _boot_note(pol) -> tuple[dict, str | None]:
    """After an apply: whether a reboot keeps this policy, and a note line when it does not."""
    from .. import policy
    from .bootfile import boot_file_holds
    try:
        boot, why = _configured_boot_file()
    except policy.PolicyError as exc:
        return {"path": None, "holds_live": False}, f"note: a reboot may not keep this policy: {exc}"
    if boot is None:
        return {"path": None, "holds_live": False}, f"note: {why}"
    same, why = boot_file_holds(boot, pol.to_dict())
    if same:
        return {"path": boot, "holds_live": True}, None
    return ({"path": boot, "holds_live": False},
            f"note: after a reboot etsf-restore.service re-applies {boot}, not this policy ({why})")


def cmd_policy_apply(args):
    from .. import policy
    pol, text, merged = _load_layered(args)
    source = args.file if merged is None else " < ".join(
        f for f in (args.defaults, args.group, args.file) if f is not None)
    res = policy.apply(pol, check=args.check, source_text=text, source=source, history_keep=args.history_keep)
    if merged is not None:
        res["merged"] = merged
    note = None
    if not args.check:
        res["boot_file"], note = _boot_note(pol)
    if args.json:
        emit(args, res)
        return
    lines = []
    if merged is not None and (args.diff or args.check):
        import yaml
        lines.append("merged policy (defaults < group < host):")
        lines.append(yaml.safe_dump(merged, sort_keys=False).rstrip())
    lines += _result_lines(policy, args, res)
    if note:
        lines.append(note)
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
    # who changed a carrier's policy is the column read in an incident: as wide as the widest
    w = min(max([16] + [len(str(r.get("actor", "?"))) for r in rows]), 40)
    out = [f"  {'GEN':>5}  {'TIME (UTC)':<19}  {'ACTION':<8}  {'ACTOR':<{w}}  {'SHA256':<12}  SOURCE"]
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.get("time", 0)))
        src = r.get("source") or "-"
        if r.get("rollback_to") is not None:
            src = f"rollback to {r['rollback_to']}"
        out.append(f"{'*' if r['live'] else ' '} {r['generation']:>5}  {when:<19}  {r.get('action', '?'):<8}  "
                   f"{str(r.get('actor', '?'))[:w]:<{w}}  {str(r.get('sha256', ''))[:12]:<12}  {src}")
    emit(args, rows, "\n".join(out))


def cmd_policy_rollback(args):
    from .. import policy
    from .bootfile import write_boot_file
    # decided before the maps change: a config that cannot be read stops the rollback unchanged
    if args.no_boot_file:
        boot, why = None, "not written (--no-boot-file): a reboot re-applies the policy it holds"
    elif args.boot_file:
        boot, why = args.boot_file, ""
    else:
        boot, why = _configured_boot_file()
    res = policy.rollback(args.generation, check=args.check, history_keep=args.history_keep)
    boot_changed = False
    if boot is not None:
        try:
            boot_changed = write_boot_file(boot, res["document"], res["rollback_to"], check=args.check)
        except policy.PolicyError as exc:
            live = "" if args.check else f"generation {res['generation']} is live, but "
            raise policy.PolicyError(exc.path, f"{live}{exc.message}; a reboot re-applies the policy it "
                                     "held") from None
    res["boot_file"] = {"path": boot, "changed": boot_changed}
    if args.json:
        emit(args, res)
        return
    lines = [f"rollback to generation {res['rollback_to']}"]
    lines += _result_lines(policy, args, res, verb="rolled back")
    if boot is None:
        lines.append(f"boot-time policy: {why}")
    elif boot_changed:
        lines.append(f"boot-time policy {boot}: {'would be ' if args.check else ''}rewritten with it "
                     "(etsf-restore.service re-applies it after a reboot)")
    else:
        lines.append(f"boot-time policy {boot}: already holds it")
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
    b = a.add_mutually_exclusive_group()
    b.add_argument("--boot-file", type=T.path, metavar="FILE",
                   help="write the rolled-back policy here (default: the policy file the datapath config, "
                        "$ETSF_DATAPATH_CONFIG or /etc/etsf/datapath.yml, names for etsf-restore.service)")
    b.add_argument("--no-boot-file", action="store_true",
                   help="change the maps only: a reboot re-applies the boot-time file as it is")
    a.set_defaults(func=cmd_policy_rollback)
