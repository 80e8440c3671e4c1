"""``etsfctl overload auto`` (registered under ``etsfctl overload`` by the data-path commands)."""

from __future__ import annotations

import os
import signal

from .. import inputs as T
from ..output import emit
from ..paths import resume_heartbeat
from ..sdnotify import sd_notify
from .state import pin, read_state, resume

DEFAULT_POLICY = "/etc/etsf/policy.yml"


def load_config(policy_file: str, interval_s: float | None = None) -> tuple[dict, list[int]]:
    """(overload.auto settings, proxy ports) from the policy file; refuses a disabled controller."""
    from ..policy.schema import load_file
    p, _text = load_file(policy_file)
    cfg = dict(p.overload_auto)
    if not cfg["enabled"]:
        raise ValueError(f"{policy_file}: overload.auto.enabled is false (the controller is off)")
    if interval_s is not None:
        cfg["interval_ms"] = max(1, int(round(interval_s * 1000)))
    cfg["invite_level"] = invite_level(p.shed_below, p.priorities["INVITE"])
    return cfg, list(cfg["proxy_ports"] or p.sip_ports)


def invite_level(shed_below, invite_prio: str) -> int:
    """The first overload level whose `shed_below` drops new INVITEs (silently, in the kernel);
    one past the last level when none does.  The control law enters it only with admission at
    min_rate (law._next_level)."""
    from ..policy.consts import PRIO_NAMES
    prio = PRIO_NAMES.index(invite_prio)
    return next((lvl for lvl, name in enumerate(shed_below) if lvl and PRIO_NAMES.index(name) > prio),
                len(shed_below))


def _text(last: list[dict]) -> str:
    r = last[-1]
    if r["pinned"]:
        return f"pinned by a manual level: no change written ({r['tick']} ticks)"
    sig = ", ".join(f"{k}={v}" for k, v in r["signals"].items()) or "no signals"
    rate = f"{r['rate']}/s per CPU" if r["rate"] else "off"
    return (f"level {r['level']}, admission {rate}; pressure {r['pressure']} ({r['signal'] or '-'}; {sig}); "
            f"{r['changes_total']} changes")


def cmd_overload_auto(args):
    if args.resume:
        doc = resume()
        emit(args, {"pinned": False, "state": doc}, "controller resumed: the level is automatic again")
        return
    if args.show:
        doc = read_state()
        emit(args, {"state": doc}, "controller never ran" if doc is None else
             f"level {doc.get('level')}, admission {doc.get('admit_rate') or 'off'}, "
             f"{'PINNED' if doc.get('pinned') else 'automatic'}, {doc.get('changes_total', 0)} changes")
        return
    # first of all, before anything that can fail: a start that dies lets the heartbeat age
    resume_heartbeat(args.heartbeat_file)
    from .runner import Controller
    from .signals import Sampler
    cfg, ports = load_config(args.policy, args.interval)
    sampler = Sampler(ports, net_dir=args.proc_net, cpu=cfg["target_cpu"] > 0)
    ctl = Controller(cfg, sampler, heartbeat_file=args.heartbeat_file)

    def _stop(_sig, _frm):
        raise SystemExit(0)                # systemd stop: the last level stays
    signal.signal(signal.SIGTERM, _stop)
    try:
        last = ctl.run(count=1 if args.once else args.count, ready=lambda: sd_notify("READY=1"))
    except SystemExit:
        ctl.stop()                         # no stale RFC 7339 advertisement (the map lock is released by now)
        raise
    emit(args, {"ticks": ctl.ticks, "last": last[-1], "history": last}, _text(last))


def pin_manual(level: int) -> None:
    """Called by ``etsfctl overload set``: the level is the operator's until resumed."""
    pin(level, by=f"etsfctl overload set (uid {os.getuid()})")


def add_auto_cli(osub, common) -> None:
    """Register ``overload auto`` under the ``overload`` command group."""
    a = osub.add_parser("auto", parents=[common],
                        help="adaptive overload controller: level and INVITE admission rate from live signals")
    g = a.add_mutually_exclusive_group()
    g.add_argument("--once", action="store_true", help="one tick, then exit")
    g.add_argument("--count", type=T.count, metavar="N", help="stop after N ticks")
    g.add_argument("--resume", action="store_true",
                   help="lift the pin of a manual `overload set`: the controller writes the level again")
    g.add_argument("--show", action="store_true", help="print the controller's state file")
    a.add_argument("--interval", type=T.seconds, metavar="S", help="seconds between ticks (default: the "
                   "policy's overload.auto.interval_ms)")
    a.add_argument("--policy", type=T.path, default=DEFAULT_POLICY, metavar="FILE",
                   help=f"policy file with the overload.auto section (default {DEFAULT_POLICY})")
    a.add_argument("--heartbeat-file", type=T.path, metavar="FILE",
                   help="rewritten every tick (watched by the fail-safe heartbeat rule)")
    a.add_argument("--proc-net", type=T.path, default="/proc/net", metavar="DIR",
                   help="where the proxy sockets are read (/proc/PID/net: a proxy in another network namespace)")
    a.set_defaults(func=cmd_overload_auto)
