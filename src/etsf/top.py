"""``etsfctl top`` -- a live terminal view for an operator during an incident.

Every refresh takes one exporter snapshot (batch map reads, bounded cost) and
shows, over the last interval: packet rates per SIP method (where classified: XDP or TC
ingress), the hook of each interface,
drops by reason, response codes, and the latency quantiles of the
transactions completed in the interval (from histogram deltas), plus the
fail-safe / overload / policy state.  ``--once`` takes two snapshots one
interval apart and prints one frame; ``--iterations N`` prints N frames; the
refresh interval is at least 0.2 s.  ``--json`` prints one JSON document per
frame.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from .telemetry import reader as _exp
from . import kpi as _kpi
from .overload.state import read_state as overload_auto_state

MIN_INTERVAL = 0.2
MAX_ITERATIONS_DEFAULT = 1_000_000      # "until interrupted", still bounded


def _dsub(a: dict, b: dict) -> dict:
    return {k: a[k] - b.get(k, 0) for k in a if a[k] - b.get(k, 0) > 0}


def frame(prev: dict, cur: dict) -> dict[str, Any]:
    """Rates and quantiles between two snapshots."""
    dt = max(1e-9, cur["mono"] - prev["mono"])

    def stats_index(s):
        d = {}
        for h, m, v, r, p, _b in s["stats"]:
            d[(h, m, v, r)] = p
        return d
    ds = _dsub(stats_index(cur), stats_index(prev))
    methods: dict[str, float] = {}
    drops: dict[str, float] = {}
    for (h, m, v, r), n in ds.items():
        if h not in ("XDP", "TC_INGRESS"):        # the classifying hooks (each packet meets one)
            continue
        if m != "UNKNOWN":
            methods[m] = methods.get(m, 0) + n / dt
        if v == "DROP":
            drops[r] = drops.get(r, 0) + n / dt
    lat = {}
    for key, h in cur["hist"].items():
        old = prev["hist"].get(key)
        slots = [a - (old["slots"][i] if old else 0) for i, a in enumerate(h["slots"])]
        n = sum(slots)
        if n <= 0:
            continue
        lat[f"{key[0]}/{key[1]}"] = {
            "count": n,
            "p50_ms": _ms(_exp.quantile(0.5, slots)),
            "p90_ms": _ms(_exp.quantile(0.9, slots)),
            "p99_ms": _ms(_exp.quantile(0.99, slots)),
        }
    codes = _dsub(cur["codes"], prev["codes"])
    inv = {c: n for (m, c), n in codes.items() if m == "INVITE"}
    return {
        "interval_s": round(dt, 3),
        "rates_pps": {m: round(v, 2) for m, v in sorted(methods.items(), key=lambda x: -x[1])},
        "drops_pps": {r: round(v, 2) for r, v in sorted(drops.items(), key=lambda x: -x[1])},
        "responses": {f"{m}/{c}": n for (m, c), n in sorted(codes.items())},
        "latency": dict(sorted(lat.items())),
        "kpi": {k: (None if v is None else round(v, 4)) if k != "attempts" else v
                for k, v in _kpi.compute(inv).items()},
        "state": cur["ctl"],
        "hooks": {n: r["hook"] for n, r in sorted(cur.get("hooks", {}).items())},
        "overload_auto": overload_auto_state(),
        "scrape_s": round(cur["cost"]["seconds"], 4),
    }


def _ms(v):
    return None if v is None else round(v * 1000, 3)


def render(f: dict) -> str:
    st = f.get("state") or {}
    lines = [
        f"eTSF top  interval {f['interval_s']}s  scrape {f['scrape_s'] * 1000:.1f} ms  "
        f"bypass={st.get('bypass')} deadman_tripped={st.get('deadman_tripped')} "
        f"overload={st.get('overload_level')} policy_gen={st.get('generation')}",
    ]
    oa = f.get("overload_auto")
    if oa and "level" in oa:
        lines.append(f"overload controller: level {oa['level']}  admit "
                     f"{oa.get('admit_rate') or 'off'}/s/cpu  pressure {oa.get('pressure')} "
                     f"({oa.get('signal') or '-'})  changes {oa.get('changes_total', 0)}"
                     f"{'  PINNED' if oa.get('pinned') else ''}")
    if f.get("hooks"):
        lines.append("hooks: " + "  ".join(f"{n}={h or 'steer only'}" for n, h in f["hooks"].items()))
    lines += ["", "RATES (classified at XDP / TC ingress, pkt/s)"]
    lines += [f"  {m:<10} {v:>10.1f}" for m, v in f["rates_pps"].items()] or ["  -"]
    lines += ["", "DROPS by reason (pkt/s)"]
    lines += [f"  {r:<12} {v:>10.1f}" for r, v in f["drops_pps"].items()] or ["  -"]
    lines += ["", "LATENCY (transactions completed in the interval)",
              f"  {'method/stage':<22} {'n':>7} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9}"]
    for k, v in f["latency"].items():
        lines.append(f"  {k:<22} {v['count']:>7} {_fmt(v['p50_ms'])} {_fmt(v['p90_ms'])} "
                     f"{_fmt(v['p99_ms'])}")
    if not f["latency"]:
        lines.append("  -")
    k = f["kpi"]
    lines += ["", "INVITE KPIs (interval): " + "  ".join(
        f"{n.upper()}={'-' if k[n] is None else f'{k[n]:.3f}'}" for n in _kpi.KPIS)
        + f"  attempts={k['attempts']}"]
    if f["responses"]:
        lines.append("RESPONSES: " + "  ".join(f"{c}={n}" for c, n in f["responses"].items()))
    return "\n".join(lines)


def _fmt(v):
    return f"{'-':>9}" if v is None else f"{v:>9.2f}"


def run(interval: float = 2.0, iterations: int | None = None, as_json: bool = False,
        out=None, root: str | None = None, clear: bool | None = None) -> list[dict]:
    out = out or sys.stdout
    interval = max(MIN_INTERVAL, float(interval))
    n = MAX_ITERATIONS_DEFAULT if iterations is None else max(1, int(iterations))
    clear = out.isatty() and not as_json if clear is None else clear
    frames = []
    prev = _exp.snapshot(root, programs=False)
    for _frame in range(n):
        time.sleep(interval)
        cur = _exp.snapshot(root, programs=False)
        f = frame(prev, cur)
        if iterations is not None:          # bounded runs return their frames (tests)
            frames.append(f)
        if as_json:
            out.write(json.dumps(f, sort_keys=True, default=str) + "\n")
        else:
            out.write(("\x1b[H\x1b[2J" if clear else "") + render(f) + "\n")
        out.flush()
        prev = cur
    return frames


def main(args) -> None:
    iterations = 1 if args.once else args.iterations
    if iterations is not None and iterations < 1:
        raise ValueError("--iterations must be >= 1")
    run(interval=args.interval, iterations=iterations, as_json=getattr(args, "json", False))
