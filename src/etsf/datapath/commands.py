"""``etsfctl build|attach|detach|stats|status|overload|bypass|heartbeat|revert|restore``."""

from __future__ import annotations

import time

from .. import inputs as T
from ..build import TARGET_ARCH
from ..output import emit
from ..overload.commands import add_auto_cli, pin_manual


def cmd_build(args):
    from .. import datapath
    res = datapath.build(out_dir=args.out, force=args.force, arch=args.arch)
    emit(args, res, f"{'built' if res.get('changed') else 'up to date'}: "
                    f"{', '.join(res['objects'])} (stamp {str(res.get('stamp'))[:12]})")


def cmd_attach(args):
    from .. import datapath
    from . import held
    res = datapath.attach(args.iface, mode=args.mode, build_dir=args.build_dir, force=args.force,
                          hook=args.hook, tc_api=args.tc_api)
    # attaching by hand ends an operator's detach: a reboot attaches again
    res["revert_released"] = held.release("detach")
    verb = "replaced" if res.get("replaced_prog_id") else "attached"
    where = (f"xdp prog {res['xdp_prog_id']} ({res['mode']})" if res["hook"] == "xdp"
             else f"tc ingress prog {res['tc_ingress_prog_id']}")
    emit(args, res, f"{verb} on {res['iface']}: hook {res['hook']} ({res['hook_reason']}); {where}, "
                    f"tc egress prog {res['tc_prog_id']} (TC through {res['tc_api']}: {res['tc_api_reason']})")


def cmd_detach(args):
    from .. import datapath, paths
    res = datapath.detach(args.iface)
    text = f"detached from {args.iface}" if res["changed"] else f"nothing attached on {args.iface}"
    # a detach of one interface is not held: say so where the boot-time restore would undo it
    cfg_path = paths.datapath_config()
    try:
        boot = args.iface in datapath.read_restore_config(cfg_path)["interfaces"]
    except (datapath.DatapathError, OSError):
        boot = False
    res["reattached_at_boot"] = boot
    if boot:
        text += (f"\nnote: {cfg_path} lists {args.iface}: the next boot attaches it again; "
                 "'etsfctl revert --mode detach' keeps eTSF off this host across reboots")
    emit(args, res, text)


def cmd_stats(args):
    from .. import datapath
    res = datapath.stats()
    if args.json:
        emit(args, res)
        return
    lines = [f"{'HOOK':<10} {'METHOD':<10} {'VERDICT':<9} {'REASON':<14} {'PACKETS':>12} {'BYTES':>14}"]
    for r in res["counters"]:
        lines.append(f"{r['hook']:<10} {r['method']:<10} {r['verdict']:<9} {r['reason']:<14} "
                     f"{r['packets']:>12} {r['bytes']:>14}")
    for name, s in res["interfaces"].items():
        lines.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in s.items()))
    print("\n".join(lines))


def cmd_status(args):
    from .. import datapath
    res = datapath.status()
    if args.json:
        emit(args, res)
        return
    lines = [f"pin root: {res['pin_root']} ({len(res['pins']['maps'])} maps, "
             f"{len(res['pins']['progs'])} progs pinned)"]
    if res["ctl"] is not None:
        c = res["ctl"]
        age = c["heartbeat_age_ms"]
        lines.append(f"policy generation {c['generation']} (slot {c['active_slot']}, "
                     f"{'applied' if res['policy_applied'] else 'none applied'}); "
                     f"bypass {'ON' if c['bypass'] else 'off'}; overload level {c['overload_level']}; "
                     f"heartbeat age {'-' if age is None else f'{age} ms'}; "
                     f"deadman {c['deadman_ms'] or 'off'}{' ms' if c['deadman_ms'] else ''}")
        a = c["admission"]
        if a["rate"]:
            lines.append(f"admission of new INVITEs: {a['rate']}/s burst {a['burst']} per CPU, refused "
                         + (f"answered 503 (Retry-After {a['retry_after_s'] or 'none'})"
                            if a["reply_503"] else "dropped"))
        oc = c.get("rfc7339") or {}
        if oc.get("enabled"):
            lines.append(f"RFC 7339 to oc clients: oc={oc['reduction_pct']} oc-validity={oc['validity_ms']} ms "
                         f"oc-seq={oc['seq'] // 1000}.{oc['seq'] % 1000:03d}")
        k = c["keepalive"]
        if k["proxy_alive_until_ns"]:
            lines.append("keep-alive answers: " + (f"on, proxy alive for {k['proxy_alive_left_ms']} ms more"
                                                   if k["proxy_alive"] else "off, proxy probe stale")
                         + " (etsfctl keepalive status)")
    else:
        lines.append("datapath maps not loaded")
    oa = res.get("overload_auto")
    if oa:
        rate = oa.get("admit_rate")
        lines.append(f"overload controller: level {oa.get('level', '-')}, admission "
                     f"{f'{rate}/s per CPU' if rate else 'off'}, "
                     f"{'PINNED (etsfctl overload auto --resume)' if oa.get('pinned') else 'automatic'}; "
                     f"{oa.get('changes_total', 0)} changes; last signal {oa.get('signal') or '-'}")
    if res.get("revert_held"):
        from .held import describe
        undo = ("'etsfctl failsafe ack' or 'etsfctl bypass off'" if res["revert_held"]["mode"] == "bypass"
                else "'etsfctl attach' or site.yml")
        lines.append(f"operator revert: {describe(res['revert_held'])}; a reboot keeps it; {undo} ends it")
    if not res["interfaces"]:
        lines.append("no interfaces attached")
    for name, r in res["interfaces"].items():
        if not r.get("present"):
            lines.append(f"{name}: interface gone")
            continue
        lines.append(f"{name} (ifindex {r['ifindex']}): hook {r['hook'] or '-'}; xdp {r['xdp_prog_id'] or '-'} "
                     f"{r['xdp_prog_name'] or ''} {r['xdp_mode'] or ''}; tc ingress {r['tc_ingress_prog_id'] or '-'}"
                     f"{' (' + ', '.join(r['if_flags']) + ')' if r['if_flags'] else ''}; "
                     f"tc egress {r['tc_prog_id'] or '-'}"
                     f"{' (tcx links)' if 'tcx' in (r.get('tc_api'), r.get('tc_ingress_api')) else ''}")
    print("\n".join(lines))


