"""``etsfctl keepalive probe|status``."""

from __future__ import annotations

import signal
import time
from typing import Any

from .. import inputs as T
from ..output import emit
from ..paths import resume_heartbeat
from ..sdnotify import sd_notify

DEFAULT_POLICY = "/etc/etsf/policy.yml"


def load_config(policy_file: str, interval_s: float | None = None) -> dict[str, Any]:
    """The prober's settings from the policy's keepalive section; refuses a disabled responder."""
    from ..policy.schema import load_file
    p, _text = load_file(policy_file)
    ka = p.keepalive
    if not ka["enabled"]:
        raise ValueError(f"{policy_file}: keepalive.enabled is false (nothing to probe for)")
    pr = ka["probe"]
    cfg = {"address": pr["address"], "port": pr["port"], "interval_ms": pr["interval_ms"],
           "timeout_ms": pr["timeout_ms"], "alive_ms": pr["alive_ms"]}
    if interval_s is not None:
        cfg["interval_ms"] = max(1, int(round(interval_s * 1000)))
        cfg["timeout_ms"] = min(cfg["timeout_ms"], cfg["interval_ms"])
    return cfg


def counters() -> dict[str, int] | None:
    """The kernel's keep-alive counters; None when the loaded objects have no responder."""
    from .. import datapath
    try:
        return datapath.keepalive_counters()
    except datapath.DatapathError:
        return None


def status() -> dict[str, Any]:
    """The responder as the kernel and the prober see it: whether the live policy answers
    keep-alives (and for which identities), the gate in etsf_ctl, the prober's state file, the
    kernel's keep-alive counters."""
    from .. import datapath
    from ..paths import pin_root
    from ..policy import PolicyError, maps_present, read_keepalive
    from .state import read_state
    pr = read_state()
    out: dict[str, Any] = {"enabled": False, "identities": [], "prober": pr, "gate": None, "counters": None,
                           "prober_running": bool(pr) and not pr.get("stopped")}
    if maps_present(pin_root()):
        ctl = datapath.read_ctl()
        out["gate"] = datapath.keepalive_gate(ctl, time.monotonic_ns())
        out["counters"] = counters()
        try:
            ka = read_keepalive(pin_root())
        except PolicyError:
            ka = {}
        out["enabled"], out["identities"] = bool(ka.get("enabled")), list(ka.get("identities") or [])
    return out


def _probe_text(last: list[dict]) -> str:
    r = last[-1]
    p = r["probe"]
    answer = f"{p['status']} {p['reason']}".strip() if p["status"] else p["reason"]
    gate = f"alive, kernel answers for {r['alive_left_ms']} ms" if r["alive"] else "not alive: OPTIONS go to the proxy"
    return f"probe {r['tick']}: {p['outcome']} ({answer}); {gate}; {r['transitions_total']} transitions"


def _status_text(st: dict[str, Any]) -> str:
    lines = []
    g = st["gate"]
    if g is None:
        lines.append("datapath maps not loaded")
    else:
        lines.append("keep-alive answers " + (f"on in the live policy for {', '.join(st['identities'])}"
                                              if st["enabled"] else "off in the live policy"))
        what = (f"answers keep-alive OPTIONS for {g['proxy_alive_left_ms']} ms more" if g["proxy_alive"]
                else "passes every OPTIONS to the proxy")
        sample = f"; 1 in {g['sample_every']} still goes to the proxy" if g["sample_every"] else ""
        lines.append(f"proxy {'ALIVE' if g['proxy_alive'] else 'not alive'}: the kernel {what}{sample}")
    pr = st["prober"]
    if not pr:
        lines.append("prober never ran")
    else:
        lp = pr.get("last_probe") or {}
        answer = f"{lp.get('status')} {lp.get('reason', '')}".strip() if lp.get("status") else lp.get("reason", "")
        lines.append(f"prober {'running' if st['prober_running'] else 'stopped'}: {pr.get('target')} every "
                     f"{pr.get('interval_ms')} ms; last probe {lp.get('outcome', '-')} ({answer}); "
                     f"{pr.get('probes_total', 0)} probes, {pr.get('transitions_total', 0)} transitions")
    c = st["counters"]
    if c is not None:
        lines.append("kernel: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    return "\n".join(lines)


def cmd_probe(args):
    import threading
    # first of all, before anything that can fail: a start that dies lets the heartbeat age
    resume_heartbeat(args.heartbeat_file)
    from .prober import Prober
    cfg = load_config(args.policy, args.interval)
    pr = Prober(cfg, heartbeat_file=args.heartbeat_file)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frm: stop.set())
    last = pr.run(count=1 if args.once else args.count, stop=stop, ready=lambda: sd_notify("READY=1"))
    if stop.is_set() or (not args.once and args.count is None):
        pr.stop()                          # systemd stop: nothing vouches for the proxy any more
    if not last:
        emit(args, {"ticks": 0, "last": None, "history": []}, "stopped before the first probe")
        return
    emit(args, {"ticks": pr.ticks, "last": last[-1], "history": last}, _probe_text(last))


def cmd_status(args):
    st = status()
    emit(args, st, _status_text(st))


def add_cli(sub, common) -> None:
    """Register ``etsfctl keepalive`` (called from etsf.cli.build_parser)."""
    s = sub.add_parser("keepalive", help="in-kernel answers to keep-alive OPTIONS: proxy prober and status")
    ksub = s.add_subparsers(dest="kcmd", metavar="ACTION", parser_class=type(s))
    ksub.required = True
    a = ksub.add_parser("probe", parents=[common],
                        help="probe the local proxy with OPTIONS and open the kernel's answer gate while it answers")
    g = a.add_mutually_exclusive_group()
    g.add_argument("--once", action="store_true", help="one probe, then exit (the gate stays as written)")
    g.add_argument("--count", type=T.count, metavar="N", help="stop after N probes (the gate stays as written)")
    a.add_argument("--interval", type=T.seconds, metavar="S",
                   help="seconds between probes (default: the policy's keepalive.probe.interval_ms)")
    a.add_argument("--policy", type=T.path, default=DEFAULT_POLICY, metavar="FILE",
                   help=f"policy file with the keepalive section (default {DEFAULT_POLICY})")
    a.add_argument("--heartbeat-file", type=T.path, metavar="FILE",
                   help="rewritten every probe (watched by the fail-safe heartbeat rule)")
    a.set_defaults(func=cmd_probe)
    a = ksub.add_parser("status", parents=[common],
                        help="answer gate, prober state and the kernel's keep-alive counters")
    a.set_defaults(func=cmd_status)
