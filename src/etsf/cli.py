"""``etsfctl`` -- the eTSF host agent command line.

Contract: ``--json`` prints one JSON document on stdout; any error exits
non-zero with ONE line on stderr (``etsfctl: error: ...``), no traceback for
user errors.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import __version__
from . import inputs as T

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, usage exit code
        sys.stderr.write(f"etsfctl: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _out(args, data, text=None):
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write((text if text is not None else _human(data)) + "\n")


def _human(data, indent=0) -> str:
    pad = "  " * indent
    lines = []
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                lines.append(_human(v, indent + 1))
            else:
                lines.append(f"{pad}{k}: {v}")
    elif isinstance(data, list):
        for v in data:
            if isinstance(v, dict):
                lines.append(f"{pad}- " + ", ".join(f"{k}={x}" for k, x in v.items()))
            else:
                lines.append(f"{pad}- {v}")
    else:
        lines.append(f"{pad}{data}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------


def cmd_build(args):
    from . import datapath
    res = datapath.build(out_dir=args.out, force=args.force)
    _out(args, res, f"{'built' if res.get('changed') else 'up to date'}: "
                    f"{', '.join(res['objects'])} (stamp {str(res.get('stamp'))[:12]})")


def cmd_attach(args):
    from . import datapath
    res = datapath.attach(args.iface, mode=args.mode, build_dir=args.build_dir, force=args.force)
    verb = "replaced" if res.get("replaced_prog_id") else "attached"
    _out(args, res, f"{verb} on {res['iface']}: xdp prog {res['xdp_prog_id']} ({res['mode']}), "
                    f"tc egress prog {res['tc_prog_id']}")


def cmd_detach(args):
    from . import datapath
    res = datapath.detach(args.iface)
    _out(args, res, f"detached from {args.iface}" if res["changed"] else f"nothing attached on {args.iface}")


def cmd_policy_apply(args):
    from . import policy
    pol, text = policy.load_file(args.file)
    res = policy.apply(pol, check=args.check, source_text=text)
    if args.json:
        _out(args, res)
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
    _out(args, res, "\n".join(lines))


def cmd_policy_show(args):
    from . import policy
    live = policy.read_live()
    if live is None:
        if args.json:
            _out(args, None)
        else:
            print("no policy applied (classifier passes everything)")
        return
    if args.json:
        _out(args, live)
    else:
        import yaml
        sys.stdout.write(yaml.safe_dump(live, sort_keys=False))


def cmd_stats(args):
    from . import datapath
    res = datapath.stats()
    if args.json:
        _out(args, res)
        return
    lines = [f"{'HOOK':<10} {'METHOD':<10} {'VERDICT':<9} {'REASON':<14} {'PACKETS':>12} {'BYTES':>14}"]
    for r in res["counters"]:
        lines.append(f"{r['hook']:<10} {r['method']:<10} {r['verdict']:<9} {r['reason']:<14} "
                     f"{r['packets']:>12} {r['bytes']:>14}")
    for name, s in res["interfaces"].items():
        lines.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in s.items()))
    print("\n".join(lines))


def cmd_status(args):
    from . import datapath
    res = datapath.status()
    if args.json:
        _out(args, res)
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
    else:
        lines.append("datapath maps not loaded")
    if not res["interfaces"]:
        lines.append("no interfaces attached")
    for name, r in res["interfaces"].items():
        if not r.get("present"):
            lines.append(f"{name}: interface gone")
            continue
        lines.append(f"{name} (ifindex {r['ifindex']}): xdp {r['xdp_prog_id'] or '-'} "
                     f"{r['xdp_prog_name'] or ''} {r['xdp_mode'] or ''}; tc egress {r['tc_prog_id'] or '-'}")
    print("\n".join(lines))


def cmd_overload(args):
    from . import datapath
    res = datapath.set_overload(args.level)
    _out(args, res, f"overload level {res['overload_level']} (was {res['previous']})")


def cmd_bypass(args):
    from . import datapath
    res = datapath.set_bypass(args.state == "on")
    _out(args, res, f"bypass {'ON' if res['bypass'] else 'off'}")


def cmd_heartbeat(args):
    from . import datapath
    if args.once or args.interval is None:
        res = datapath.heartbeat()
        _out(args, res, f"heartbeat {res['heartbeat_ns']}")
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
    _out(args, {"heartbeats": n}, f"{n} heartbeats")


def cmd_preflight(args):
    from . import preflight
    res = preflight.run(args.iface or [], min_kernel=args.min_kernel)
    if args.json:
        _out(args, res)
    else:
        lines = [f"{'ok ' if c['ok'] else ('WARN' if c['severity'] == 'warning' else 'FAIL')} {c['name']}: {c['detail']}"
                 for c in res["checks"]]
        lines.append(res["message"])
        print("\n".join(lines))
    if not res["ok"]:
        raise SystemExit(EXIT_ERROR)


def cmd_health(args):
    from . import health
    res = health.check(args.iface, window=args.window, probe=args.probe,
                       require_traffic=not args.no_traffic)
    _out(args, res, res["message"])
    if not res["ok"]:
        raise SystemExit(EXIT_ERROR)


def cmd_revert(args):
    from . import datapath
    res = datapath.revert(args.mode)
    text = (f"reverted ({args.mode}): " + ("done" if res["changed"] else "already reverted")
            if "detail" not in res else res["detail"])
    _out(args, res, text)


def cmd_restore(args):
    from . import datapath
    res = datapath.restore(args.config)
    _out(args, res, "restored: " + ", ".join(f"{i} (xdp prog {p})" for i, p in res["attached"].items())
         + f"; policy generation {res['policy_generation'] or 'none'}")


# ---------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------


def _parse_probe(text):
    from .health import parse_probe
    return parse_probe(text)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="etsfctl", description="eTSF host agent: eBPF SIP traffic steering")
    p.add_argument("--version", action="version", version=f"etsfctl {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    s = sub.add_parser("build", parents=[common], help="compile the BPF objects against this kernel's BTF")
    s.add_argument("--out", type=T.path, metavar="DIR", help="output directory (default $ETSF_STATE_DIR/build)")
    s.add_argument("--force", action="store_true", help="rebuild even if the stamp is unchanged")
    s.set_defaults(func=cmd_build)

    s = sub.add_parser("attach", parents=[common], help="load, pin and attach XDP ingress + TC egress")
    s.add_argument("--iface", type=T.iface, required=True, metavar="IF")
    s.add_argument("--mode", choices=("native", "generic"), default="native")
    s.add_argument("--build-dir", type=T.path, metavar="DIR", help="where the objects are (default: last build)")
    s.add_argument("--force", action="store_true", help="replace a foreign XDP program")
    s.set_defaults(func=cmd_attach)

    s = sub.add_parser("detach", parents=[common], help="detach XDP and TC programs (maps stay pinned)")
    s.add_argument("--iface", type=T.iface, required=True, metavar="IF")
    s.set_defaults(func=cmd_detach)

    s = sub.add_parser("policy", help="policy apply / show")
    psub = s.add_subparsers(dest="pcmd", metavar="ACTION", parser_class=_Parser)
    psub.required = True
    a = psub.add_parser("apply", parents=[common], help="validate and atomically apply a policy file")
    a.add_argument("file", type=T.path, metavar="FILE")
    a.add_argument("--check", action="store_true", help="validate and diff only; write nothing")
    a.add_argument("--diff", action="store_true", help="print the change against the live policy")
    a.set_defaults(func=cmd_policy_apply)
    a = psub.add_parser("show", parents=[common], help="print the live policy decoded from the maps")
    a.set_defaults(func=cmd_policy_show)

    s = sub.add_parser("stats", parents=[common], help="verdict/reason counters per hook and method")
    s.set_defaults(func=cmd_stats)
    s = sub.add_parser("status", parents=[common], help="attachments, pins, policy generation, fail-safe state")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("overload", help="overload level control")
    osub = s.add_subparsers(dest="ocmd", metavar="ACTION", parser_class=_Parser)
    osub.required = True
    a = osub.add_parser("set", parents=[common], help="set the overload level 0..3")
    a.add_argument("level", type=int, choices=range(4), metavar="N")
    a.set_defaults(func=cmd_overload)

    s = sub.add_parser("bypass", parents=[common], help="global bypass flag (every program passes all)")
    s.add_argument("state", choices=("on", "off"))
    s.set_defaults(func=cmd_bypass)

    s = sub.add_parser("heartbeat", parents=[common], help="refresh the dead-man heartbeat")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--once", action="store_true")
    g.add_argument("--interval", type=T.seconds, metavar="S")
    s.add_argument("--count", type=T.count, metavar="N", help="with --interval: stop after N beats")
    s.set_defaults(func=cmd_heartbeat)

    s = sub.add_parser("preflight", parents=[common], help="can this host run eTSF? (every unmet requirement)")
    s.add_argument("--iface", type=T.iface, action="append", metavar="IF", help="interface to check (repeatable)")
    s.add_argument("--min-kernel", type=T.kernel_version, default="5.18", metavar="VER")
    s.set_defaults(func=cmd_preflight)

    s = sub.add_parser("health", parents=[common], help="health gate: attached, counters moving, no unexpected drops")
    s.add_argument("--iface", type=T.iface, action="append", required=True, metavar="IF")
    s.add_argument("--window", type=T.seconds, default=2.0, metavar="S")
    s.add_argument("--probe", type=T.parsed_by(_parse_probe, "ADDR[:PORT]", "127.0.0.1:5060"),
                   metavar="ADDR[:PORT]", help="send bounded SIP OPTIONS probes here")
    s.add_argument("--no-traffic", action="store_true", help="do not require the counters to move")
    s.set_defaults(func=cmd_health)

    s = sub.add_parser("revert", parents=[common], help="back to the normal stack: bypass (default) or detach")
    s.add_argument("--mode", choices=("bypass", "detach"), default="bypass")
    s.set_defaults(func=cmd_revert)

    s = sub.add_parser("restore", parents=[common], help="boot-time restore of programs and policy")
    s.add_argument("--config", type=T.path, default="/etc/etsf/datapath.yml", metavar="FILE")
    s.set_defaults(func=cmd_restore)

    from .exporter import add_cli as _telemetry_cli   # exporter, top, telemetry (issue 6)
    _telemetry_cli(sub, common)
    from .fastpath import add_cli as _fastpath_cli      # etsfctl fastpath ... (issue 5)
    _fastpath_cli(sub, common, _out)
    from .failsafe import add_cli as _failsafe_cli      # etsfctl failsafe ... (issue 7)
    _failsafe_cli(sub, common, _out)
    from .firstboot import add_cli as _firstboot_cli    # etsfctl firstboot (issue 9, appliance)
    _firstboot_cli(sub, common, _out)
    return p


def _user_errors():
    errs = [ValueError, OSError, ImportError]
    from .policy import PolicyError
    errs.append(PolicyError)
    from .datapath import DatapathError
    errs.append(DatapathError)
    from .health import HealthError
    errs.append(HealthError)
    try:
        from .bpf import BpfError
        errs.append(BpfError)
    except Exception:  # noqa: BLE001 - bpf module unavailable
        pass
    return tuple(errs)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        errors = _user_errors()
    except Exception as e:  # noqa: BLE001 - broken install
        sys.stderr.write(f"etsfctl: error: cannot import agent modules: {e}\n")
        return EXIT_ERROR
    try:
        args.func(args)
    except KeyboardInterrupt:
        sys.stderr.write("etsfctl: interrupted\n")
        return 130
    except errors as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        sys.stderr.write(f"etsfctl: error: {msg}\n")
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
