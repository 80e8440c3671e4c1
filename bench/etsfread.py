"""What a benchmark reads of the eTSF instance under a pin root: the SIP parses by hook
(etsf_parse_stats, summed over the CPUs) and every pinned program's run count and time (with
kernel.bpf_stats_enabled), plus the difference of two such readings per program."""
from __future__ import annotations

import contextlib
from pathlib import Path


def parse_counts(pin_root: str) -> dict | None:
    """{hook name: {sip_parses, meta_used, meta_missing}}, None when the map cannot be read (a
    figure of the report, not of the run)."""
    from etsf import bpf, layout  # pylint: disable=import-outside-toplevel
    try:
        with bpf.open_map("etsf_parse_stats", pin_root) as m:
            out = {}
            for h in layout.Hook:
                vals = [layout.ParseStat.from_buffer_copy(v) for v in m.lookup_percpu(int(h).to_bytes(4, "little"))]
                out[h.name] = {f: sum(getattr(v, f) for v in vals) for f in ("sip_parses", "meta_used", "meta_missing")}
            return out
    except Exception:  # noqa: BLE001 - a figure of the report, not of the run
        return None


def prog_runs(pin_root: str, extra: dict | None = None) -> dict:
    """{program: {run_cnt, run_time_ns}} of the programs pinned under pin_root/progs and of
    `extra` ({name: program id}, e.g. the benchmark's own programs)."""
    from etsf import bpf  # pylint: disable=import-outside-toplevel
    out = {}
    progs = Path(pin_root) / "progs"
    for f in sorted(progs.iterdir()) if progs.is_dir() else []:
        with contextlib.suppress(Exception):
            info = bpf.prog_info_pinned(f)
            out[f.name] = {"run_cnt": info["run_cnt"], "run_time_ns": info["run_time_ns"]}
    for name, prog_id in (extra or {}).items():
        with contextlib.suppress(Exception):
            info = bpf.prog_info(prog_id)
            out[name] = {"run_cnt": info["run_cnt"], "run_time_ns": info["run_time_ns"]}
    return out


def runs_delta(before: dict, after: dict) -> dict:
    """after - before per program, with ns per run (None without runs)."""
    out = {}
    for name, st in after.items():
        b0 = before.get(name, {"run_cnt": 0, "run_time_ns": 0})
        cnt, ns = st["run_cnt"] - b0["run_cnt"], st["run_time_ns"] - b0["run_time_ns"]
        out[name] = {"run_cnt": cnt, "run_time_ns": ns, "ns_per_run": ns / cnt if cnt else None}
    return out
