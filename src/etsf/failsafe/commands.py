"""``etsfctl failsafe ...`` (run the watchdog, ack, status)."""

from __future__ import annotations

import os
import time

from .. import inputs
from ..output import emit
from .config import DEFAULT_CONFIG, MAX_ITERATIONS, load_config, validate
from .watchdog import ack, run, status


# ---------------------------------------------------------------------------
# CLI (etsfctl failsafe ...)
# ---------------------------------------------------------------------------


def _cmd_run(args):
    cfg = load_config(args.config if args.config and (args.config != DEFAULT_CONFIG
                                                      or os.path.exists(args.config)) else None)
    if args.interval is not None:
        cfg = validate({**cfg, "interval_s": args.interval})
    if args.check:
        emit(args, cfg, f"failsafe config valid: {args.config}")
        return
    iterations = 1 if args.once else args.iterations
    doc = run(cfg, iterations)
    emit(args, doc, f"failsafe: {doc.get('state')} after {doc.get('ticks')} ticks"
         + (f" (tripped: {doc['tripped_rule']})" if doc.get("tripped_rule") else ""))


def _cmd_ack(args):
    res = ack()
    emit(args, res, f"failsafe: re-engaged ({res['by']})" if res["changed"] else "failsafe: already engaged")


def _cmd_status(args):
    res = status()
    st = res["state"]
    if st is None:
        text = "failsafe: no state (watchdog never ran)"
    else:
        age = time.time() - float(st.get("updated_at", 0))
        text = (f"failsafe: {st['state']} since {time.strftime('%H:%M:%S', time.localtime(st['since']))}; "
                f"trips {st['trips_total']}; last rule {(st.get('last_trip') or {}).get('rule') or '-'}; "
                f"updated {age:.1f}s ago; watchdog "
                f"{'running' if res['running'] else 'stopped' if st.get('stopped') else 'NOT running'}")
    emit(args, res, text)
    if args.require_running and not res["running"]:
        raise SystemExit(1)              # the output above says why; the rollout polls this


def add_cli(sub, common) -> None:
    T = inputs  # pylint: disable=invalid-name
    s = sub.add_parser("failsafe", parents=[common], help="fail-safe watchdog (daemon), ack, status")
    s.add_argument("--config", type=T.path, default=DEFAULT_CONFIG, metavar="FILE")
    s.add_argument("--once", action="store_true", help="one tick, then exit")
    s.add_argument("--iterations", type=T.int_range(1, MAX_ITERATIONS), metavar="N", help="N ticks, then exit")
    s.add_argument("--interval", type=T.float_range(0.01, 60, lo_open=False), metavar="S",
                   help="override interval_s (0.01..60)")
    s.add_argument("--check", action="store_true", help="validate the config file and exit")
    s.set_defaults(func=_cmd_run)
    fsub = s.add_subparsers(dest="fcmd", metavar="ACTION", parser_class=type(s))
    a = fsub.add_parser("ack", parents=[common], help="re-engage after a fail-safe revert")
    a.set_defaults(func=_cmd_ack)
    a = fsub.add_parser("status", parents=[common], help="current fail-safe state and recent audit entries")
    a.add_argument("--require-running", action="store_true",
                   help="exit 1 unless a watchdog process is alive and ticking")
    a.set_defaults(func=_cmd_status)