def cmd_overload(args):
    from .. import datapath
    res = datapath.set_overload(args.level)
    pin_manual(args.level)          # the adaptive controller leaves it alone until `overload auto --resume`
    emit(args, res, f"overload level {res['overload_level']} (was {res['previous']}; pinned until "
                    "`etsfctl overload auto --resume`)")


def cmd_overload_admit(args):
    from .. import datapath
    if args.off:
        if args.burst is not None:
            raise datapath.DatapathError("overload admit: --burst applies to --rate, not --off")
        res = datapath.set_admission(0, retry_after=args.retry_after, reply=args.reply)
    else:
        res = datapath.set_admission(args.rate, args.burst, args.retry_after, args.reply)
    a = res["admission"]
    text = ("admission of new INVITEs off" if not a["rate"] else
            f"admission of new INVITEs: {a['rate']}/s burst {a['burst']} per CPU")
    text += (f"; refused ones answered 503 (Retry-After {a['retry_after_s'] or 'none'})"
             if a["reply_503"] else "; refused ones dropped")
    emit(args, res, text)


def cmd_bypass(args):
    from .. import datapath
    from . import held
    on = args.state == "on"
    res = datapath.set_bypass(on)
    # the operator's bypass outlives a reboot until it is turned off
    kept = held.hold("bypass") if on else held.release("bypass")
    res["changed"] = res["changed"] or kept
    emit(args, res, f"bypass {'ON' if res['bypass'] else 'off'}")


def cmd_heartbeat(args):
    from .. import datapath
    if args.once or args.interval is None:
        res = datapath.heartbeat()
        emit(args, res, f"heartbeat {res['heartbeat_ns']}")
        return
    import signal

    def _stop(_sig, _frm):
        raise SystemExit(0)          # systemd stop: exit cleanly, let the dead-man decide
    signal.signal(signal.SIGTERM, _stop)
    n = 0
    deadline = None if args.count is None else args.count
    while deadline is None or n < deadline:
        datapath.heartbeat()
        n += 1
        if deadline is not None and n >= deadline:
            break
        time.sleep(args.interval)
    emit(args, {"heartbeats": n}, f"{n} heartbeats")


def cmd_revert(args):
    from .. import datapath
    res = datapath.revert(args.mode)
    text = (f"reverted ({args.mode}): " + ("done" if res["changed"] else "already reverted")
            if "detail" not in res else res["detail"])
    emit(args, res, text)


def cmd_restore(args):
    from .. import datapath
    res = datapath.restore(args.config)
    rec = res.get("revert_held")
    if rec and rec["mode"] == "detach":
        from .held import describe
        emit(args, res, f"not restored: operator revert ({describe(rec)}); 'etsfctl attach' or site.yml "
                        "attaches again")
        return
    emit(args, res, "restored: " + ", ".join(f"{i} (hook {h})" for i, h in res["hooks"].items())
         + f"; policy generation {res['policy_generation'] or 'none'}"
         + (f"; bypass ON (operator revert: {rec['mode']} held)" if rec else ""))


