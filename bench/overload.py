"""Overload sweep on the full stack: goodput vs offered INVITE load, per configuration.

    python bench/overload.py --out DIR                  # full sweep (D, A, C, F, K; <= 25 min)
    python bench/overload.py --out DIR --quick          # CI form (<= 90 s): D and F, two short steps
    python bench/overload.py --out DIR --budget-min 8   # what does not fit is skipped and listed
    python bench/overload.py --out DIR --interleave     # C, F, K step by step on one topology

The Kamailio topology of bench/run.py (UAC -> node -> Kamailio pod -> UAS, built by
bench/topology.py, kube-proxy rules from bench/kubeproxy.py).  First the proxy's capacity is
measured on the first configuration (D, the direct path): the highest call rate sustained with
every call completed, no failure, >= 90 % of the offered rate achieved and no datagram dropped at
Kamailio's socket; doubling, then bisecting, bounded.  Then each configuration is offered
0.5x .. 4x that capacity, one step per multiple.  Per step: offered vs achieved rate, goodput
(calls that got their 200 and completed the BYE, per second), INVITE->200 p50/p99 of answered
calls, 503s, sipp's retransmissions, drops at Kamailio's socket (/proc/net/udp in the pod), the
machine's load average before and after, CPU accounting that adds up (bench/cpuacct.py), and for
the eTSF configurations eTSF's admission counters and, with the controller, its level and
admission rate over the step (sampled from its state file).

No eTSF (D, A), eTSF without admission (C), eTSF with a fixed admission rate at the measured
capacity (F: what an operator who load-tested the proxy would configure) and eTSF with the
adaptive controller (K: ``etsfctl overload auto`` as the service runs it, policy
``overload.auto``) all run against the same measured capacity in one run, so the targets of
the overload control are ratios within that run (``targets``).  The proxy's capacity drifts
from minute to minute, so configurations run one after the other meet different capacities:
``--interleave`` runs the eTSF fast-path configurations on one shared topology, for each
multiple one step each in alternating order (``--repeats`` rounds), switching only the
admission between steps, and the report pairs K with F step by step (``paired``).

Interface for the benchmark orchestrator: ``run(out, budget_s, quick) -> dict`` (JSON
serialisable; ``table_md`` the markdown table, ``report_md`` a report section, ``skipped``
what did not fit; writes overload.json, overload.md and overload_goodput.png under ``out``).
"""
from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(HERE), str(ROOT / "src"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import run as harness  # noqa: E402  pylint: disable=wrong-import-position
import topology as T  # noqa: E402  pylint: disable=wrong-import-position
import plotting  # noqa: E402  pylint: disable=wrong-import-position
import cpuacct  # noqa: E402  pylint: disable=wrong-import-position

SCHEMA = "overload/1"
SCENARIO = HERE / "templates" / "overload_uac.xml"
PLOT = "overload_goodput.png"

PROFILES = {
    # the sweep the paper-style curve is drawn from; ~20 min on an idle 2-core host.  The proxy
    # is the only bottleneck: Kamailio gets 20 % of its CPU (a cgroup quota), so sipp's UAC and
    # UAS generate 4x its capacity on the other CPU with room to spare, and RPS keeps the node's
    # receive work on the node's CPU; shared memory ample (no 500 "out of memory")
    "full": dict(configs=["D", "A", "C", "F", "K"], multiples=[0.5, 1, 1.5, 2, 3, 4], step_s=30, services=10000,
                 capacity=None, probe_s=None, cap_start=200, cap_max=6400, cap_bisect=2, cap_floor=20,
                 recv_timeout_s=4, max_retrans=5, hold_ms=100, settle_s=1.0, transport="un",
                 kamailio_children=4, budget_s=25 * 60, fixed_burst_ms=100, retry_after_s=5, auto={},
                 sample_s=0.5, kamailio_shm_mb=1024, proxy_cpu_pct=20, rps=True, proxy_work_iters=0, fixed_shares=[1.0],
                 interleave=False, repeats=1),
    # CI: proves the harness (consistent counts, for an eTSF configuration with admission too),
    # not the host's capacity: a fixed small guess
    "quick": dict(configs=["D", "F"], multiples=[0.5, 2], step_s=5, services=0, capacity=100,
                  probe_s=3, cap_start=50, cap_max=400, cap_bisect=1, cap_floor=10,
                  recv_timeout_s=4, max_retrans=5, hold_ms=100, settle_s=0.5, transport="un",
                  kamailio_children=2, budget_s=90, fixed_burst_ms=100, retry_after_s=5, auto={},
                  sample_s=0.5, kamailio_shm_mb=128, proxy_cpu_pct=None, rps=False, proxy_work_iters=0, fixed_shares=[1.0],
                  interleave=False, repeats=1),
}

# configurations by letter (same names as bench/run.py): (name, topology kind[, admission]).
# admission "fixed": `etsfctl overload admit` at the measured capacity for the whole sweep;
# "auto": the controller (`etsfctl overload auto`) with the policy's overload.auto settings
CONFIG_KINDS = {"D": ("D-direct", "direct"), "A": ("A-ipt-nft-{n}", "iptables-nft"),
                "C": ("C-etsf-fastpath", "etsf-fastpath"),
                "F": ("F-etsf-fixed-admit", "etsf-fastpath", "fixed"),
                "K": ("K-etsf-controller", "etsf-fastpath", "auto")}
# rough setup + teardown cost of a configuration's topology (rules, BPF attach), for planning:
# seconds without rules + seconds per 10,000 kube-proxy rules
SETUP_S = {"direct": (12.0, 0.0), "iptables-nft": (8.0, 22.0), "etsf-fastpath": (12.0, 23.0)}
# a controller's tick of state-file sample: [seconds into the step, level, admit rate, pressure, signal,
# the tick's signal values (queue, drops, pdd_ms, ratio_5xx, refused, served, admitted, ...)]
SAMPLE_FIELDS = ("t", "level", "admit_rate", "pressure", "signal", "signals")


def setup_cost(kind: str, services: int) -> float:
    base, per10k = SETUP_S.get(kind, (12.0, 23.0))
    return base + (0.0 if kind == "direct" else per10k * services / 10000)


def log(msg):
    harness.log(f"[overload] {msg}")


def config(letter: str, services: int) -> dict:
    name, kind, *adm = CONFIG_KINDS[letter]
    return {"letter": letter, "name": name.format(n=services), "kind": kind,
            "services": 0 if kind == "direct" else services, "admission": adm[0] if adm else None, "steps": []}


def expand_fixed(cfgs: list[dict], shares: list[float]) -> list[dict]:
    """F once per admission share (of the measured capacity), in the order given: the
    trade-off between goodput and the latency of admitted calls at steady admission rates,
    which no controller can beat."""
    out = []
    for c in cfgs:
        if c.get("admission") != "fixed":
            out.append(c)
            continue
        for sh in shares:
            f = dict(c, steps=[], fixed_share=float(sh))
            if float(sh) != 1.0:
                f["name"] = f"{c['name']}-{float(sh):g}"
            out.append(f)
    return out


# ---------------------------------------------------------------------------
# parsing sipp's files (pure; tests/unit/test_bench_overload.py)
# ---------------------------------------------------------------------------

def read_rows(text: str) -> list[dict]:
    """Rows of a sipp -trace_stat or -trace_counts file (';'-separated, header first)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        return []
    head = lines[0].rstrip(";").split(";")
    return [dict(zip(head, ln.rstrip(";").split(";"))) for ln in lines[1:]]


def _int(row: dict, key: str) -> int:
    try:
        return int(row.get(key, 0))
    except ValueError:
        return 0


def epoch(stamp: str) -> float | None:
    """sipp's time stamps are 'date<TAB>time<TAB>epoch.us': the epoch, in seconds."""
    try:
        return float(stamp.split("\t")[-1])
    except (AttributeError, ValueError):
        return None


def elapsed(row: dict) -> float | None:
    """Seconds since sipp started, at the row (microseconds; ElapsedTime(C) has whole seconds)."""
    a, b = epoch(row.get("StartTime", "")), epoch(row.get("CurrentTime", ""))
    return None if a is None or b is None else b - a


def creation_seconds(rows: list[dict]) -> float | None:
    """When sipp had created its last call: the length of the sending window actually achieved.
    The periodic rows are ~1 s apart, so the first row showing the final count can be up to 1 s
    late: the end is extrapolated from the row before it at the creation rate of the interval
    before that (never past the row that shows it)."""
    pts = [(elapsed(r), _int(r, "TotalCallCreated")) for r in rows]
    pts = [(t, c) for t, c in pts if t is not None]
    if not pts:
        return None
    final = pts[-1][1]
    i = next(k for k, pt in enumerate(pts) if pt[1] >= final)
    t1 = pts[i][0]
    if i == 0:
        return t1
    t0, c0 = pts[i - 1]
    tp, cp = pts[i - 2] if i >= 2 else (0.0, 0)
    rate = (c0 - cp) / (t0 - tp) if t0 > tp and c0 > cp else 0.0
    return min(t1, t0 + (final - c0) / rate) if rate > 0 else t1


def final_codes(counts: dict) -> dict[str, int]:
    """Calls ended by a final error response, by code: the '<index>_<code>_Recv' columns
    (code 300-699) of sipp's -trace_counts file (the scenario's reject branch)."""
    out: dict[str, int] = {}
    for k in counts:
        parts = k.split("_")
        if len(parts) == 3 and parts[2] == "Recv" and parts[1].isdigit() and 300 <= int(parts[1]) <= 699:
            if n := _int(counts, k):
                out[parts[1]] = out.get(parts[1], 0) + n
    return dict(sorted(out.items()))


TIMEOUT_CAUSES = ("FailedTimeoutOnRecv(C)", "FailedMaxUDPRetrans(C)", "FailedTimeoutOnSend(C)")


def summarize(rows: list[dict], counts: dict, offered: float, planned: int) -> dict:
    """The step's arithmetic.  sipp counts a call that took the scenario's reject branch (a
    final error response such as 503) as successful: it is a failure here.  Rates are per
    second of the sending window, the planned one (planned / offered) or the achieved one if
    sipp took longer to create the calls, so goodput <= achieved <= offered always holds."""
    last = rows[-1] if rows else {}
    attempted = _int(last, "TotalCallCreated")
    sipp_ok, sipp_failed = _int(last, "SuccessfulCall(C)"), _int(last, "FailedCall(C)")
    codes = final_codes(counts)
    rejected = min(sum(codes.values()), sipp_ok)
    completed = sipp_ok - rejected
    window = planned / offered if offered > 0 else 0.0
    t_create = creation_seconds(rows)
    span = max(window, t_create or 0.0) or 1.0
    causes = {k[len("Failed"):-len("(C)")]: _int(last, k) for k in last
              if k.startswith("Failed") and k.endswith("(C)") and k != "FailedCall(C)" and _int(last, k)}
    causes.update({f"final {c}": n for c, n in codes.items()})
    return {"offered_cps": offered, "planned": planned, "attempted": attempted, "completed": completed,
            "failed": sipp_failed + rejected, "unfinished": max(0, attempted - sipp_ok - sipp_failed),
            "failed_timeout": sum(_int(last, k) for k in TIMEOUT_CAUSES), "responses_503": codes.get("503", 0),
            "final_codes": codes, "fail_causes": causes, "retransmissions": _int(last, "Retransmissions(C)"),
            "window_s": round(window, 3), "creation_s": None if t_create is None else round(t_create, 3),
            "elapsed_s": None if elapsed(last) is None else round(elapsed(last), 3),
            "achieved_cps": round(attempted / span, 2), "goodput_cps": round(completed / span, 2)}


def proxy_socket(text: str, addr: str, port: int) -> dict | None:
    """rx_queue (bytes) and drops of the UDP socket bound to addr:port in a /proc/net/udp text."""
    ip = int.from_bytes(ipaddress.IPv4Address(addr).packed, sys.byteorder)
    want = f"{ip:08X}:{port:04X}"
    for ln in text.splitlines()[1:]:
        f = ln.split()
        if len(f) >= 13 and f[1].upper() == want:
            return {"rx_queue": int(f[4].split(":")[1], 16), "drops": int(f[12])}
    return None


def out_of_memory(log: Path, offset: int = 0) -> int:
    """Transactions Kamailio could not create for lack of shared memory ("new_t(): out of mem"
    in its log from offset on): under overload tm keeps a transaction per INVITE until its
    timers fire, the backlog fills shared memory and every new INVITE gets a 500."""
    if not log.exists():
        return 0
    with open(log, "rb") as f:
        f.seek(offset)
        return sum(1 for ln in f if b"new_t(): out of mem" in ln)


def sipp_aborted(rc: int | None, log_text: str, hit_deadline: bool) -> str | None:
    """Why sipp died before finishing its calls, or None.  sipp 3.6 asserts on an INVITE
    transaction that gets a second final response before its ACK went out (e.g. a 500 from the
    proxy then the UAS's 200), which happens under heavy overload: the process aborts and the
    step's counts stop there."""
    for ln in log_text.splitlines():
        if "Assertion" in ln or "Segmentation fault" in ln:
            return ln.strip()[:200]
    if rc is not None and not hit_deadline and (rc < 0 or rc >= 128):
        return f"sipp exit status {rc}"
    return None


# ---------------------------------------------------------------------------
# capacity search and planning (pure)
# ---------------------------------------------------------------------------

def capacity_ok(rec: dict) -> bool:
    """A probe passes with every planned call completed, none failed or left unfinished, >= 90 %
    of the offered rate achieved, no datagram dropped at the proxy's socket and (almost) no
    retransmission: at most one per 1,000 calls.  A caller retransmits an INVITE unanswered for
    500 ms (RFC 3261 timer A): a proxy that makes it do so has a backlog growing by the excess
    rate, which a short probe hides in the socket's buffer (recorded: a 6 s probe at 350/s
    passed without a drop against a proxy that serves 317/s; the 20 s step at that rate then
    had INVITE->200 p99 252 ms and 156 retransmissions)."""
    retrans = rec.get("retransmissions")
    return (rec["completed"] == rec["planned"] and rec["failed"] == 0 and rec["unfinished"] == 0
            and rec["achieved_cps"] >= 0.9 * rec["offered_cps"] and rec.get("proxy_drops") == 0
            and retrans is not None and retrans <= rec["planned"] // 1000)


def capacity_search(probe, start: int, cap_max: int, bisect_steps: int, floor: int = 10):
    """Doubling from start until a probe fails (or cap_max passes), then bisect_steps halvings
    between the last good and the first bad rate (from 0 if the start already fails).  probe(rate)
    returns a record with "ok", or None when the time budget is out.  Returns (capacity or None,
    [records])."""
    steps: list[dict] = []
    best, bad, rate = 0, None, int(start)
    while True:
        rec = probe(rate)
        if rec is None:
            return best or None, steps
        steps.append(rec)
        if not rec["ok"]:
            bad = rate
            break
        best = rate
        if rate >= cap_max:
            return best, steps
        rate = min(int(cap_max), rate * 2)
    for _step in range(bisect_steps):
        mid = (best + bad) // 2
        if mid <= best or mid < floor:
            break
        rec = probe(mid)
        if rec is None:
            break
        steps.append(rec)
        if rec["ok"]:
            best = mid
        else:
            bad = mid
    return best or None, steps


def step_cost(p: dict, multiple: float, worst: bool = False) -> float:
    """Seconds of one step: the sending window, the drain of the calls still in flight and the
    settle pause.  Above capacity the drain is typically one receive timeout (calls waiting for
    their 200), at worst a whole call's life (worst=True: the check before starting a step)."""
    drain = 1.5
    if multiple > 1:
        drain = call_life(p) if worst else p["recv_timeout_s"] + p["hold_ms"] / 1000 + 1.0
    return p["step_s"] + drain + p["settle_s"] + 1.0


def call_life(p: dict) -> float:
    """Longest a call can live: INVITE->200 and BYE->200 each bounded by recv_timeout, + hold."""
    return 2 * p["recv_timeout_s"] + p["hold_ms"] / 1000 + 1.0


def plan(p: dict, kinds: list[str], left_s: float, first_in_place: bool = True,
         group: int = 0, repeats: int = 1) -> tuple[list[float], float]:
    """The multiples every configuration can run within left_s (the lowest ones: a budget cut
    drops the highest loads for all configurations alike) and the planned seconds.  kinds:
    the configurations run one after the other, each on its own topology; group: how many more
    are interleaved on one shared eTSF topology, each `repeats` steps per multiple and each
    step preceded by the switch of admission."""
    mults = sorted(p["multiples"])
    setup = sum(setup_cost(k, p["services"]) for k in (kinds[1:] if first_in_place else kinds))
    if group:
        setup += setup_cost("etsf-fastpath", p["services"])
    for k in range(len(mults), -1, -1):
        need = (setup + len(kinds) * sum(step_cost(p, m) for m in mults[:k])
                + group * repeats * sum(step_cost(p, m) + SWITCH_S for m in mults[:k]))
        if need <= left_s:
            return mults[:k], need
    return [], setup


# ---------------------------------------------------------------------------
# interleaving (pure)
# ---------------------------------------------------------------------------

# switching an eTSF configuration's admission in place between interleaved steps: etsf_ctl
# reset and re-set (etsfctl calls, a Python start each), for K the controller's start (until
# its first state file) and its stop; under 1 s on an idle host, twice that for a loaded one
SWITCH_S = 2.0
# what the shared topology's setup recorded, copied to each interleaved configuration (the
# placement table and the report read them per configuration)
SHARED_SETUP = ("_dir", "rules", "rules_load_seconds", "background", "policy", "proxy_ready_s", "proxy_cpu", "rps",
                "buffers", "uac_xdp")


def split_interleaved(cfgs: list[dict]) -> tuple[list[dict], list[dict]]:
    """(configurations run one after the other, each on its own topology; those interleaved
    on one shared topology).  The interleaved ones are the eTSF fast-path configurations after
    the first (the first measures the capacity on its own): they differ only in admission,
    which can be switched between steps without rebuilding 10,000 services."""
    alone = cfgs[:1] + [c for c in cfgs[1:] if c["kind"] != "etsf-fastpath"]
    return alone, [c for c in cfgs[1:] if c["kind"] == "etsf-fastpath"]


def interleave_orders(names: list[str], mults: list[float], repeats: int = 1) -> list[dict]:
    """The interleaved schedule: per multiple (in the order given) `repeats` rounds, each
    running every configuration once, the order reversed from one round to the next (F, K then
    K, F): each configuration is first as often as last, so neither meets the host's drift
    systematically earlier than its partner.  Rounds are numbered across the whole run."""
    out: list[dict] = []
    for m in mults:
        for r in range(repeats):
            g = len(out)
            out.append({"round": g, "multiple": m, "repeat": r,
                        "order": list(names) if g % 2 == 0 else list(reversed(names))})
    return out


def round_cost(p: dict, multiple: float, n: int) -> float:
    """Seconds one interleaved round of n steps can take at worst: checked before it starts,
    so a round is run whole or skipped whole (a half round has no pair)."""
    return n * (step_cost(p, multiple, worst=True) + SWITCH_S)


# ---------------------------------------------------------------------------
# admission and the controller (pure)
# ---------------------------------------------------------------------------

ADMIT_FIELDS = ("admitted", "rejected", "retrans_admitted", "retrans_rejected", "replied", "reply_unfit")


def fixed_admission(cap: int, p: dict, share: float = 1.0) -> dict:
    """The fixed policy: new INVITEs admitted at *share* of the measured capacity, a bucket of
    fixed_burst_ms of it, refused ones answered 503 with Retry-After.  The rate is per CPU and
    every INVITE of this topology is received on one CPU (the UAC's veth delivers on the
    sender's CPU, sipp's): the per-CPU counters of each step show it (``admission.cpus``)."""
    rate = max(1, int(round(cap * share)))
    return {"rate": rate, "burst": max(1, rate * int(p["fixed_burst_ms"]) // 1000),
            "retry_after": int(p["retry_after_s"])}


def auto_policy(p: dict) -> str:
    """The policy section that switches the controller on: the defaults of overload.auto
    (docs/overload.md) unless the profile's ``auto`` entry overrides some."""
    lines = ["overload:", "  auto:", "    enabled: true", f"    proxy_ports: [{T.PORT}]"]
    lines += [f"    {k}: {v}" for k, v in sorted((p.get("auto") or {}).items())]
    return "\n".join(lines) + "\n"


def admission_delta(a: list[dict] | None, b: list[dict] | None) -> dict | None:
    """etsf_admit counters between two per-CPU readings: totals and, per CPU that decided
    anything, its new INVITEs (admitted + rejected): where admission ran."""
    if a is None or b is None or len(a) != len(b):
        return None
    per = [{k: y[k] - x[k] for k in ADMIT_FIELDS} for x, y in zip(a, b)]
    tot = {k: sum(c[k] for c in per) for k in ADMIT_FIELDS}
    tot["cpus"] = {str(i): c["admitted"] + c["rejected"] for i, c in enumerate(per) if c["admitted"] + c["rejected"]}
    return tot


def controller_summary(samples: list[list], window_s: float) -> dict | None:
    """The controller over one step from its state-file samples ([t, level, rate, pressure,
    signal], t in seconds since sipp started): seconds until it first engaged (level > 0 or a
    rate), highest level, share of the sending window with admission on, the admission rate
    (tokens/s per CPU) while on: min, median and the last, and the changes seen."""
    if not samples:
        return None
    win = [x for x in samples if x[0] <= window_s] or samples
    on = [x for x in win if x[1] or x[2]]
    rates = sorted(x[2] for x in win if x[2])
    changes = sum(1 for x, y in zip(samples, samples[1:]) if (x[1], x[2]) != (y[1], y[2]))
    sigs: dict[str, int] = {}
    for x in win:
        if x[4] and (x[1] or x[2]):
            sigs[x[4]] = sigs.get(x[4], 0) + 1
    return {"samples": len(samples), "engaged_after_s": on[0][0] if on else None,
            "level_max": max(x[1] for x in samples), "level_end": samples[-1][1],
            "on_share": round(len(on) / len(win), 3),
            "rate_min": rates[0] if rates else None, "rate_median": rates[len(rates) // 2] if rates else None,
            "rate_end": samples[-1][2], "changes_seen": changes, "signals": sigs}


def _step_at(cfg: dict, m: float) -> dict | None:
    return next((s for s in cfg.get("steps") or [] if s["multiple"] == m and not s.get("sipp_aborted")), None)


def targets(res: dict, at: float = 3.0) -> list[dict]:
    """The overload-control targets at 3x capacity, for every configuration with admission:
    goodput >= 0.9 x capacity; goodput >= 2 x the goodput without eTSF (each of D and A that
    ran); INVITE->200 p99 of answered calls <= 2 x its value at 0.5x.  sipp's response times
    come in steps of its clock (rtd_quantum_ms), so a p99 of 0 at 0.5x reads as "under one
    step": the bound is 2 x max(p99, one step).
    Each entry: config, target, value, bound, ok (None when a step is missing)."""
    cap = (res.get("capacity") or {}).get("cps")
    q = rtd_quantum_ms(res)
    cfgs = res.get("configs") or []
    base = [c for c in cfgs if c.get("kind") in ("direct", "iptables-nft")]
    out = []
    for c in cfgs:
        if not c.get("admission"):
            continue
        s, s0 = _step_at(c, at), _step_at(c, 0.5)
        g = s["goodput_cps"] if s else None
        out.append({"config": c["name"], "target": f"goodput at {at:g}x >= 0.9 x capacity", "value": g,
                    "bound": None if not cap else round(0.9 * cap, 1),
                    "ok": None if g is None or not cap else g >= 0.9 * cap})
        for b in base:
            sb = _step_at(b, at)
            gb = sb["goodput_cps"] if sb else None
            out.append({"config": c["name"], "target": f"goodput at {at:g}x >= 2 x {b['name']}'s", "value": g,
                        "bound": None if gb is None else round(2 * gb, 1),
                        "ok": None if g is None or gb is None else g >= 2 * gb})
        p99 = ((s or {}).get("invite_200_ms") or {}).get("p99")
        p0 = ((s0 or {}).get("invite_200_ms") or {}).get("p99")
        out.append({"config": c["name"], "target": f"INVITE->200 p99 at {at:g}x <= 2 x p99 at 0.5x", "value": p99,
                    "bound": None if p0 is None else 2 * max(p0, q),
                    "ok": None if p99 is None or p0 is None else p99 <= 2 * max(p0, q)})
    return out


def rtd_quantum_ms(res: dict) -> float:
    """The step of sipp's response-time clock in this run: the greatest common divisor of every
    non-zero INVITE->200 p50/p99 (whole ms) of its steps; 1 ms when none is non-zero.  On this
    host every reading is a multiple of 4 ms (0, 4, 8, ..., 148, 1180): a latency under one step
    reads 0, so the step, not 1 ms, is the smallest p99 the run can tell from 0."""
    vals = {round(v) for c in res.get("configs") or [] for st in c.get("steps") or []
            for v in ((st.get("invite_200_ms") or {}).get(k) for k in ("p50", "p99")) if v}
    return float(math.gcd(*vals)) if vals else 1.0


def targets_md(res: dict) -> str:
    rows = targets(res)
    if not rows:
        return ""
    lines = ["| config | target | value | bound | met |", "|---|---|---|---|---|"]
    for r in rows:
        met = "–" if r["ok"] is None else "yes" if r["ok"] else "**no**"
        lines.append(f"| {r['config']} | {r['target']} | {_f(r['value'], 1)} | {_f(r['bound'], 1)} | {met} |")
    return "\n".join(lines) + "\n"


def paired(res: dict) -> list[dict]:
    """K against each F of the same interleaved round, per multiple (lowest first).  Each pair:
    the two goodputs, K/F, which ran first and how far apart the two steps started; per
    multiple: the median K/F and how many pairs had K >= 0.9 x capacity and K >= 0.95 x F.  Two
    steps of one round met the same minutes of the host, so their ratio is not decided by the
    proxy's drift the way a ratio of two configurations run minutes apart is.  A pair with an
    aborted step is listed, not counted."""
    cap = (res.get("capacity") or {}).get("cps")
    cfgs = [c for c in res.get("configs") or [] if any("round" in s for s in c.get("steps") or [])]
    out = []
    for k in (c for c in cfgs if c.get("admission") == "auto"):
        for f in (c for c in cfgs if c.get("admission") == "fixed"):
            f_at = {s["round"]: s for s in f["steps"] if "round" in s}
            by_m: dict[float, list[dict]] = {}
            for s in k["steps"]:
                t = f_at.get(s.get("round"))
                if t is None:
                    continue
                kg, fg = s["goodput_cps"], t["goodput_cps"]
                t0, t1 = s.get("started_unix"), t.get("started_unix")
                by_m.setdefault(s["multiple"], []).append({
                    "round": s["round"], "k_goodput": kg, "f_goodput": fg,
                    "ratio": round(kg / fg, 3) if fg else None, "k_first": s["position"] < t["position"],
                    "gap_s": None if t0 is None or t1 is None else round(abs(t1 - t0), 1),
                    "aborted": bool(s.get("sipp_aborted") or t.get("sipp_aborted"))})
            for m in sorted(by_m):
                ok = [x for x in by_m[m] if not x["aborted"]]
                ratios = [x["ratio"] for x in ok if x["ratio"] is not None]
                out.append({"k": k["name"], "f": f["name"], "multiple": m, "pairs": by_m[m], "n": len(ok),
                            "ratio_median": round(statistics.median(ratios), 3) if ratios else None,
                            "k_at_capacity": None if not cap else sum(x["k_goodput"] >= 0.9 * cap for x in ok),
                            "k_near_f": sum(x["k_goodput"] >= 0.95 * x["f_goodput"] for x in ok)})
    return out


def paired_md(res: dict) -> str:
    rows = paired(res)
    if not rows:
        return ""
    lines = ["| K vs F | load | pairs | K / F goodput per pair (first, starts apart) | median K/F "
             "| K ≥ 0.9 × capacity | K ≥ 0.95 × F |", "|" + "---|" * 7]
    for r in rows:
        each = []
        for x in r["pairs"]:
            txt = (f"{x['k_goodput']:.0f} / {x['f_goodput']:.0f} = {_f(x['ratio'], 2)} "
                   f"({'K' if x['k_first'] else 'F'} first, {_f(x['gap_s'])} s)")
            each.append(txt + (" aborted, not counted" if x["aborted"] else ""))
        cap_ok = "–" if r["k_at_capacity"] is None else f"{r['k_at_capacity']}/{r['n']}"
        lines.append(f"| {r['k']} vs {r['f']} | {r['multiple']:g}× | {r['n']} | {'; '.join(each)} | "
                     f"{_f(r['ratio_median'], 2)} | {cap_ok} | {r['k_near_f']}/{r['n']} |")
    return "\n".join(lines) + "\n"


def placement_md(res: dict) -> str:
    """Where the work ran, per configuration (the proxy's CPU quota, RPS, the socket buffers in
    force) and per step (each CPU's busy share, Kamailio's CPU and the share of its quota periods
    it was throttled in, sipp's UAC and UAS): which side was the bottleneck."""
    cfgs = [c for c in res.get("configs", []) if c.get("steps")]
    if not cfgs:
        return ""
    out = []
    for c in cfgs:
        q, b = c.get("proxy_cpu") or {}, c.get("buffers") or {}
        quota = f"{_f(q.get('pct_of_one_cpu'))} % of cpu1" if q else "the whole of cpu1"
        out.append(f"* {c['name']}: Kamailio {quota}; RPS {c.get('rps') or 'off'}; Kamailio's socket rb "
                   f"{b.get('proxy_rcvbuf_bytes', '–')} B (net.core.rmem_default {b.get('net.core.rmem_default', '–')}, "
                   f"rmem_max {b.get('net.core.rmem_max', '–')})")
    lines = ["| config | load | cpu0 busy | cpu1 busy | Kamailio CPU | quota periods throttled | sipp UAC + UAS CPU |"
             " controller CPU | other tenants' CPU |", "|" + "---|" * 9]
    for c in cfgs:
        for s in c["steps"]:
            a = s.get("cpu_acct") or {}
            el = a.get("elapsed_s") or 0
            busy = a.get("cpu_busy_s") or {}
            parts = a.get("parts_s") or {}
            thr = s.get("proxy_throttled") or {}

            def share(v):
                return "–" if v is None or not el else f"{v / el:.2f}"
            lines.append(
                f"| {c['name']} | {s['multiple']:g}× | {share(busy.get('0'))} | {share(busy.get('1'))} | "
                f"{share(parts.get('kamailio'))} | "
                f"{_f(100 * thr['throttled'] / thr['periods'], 0) + ' %' if thr.get('periods') else '–'} | "
                f"{share((parts.get('sipp UAC') or 0) + (parts.get('sipp UAS') or 0))} | "
                f"{share(parts.get('controller'))} | {share(parts.get('other tasks'))} |")
    return "\n".join(out) + "\n\n" + "\n".join(lines) + "\n"


def admission_table_md(res: dict) -> str:
    """Per step of the eTSF configurations: eTSF's admission counters, the controller over
    the step, the machine's load average, and whether the CPU accounting adds up."""
    head = ("| config | load | new INVITEs admitted | rejected (503) | retrans. admitted / rejected | 503 sent "
            "| no 503 possible | receive CPUs | controller: engaged after s, level max, rate min / median / end "
            "| loadavg before → after | CPU adds up |")
    lines = [head, "|" + "---|" * 11]
    for c in res.get("configs", []):
        for s in c.get("steps", []):
            a = s.get("admission") or {}
            k = s.get("controller") or {}
            la = s.get("loadavg") or {}
            cpu = s.get("cpu_acct") or {}
            ctl = "–" if not k else (f"{_f(k.get('engaged_after_s'), 1)}, {k.get('level_max')}, "
                                     f"{_f(k.get('rate_min'))} / {_f(k.get('rate_median'))} / {_f(k.get('rate_end'))}")
            adds = "–" if not cpu else (("yes" if cpu.get("adds_up") else "no")
                                        + f" ({_f(100 * (cpu.get('residual_ratio') or 0), 1)} % residual)")
            lines.append(
                f"| {c['name']} | {s['multiple']:g}× | {a.get('admitted', '–')} | {a.get('rejected', '–')} | "
                f"{a.get('retrans_admitted', '–')} / {a.get('retrans_rejected', '–')} | {a.get('replied', '–')} | "
                f"{a.get('reply_unfit', '–')} | {', '.join(a.get('cpus', {})) or '–'} | {ctl} | "
                f"{la.get('before', '–')} → {la.get('after', '–')} | {adds} |")
    return "\n".join(lines) + "\n"


def _state(path) -> dict | None:
    try:
        doc = json.loads(_read(path) or "null")
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def merge_exited(b: dict, seen: dict, skip_pids: set) -> int:
    """Put into snapshot b the tasks seen during the window that exited before it closed, with
    their last sampled CPU time (the machine is shared: other tenants' short-lived tasks would
    otherwise be in no part), except those of skip_pids (accounted exactly elsewhere).
    Returns their CPU time since they started (ns)."""
    ns = 0
    for tid, v in seen.items():
        if tid not in b["tasks"] and v[0] not in skip_pids:
            b["tasks"][tid] = v
            ns += v[2]
    return ns


def cpu_account(a: dict, b: dict, roles: dict[int, str], ru, merged_ns: int = 0) -> dict:
    """bench/cpuacct.py's accounting of one step (every task on the machine, grouped by role,
    against idle accounting; tasks that exited inside the window with their last sample), with
    the sipp UAC's exact CPU from its rusage (it exits inside the window).  Not in any part:
    what exited tasks used after their last sample and tasks that lived between two samples
    (on a shared host, other tenants' short-lived processes): the residual.  merged_ns (their
    sampled lives) is kept as a figure; their parents' reaped-children time is no estimate of
    the rest (it holds whole lives, grandchildren included)."""
    acc = cpuacct.account(a, b, roles)
    extra = {}
    if ru is not None:
        extra["sipp UAC"] = ru.ru_utime + ru.ru_stime
    for k, v in extra.items():
        acc["parts_s"][k] = v
        acc["tasks_sum_s"] += v
    acc["residual_s"] = acc["whole_s"] - acc["tasks_sum_s"]
    acc["residual_ratio"] = acc["residual_s"] / acc["whole_s"] if acc["whole_s"] > 0 else None
    acc["adds_up"], acc["adds_up_why"] = cpuacct.adds_up(acc)
    acc["exited_sampled_ns"] = merged_ns
    r = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in acc.items()
         if k not in ("parts_s", "ctx_switches")}
    r["parts_s"] = {k: round(v, 3) for k, v in sorted(acc["parts_s"].items())}
    return r


def loadavg(text: str) -> float | None:
    """The 1-minute load average from /proc/loadavg."""
    try:
        return float(text.split()[0])
    except (IndexError, ValueError):
        return None


# ---------------------------------------------------------------------------
# rendering (pure)
# ---------------------------------------------------------------------------

def _f(v, nd=0):
    return "–" if v is None else f"{v:.{nd}f}"


def table_md(res: dict) -> str:
    cap = (res.get("capacity") or {}).get("cps")
    head = ("| config | load | offered /s | achieved /s | goodput /s | goodput ÷ capacity | attempted | completed"
            " | failed (timeouts) | 503 | all error responses | retrans | INVITE→200 p50 / p99 ms | proxy socket drops |")
    lines = [head, "|" + "---|" * 14]
    for c in res.get("configs", []):
        for s in c.get("steps", []):
            lat = s.get("invite_200_ms") or {}
            gx = s["goodput_cps"] / cap if cap else None
            flag = " (sipp aborted)" if s.get("sipp_aborted") else " (stopped at deadline)" if s.get("hit_deadline") else ""
            flag = (f" (round {s['round']})" if "round" in s else "") + flag
            lines.append(
                f"| {c['name']} | {s['multiple']:g}×{flag} | {_f(s['offered_cps'])} | {_f(s['achieved_cps'])} | "
                f"{_f(s['goodput_cps'])} | {_f(gx, 2)} | {s['attempted']} | {s['completed']} | "
                f"{s['failed']} ({s['failed_timeout']}) | {s['responses_503']} | "
                f"{', '.join(f'{k}: {v}' for k, v in (s.get('final_codes') or {}).items()) or 0} | {s['retransmissions']} | "
                f"{_f(lat.get('p50'))} / {_f(lat.get('p99'))} | {_f(s.get('proxy_drops'))} |")
        if c.get("error"):
            lines.append(f"| {c['name']} | error: {c['error'][:100]} |" + " |" * 12)
    return "\n".join(lines) + "\n"


def observations(res: dict) -> list[str]:
    """Per configuration: peak goodput, goodput at the highest load (and at 3x, the load the
    admission-control target is set at) as a fraction of capacity, and INVITE->200 p99 there
    against 0.5x."""
    cap = (res.get("capacity") or {}).get("cps")
    out = []
    for c in res.get("configs", []):
        st = [s for s in c.get("steps") or [] if not s.get("sipp_aborted")]
        if not st or not cap:
            continue
        peak = max(st, key=lambda s: s["goodput_cps"])
        parts = [f"peak goodput {peak['goodput_cps']:.0f}/s at {peak['multiple']:g}×"]
        base = next((s for s in st if s["multiple"] == 0.5), None)
        for s in [x for x in st if x["multiple"] == 3 and x is not st[-1]] + [st[-1]]:
            txt = f"at {s['multiple']:g}×: {s['goodput_cps'] / cap:.2f}× capacity"
            p99, p99b = (s.get("invite_200_ms") or {}).get("p99"), ((base or {}).get("invite_200_ms") or {}).get("p99")
            if p99 is not None and p99b is not None and s is not base:
                txt += f", INVITE→200 p99 {p99:.0f} ms (0.5×: {p99b:.0f} ms)"
            parts.append(txt)
        oom = [x for x in st if x.get("proxy_out_of_memory")]
        if oom:
            parts.append(f"Kamailio out of shared memory for new transactions from {oom[0]['multiple']:g}× on "
                         f"({sum(x['proxy_out_of_memory'] for x in oom)} INVITE requests refused, retransmissions included)")
        out.append(f"{c['name']}: " + "; ".join(parts))
    return out


def report_md(res: dict, plot_name: str | None = PLOT) -> str:
    cap = res.get("capacity") or {}
    p = res.get("params", {})
    out = ["## Overload sweep", ""]
    if cap.get("cps"):
        how = cap.get("from", "")
        probes = ", ".join(f"{s['offered_cps']:g}/s {'ok' if s['ok'] else 'FAIL'}" for s in cap.get("probes", []))
        out.append(f"Proxy capacity: **{cap['cps']} calls/s** ({how}{'; probes: ' + probes if probes else ''}). "
                   "A probe passes with every call completed, none failed, >= 90 % of the offered rate "
                   "achieved and no datagram dropped at Kamailio's socket.")
    else:
        out.append(f"Proxy capacity: not found ({cap.get('why', 'no probe passed')}); no sweep.")
    out += ["", f"Steps of {p.get('step_s')} s, `-t {p.get('transport')}`, Kamailio shared memory "
                f"`-m {p.get('kamailio_shm_mb', 128)}` MB, sipp `-recv_timeout "
                f"{p.get('recv_timeout_s')} s -max_retrans {p.get('max_retrans')}`; pinning: "
                f"{', '.join(f'{k} {v}' for k, v in ((res.get('host') or {}).get('pinning') or {}).items())}. "
                "Goodput = calls that got their 200 and completed the BYE, per second of the sending "
                "window; failed = all failed calls, (timeouts) those that timed out; error responses: calls "
                "answered with a final error response, by code.", "",
            res.get("table_md") or table_md(res)]
    pl = placement_md(res)
    if pl:
        out += ["Placement and CPU per step, as shares of one CPU over the step (bench/cpuacct.py; "
                "\"other tenants\" are processes outside the benchmark on this shared host). The proxy is "
                "the bottleneck when its quota periods are throttled and cpu0 (the load generators) has "
                "room.", "", pl]
    if any(c.get("kind", "").startswith("etsf") for c in res.get("configs", [])):
        fxs = [(c["name"], c.get("fixed_share", 1.0), c["fixed_admission"]) for c in res["configs"]
               if c.get("fixed_admission")]
        ctl = next((c["controller"] for c in res["configs"] if (c.get("controller") or {}).get("settings")), None)
        out += ["eTSF's admission of new INVITEs (`etsf_admit`, deltas over the step), the controller over the "
                "step (state-file samples every "
                f"{p.get('sample_s')} s: seconds until it engaged, highest level, admission rate in tokens/s per "
                "CPU), the machine's 1-minute load average before and after the step (other tenants of the host "
                "included) and whether the step's CPU accounting adds up (bench/cpuacct.py: every task "
                "against idle accounting, residual ≤ 10 %).", ""]
        inter = res.get("interleaved") or {}
        for name, share, fx in fxs:
            at = "the measured capacity" if share == 1.0 else f"{share:g} × the measured capacity"
            when = "set again before each of its steps" if name in inter.get("configs", []) else "set once"
            out += [f"Fixed policy ({name}): `etsfctl overload admit --rate {fx['rate']} --burst {fx['burst']} "
                    f"--retry-after {fx['retry_after']}` — admission at {at}, {when}.", ""]
        if ctl:
            st = ctl["settings"]
            out += ["Controller (K): `etsfctl overload auto` in the node, reading Kamailio's socket through "
                    "`--proc-net /proc/<kamailio pid>/net`; targets: " +
                    ", ".join(f"{k} {st[k]}" for k in (
                        "target_queue", "target_pdd_ms", "target_5xx_ratio", "target_cpu", "min_rate",
                        "max_rate", "dwell_s", "max_step", "hysteresis", "probe_hold_s", "interval_ms") if k in st) +
                    ("; started afresh for each of its steps (level 0, admission off, no state file)"
                     if inter else "") +
                    f"; {ctl.get('audit_entries', 0)} audit entries "
                    f"({', '.join(f'{k}: {v}' for k, v in (ctl.get('audit_by_signal') or {}).items()) or 'none'}).", ""]
        out += [admission_table_md(res)]
    inter = res.get("interleaved") or {}
    if inter:
        out += [f"**Interleaved** ({', '.join(inter.get('configs', []))}): one eTSF topology for all of them; "
                f"per multiple {inter.get('repeats', 1)} round(s), each running every one of them once, the order "
                "reversed from round to round; before each step etsf_ctl is reset (level 0, admission off) and the "
                "configuration's admission set again: F's fixed rate, or K's controller started afresh and "
                "stopped after the step. The first configuration and those of other topologies ran before, "
                "each on its own topology.", ""]
        pmd = paired_md(res)
        if pmd:
            out += ["**Paired steps**: K and F of the same round met the same minutes of the host (the proxy's "
                    "capacity drifts by ±20 % from minute to minute), so K/F within a round is not decided by "
                    "drift:", "", pmd]
    tmd = targets_md(res)
    if tmd:
        first = "; repeated steps: the first at each multiple" if inter.get("repeats", 1) > 1 else ""
        out += [f"**Targets at 3× capacity** (ratios within this run; p99 bound 2 × max(p99 at 0.5×, "
                f"{rtd_quantum_ms(res):g} ms): sipp's response times come in steps of {rtd_quantum_ms(res):g} ms "
                f"in this run{first}):", "", tmd]
    obs = observations(res)
    if obs:
        out += ["Below capacity goodput follows the offered load; a line that bends down above it is the "
                "overload collapse (docs/benchmark.md, \"Overload sweep\").", ""]
        out += [f"* {o}" for o in obs] + [""]
    ab = [f"{c['name']} {s['multiple']:g}×" for c in res.get("configs", []) for s in c.get("steps", [])
          if s.get("sipp_aborted")]
    if ab:
        out += ["(sipp aborted): the load generator died during the step (" + ", ".join(ab) + "; sipp's own "
                "assertion on a second final response to an INVITE before its ACK): its counts stop there, "
                "so the row is partial and not a point of the curve (× in the plot).", ""]
    if plot_name:
        out += [f"![goodput vs offered load]({plot_name})", ""]
    if res.get("skipped"):
        what = [f"{s['config']} {s['multiple']:g}×{' round ' + str(s['round']) if 'round' in s else ''} ({s['why']})"
                if "multiple" in s
                else f"{s['config']} ({s['why']})" for s in res["skipped"]]
        out.append("Skipped: " + "; ".join(what) + ".")
        out.append("")
    return "\n".join(out)


def plot(res: dict, path: Path) -> bool:
    """Goodput vs offered load as a multiple of the measured capacity (the overload-collapse
    curve), INVITE->200 p99 of answered calls vs the same, and the controller's admission rate
    over the 3x step (or its highest one) when it ran."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cap = (res.get("capacity") or {}).get("cps")
    ctl = [c for c in res.get("configs", []) if any(s.get("controller_samples") for s in c.get("steps") or [])]
    fig, axes = plt.subplots(1, 3 if ctl else 2, figsize=(16 if ctl else 11, 4.2))
    ax, ax2 = axes[0], axes[1]
    top = 0.0
    for c in res.get("configs", []):
        allst = c.get("steps") or []
        st = [s for s in allst if not s.get("sipp_aborted")]
        bad = [s for s in allst if s.get("sipp_aborted")]
        if not allst:
            continue
        top = max(top, *[s["multiple"] for s in allst])
        line = ax.plot([s["multiple"] for s in st], [s["goodput_cps"] for s in st], marker="o", label=c["name"])
        if bad:
            ax.plot([s["multiple"] for s in bad], [s["goodput_cps"] for s in bad], ls="", marker="x",
                    color=line[0].get_color(), label=f"{c['name']}: sipp aborted (partial)")
        p99 = [(s["multiple"], (s.get("invite_200_ms") or {}).get("p99")) for s in st]
        p99 = [(a, b) for a, b in p99 if b]
        if p99:
            xs, ys = zip(*p99)
            ax2.plot(xs, ys, marker="o", label=c["name"])
    if top and cap:
        ax.plot([0, top], [0, top * cap], ls=":", color="grey", label="goodput = offered")
    if cap:
        ax.axhline(cap, ls="--", color="black", lw=0.8, label=f"capacity {cap}/s")
        ax.axhline(0.9 * cap, ls=":", color="black", lw=0.6, label="target: 0.9 × capacity")
    plotting.label(ax, "offered INVITE load (× measured capacity)", "goodput (completed calls/s)",
                   "Goodput vs offered load", legend=7)
    ax.grid(alpha=0.3)
    ax2.set_xlabel("offered INVITE load (× measured capacity)")
    ax2.set_ylabel("INVITE→200 p99 (ms, answered calls)")
    ax2.set_yscale("log")
    ax2.set_title("Latency of answered calls")
    ax2.grid(alpha=0.3)
    if ax2.lines:
        ax2.legend(fontsize=8)
    if ctl:
        ax3 = axes[2]
        for c in ctl:
            st = [s for s in c["steps"] if s.get("controller_samples")]
            s = next((x for x in st if x["multiple"] == 3), st[-1])
            xs = [x[0] for x in s["controller_samples"]]
            ax3.step(xs, [x[2] for x in s["controller_samples"]], where="post", label=f"{c['name']}: admission rate")
            ax3.axvline(s["window_s"], ls=":", color="grey")
            ax3b = ax3.twinx()
            ax3b.step(xs, [x[1] for x in s["controller_samples"]], where="post", color="tab:red", lw=0.8)
            ax3b.set_ylabel("overload level", color="tab:red")
            ax3b.set_ylim(-0.1, 3.5)
            ax3.set_title(f"Controller at {s['multiple']:g}× ({s['offered_cps']:g} calls/s offered)")
        if cap:
            ax3.axhline(cap, ls="--", color="black", lw=0.8, label=f"capacity {cap}/s")
        ax3.set_xlabel("seconds since the step started (dotted: end of sending)")
        ax3.set_ylabel("admission rate (new INVITEs/s per CPU; 0 = off)")
        ax3.grid(alpha=0.3)
        ax3.legend(fontsize=7)
    plotting.save(fig, path)
    return True


# ---------------------------------------------------------------------------
# placement: the proxy's CPU quota, receive steering, socket buffers
# ---------------------------------------------------------------------------

CPU_PERIOD_US = 10000


def cpu_cgroup(name: str, root: str = "/sys/fs/cgroup") -> tuple[str, Path] | None:
    """("v1" | "v2", directory) of a new CPU cgroup for the proxy, or None when the host has no
    CPU controller to put a quota on: cgroup v1's cpu hierarchy, else v2 with cpu enabled."""
    v1 = Path(root) / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists():
        return "v1", v1 / name
    if "cpu" in _read(Path(root) / "cgroup.subtree_control").split():
        return "v2", Path(root) / name
    return None


def quota_lines(version: str, pct: float, period_us: int = CPU_PERIOD_US) -> dict[str, str]:
    """The files and values that give a cgroup pct % of one CPU, in periods of period_us (short
    periods: a proxy throttled for most of a long period would answer in bursts), longer when
    the quota would be under the kernel's minimum of 1 ms."""
    period_us = max(period_us, int(math.ceil(1000 * 100 / pct)))
    quota = int(round(period_us * pct / 100))
    if version == "v1":
        return {"cpu.cfs_period_us": str(period_us), "cpu.cfs_quota_us": str(quota)}
    return {"cpu.max": f"{quota} {period_us}"}


def rcvbuf(ss_text: str, port: int) -> int | None:
    """The receive buffer (bytes, skmem rb) of the UDP socket bound to port in `ss -uamn` output."""
    lines = ss_text.splitlines()
    for i, ln in enumerate(lines):
        f = ln.split()
        if len(f) >= 4 and f[3].endswith(f":{port}"):
            rest = " ".join(lines[i:i + 2])
            k = rest.find("skmem:(")
            if k < 0:
                return None
            for item in rest[k + 7:].split(")", maxsplit=1)[0].split(","):
                if item.startswith("rb") and item[2:].isdigit():
                    return int(item[2:])
    return None


# ---------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------

class _Bench(harness.Bench):
    """The harness's Bench with the sweep's policy: the UAC is not a trusted peer (a trusted
    source bypasses the overload level and admission: the crowd of callers is not one), plus
    a section per configuration (the controller's)."""
    policy_extra = ""

    def policy(self, fastpath: bool) -> str:
        text = "".join(ln for ln in super().policy(fastpath).splitlines(keepends=True) if not ln.startswith("trust:"))
        return text + self.policy_extra


def _read(path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Sweep:
    def __init__(self, out: Path, budget_s: float, prof: dict, profile: str, work: Path | None = None):
        self.out, self.p, self.budget_s = out, prof, budget_s
        hp = dict(harness.PROFILES["full"])
        hp.update(kamailio_children=prof["kamailio_children"], flood_sources=0, settle=prof["settle_s"],
                  hold_ms=prof["hold_ms"], kamailio_shm_mb=prof.get("kamailio_shm_mb", 128),
                  proxy_work_iters=prof.get("proxy_work_iters") or 0)
        args = types.SimpleNamespace(work=str(work) if work else None, budget_min=budget_s / 60,
                                     profile=f"overload-{profile}", only=None, keep_pcaps=False)
        self.b = _Bench(args, hp, out)
        # own namespace names, so an orchestrator's Bench in the same process never collides
        self.b.tag = f"o{os.getpid() % 100000}"
        self.t0 = time.monotonic()
        self.deadline = self.t0 + budget_s
        self.res: dict = {"schema": SCHEMA, "profile": profile, "started": harness.now_utc().isoformat(),
                          "budget_s": budget_s, "params": dict(prof), "configs": [], "skipped": [],
                          "capacity": {}, "pids": [],
                          "namespaces": [f"{T.NS_PREFIX}{x}{self.b.tag}" for x in "hcpu"],
                          "pin_root": self.b.pin_root, "work_dir": str(self.b.work)}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def sock(self) -> dict:
        r = self.b.topo.sh(self.b.topo.pod, "cat", "/proc/net/udp", check=False)
        return proxy_socket(r.stdout, T.POD, T.PORT) or {"rx_queue": None, "drops": None}

    def admit_counters(self, cfg: dict) -> list[dict] | None:
        """etsf_admit per CPU (None without eTSF or when the map cannot be read)."""
        if not cfg["kind"].startswith("etsf"):
            return None
        from etsf import layout
        vals = self.pinned_entry0("etsf_admit", percpu=True)
        if vals is None:
            return None
        return [{k: int(getattr(layout.Admit.from_bytes(v), k)) for k in ADMIT_FIELDS} for v in vals]

    def pinned_entry0(self, name: str, percpu: bool = False):
        """Entry 0 of the node's pinned array map `name` (per CPU: a list of values), read only;
        None when it cannot be read: a missing map is a missing figure, the caller decides."""
        from etsf import bpfmaps
        try:
            m = bpfmaps.open_map(name, self.b.pin_root, read_only=True)
            try:
                key = (0).to_bytes(4, "little")
                return (m.lookup_percpu(key) or []) if percpu else m.lookup(key)
            finally:
                m.close()
        except Exception:  # noqa: BLE001 - see the docstring
            return None

    def state_file(self) -> Path:
        return Path(self.b.env["ETSF_STATE_DIR"]) / "overload.json"

    def roles(self) -> dict[int, str]:
        """{pid: role} of the long-lived processes of the configuration (each in its session)."""
        out = {}
        for q in self.b.topo.procs.procs:
            if q.poll() is not None:
                continue
            args = " ".join(map(str, q.args))
            role = ("kamailio" if "kamailio" in args else "sipp UAS" if "uas-stat.csv" in args
                    else "controller" if " overload auto" in args else "other bench")
            out.update({pid: role for pid in cpuacct.session_pids(q.pid)})
        return out

    def wait_sipp(self, sp, t0: float, limit_s: float, sample: bool):
        """Wait for sipp (its exit status and rusage: the UAC's CPU, gone before the window
        closes) and sample the controller's state file every sample_s meanwhile, every task on
        the machine every second; past limit_s the group is terminated, then killed.  Returns
        (rc, rusage or None, samples, {"tasks": last samples, "uac_pids": sipp's})."""
        samples: list[list] = []
        seen: dict = {"tasks": {}, "uac_pids": {sp.pid}}
        nxt, nxt_acct, sig = t0, t0 + 1.0, None
        while True:
            pid, status, ru = os.wait4(sp.pid, os.WNOHANG)
            now = time.monotonic()
            if pid:
                sp.returncode = os.waitstatus_to_exitcode(status)
                break
            if now >= nxt_acct:
                # every task once a second: those that exit before the window closes keep
                # their last sample (cpu_account); sipp's own are accounted from its rusage
                seen["uac_pids"] |= set(cpuacct.session_pids(sp.pid))
                seen["tasks"].update(cpuacct.tasks())
                nxt_acct += 1.0
            if sample and now >= nxt:
                doc = _state(self.state_file())
                if doc is not None:
                    samples.append([round(now - t0, 2), int(doc.get("level") or 0), int(doc.get("admit_rate") or 0),
                                    doc.get("pressure"), doc.get("signal"), doc.get("signals") or {}])
                nxt += self.p["sample_s"]
            if now > t0 + limit_s and sig != signal.SIGKILL:
                sig = signal.SIGTERM if sig is None else signal.SIGKILL
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(sp.pid, sig)
                limit_s += 10
            time.sleep(0.05)
        self.b.topo.stop(sp, timeout=5)          # closes its log
        return sp.returncode, ru, samples, seen

    def setup_admission(self, cfg: dict, cap: int | None):
        """What the configuration adds on top of the topology: the veth NAPI program at the UAC
        (every configuration alike), the fixed admission rate, or the controller."""
        self.uac_xdp(cfg)
        self.admission(cfg, cap)

    def uac_xdp(self, cfg: dict):
        b = self.b
        obj = Path(b.env["ETSF_BUILD_DIR"]) / "xdp_count.bpf.o"
        b.topo.sh(b.topo.uac, "ip", "link", "set", "dev", T.UAC_IF, "xdp", "obj", str(obj), "sec", "xdp")
        cfg["uac_xdp"] = ("xdp_count (XDP_PASS) on the UAC's veth: a veth delivers XDP_TX frames (the in-kernel 503) "
                          "only to a peer in NAPI mode")

    def admission(self, cfg: dict, cap: int | None):
        """The fixed admission rate, or the controller started (once its first tick is in the
        state file)."""
        b = self.b
        if cfg.get("admission") == "fixed":
            fx = fixed_admission(cap, self.p, cfg.get("fixed_share", 1.0))
            b.etsfctl("overload", "admit", "--rate", str(fx["rate"]), "--burst", str(fx["burst"]),
                      "--retry-after", str(fx["retry_after"]))
            cfg["fixed_admission"] = fx
        elif cfg.get("admission") == "auto":
            from etsf.policy.schema import load_file
            pol = cfg["_dir"] / "policy.yml"
            settings = dict(load_file(str(pol))[0].overload_auto)
            kpid = self.kamailio_pid()
            cmd = [sys.executable, "-m", "etsf", "overload", "auto", "--policy", str(pol),
                   "--proc-net", f"/proc/{kpid}/net", "--heartbeat-file", str(cfg["_dir"] / "overload.heartbeat")]
            # nsenter --net like the harness's etsfctl calls, not `ip netns exec`: that one
            # remounts /sys in a new mount namespace, where the bpffs with the pins is not
            # appended: interleaved, one log holds every start of the controller
            with open(cfg["_dir"] / "controller.log", "a") as fh:
                self.ctl = subprocess.Popen(["nsenter", f"--net=/run/netns/{b.topo.node}", "timeout", "-k", "5",
                                             "3000", "taskset", "-c", harness.CPU_LOAD, *cmd], stdout=fh,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, env=b.env)
            b.topo.procs.procs.append(self.ctl)      # teardown kills it whatever happens
            self.res["pids"].append(self.ctl.pid)
            t_end = time.monotonic() + 20
            while _state(self.state_file()) is None:
                if time.monotonic() > t_end or self.ctl.poll() is not None:
                    raise RuntimeError(f"controller not running: {_read(cfg['_dir'] / 'controller.log')[-500:]}")
                time.sleep(0.2)
            cfg["controller"] = {"settings": settings, "command": " ".join(cmd[1:]), "cpu": f"cpu{harness.CPU_LOAD}"}

    def stop_controller(self, cfg: dict):
        if getattr(self, "ctl", None) is None:
            return
        self.b.topo.stop(self.ctl, timeout=10, sig=signal.SIGTERM)
        self.ctl = None
        lines = _read(Path(self.b.env["ETSF_STATE_DIR"]) / "failsafe-audit.jsonl").splitlines()
        ev = [json.loads(ln) for ln in lines if '"overload_' in ln]
        cfg.setdefault("controller", {})["audit_entries"] = len(ev)
        cfg["controller"]["audit_by_signal"] = {}
        for e in ev:
            k = str(e.get("rule"))
            cfg["controller"]["audit_by_signal"][k] = cfg["controller"]["audit_by_signal"].get(k, 0) + 1
        cfg["controller"]["state_end"] = _state(self.state_file())

    def limit_proxy(self, cfg: dict):
        """Kamailio (every process of its session) into a CPU cgroup with proxy_cpu_pct % of one
        CPU: the proxy, not the load generators, is then the bottleneck up to the highest load
        (sipp's UAC and UAS share the other CPU and must generate 4x its capacity)."""
        pct = self.p.get("proxy_cpu_pct")
        if not pct or pct >= 100:
            return
        cg = cpu_cgroup(f"etsf-bench-{self.b.tag}")
        if cg is None:
            raise RuntimeError("proxy_cpu_pct: no CPU cgroup controller on this host")
        version, path = cg
        path.mkdir(exist_ok=True)
        self.cgroup = path
        lines = quota_lines(version, float(pct))
        for k, v in lines.items():
            (path / k).write_text(v + "\n")
        pids = sorted(cpuacct.session_pids(self.b.kam.pid))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, OSError):
                (path / "cgroup.procs").write_text(f"{pid}\n")
        inside = {int(x) for x in _read(path / "cgroup.procs").split()}
        kam = [pid for pid in pids if _read(f"/proc/{pid}/comm").strip() == "kamailio"]
        if not kam or not set(kam) <= inside:
            raise RuntimeError(f"proxy_cpu_pct: kamailio {kam} not all in {path} ({sorted(inside)})")
        cfg["proxy_cpu"] = {"pct_of_one_cpu": float(pct), "cgroup": f"{version}:{path}", **lines,
                            "processes": len(inside)}

    def unlimit_proxy(self):
        path, self.cgroup = getattr(self, "cgroup", None), None
        if path is not None:
            with contextlib.suppress(OSError):
                path.rmdir()

    def throttled(self) -> dict | None:
        """The proxy cgroup's throttling counters (periods throttled, time throttled in s)."""
        path = getattr(self, "cgroup", None)
        if path is None:
            return None
        st = dict(ln.split()[:2] for ln in _read(path / "cpu.stat").splitlines() if len(ln.split()) >= 2)
        ns = int(st.get("throttled_time", 0)) or int(st.get("throttled_usec", 0)) * 1000
        return {"periods": int(st.get("nr_periods", 0)), "throttled": int(st.get("nr_throttled", 0)),
                "throttled_s": ns / 1e9}

    def steer_receive(self, cfg: dict):
        """RPS on every veth end, so each side's receive work runs on its own CPU: the node's
        ends (uplink, the pod's and the UAS's host ends) and the pod's interface on the proxy's
        CPU, the peers' ends (UAC, UAS) on the load CPU.  A veth runs the receiver's stack in the
        sender's softirq: without this the node's forwarding, eTSF's TC program (admission and
        its 503s) and the enqueue into Kamailio's socket run on sipp's CPU, and at 3x the load
        generator's CPU carries the node's work too.  (XDP programs still run on the sender's
        CPU: RPS acts after them.)"""
        if not self.p.get("rps"):
            return
        cfg["rps"] = harness.steer_rps(self.b.topo)

    def socket_buffers(self) -> dict:
        """What bounds the proxy's queue: Kamailio's socket receive buffer in force (skmem rb:
        Kamailio raises it itself up to its maxbuffer) and the pod namespace's rmem sysctls."""
        topo = self.b.topo
        ss = topo.sh(topo.pod, "ss", "-uamn", check=False).stdout
        out = {"proxy_rcvbuf_bytes": rcvbuf(ss, T.PORT)}
        for k in ("rmem_default", "rmem_max"):
            v = topo.sh(topo.pod, "cat", f"/proc/sys/net/core/{k}", check=False).stdout.strip()
            out[f"net.core.{k}"] = int(v) if v.isdigit() else None
        return out

    def kamailio_pid(self) -> int:
        token = self.b.kam_token.encode()
        for pid in sorted(int(x) for x in os.listdir("/proc") if x.isdigit()):
            with contextlib.suppress(OSError):
                if (token in Path(f"/proc/{pid}/cmdline").read_bytes()
                        and _read(f"/proc/{pid}/comm").strip() == "kamailio"):
                    return pid
        raise RuntimeError("kamailio's pid not found")

    def step(self, cfg: dict, rate: float, seconds: float, label: str) -> dict:
        b, p = self.b, self.p
        b.run_seq += 1
        d = cfg["_dir"] / f"{b.run_seq:03d}-{label}-{rate:g}"
        d.mkdir()
        target = f"{T.POD if cfg['kind'] == 'direct' else T.VIP}:{T.PORT}"
        planned = max(1, int(round(rate * seconds)))
        life = call_life(p)
        hard = int(math.ceil(planned / rate + life + 10))
        cmd = ["sipp", "-sf", str(SCENARIO), target, "-s", "bench", "-i", T.UAC, "-p", "5070",
               "-t", p["transport"], "-max_socket", "15000", "-m", str(planned), "-r", f"{rate:g}", "-rp", "1000",
               # open loop: the concurrency limit only bounds a runaway, it never paces the load
               "-l", str(int(rate * life) + 50), "-d", str(p["hold_ms"]), "-max_retrans", str(p["max_retrans"]),
               "-recv_timeout", str(int(p["recv_timeout_s"] * 1000)), "-timeout", f"{hard}s", "-nostdin",
               "-trace_stat", "-stf", str(d / "stat.csv"), "-fd", "1", "-trace_counts",
               "-trace_rtt", "-rtt_freq", "1"]
        klog = cfg["_dir"] / "kamailio" / "kamailio.log"
        klog0 = klog.stat().st_size if klog.exists() else 0
        s0, udp0 = self.sock(), b.udp_errors()
        adm0 = self.admit_counters(cfg)
        load0 = loadavg(_read("/proc/loadavg"))
        roles = self.roles()
        roles[os.getpid()] = "harness"
        acc0 = cpuacct.snapshot()
        acc0["reaped"].pop(os.getpid(), None)
        thr0 = self.throttled()
        kam0, c0, t0 = harness.proc_cpu(b.kam_token), harness.cpu_snap(), time.monotonic()
        started = time.time()
        sp = b.topo.popen(b.topo.uac, cmd, d / "sipp.log", limit=hard + 5, cpu=harness.CPU_LOAD)
        self.res["pids"].append(sp.pid)
        rc, ru, samples, seen = self.wait_sipp(sp, t0, hard + 15, sample=cfg.get("admission") == "auto")
        wall = time.monotonic() - t0
        c1, kam1 = harness.cpu_snap(), harness.proc_cpu(b.kam_token)
        acc1 = cpuacct.snapshot()
        acc1["reaped"].pop(os.getpid(), None)
        merged_ns = merge_exited(acc1, seen["tasks"], seen["uac_pids"])
        load1 = loadavg(_read("/proc/loadavg"))
        s1, udp1 = self.sock(), b.udp_errors()
        adm1 = self.admit_counters(cfg)
        rows = read_rows((d / "stat.csv").read_text(errors="replace")) if (d / "stat.csv").exists() else []
        counts = {}
        for f in d.glob("*_counts.csv"):
            crow = read_rows(f.read_text(errors="replace"))
            counts = crow[-1] if crow else {}
        rec = {"label": label, "seconds": seconds, "started_unix": round(started, 3),
               **summarize(rows, counts, rate, planned),
               "sipp_rc": rc, "wall_s": round(wall, 2), "hit_deadline": wall >= hard,
               "dir": str(d.relative_to(b.work))}
        rec["sipp_aborted"] = sipp_aborted(rc, (d / "sipp.log").read_text(errors="replace"), rec["hit_deadline"])
        rtd = harness.Bench.parse_sipp(d)["latency"].get("rtd1_ms") or harness.lat_summary([])
        rec["invite_200_ms"] = {k: (None if rtd.get(k) is None else round(rtd[k], 3)) for k in ("n", "p50", "p99")}
        rec["proxy_drops"] = (s1["drops"] - s0["drops"]) if None not in (s0["drops"], s1["drops"]) else None
        rec["proxy_rx_queue_after"] = s1["rx_queue"]
        rec["udp_rcvbuf_errors"] = {k: udp1.get(k, 0) - udp0.get(k, 0) for k in udp1}
        rec["proxy_out_of_memory"] = out_of_memory(klog, klog0)
        cd = harness.cpu_delta(c0, c1)
        rec["cpu_s"] = {"busy": round(cd["busy"], 3), "softirq": round(cd["softirq"], 3),
                        "kamailio": round(kam1 - kam0, 3), "elapsed": round(cd["elapsed"], 3)}
        rec["cpu_acct"] = cpu_account(acc0, acc1, roles, ru, merged_ns)
        thr1 = self.throttled()
        if thr0 and thr1:
            rec["proxy_throttled"] = {k: round(thr1[k] - thr0[k], 3) for k in thr1}
        rec["loadavg"] = {"before": load0, "after": load1}
        if cfg["kind"].startswith("etsf"):
            rec["admission"] = admission_delta(adm0, adm1)
        if samples:
            rec["controller"] = controller_summary(samples, rec["window_s"])
            rec["controller_samples"] = samples
        if b.kam.poll() is not None:
            raise RuntimeError(f"kamailio exited during {label} {rate:g}/s")
        self.drain()
        return rec

    def wait_proxy(self, limit_s: float = 30.0) -> float:
        """Seconds until Kamailio's socket is bound in the pod (bounded): on a loaded host its
        start can take longer than the harness's fixed pause, and a step offered to a proxy
        that is not listening yet would measure nothing."""
        t0 = time.monotonic()
        while self.sock()["drops"] is None:
            if time.monotonic() - t0 > limit_s or self.b.kam.poll() is not None:
                raise RuntimeError(f"kamailio not listening on {T.POD}:{T.PORT} after {limit_s:.0f} s")
            time.sleep(0.2)
        return round(time.monotonic() - t0, 2)

    def drain(self):
        """Settle, and let Kamailio empty its socket before the next step (bounded)."""
        time.sleep(self.p["settle_s"])
        t_end = time.monotonic() + 5
        while time.monotonic() < t_end and (self.sock()["rx_queue"] or 0) > 0:
            time.sleep(0.2)

    def capacity(self, cfg: dict) -> int | None:
        p = self.p
        if p["capacity"]:
            how = "a fixed guess (quick form)" if self.res["profile"] == "quick" else "given (--capacity)"
            self.res["capacity"] = {"cps": int(p["capacity"]), "from": how, "probes": []}
            return int(p["capacity"])

        # as long as a step unless set: a proxy near its capacity copes for seconds and collapses
        # later (recorded: a 6 s probe at 600/s passed, the 20 s step at 600/s then lost 1,304
        # calls to 14,908 socket drops and 7,640 retransmissions)
        probe_s = p["probe_s"] or p["step_s"]

        def probe(rate):
            if self.left() < probe_s + call_life(p) + 60:
                return None
            rec = self.step(cfg, rate, probe_s, "cap")
            rec["ok"] = capacity_ok(rec)
            log(f"capacity probe {rate}/s: completed {rec['completed']}/{rec['planned']}, failed {rec['failed']}, "
                f"achieved {rec['achieved_cps']}/s, drops {rec['proxy_drops']}, retrans {rec['retransmissions']} -> "
                f"{'ok' if rec['ok'] else 'FAIL'}")
            return rec
        cps, probes = capacity_search(probe, p["cap_start"], p["cap_max"], p["cap_bisect"], p["cap_floor"])
        self.res["capacity"] = {"cps": cps, "from": f"measured on {cfg['name']}, {probe_s:g} s probes",
                                "probes": probes}
        if not cps:
            self.res["capacity"]["why"] = "no probe passed" if probes else "time budget"
        return cps

    def run(self) -> dict:
        p = self.p
        self.res["host"] = self.b.host_info()
        cfgs = expand_fixed([config(x, p["services"]) for x in p["configs"]], p.get("fixed_shares") or [1.0])
        alone, group = split_interleaved(cfgs) if p.get("interleave") else (cfgs, [])
        if group:
            self.res["interleaved"] = {"configs": [c["name"] for c in group], "repeats": int(p.get("repeats") or 1),
                                       "rounds": []}
        # the BPF objects: eTSF's, and the count-only program every configuration's UAC gets
        self.b.prepare()
        self.res["host"]["pinning"]["controller"] = f"cpu{harness.CPU_LOAD}"
        self.ctl = None
        self.mults: list[float] = []
        for i, cfg in enumerate(alone):
            self.run_alone(i, cfg, alone, group, cfgs)
        if group:
            self.run_interleaved(group)
        return self.res

    def run_alone(self, i: int, cfg: dict, alone: list[dict], group: list[dict], cfgs: list[dict]):
        """One configuration on its own topology, every multiple in turn; the first measures
        the capacity and plans the sweep."""
        p = self.p
        t_cfg = time.monotonic()
        self.res["configs"].append(cfg)
        try:
            if i > 0 and not self.mults:
                raise _Skip("no capacity" if not self.res["capacity"].get("cps") else "time budget")
            log(f"== {cfg['name']}")
            self.b.policy_extra = auto_policy(p) if cfg["admission"] == "auto" else ""
            self.b.setup_config(cfg)
            cfg["proxy_ready_s"] = self.wait_proxy()
            self.limit_proxy(cfg)
            self.steer_receive(cfg)
            cfg["buffers"] = self.socket_buffers()
            self.setup_admission(cfg, self.res["capacity"].get("cps"))
            if i == 0:
                cap = self.capacity(cfg)
                if not cap:
                    raise _Skip("no capacity")
                reps = int(p.get("repeats") or 1)
                self.mults, need = plan(p, [c["kind"] for c in alone], self.left() - 5, group=len(group),
                                        repeats=reps)
                self.res["plan"] = {"multiples": self.mults, "planned_s": round(need, 1),
                                    "left_s": round(self.left(), 1)}
                if group:
                    self.res["plan"]["interleaved"] = {"configs": len(group), "repeats": reps, "switch_s": SWITCH_S}
                for m in sorted(set(p["multiples"]) - set(self.mults)):
                    self.res["skipped"] += [{"config": c["name"], "multiple": m, "why": "time budget (planned)"}
                                            for c in cfgs]
            for m in self.mults:
                if self.left() < step_cost(p, m, worst=True):
                    self.res["skipped"].append({"config": cfg["name"], "multiple": m, "why": "time budget"})
                    continue
                cfg["steps"].append(self.run_step(cfg, m))
        except _Skip as e:
            self.res["skipped"].append({"config": cfg["name"], "why": str(e)})
        except Exception as e:  # noqa: BLE001 - record and go on with the others
            cfg["error"] = f"{type(e).__name__}: {e}"
            log(f"ERROR in {cfg['name']}: {cfg['error']}")
        finally:
            with contextlib.suppress(Exception):
                self.stop_controller(cfg)
            if self.b.topo is not None:
                self.res["pids"] += [q.pid for q in self.b.topo.procs.procs]
            self.b.teardown_config(cfg)
            self.unlimit_proxy()
            cfg.pop("_dir", None)
            cfg["wall_s"] = round(time.monotonic() - t_cfg, 1)

    def run_step(self, cfg: dict, m: float, fresh=None) -> dict:
        """One step at m x capacity, once more if sipp aborted (and the budget allows); fresh():
        what puts the configuration's admission in its starting state, before each attempt."""
        p = self.p
        rate = round(self.res["capacity"]["cps"] * m, 1)
        if fresh:
            fresh()
        rec = self.step(cfg, rate, p["step_s"], f"x{m:g}")
        if rec["sipp_aborted"] and self.left() >= step_cost(p, m, worst=True):
            log(f"{cfg['name']} {m:g}x: sipp aborted ({rec['sipp_aborted']}): once more")
            first = rec
            if fresh:
                fresh()
            rec = self.step(cfg, rate, p["step_s"], f"x{m:g}-again")
            rec["aborted_attempts"] = [first]
        rec["multiple"] = m
        lat = rec["invite_200_ms"]
        log(f"{cfg['name']} {m:g}x ({rate:g}/s): achieved {rec['achieved_cps']}/s goodput "
            f"{rec['goodput_cps']}/s, completed {rec['completed']}/{rec['attempted']}, failed {rec['failed']} "
            f"(timeouts {rec['failed_timeout']}, error responses {rec['final_codes'] or 0}), retrans "
            f"{rec['retransmissions']}, p50/p99 {lat['p50']}/{lat['p99']} ms, drops {rec['proxy_drops']}, "
            f"proxy out of memory {rec['proxy_out_of_memory']}")
        return rec

    def run_interleaved(self, group: list[dict]):
        """The eTSF configurations on ONE topology, step by step: per multiple and repeat a round
        runs each of them once (interleave_orders), admission switched in place before each
        step.  Every step goes into its own configuration's steps, with its round, repeat and
        position in the round."""
        p = self.p
        t_grp = time.monotonic()
        info = self.res["interleaved"]
        shared = {"letter": "+".join(c["letter"] for c in group), "name": "etsf-interleaved",
                  "kind": "etsf-fastpath", "services": p["services"], "admission": None, "steps": []}
        self.res["configs"] += group
        byname = {c["name"]: c for c in group}
        cap = self.res["capacity"].get("cps")
        current = None
        try:
            if not self.mults:
                raise _Skip("no capacity" if not cap else "time budget")
            log(f"== interleaved: {', '.join(byname)}")
            # K's policy for all: overload.auto is read by the controller alone (etsfctl overload
            # auto); applying it programs nothing into the data path, so F's steps are not
            # touched by it
            self.b.policy_extra = auto_policy(p) if any(c["admission"] == "auto" for c in group) else ""
            self.b.setup_config(shared)
            shared["proxy_ready_s"] = self.wait_proxy()
            self.limit_proxy(shared)
            self.steer_receive(shared)
            shared["buffers"] = self.socket_buffers()
            self.uac_xdp(shared)
            for c in group:
                c.update({k: shared[k] for k in SHARED_SETUP if k in shared})
                c["interleaved"] = shared["name"]
            info["rounds"] = interleave_orders(list(byname), self.mults, info["repeats"])
            for rd in info["rounds"]:
                m = rd["multiple"]
                if self.left() < round_cost(p, m, len(rd["order"])):
                    self.res["skipped"] += [{"config": n, "multiple": m, "round": rd["round"], "why": "time budget"}
                                            for n in rd["order"]]
                    continue
                for pos, name in enumerate(rd["order"]):
                    current = byname[name]
                    rec = self.interleaved_step(current, cap, m)
                    rec.update(round=rd["round"], repeat=rd["repeat"], position=pos, order=rd["order"])
                    current["steps"].append(rec)
                current = None
        except _Skip as e:
            self.res["skipped"] += [{"config": c["name"], "why": str(e)} for c in group]
        except Exception as e:  # noqa: BLE001 - record; the other configurations' steps stay
            err = f"{type(e).__name__}: {e}"
            shared["error"] = err
            for c in group:
                c["error"] = err if c is current or current is None else f"stopped with {current['name']}: {err}"
            log(f"ERROR in the interleaved run{' (' + current['name'] + ')' if current else ''}: {err}")
        finally:
            with contextlib.suppress(Exception):
                self.stop_controller(current or shared)
            if self.b.topo is not None:
                self.res["pids"] += [q.pid for q in self.b.topo.procs.procs]
            self.b.teardown_config(shared)
            self.unlimit_proxy()
            for c in group:
                c.pop("_dir", None)
            shared.pop("_dir", None)
            shared.pop("steps", None)
            shared["wall_s"] = round(time.monotonic() - t_grp, 1)
            info["setup"] = shared

    def interleaved_step(self, cfg: dict, cap: int, m: float) -> dict:
        """One step of an interleaved configuration: its admission switched in (switch_admission)
        before the step (and before a second attempt), the controller stopped after it."""
        audit0 = self.audit_entries()
        switched: list[dict] = []

        def fresh():
            self.stop_controller(cfg)
            switched.append(self.switch_admission(cfg, cap))
        try:
            rec = self.run_step(cfg, m, fresh)
        finally:
            self.stop_controller(cfg)
        rec["etsf_ctl_before"] = switched[-1]
        if cfg["admission"] == "auto":
            rec["controller_audit_entries"] = self.audit_entries() - audit0
        return rec

    def switch_admission(self, cfg: dict, cap: int) -> dict:
        """etsf_ctl back to what a fresh topology holds (level 0, admission off), the controller's
        state file removed, then the configuration's own admission: F's fixed rate set again, K's
        controller started afresh.  The controller seeds its law from etsf_ctl and its counters
        from the state file, so without this a K step would start from whatever the previous
        step (F's rate, or K's own level and rate at another multiple) left: its result would
        depend on the order of the round.  Returns etsf_ctl as the step starts with it."""
        ctl = self.read_ctl()
        if ctl is None:
            raise RuntimeError("etsf_ctl unreadable")
        if ctl["admit_rate"]:
            self.b.etsfctl("overload", "admit", "--off")
        if ctl["level"]:
            self.b.etsfctl("overload", "set", "0")      # pins it in the state file, removed next
        self.state_file().unlink(missing_ok=True)
        reset = self.read_ctl()
        if reset is None or reset["level"] or reset["admit_rate"]:
            raise RuntimeError(f"etsf_ctl not reset before {cfg['name']}: {reset}")
        self.admission(cfg, cap)
        now = self.read_ctl()
        if cfg["admission"] == "fixed" and (now is None or now["admit_rate"] != cfg["fixed_admission"]["rate"]
                                            or now["level"]):
            raise RuntimeError(f"etsf_ctl after {cfg['name']}'s admission: {now}")
        return {"before_reset": ctl, "at_start": now}

    def read_ctl(self) -> dict | None:
        """etsf_ctl's level, admission and RFC 7339 flag, read from the pinned map (None when
        it cannot be read)."""
        from etsf import layout
        raw = self.pinned_entry0("etsf_ctl")
        try:
            c = layout.Ctl.from_buffer_copy(raw)
        except (TypeError, ValueError):       # unreadable or short: no reading
            return None
        return {"level": int(c.overload_level), "admit_rate": int(c.invite_admit_rate),
                "admit_burst": int(c.invite_admit_burst), "oc": bool(c.flags & layout.CTL_F_OC)}

    def audit_entries(self) -> int:
        return sum(1 for ln in _read(Path(self.b.env["ETSF_STATE_DIR"]) / "failsafe-audit.jsonl").splitlines()
                   if '"overload_' in ln)

    def cleanup(self):
        self.b.cleanup()


class _Skip(Exception):
    pass


def run(out: Path, budget_s: float, quick: bool, **overrides) -> dict:
    """Run the sweep (quick: the CI form) within budget_s seconds; write overload.json,
    overload.md and the plot under out; return the results.  overrides: profile entries
    (e.g. configs=["D", "C"], multiples=[...]) and work=DIR to keep sipp's raw files."""
    out = Path(out)
    profile = "quick" if quick else "full"
    prof = dict(PROFILES[profile])
    work = overrides.pop("work", None)
    for k, v in overrides.items():
        if k not in prof:
            raise ValueError(f"overload: unknown profile entry {k!r} (known: {', '.join(sorted(prof))})")
        prof[k] = v
    bad = [x for x in prof["configs"] if x not in CONFIG_KINDS]
    if bad or not prof["configs"]:
        raise ValueError(f"overload: configs must be letters of {', '.join(CONFIG_KINDS)} (got {prof['configs']!r})")
    if len(CONFIG_KINDS[prof["configs"][0]]) > 2:
        raise ValueError(f"overload: the first configuration measures the capacity: it cannot be one with "
                         f"admission (got {prof['configs'][0]!r})")
    if not prof["multiples"] or any(not 0 < float(m) <= 10 for m in prof["multiples"]):
        raise ValueError(f"overload: multiples must be in (0, 10] (got {prof['multiples']!r})")
    if isinstance(prof["repeats"], bool) or not isinstance(prof["repeats"], int) or not 1 <= prof["repeats"] <= 10:
        raise ValueError(f"overload: repeats must be an integer in 1..10 (got {prof['repeats']!r})")
    out.mkdir(parents=True, exist_ok=True)
    sw = Sweep(out, float(budget_s), prof, profile, work=Path(work) if work else None)
    log(f"{profile} sweep, budget {budget_s:.0f} s -> {out}")
    res = sw.res
    try:
        sw.run()
    finally:
        # also when interrupted: clean up, then write what was measured
        sw.cleanup()
        if not work:
            shutil.rmtree(sw.b.work, ignore_errors=True)
            res["work_dir"] = None
        for c in res["configs"]:
            c.pop("_dir", None)
        res["finished"] = harness.now_utc().isoformat()
        res["wall_seconds"] = round(time.monotonic() - sw.t0, 1)
        res["table_md"] = table_md(res)
        res["targets"] = targets(res)
        res["plots"] = [PLOT] if plot(res, out / PLOT) else []
        res["report_md"] = report_md(res, PLOT if res["plots"] else None)
        (out / "overload.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
        (out / "overload.md").write_text(res["report_md"])
        log(f"done in {res['wall_seconds']} s: {out / 'overload.md'}")
    return res


def auto_settings(ap, items: list[str]) -> dict:
    """--auto KEY=VALUE items -> K's overload.auto overrides, checked against the policy schema
    (a bad key or value is a one-line usage error naming it)."""
    from etsf.policy.schema import AUTO  # pylint: disable=import-outside-toplevel
    from etsf.schema import Invalid  # pylint: disable=import-outside-toplevel
    out = {}
    for it in items:
        key, sep, text = it.partition("=")
        key = key.strip()
        if not sep or not key or key in ("enabled", "proxy_ports", "rfc7339"):
            ap.error(f"--auto: KEY=VALUE of a scalar overload.auto setting expected (got {it!r})")
        try:
            out[key] = yaml.safe_load(text)
        except yaml.YAMLError:
            ap.error(f"--auto: {key}: a number expected (got {text!r})")
    try:
        AUTO.check({"enabled": True, **out}, "overload.auto")
    except Invalid as e:
        ap.error(f"--auto: {e}")
    return out


def _numbers(ap, flag: str, text: str, hi: float) -> list[float]:
    """A comma list of numbers in (0, hi], or a one-line usage error naming the flag."""
    vals: list[float] = []
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        ap.error(f"{flag}: numbers (got {text!r})")
    if not vals or not all(0 < v <= hi for v in vals):
        ap.error(f"{flag}: one or more numbers in (0, {hi:g}] (got {text!r})")
    return vals


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--out", metavar="DIR", help="result directory (default bench/results/<UTC>-overload)")
    ap.add_argument("--quick", action="store_true", help="CI form: D and F, two short steps, <= 90 s")
    ap.add_argument("--budget-min", type=float, metavar="MIN", help="hard time budget (quick 1.5, full 25)")
    ap.add_argument("--configs", metavar="LETTERS", help=f"comma list of {', '.join(CONFIG_KINDS)} "
                    "(default D,A,C,F,K; the first one measures the capacity and has no admission)")
    ap.add_argument("--work", metavar="DIR", help="keep sipp's and Kamailio's raw files in DIR")
    ap.add_argument("--kamailio-shm-mb", type=int, metavar="MB", help="Kamailio's shared memory (-m; full "
                    "default 1024, quick 128: with 128 it answers load over ~800 calls/s with 500 'out of memory')")
    ap.add_argument("--multiples", metavar="LIST", help="comma list of loads as multiples of the capacity "
                    "(default 0.5,1,1.5,2,3,4)")
    ap.add_argument("--step-s", type=float, metavar="S", help="seconds of sending per step (default 30)")
    ap.add_argument("--capacity", type=int, metavar="CPS", help="use this capacity instead of measuring it")
    ap.add_argument("--proxy-cpu-pct", type=float, metavar="PCT", help="Kamailio's CPU quota, %% of one CPU "
                    "(a cgroup on its CPU; full default 20, 100 = the whole CPU)")
    ap.add_argument("--proxy-work", type=int, metavar="N", help="iterations of routing work per new call in "
                    "Kamailio's script (a proxy bound by its own CPU; 0 = none)")
    ap.add_argument("--fixed-shares", metavar="LIST", help="F's admission rate(s) as shares of the capacity, "
                    "one F configuration each (default 1)")
    ap.add_argument("--interleave", action="store_true", help="run the eTSF fast-path configurations (C, F, K) "
                    "on one topology, one step each per multiple in alternating order (pairs that meet the same "
                    "drift of the proxy's capacity)")
    ap.add_argument("--repeats", type=int, metavar="N", help="with --interleave: rounds per multiple (default 1)")
    ap.add_argument("--auto", action="append", default=[], metavar="KEY=VALUE",
                    help="K's overload.auto setting (repeatable; docs/overload.md), e.g. target_pdd_ms=20")
    ap.add_argument("--rps", action=argparse.BooleanOptionalAction, default=None,
                    help="steer each veth end's receive work to its side's CPU (RPS; the full profile's default)")
    args = ap.parse_args(argv)
    over: dict = {}
    if args.multiples:
        over["multiples"] = _numbers(ap, "--multiples", args.multiples, 10)
    if args.step_s is not None:
        if not 1 <= args.step_s <= 120:
            ap.error("--step-s must be in 1..120")
        over["step_s"] = args.step_s
    if args.capacity is not None:
        if not 1 <= args.capacity <= 100000:
            ap.error("--capacity must be in 1..100000")
        over["capacity"] = args.capacity
    if args.proxy_cpu_pct is not None:
        if not 1 <= args.proxy_cpu_pct <= 100:
            ap.error("--proxy-cpu-pct must be in 1..100")
        over["proxy_cpu_pct"] = args.proxy_cpu_pct
    if args.rps is not None:
        over["rps"] = args.rps
    if args.fixed_shares:
        over["fixed_shares"] = _numbers(ap, "--fixed-shares", args.fixed_shares, 4)
    if args.proxy_work is not None:
        if not 0 <= args.proxy_work <= 1000000:
            ap.error("--proxy-work must be in 0..1000000")
        over["proxy_work_iters"] = args.proxy_work
    if args.auto:
        over["auto"] = auto_settings(ap, args.auto)
    if args.interleave:
        over["interleave"] = True
    if args.repeats is not None:
        if not args.interleave:
            ap.error("--repeats needs --interleave")
        if not 1 <= args.repeats <= 10:
            ap.error("--repeats must be in 1..10")
        over["repeats"] = args.repeats
    if args.budget_min is not None and not 0 < args.budget_min <= 60:
        ap.error("--budget-min must be in (0, 60]")
    if args.configs:
        over["configs"] = [x.strip() for x in args.configs.split(",") if x.strip()]
        if any(x not in CONFIG_KINDS for x in over["configs"]) or not over["configs"]:
            ap.error(f"--configs: letters of {', '.join(CONFIG_KINDS)} (got {args.configs!r})")
        if len(CONFIG_KINDS[over["configs"][0]]) > 2:
            ap.error(f"--configs: the first configuration measures the capacity: not {over['configs'][0]} "
                     "(it has admission)")
    if args.work:
        over["work"] = args.work
    if args.kamailio_shm_mb is not None:
        if not 16 <= args.kamailio_shm_mb <= 65536:
            ap.error("--kamailio-shm-mb must be in 16..65536")
        over["kamailio_shm_mb"] = args.kamailio_shm_mb
    why = harness.preflight("overload.py", ("sipp", "kamailio", "iptables-nft-restore", "taskset", "nsenter"))
    if why:
        print(why, file=sys.stderr)
        return 2
    budget = args.budget_min * 60 if args.budget_min else PROFILES["quick" if args.quick else "full"]["budget_s"]
    out = Path(args.out) if args.out else HERE / "results" / (harness.now_utc().strftime("%Y%m%dT%H%M%SZ") + "-overload")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    res = run(out, budget, args.quick, **over)
    with contextlib.suppress(BrokenPipeError):
        print(res["table_md"])
    return 1 if any(c.get("error") for c in res["configs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