def add_cli(sub, common) -> None:
    """Register the data-path commands (called from etsf.cli.build_parser)."""
    s = sub.add_parser("build", parents=[common], help="compile the BPF objects against this kernel's BTF")
    s.add_argument("--out", type=T.path, metavar="DIR", help="output directory (default $ETSF_STATE_DIR/build)")
    s.add_argument("--force", action="store_true", help="rebuild even if the stamp is unchanged")
    s.add_argument("--arch", choices=sorted(TARGET_ARCH), help="build for this machine (uname -m; default: this "
                   "one), e.g. on a controller for the hosts")
    s.set_defaults(func=cmd_build)

    s = sub.add_parser("attach", parents=[common], help="load, pin and attach the classifier (XDP or TC "
                       "ingress) + TC egress")
    s.add_argument("--iface", type=T.iface, required=True, metavar="IF")
    s.add_argument("--hook", choices=("auto", "xdp", "tc"), default="auto",
                   help="where SIP is classified: auto (by driver: XDP on NICs with native XDP, TC ingress "
                   "on veth and other virtual interfaces), xdp or tc (forced)")
    s.add_argument("--mode", choices=("native", "generic"), default=None,
                   help="XDP attach mode when the hook is xdp (default native)")
    s.add_argument("--tc-api", choices=("auto", "clsact", "tcx"), default="auto",
                   help="how the TC programs are attached: auto (default: tcx links where the kernel has "
                   "them and no other program sits in a clsact filter on IF, else clsact), clsact filters, "
                   "or tcx links (kernel 6.6 or later; no qdisc and classifier layers around the programs)")
    s.add_argument("--build-dir", type=T.path, metavar="DIR", help="where the objects are (default: last build)")
    s.add_argument("--force", action="store_true", help="replace a foreign XDP program")
    s.set_defaults(func=cmd_attach)

    s = sub.add_parser("detach", parents=[common], help="detach the classifier and TC egress (maps stay pinned)")
    s.add_argument("--iface", type=T.iface, required=True, metavar="IF")
    s.set_defaults(func=cmd_detach)

    s = sub.add_parser("stats", parents=[common], help="verdict/reason counters per hook and method")
    s.set_defaults(func=cmd_stats)
    s = sub.add_parser("status", parents=[common], help="attachments, pins, policy generation, fail-safe state")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("overload", help="overload level control")
    osub = s.add_subparsers(dest="ocmd", metavar="ACTION", parser_class=type(s))
    osub.required = True
    a = osub.add_parser("set", parents=[common], help="set the overload level 0..3")
    a.add_argument("level", type=int, choices=range(4), metavar="N")
    a.set_defaults(func=cmd_overload)
    add_auto_cli(osub, common)
    a = osub.add_parser("admit", parents=[common],
                        help="admission of new INVITEs by token rate per CPU (refused: in-kernel 503)")
    g = a.add_mutually_exclusive_group(required=True)
    g.add_argument("--rate", type=T.int_range(1, 10_000_000), metavar="N",
                   help="new INVITEs admitted per second per CPU")
    g.add_argument("--off", action="store_true", help="admit every new INVITE")
    a.add_argument("--burst", type=T.int_range(0, 10_000_000), metavar="M",
                   help="bucket depth per CPU (default: the rate; 0 admits none)")
    a.add_argument("--retry-after", type=T.int_range(0, 86400), metavar="S",
                   help="Retry-After seconds of the 503 (0: header left out; default: unchanged)")
    r = a.add_mutually_exclusive_group()
    r.add_argument("--reply", dest="reply", action="store_true", default=None,
                   help="answer refused INVITEs with a stateless 503 (the default)")
    r.add_argument("--silent", dest="reply", action="store_false",
                   help="drop refused INVITEs without an answer")
    a.set_defaults(func=cmd_overload_admit)

    s = sub.add_parser("bypass", parents=[common], help="global bypass flag (every program passes all)")
    s.add_argument("state", choices=("on", "off"))
    s.set_defaults(func=cmd_bypass)

    s = sub.add_parser("heartbeat", parents=[common], help="refresh the dead-man heartbeat")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--once", action="store_true")
    g.add_argument("--interval", type=T.seconds, metavar="S")
    s.add_argument("--count", type=T.count, metavar="N", help="with --interval: stop after N beats")
    s.set_defaults(func=cmd_heartbeat)

    s = sub.add_parser("revert", parents=[common], help="back to the normal stack: bypass (default) or detach")
    s.add_argument("--mode", choices=("bypass", "detach"), default="bypass")
    s.set_defaults(func=cmd_revert)

    s = sub.add_parser("restore", parents=[common], help="boot-time restore of programs and policy")
    s.add_argument("--config", type=T.path, default=None, metavar="FILE",
                   help="default $ETSF_DATAPATH_CONFIG or /etc/etsf/datapath.yml")
    s.set_defaults(func=cmd_restore)
