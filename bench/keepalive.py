"""Keep-alive benchmark on the full stack: eTSF answering OPTIONS in the kernel vs Kamailio.

    python bench/keepalive.py --out DIR                 # full run (<= 19 min)
    python bench/keepalive.py --out DIR --quick         # CI form (<= 90 s): one round, short phases
    python bench/keepalive.py --out DIR --rounds 4      # fewer paired rounds

The Kamailio topology of bench/run.py (UAC -> node -> Kamailio pod -> UAS, bench/topology.py)
with eTSF deployed on the node (XDP classifier + TC fast path steering the service VIP to the
pod, as `C-etsf-fastpath`).  A carrier keep-alive mix: OPTIONS pings from thousands of source
addresses (bench/kagen.c: one socket, a source address per datagram, and it RECEIVES and
matches every answer) plus sipp calls at a fixed rate.  Two configurations on ONE topology,
switched by re-applying the policy between phases:

    K  Kamailio answers: policy `keepalive.enabled: false` (the proxy's sl_send_reply 200)
    E  eTSF answers in the kernel: `keepalive.enabled: true`, the proxy-alive gate held open
       by the agent's prober, 1 in `sample_every` OPTIONS still sent to the proxy

Paired rounds, order alternating (K E, E K, ...); in each visit a calls-only phase and a
calls + keep-alives phase of the same length, so the marginal cost of a keep-alive is
(mix - calls only) / keep-alives sent, per configuration, per round.  Then a bounded search of
the highest keep-alive rate each configuration sustains with 0 failed calls.

Interface for an orchestrator: ``run(out, budget_s, quick, **overrides) -> dict`` (JSON
serialisable; writes keepalive.json, keepalive.md and keepalive.png under ``out``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(HERE), str(ROOT / "src"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import cpuacct  # noqa: E402  pylint: disable=wrong-import-position
import overload  # noqa: E402  pylint: disable=wrong-import-position
import plotting  # noqa: E402  pylint: disable=wrong-import-position
import run as harness  # noqa: E402  pylint: disable=wrong-import-position
import stats  # noqa: E402  pylint: disable=wrong-import-position
import topology as T  # noqa: E402  pylint: disable=wrong-import-position

SCHEMA = "keepalive/1"
PLOT = "keepalive.png"
GEN_SRC = HERE / "kagen.c"
KA_NET = "198.18.48.0/20"          # the keep-alive sources (4096 devices), local to the UAC namespace
KA_BASE = "198.18.48.0"
KA_PORT = 5062
CONFIGS = ("K", "E")
NAMES = {"K": "K-kamailio-answers", "E": "E-etsf-answers"}

PROFILES = {
    # ~17 min on a 2-core host: setup ~0.7 min, 10 rounds x 2 configs x 2 phases x ~17 s,
    # the max-rate search ~4 min
    "full": dict(rounds=10, phase_s=12, call_rate=50, ka_per_call=60, sources=4096, sample_every=100,
                 search_start=4000, search_max=128000, search_bisect=3, search_probe_s=5, hold_ms=100,
                 kamailio_children=4, settle_s=1.0, tail_s=2.0, probe_interval_ms=200, budget_s=19 * 60,
                 rps=True, batch=1, search_batch=32),
    # CI: proves the harness (every count accounted for), never judged on speed
    "quick": dict(rounds=1, phase_s=2, call_rate=20, ka_per_call=20, sources=1024, sample_every=100,
                  search_start=400, search_max=400, search_bisect=0, search_probe_s=2, hold_ms=50,
                  kamailio_children=2, settle_s=0.5, tail_s=1.2, probe_interval_ms=200, budget_s=90,
                  rps=True, batch=1, search_batch=32),
}

# the issue's targets: E relative to K
# (the node's figures: the other rows include the load generators, which are the peers)
TARGETS = {"ctx_per_ka_node": 0.1, "cpu_us_per_ka_node_cpu": 0.2}


def log(msg):
    harness.log(f"[keepalive] {msg}")


# ---------------------------------------------------------------------------
# pure parts (tests/unit/test_bench_keepalive.py)
# ---------------------------------------------------------------------------

def parse_gen(text: str) -> dict | None:
    """The generator's result: its last line that is a JSON object, or None."""
    for ln in reversed(text.strip().splitlines()):
        ln = ln.strip()
        if ln.startswith("{"):
            with contextlib.suppress(ValueError):
                return json.loads(ln)
    return None


def gen_consistent(g: dict) -> list[str]:
    """What does not add up in a generator result (empty when everything does): every request
    sent was answered at most once with a 200, other answers and strays are counted apart."""
    bad = []
    if g["answered_200"] > g["sent"]:
        bad.append(f"answered {g['answered_200']} > sent {g['sent']}")
    rc = g["responses_by_class"]
    if rc["2xx"] < g["answered_200"] + g["duplicate_200"]:
        bad.append(f"2xx {rc['2xx']} < answered + duplicates {g['answered_200'] + g['duplicate_200']}")
    if sum(rc.values()) + g["unmatched"] != g["datagrams_received"]:
        bad.append(f"classes {sum(rc.values())} + unmatched {g['unmatched']} != received {g['datagrams_received']}")
    return bad


def group_delta(a_tasks: dict, b_tasks: dict, member) -> dict:
    """CPU-seconds (schedstat) and context switches (voluntary + involuntary) between two
    cpuacct.tasks() maps of the threads for which member(pid, comm) holds; a thread started
    inside the window counts from zero."""
    out = {"cpu_s": 0.0, "ctx": 0}
    for tid, (pid, comm, ns, vol, inv, _k) in b_tasks.items():
        if not member(pid, comm):
            continue
        prev = a_tasks.get(tid)
        if prev is not None and prev[0] == pid:
            ns, vol, inv = ns - prev[2], vol - prev[3], inv - prev[4]
        out["cpu_s"] += ns / 1e9
        out["ctx"] += vol + inv
    return out


def phase_figures(a: dict, b: dict, roles: dict[int, str], node_cpu: int | None = None) -> dict:
    """Figures between two snapshots ({"acct": cpuacct.snapshot(), "children": (CPU-seconds,
    context switches) of this process's reaped children}).

    * machine: busy CPU-seconds by idle accounting and /proc/stat ctxt: everything on the
      host, other tenants included;
    * the benchmark's tasks: the long-lived ones by role (roles: {pid: role}, every thread),
      ksoftirqd (softirq work deferred to its thread), and the processes that ran and exited
      inside the window (sipp's UAC, the keep-alive generator), from getrusage(RUSAGE_CHILDREN);
    * the node's CPU (node_cpu): its busy CPU-seconds by the same idle accounting.  With the
      node's receive processing steered onto it (RPS, see KaBench.steer_receive) and the peers
      pinned elsewhere, that is everything the node does for its traffic: the proxy, the agent,
      eTSF's programs and the kernel's receive, forward and send work, interrupts included."""
    aa, bb = a["acct"], b["acct"]
    acc = cpuacct.account(aa, bb, {})
    groups = {role: group_delta(aa["tasks"], bb["tasks"], lambda pid, _c, r=role: roles.get(pid) == r)
              for role in sorted(set(roles.values()))}
    groups["ksoftirqd"] = group_delta(aa["tasks"], bb["tasks"], lambda _p, comm: comm.startswith("ksoftirqd"))
    groups["exited children"] = {"cpu_s": b["children"][0] - a["children"][0],
                                 "ctx": b["children"][1] - a["children"][1]}
    return {"window_s": round(acc["elapsed_s"], 3), "busy_s": round(acc["whole_s"], 4),
            "softirq_s": round(acc["softirq_s"], 4), "ctxt": acc["ctxt_machine"],
            "bench_cpu_s": round(sum(g["cpu_s"] for g in groups.values()), 4),
            "bench_ctx": sum(g["ctx"] for g in groups.values()),
            "kamailio_s": round(groups.get("kamailio", {"cpu_s": 0.0})["cpu_s"], 4),
            "kamailio_ctx": groups.get("kamailio", {"ctx": 0})["ctx"],
            "node_cpu": node_cpu,
            "node_cpu_busy_s": (None if node_cpu is None or str(node_cpu) not in acc["cpu_busy_s"]
                                else round(acc["cpu_busy_s"][str(node_cpu)], 4)),
            "groups": {k: {"cpu_s": round(v["cpu_s"], 4), "ctx": v["ctx"]} for k, v in groups.items()}}


def marginal(mix: dict, calls: dict, key: str, per: float) -> float | None:
    """Cost of the keep-alives in a mix phase: the mix's figure minus the calls-only phase's,
    both as rates over their own windows, times the mix window, divided by `per` (the
    keep-alives sent)."""
    if not per or mix.get(key) is None or calls.get(key) is None:
        return None
    rate = mix[key] / mix["window_s"] - calls[key] / calls["window_s"]
    return rate * mix["window_s"] / per


#: the node's own long-lived tasks: the proxy, the agent's prober and the softirq threads (the load
#: generators, sipp's UAC and UAS and kagen, are the peers)
NODE_GROUPS = ("kamailio", "prober", "ksoftirqd")


def node_figures(ph: dict) -> dict:
    """CPU-seconds and context switches of the node's own tasks in a phase (its task groups)."""
    g = ph.get("groups") or {}
    return {"node_cpu_s": sum(g[k]["cpu_s"] for k in NODE_GROUPS if k in g),
            "node_ctx": sum(g[k]["ctx"] for k in NODE_GROUPS if k in g)}


PER_KA = ("ctx_per_ka_node", "ctx_per_ka_bench", "ctx_per_ka_machine", "ctx_per_ka_kamailio",
          "cpu_us_per_ka_node_cpu", "cpu_us_per_ka_bench",
          "cpu_us_per_ka_net_of_generator_user", "cpu_us_per_ka_net_of_generator", "cpu_us_per_ka_machine",
          "cpu_us_per_ka_kamailio")


def per_ka(mix: dict, calls: dict) -> dict:
    """The per-keep-alive figures of one visit (K or E in one round)."""
    g = mix.get("gen") or {}
    sent = g.get("sent") or 0
    cpu = g.get("cpu_s") or {}
    out = {"sent": sent, **{k: None for k in PER_KA}}
    if not sent:
        return out
    out["ctx_per_ka_node"] = marginal({**mix, **node_figures(mix)}, {**calls, **node_figures(calls)}, "node_ctx", sent)
    out["ctx_per_ka_bench"] = marginal(mix, calls, "bench_ctx", sent)
    out["ctx_per_ka_machine"] = marginal(mix, calls, "ctxt", sent)
    out["ctx_per_ka_kamailio"] = marginal(mix, calls, "kamailio_ctx", sent)
    for key, src in (("cpu_us_per_ka_node_cpu", "node_cpu_busy_s"),
                     ("cpu_us_per_ka_bench", "bench_cpu_s"), ("cpu_us_per_ka_machine", "busy_s"),
                     ("cpu_us_per_ka_kamailio", "kamailio_s")):
        m = marginal(mix, calls, src, sent)
        out[key] = None if m is None else m * 1e6
    if out["cpu_us_per_ka_bench"] is not None:
        out["cpu_us_per_ka_net_of_generator_user"] = out["cpu_us_per_ka_bench"] - cpu.get("user", 0.0) * 1e6 / sent
        out["cpu_us_per_ka_net_of_generator"] = (out["cpu_us_per_ka_bench"]
                                                 - (cpu.get("user", 0.0) + cpu.get("sys", 0.0)) * 1e6 / sent)
    return out


def visit(calls: dict, mix: dict) -> dict:
    """One configuration's figures in one round, from its calls-only and mix phases."""
    return {"config": mix["config"], "round": mix["round"], **per_ka(mix, calls),
            "kamailio_calls_ms_per_s": calls["kamailio_s"] * 1000 / calls["window_s"],
            "invite_p50_mix_ms": mix["calls"]["invite_200_ms"]["p50"],
            "invite_p99_mix_ms": mix["calls"]["invite_200_ms"]["p99"]}


def visits(phases: list[dict]) -> list[dict]:
    """Every visit of the paired rounds: the calls-only and mix phases of one configuration in
    one round (the max-rate probes, round -1, are not visits)."""
    by = {}
    for ph in phases:
        if ph["round"] >= 0:
            by.setdefault((ph["round"], ph["config"]), {})[ph["phase"]] = ph
    out = []
    for d in by.values():                 # run order
        if "calls" in d and "mix" in d:
            out.append(visit(d["calls"], d["mix"]))
    return out


def ratio_summary(k_by_round: dict, e_by_round: dict) -> dict:
    """E against K over the rounds both have: the paired differences E - K (median, bootstrap
    interval, sign test, smallest detectable difference) and both medians over those rounds;
    and E / K per round (only rounds where K is positive: a ratio to a non-positive cost means
    nothing) with its median, seeded bootstrap 95 % interval of the median and range."""
    both = sorted(r for r in set(k_by_round) & set(e_by_round)
                  if k_by_round[r] is not None and e_by_round[r] is not None)
    rounds = [r for r in both if k_by_round[r] > 0]
    ratios = [e_by_round[r] / k_by_round[r] for r in rounds]
    lo, hi = stats.bootstrap_ci(ratios)
    diff = stats.paired({r: e_by_round[r] for r in both}, {r: k_by_round[r] for r in both})
    return {"rounds": rounds, "ratios": ratios, "median": statistics.median(ratios) if ratios else None,
            "ci95": [lo, hi], "range": [min(ratios), max(ratios)] if ratios else [None, None],
            "k_median": statistics.median([k_by_round[r] for r in both]) if both else None,
            "e_median": statistics.median([e_by_round[r] for r in both]) if both else None,
            "diff": diff}


def verdict(summary: dict, target: float) -> str:
    """'met' when the whole interval is at or under the target ratio, 'not met' when it is
    all above, 'not resolved' when it straddles it; with one round, the point estimate."""
    med, (lo, hi) = summary.get("median"), summary.get("ci95") or (None, None)
    if med is None:
        return "no data"
    if lo is None or hi is None:
        return f"{'met' if med <= target else 'not met'} (one round: point estimate only)"
    if hi <= target:
        return "met"
    if lo > target:
        return "not met"
    return "not resolved (interval straddles the target)"


def unchanged(diff: dict) -> str:
    """Whether a paired difference (stats.paired) shows a change: 'no change detected' when
    the bootstrap interval holds 0, else the direction."""
    lo, hi = diff.get("ci95") or (None, None)
    if lo is None or hi is None:
        return "one round: no interval"
    if lo <= 0 <= hi:
        return "no change detected (interval holds 0)"
    return "higher" if lo > 0 else "lower"


def search_ok(rec: dict) -> tuple[bool, str]:
    """A max-rate probe passes with every planned call completed and none failed, >= 99 % of
    the keep-alives answered with a 200, and the generator having sent >= 90 % of the offered
    rate (otherwise the load generator, not the node, is the limit)."""
    c, g = rec["calls"], rec.get("gen") or {}
    if c["failed"] or c["successful"] < c["planned"]:
        return False, f"calls: {c['successful']}/{c['planned']} completed, {c['failed']} failed"
    if not g or g.get("sent", 0) < 0.9 * rec["ka_rate"] * rec["seconds"]:
        return False, f"generator sent {g.get('sent', 0)} of {int(rec['ka_rate'] * rec['seconds'])} (generator-limited)"
    if g["answered_200"] < 0.99 * g["sent"]:
        return False, f"keep-alives answered {g['answered_200']}/{g['sent']}"
    return True, "ok"


# ---------------------------------------------------------------------------
# rendering (pure)
# ---------------------------------------------------------------------------

def analyse(res: dict) -> None:
    """E against K for every figure, and the observations, into res (from its phases alone, so
    a results file re-renders the same)."""
    vis = res["visits"] = visits(res.get("phases", []))
    an = {}
    for key in (*PER_KA, "kamailio_calls_ms_per_s", "invite_p50_mix_ms", "invite_p99_mix_ms"):
        k = {v["round"]: v.get(key) for v in vis if v["config"] == "K"}
        e = {v["round"]: v.get(key) for v in vis if v["config"] == "E"}
        an[key] = ratio_summary(k, e)
    res["analysis"] = an
    obs = []
    phases = res.get("phases", [])
    gens = [ph["gen"] for ph in phases if ph.get("gen")]
    bad = [f"{ph['config']} r{ph['round'] + 1} {ph['phase']}: {c}" for ph in phases
           if ph.get("gen") for c in ph["gen"]["consistency"]]
    if gens:
        obs.append(f"keep-alives: {sum(g['sent'] for g in gens)} sent, {sum(g['answered_200'] for g in gens)} "
                   f"answered 200 (distinct), {sum(g['duplicate_200'] for g in gens)} duplicate 200s, "
                   f"{sum(g['other_responses'] for g in gens)} other responses, "
                   f"{sum(g['send_errors'] for g in gens)} send errors; counts "
                   + ("consistent" if not bad else "INCONSISTENT: " + "; ".join(bad[:5])))
    for letter in CONFIGS:
        mixes = [ph for ph in phases if ph.get("gen") and ph["config"] == letter and ph["round"] >= 0]
        if not mixes:
            continue
        lat = statistics.median(ph["gen"]["latency_us"]["p50"] for ph in mixes)
        gctx = statistics.median((ph["gen"]["ctx"]["voluntary"] + ph["gen"]["ctx"]["involuntary"]) / ph["gen"]["sent"]
                                 for ph in mixes)
        ka = [ph.get("etsf_keepalive") or {} for ph in mixes]
        obs.append(f"{NAMES[letter]}: keep-alive answer time p50 {lat:.0f} µs at the generator; the generator's own "
                   f"context switches {gctx:.2f} per keep-alive (medians over rounds); the kernel answered "
                   f"{sum(k.get('answered', 0) for k in ka)}, passed {sum(k.get('passed_sampled', 0) for k in ka)} "
                   f"by sampling, {sum(k.get('passed_proxy_stale', 0) for k in ka)} for a stale proxy, "
                   f"{sum(k.get('passed_not_matching', 0) for k in ka)} not answerable")
    shares = [1 - ph["bench_cpu_s"] / ph["busy_s"] for ph in phases if ph.get("busy_s", 0) > 0]
    if shares:
        obs.append(f"busy CPU of the machine not in the benchmark's tasks (other tenants, the harness, kernel "
                   f"threads): median {100 * statistics.median(shares):.0f} % of the busy time per phase "
                   f"(range {100 * min(shares):.0f}–{100 * max(shares):.0f} %)")
    loads = [float(ph["loadavg"][0]) for ph in phases]
    if loads:
        obs.append(f"load average (1 min) at phase starts: {min(loads):.2f}–{max(loads):.2f} "
                   "(the machine is shared: other work lands in the machine-wide figures of both "
                   "configurations alike, the per-round pairing cancels its slow part)")
    res["observations"] = obs


def _f(v, nd=1):
    return "–" if v is None else f"{v:.{nd}f}"


def _ci(s: dict, nd=3):
    lo, hi = s.get("ci95") or (None, None)
    return "–" if lo is None else f"[{lo:.{nd}f}, {hi:.{nd}f}]"


def table_md(res: dict) -> str:
    """Per configuration, medians over the rounds, and E / K with its interval."""
    an = res.get("analysis") or {}
    rows = [("context switches per keep-alive: the node's tasks (Kamailio, prober, ksoftirqd)", "ctx_per_ka_node", 3),
            ("context switches per keep-alive: the benchmark's tasks (load generators included)",
             "ctx_per_ka_bench", 2),
            ("context switches per keep-alive: machine (/proc/stat ctxt, other tenants included)",
             "ctx_per_ka_machine", 2),
            ("context switches per keep-alive: Kamailio's threads", "ctx_per_ka_kamailio", 2),
            ("CPU per keep-alive, µs: the node's CPU (idle accounting; the node's receive work steered "
             "onto it, the peers on the other CPU)", "cpu_us_per_ka_node_cpu", 2),
            ("CPU per keep-alive, µs: the benchmark's tasks (generator included)", "cpu_us_per_ka_bench", 2),
            ("CPU per keep-alive, µs: the same net of the generator's user-space time",
             "cpu_us_per_ka_net_of_generator_user", 2),
            ("CPU per keep-alive, µs: net of all the generator's CPU (its softirq share too: a lower bound)",
             "cpu_us_per_ka_net_of_generator", 2),
            ("CPU per keep-alive, µs: machine busy (idle accounting, other tenants included)",
             "cpu_us_per_ka_machine", 2),
            ("CPU per keep-alive, µs: Kamailio", "cpu_us_per_ka_kamailio", 2)]
    out = ["| metric (median over rounds) | K: Kamailio answers | E: eTSF answers | E / K [95 % CI] | target "
           "| verdict |", "|---|---|---|---|---|---|"]
    for label, key, nd in rows:
        s = an.get(key) or {}
        tgt = TARGETS.get(key)
        out.append(f"| {label} | {_f(s.get('k_median'), nd)} | {_f(s.get('e_median'), nd)} | "
                   f"{_f(s.get('median'), 3)} {_ci(s)} | {'≤ %g×' % tgt if tgt else ''} | "
                   f"{verdict(s, tgt) if tgt else ''} |")
    for label, key in (("Kamailio CPU for calls only, ms/s (E − K)", "kamailio_calls_ms_per_s"),
                       ("INVITE→200 p50 in the mix, ms (E − K)", "invite_p50_mix_ms"),
                       ("INVITE→200 p99 in the mix, ms (E − K)", "invite_p99_mix_ms")):
        s = an.get(key) or {}
        d = s.get("diff") or {}
        out.append(f"| {label} | {_f(s.get('k_median'), 2)} | {_f(s.get('e_median'), 2)} | "
                   f"Δ {_f(d.get('median'), 3)} {_ci(d)}, MDE {_f(d.get('mde'), 3)} | unchanged | "
                   f"{unchanged(d) if d else 'no data'} |")
    mr = res.get("max_rate") or {}
    k, e = (mr.get("K") or {}).get("rate"), (mr.get("E") or {}).get("rate")
    out.append(f"| max keep-alive rate with 0 failed calls, /s | {_f(k, 0)}{_lim(mr.get('K'))} | "
               f"{_f(e, 0)}{_lim(mr.get('E'))} | {_f(e / k if k and e else None, 2)} | E > K | "
               f"{'met' if k and e and e > k else 'not met' if k and e else 'no data'} |")
    return "\n".join(out) + "\n"


def _lim(m: dict | None) -> str:
    if not m:
        return ""
    if m.get("capped"):
        return " (≥: search cap)"
    if m.get("generator_limited"):
        return " (≥: generator-limited)"
    if m.get("budget_cut"):
        return " (≥: search cut by the time budget)"
    return ""


ROUND_COLS = ("round", "config", "phase", "load avg (1 min)", "window s", "keep-alives sent / answered 200",
              "calls ok / planned", "INVITE→200 p50 / p99 ms", "switches: bench tasks / machine / Kamailio",
              "CPU s: bench tasks / machine / Kamailio", "eTSF answered / sampled")


def rounds_md(res: dict) -> str:
    out = ["| " + " | ".join(ROUND_COLS) + " |", "|" + "---|" * len(ROUND_COLS)]
    for ph in res.get("phases", []):
        if ph["round"] < 0:
            continue
        g = ph.get("gen") or {}
        c = ph["calls"]
        et = ph.get("etsf_keepalive") or {}
        lat = c["invite_200_ms"]
        cells = [ph["round"] + 1, ph["config"], ph["phase"], ph["loadavg"][0], f"{ph['window_s']:.1f}",
                 f"{g['sent']} / {g['answered_200']}" if g else "–", f"{c['successful']} / {c['planned']}",
                 f"{_f(lat['p50'], 0)} / {_f(lat['p99'], 0)}",
                 f"{ph['bench_ctx']} / {ph['ctxt']} / {ph['kamailio_ctx']}",
                 f"{ph['bench_cpu_s']:.2f} / {ph['busy_s']:.2f} / {ph['kamailio_s']:.2f}",
                 f"{et.get('answered', '–')} / {et.get('passed_sampled', '–')}"]
        out.append("| " + " | ".join(str(x) for x in cells) + " |")
    return "\n".join(out) + "\n"


SEARCH_COLS = ("config", "keep-alives/s offered", "sent/s", "answered 200 / sent", "calls ok / planned",
               "INVITE→200 p99 ms", "load avg", "result")


def search_md(res: dict) -> str:
    out = ["| " + " | ".join(SEARCH_COLS) + " |", "|" + "---|" * len(SEARCH_COLS)]
    for letter in CONFIGS:
        for s in (res.get("max_rate") or {}).get(letter, {}).get("probes", []):
            g = s.get("gen") or {}
            cells = [letter, f"{s['ka_rate']:g}", _f(g.get("pps"), 0),
                     f"{g.get('answered_200', '–')} / {g.get('sent', '–')}",
                     f"{s['calls']['successful']} / {s['calls']['planned']}", _f(s["calls"]["invite_200_ms"]["p99"], 0),
                     s["loadavg"][0], "ok" if s["ok"] else "FAIL: " + s["why"]]
            out.append("| " + " | ".join(str(x) for x in cells) + " |")
    return "\n".join(out) + "\n"


def report_md(res: dict, plot_name: str | None = PLOT) -> str:
    p = res.get("params", {})
    host = res.get("host") or {}
    out = ["## Keep-alive benchmark: eTSF answers OPTIONS in the kernel vs Kamailio", "",
           f"Profile `{res.get('profile')}`, {len(set(ph['round'] for ph in res.get('phases', [])))} paired rounds "
           f"(order alternating K E / E K), phases of {p.get('phase_s')} s: calls only "
           f"({p.get('call_rate')} calls/s, sipp `uac.xml`) and calls + keep-alives "
           f"({p.get('call_rate', 0) * p.get('ka_per_call', 0)} OPTIONS/s = {p.get('ka_per_call')} per call, from "
           f"{p.get('sources')} source addresses, "
           + ("every datagram evenly spaced" if p.get("batch") == 1 else f"sent in batches of {p.get('batch', 32)}")
           + f"). E sends 1 in {p.get('sample_every')} answerable OPTIONS to the "
           f"proxy; the proxy-alive gate: {res.get('gate', {}).get('how', '–')}. Pinning: "
           f"{', '.join(f'{k} {v}' for k, v in (host.get('pinning') or {}).items())}. "
           f"Load average at start {' '.join(host.get('loadavg_at_start') or [])} (per phase in the rounds table).", "",
           "Per keep-alive = (mix phase − calls-only phase of the same visit) ÷ keep-alives sent. "
           "E / K is the median over rounds of the per-round ratio, with a seeded bootstrap 95 % interval; "
           "a target is *met* when the whole interval is under it.", "",
           res.get("table_md") or table_md(res), ""]
    obs = res.get("observations") or []
    out += [f"* {o}" for o in obs] + ([""] if obs else [])
    if plot_name:
        out += [f"![per keep-alive cost]({plot_name})", ""]
    out += ["### Rounds", "", rounds_md(res), "### Maximum keep-alive rate with 0 failed calls", "",
            f"Calls at {p.get('call_rate')}/s; keep-alive rate doubling from {p.get('search_start')}/s (cap "
            f"{p.get('search_max')}/s), then {p.get('search_bisect')} bisection steps; "
            f"{p.get('search_probe_s')} s probes. A probe passes with every call completed, ≥ 99 % of the "
            "keep-alives answered and ≥ 90 % of the offered "
            "rate sent (otherwise the generator is the limit).", "", search_md(res)]
    if res.get("errors"):
        out += ["Errors: " + "; ".join(res["errors"]), ""]
    if res.get("skipped"):
        out += ["Skipped: " + "; ".join(res["skipped"]), ""]
    return "\n".join(out)


def plot(res: dict, path: Path) -> bool:
    """Per-round cost per keep-alive, K vs E: context switches and machine CPU."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    vis = res.get("visits") or []
    if not vis:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key, title in ((axes[0], "ctx_per_ka_node", "context switches / keep-alive (node's tasks)"),
                           (axes[1], "cpu_us_per_ka_bench", "CPU µs / keep-alive (benchmark tasks)"),
                           (axes[2], "cpu_us_per_ka_kamailio", "Kamailio CPU µs / keep-alive")):
        for letter, mk in (("K", "o"), ("E", "s")):
            pts = [(v["round"] + 1, v[key]) for v in vis if v["config"] == letter and v.get(key) is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker=mk, ls="", label=NAMES[letter])
        ax.axhline(0, color="grey", lw=0.6)
        plotting.label(ax, "round", None, title, legend=8)
    plotting.save(fig, path)
    return True


# ---------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------

def policy_text(enabled: bool, p: dict) -> str:
    """The node's policy: trusted UAC, generous per-source limits (the devices ping far more
    often than real ones so that a few thousand addresses make a carrier-sized load: the
    limits must not be what answers), the VIP steered to Kamailio, and the keep-alive
    responder on (E) or off (K) with everything else equal."""
    return (f"version: 1\nsip_ports: [{T.PORT}]\ntrust: [198.18.40.0/30]\n"
            "rate_limits:\n  register: {rate: 2, burst: 5}\n  options: {rate: 100000, burst: 100000}\n"
            f"services:\n  - name: sip-proxy\n    vip: {T.VIP}\n    port: {T.PORT}\n    protocol: udp\n"
            f"    affinity: call-id\n    backends:\n      - {{address: {T.POD}, port: {T.PORT}, weight: 1}}\n"
            f"keepalive:\n  enabled: {'true' if enabled else 'false'}\n  identities: [\"{T.VIP}\"]\n"
            f"  sample_every: {p['sample_every']}\n"
            "  server: \"eTSF bench node\"\n"
            f"  probe: {{address: \"{T.POD}\", port: {T.PORT}, interval_ms: {p['probe_interval_ms']}, "
            f"timeout_ms: {p['probe_interval_ms']}, alive_ms: {3 * p['probe_interval_ms']}}}\n")


class KaBench:
    def __init__(self, out: Path, budget_s: float, prof: dict, profile: str, work: Path | None = None):
        self.out, self.p, self.budget_s = out, prof, budget_s
        hp = dict(harness.PROFILES["full"])
        hp.update(kamailio_children=prof["kamailio_children"], flood_sources=0, settle=prof["settle_s"],
                  hold_ms=prof["hold_ms"])
        args = types.SimpleNamespace(work=str(work) if work else None, budget_min=budget_s / 60,
                                     profile=f"keepalive-{profile}", only=None, keep_pcaps=False)
        self.b = harness.Bench(args, hp, out)
        self.b.tag = f"k{os.getpid() % 100000}"
        self.t0 = time.monotonic()
        self.deadline = self.t0 + budget_s
        self.cfg = {"name": "C-etsf-fastpath", "kind": "etsf-fastpath", "services": 0}
        # etsfctl's paths for the in-process status reads; put back in cleanup()
        self.saved_env = {k: os.environ.get(k) for k in ("ETSF_PIN_ROOT", "ETSF_STATE_DIR", "ETSF_RUN_DIR")}
        os.environ.update({k: self.b.env[k] for k in self.saved_env})
        self.prober = None
        self.saved_affinity: set[int] | None = None
        self.res: dict = {"schema": SCHEMA, "profile": profile, "started": harness.now_utc().isoformat(),
                          "budget_s": budget_s, "params": dict(prof), "phases": [], "visits": [], "max_rate": {},
                          "errors": [], "skipped": [], "pids": [], "gate": {},
                          "namespaces": [f"{T.NS_PREFIX}{x}{self.b.tag}" for x in "hcpu"],
                          "pin_root": self.b.pin_root, "work_dir": str(self.b.work)}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    # -- setup ------------------------------------------------------------------
    def setup(self):
        b, p = self.b, self.p
        self.res["host"] = b.host_info()
        self.res["host"]["pinning"]["keepalive_generator"] = f"cpu{harness.CPU_LOAD}"
        self.res["host"]["pinning"]["harness"] = f"cpu{harness.CPU_LOAD}"
        self.res["host"]["pinning"]["prober"] = f"cpu{harness.CPU_PROXY}"
        b.prepare()
        self.gen_bin = b.work / "kagen"
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(self.gen_bin), str(GEN_SRC)], check=True,
                       capture_output=True, text=True, timeout=120)
        b.setup_config(self.cfg)
        topo = b.topo
        # the devices: every address of KA_NET is local to the UAC namespace (an AnyIP route:
        # one socket sends from each of them with IP_PKTINFO and receives their answers)
        topo.sh(topo.uac, "ip", "route", "add", "local", KA_NET, "dev", "lo")
        topo.sh(topo.node, "ip", "route", "add", KA_NET, "via", T.UAC, "dev", T.UPLINK_IF)
        if self.cfg.get("xdp_mode"):
            # a veth delivers XDP_TX frames only to a peer running NAPI: a pass-only XDP program
            # on the UAC side, in both configurations alike (the tc hook answers through the
            # uplink's egress, which needs none)
            obj = Path(b.env["ETSF_BUILD_DIR"]) / "xdp_count.bpf.o"
            topo.sh(topo.uac, "ip", "link", "set", "dev", T.UAC_IF, "xdp", "obj", str(obj), "sec", "xdp")
        if p.get("rps"):
            self.steer_receive()
        self.kam_pids = {int(x) for x in os.listdir("/proc") if x.isdigit() and self._has(x, b.kam_token)}
        self.uas_pids = {int(x) for x in os.listdir("/proc") if x.isdigit() and self._has(x, b.uas_token)}
        self.wait_proxy()

    def steer_receive(self):
        """Make the node's CPU hold all of the node's work, as on a real SBC where the NIC
        interrupts the node's own CPUs.  A veth runs the receiver's stack in the SENDER's
        softirq, so without this the node's receive work for a keep-alive (and eTSF's program
        that answers it) lands on the generator's CPU, and the peers' receive work on the
        node's.  RPS on every veth end moves each receive to its side's CPU: the node's ends
        (uplink, bridge ports, the pod's interface) to the node's CPU, the peers' ends (UAC,
        UAS) to the load CPU.  Both configurations alike."""
        self.res["host"]["pinning"]["rps"] = harness.steer_rps(self.b.topo)
        self.res["node_cpu"] = int(harness.CPU_PROXY)

    @staticmethod
    def _has(pid: str, token: str) -> bool:
        try:
            return token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    def wait_proxy(self, limit_s: float = 30.0):
        t0 = time.monotonic()
        while True:
            r = self.b.topo.sh(self.b.topo.pod, "cat", "/proc/net/udp", check=False)
            if overload.proxy_socket(r.stdout, T.POD, T.PORT):
                return
            if time.monotonic() - t0 > limit_s or self.b.kam.poll() is not None:
                raise RuntimeError(f"kamailio not listening on {T.POD}:{T.PORT} after {limit_s:.0f} s")
            time.sleep(0.2)

    def drain(self, limit_s: float = 15.0):
        """After an overloaded probe: until Kamailio's socket is empty and its transactions of
        the failed calls have timed out (fr_inv_timer), bounded."""
        t_end = time.monotonic() + limit_s
        while time.monotonic() < t_end:
            r = self.b.topo.sh(self.b.topo.pod, "cat", "/proc/net/udp", check=False)
            if not (overload.proxy_socket(r.stdout, T.POD, T.PORT) or {}).get("rx_queue"):
                break
            time.sleep(0.2)
        time.sleep(max(0.0, min(8.0, t_end - time.monotonic())))

    def apply(self, letter: str):
        pol = self.b.work / f"policy-{letter}.yml"
        pol.write_text(policy_text(letter == "E", self.p))
        self.b.etsfctl("policy", "apply", str(pol))
        if letter == "E":
            self.gate_open()

    # -- the proxy-alive gate ---------------------------------------------------
    def start_prober(self):
        """The agent's prober, as deployed (its CPU is counted with the benchmark's tasks in both
        configurations): `etsfctl keepalive probe` in the node namespace for the whole run, from
        E's policy (K's has the responder off, which the prober refuses)."""
        b = self.b
        pol = b.work / "policy-E.yml"
        pol.write_text(policy_text(True, self.p))
        # the agent is node work: on the node's CPU
        cmd = ["taskset", "-c", harness.CPU_PROXY, "nsenter", f"--net=/run/netns/{b.topo.node}", sys.executable,
               "-m", "etsf", "keepalive", "probe", "--policy", str(pol)]
        with open(b.work / "prober.log", "w", encoding="utf-8") as logf:
            self.prober = subprocess.Popen(  # pylint: disable=consider-using-with
                cmd, env=b.env, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        self.res["pids"].append(self.prober.pid)
        self.res["gate"] = {"how": "held open by the agent's prober (`etsfctl keepalive probe`, OPTIONS to "
                                   f"Kamailio every {self.p['probe_interval_ms']} ms from the node namespace)"}

    def gate_open(self, limit_s: float = 15.0):
        """Wait (bounded) until the prober has opened the gate: its first 200 from the proxy."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit_s:
            if ((self.ka_status().get("gate") or {}).get("proxy_alive")
                    or (self.prober is not None and self.prober.poll() is not None)):
                break
            time.sleep(0.2)
        st = self.ka_status()
        if not (st.get("gate") or {}).get("proxy_alive"):
            raise RuntimeError(f"the proxy-alive gate is not open after {time.monotonic() - t0:.0f} s: "
                               f"{json.dumps(st)[:300]}")

    def ka_status(self) -> dict:
        """`etsfctl keepalive status --json`, in this process (a subprocess per phase would cost
        a Python start-up twice per phase)."""
        try:
            from etsf.keepalive import commands as kcmd  # pylint: disable=import-outside-toplevel
            return json.loads(json.dumps(kcmd.status(), default=str))
        except Exception:  # noqa: BLE001 - the CLI below says what is wrong
            pass
        r = self.b.etsfctl("keepalive", "status", "--json", check=False, timeout=30)
        with contextlib.suppress(ValueError):
            return json.loads(r.stdout)
        return {"error": (r.stderr or r.stdout).strip()[-300:]}

    def ka_counters(self) -> dict | None:
        c = self.ka_status().get("counters")
        return c if isinstance(c, dict) else None

    # -- one phase ----------------------------------------------------------------
    @staticmethod
    def snap() -> dict:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {"acct": cpuacct.snapshot(),
                "children": (ru.ru_utime + ru.ru_stime, ru.ru_nvcsw + ru.ru_nivcsw)}

    def roles(self) -> dict[int, str]:
        """The long-lived processes of the benchmark by role: Kamailio, the sipp UAS, the prober."""
        out = {pid: "kamailio" for pid in self.kam_pids}
        out.update({pid: "sipp uas" for pid in self.uas_pids})
        if self.prober is not None:
            out[self.prober.pid] = "prober"
        return out

    def phase(self, letter: str, rnd: int, label: str, ka_rate: float, seconds: float) -> dict:
        b, p = self.b, self.p
        b.run_seq += 1
        d = b.work / f"{b.run_seq:03d}-{letter}-{label}"
        d.mkdir()
        planned = max(1, int(round(p["call_rate"] * seconds)))
        cmd = ["sipp", "-sf", str(HERE / "templates" / "uac.xml"), f"{T.VIP}:{T.PORT}", "-s", "bench", "-i", T.UAC,
               "-p", "5070", "-t", "un", "-max_socket", "15000", "-m", str(planned), "-r", str(p["call_rate"]),
               "-rp", "1000", "-l", str(int(max(50, p["call_rate"] * 3))), "-d", str(p["hold_ms"]),
               "-max_retrans", "3", "-recv_timeout", "6000", "-timeout", f"{int(seconds + 25)}s", "-nostdin",
               "-trace_stat", "-stf", str(d / "stat.csv"), "-fd", "1", "-trace_rtt", "-rtt_freq", "1",
               "-trace_err", "-error_file", str(d / "errors.log")]
        with open("/proc/loadavg", encoding="ascii") as f:
            load = f.read().split()[:3]
        e0 = self.ka_counters()
        a = self.snap()
        t0 = time.monotonic()
        gen = None
        if ka_rate:
            gen = b.topo.popen(b.topo.uac, [str(self.gen_bin), T.VIP, str(T.PORT), T.VIP, f"{ka_rate:g}",
                                            f"{seconds:g}", KA_BASE, str(p["sources"]), str(KA_PORT), "1",
                                            str(p["batch"] if rnd >= 0 else p["search_batch"])],
                               d / "kagen.json", limit=seconds + 15, cpu=harness.CPU_LOAD)
        sp = b.topo.popen(b.topo.uac, cmd, d / "sipp.log", limit=seconds + 40, cpu=harness.CPU_LOAD)
        rc = b.topo.stop(sp, timeout=seconds + 50)
        grc = b.topo.stop(gen, timeout=seconds + 20) if gen else None
        # a fixed window (the same in both phases of a visit) unless a process ran past it
        rest = t0 + seconds + p["tail_s"] - time.monotonic()
        if rest > 0:
            time.sleep(rest)
        bsnap = self.snap()
        e1 = self.ka_counters()
        rec = {"config": letter, "round": rnd, "phase": label, "ka_rate": ka_rate, "seconds": seconds,
               "call_rate": p["call_rate"], "loadavg": load, "dir": str(d.relative_to(b.work)),
               **phase_figures(a, bsnap, self.roles(), self.res.get("node_cpu"))}
        sp_res = harness.Bench.parse_sipp(d)
        rtd = sp_res["latency"].get("rtd1_ms") or harness.lat_summary([])
        rec["calls"] = {"planned": planned, "created": sp_res["created"], "successful": sp_res["successful"],
                        "failed": sp_res["failed"], "retransmissions": sp_res["retransmissions"], "sipp_rc": rc,
                        "fail_causes": sp_res["fail_causes"],
                        "invite_200_ms": {k: rtd.get(k) for k in ("n", "p50", "p99")}}
        if gen is not None:
            g = parse_gen((d / "kagen.json").read_text(errors="replace"))
            if g is None:
                raise RuntimeError(f"keep-alive generator (rc {grc}): {(d / 'kagen.json').read_text()[-300:]}")
            g["consistency"] = gen_consistent(g)
            rec["gen"] = g
        if e0 and e1:
            rec["etsf_keepalive"] = {k: e1[k] - e0.get(k, 0) for k in e1 if isinstance(e1[k], int)}
        if b.kam.poll() is not None:
            raise RuntimeError(f"kamailio exited during {letter} {label}")
        time.sleep(p["settle_s"])
        return rec

    # -- paired rounds -------------------------------------------------------------
    def rounds(self):
        p = self.p
        visit_s = 2 * (p["phase_s"] + p["tail_s"] + p["settle_s"] + 1.0) + 3.0
        reserve = self.search_reserve()
        for rnd in range(p["rounds"]):
            order = CONFIGS if rnd % 2 == 0 else tuple(reversed(CONFIGS))
            if self.left() - reserve < 2 * visit_s:
                self.res["skipped"].append(f"round {rnd + 1} and later (time budget)")
                break
            for letter in order:
                self.apply(letter)
                time.sleep(p["settle_s"])
                calls = self.phase(letter, rnd, "calls", 0, p["phase_s"])
                mix = self.phase(letter, rnd, "mix", p["call_rate"] * p["ka_per_call"], p["phase_s"])
                self.res["phases"] += [calls, mix]
                v = visit(calls, mix)
                self.res["visits"].append(v)
                g = mix["gen"]
                log(f"round {rnd + 1} {letter}: ka sent {g['sent']} answered {g['answered_200']}, ctx/ka node "
                    f"{_f(v['ctx_per_ka_node'], 2)}, bench tasks {_f(v['ctx_per_ka_bench'], 2)} (machine "
                    f"{_f(v['ctx_per_ka_machine'], 2)}, kamailio "
                    f"{_f(v['ctx_per_ka_kamailio'], 2)}), cpu µs/ka {_f(v['cpu_us_per_ka_bench'], 2)} (machine "
                    f"{_f(v['cpu_us_per_ka_machine'], 2)}, kamailio {_f(v['cpu_us_per_ka_kamailio'], 2)}), calls ok "
                    f"{mix['calls']['successful']}/{mix['calls']['planned']}, load {mix['loadavg'][0]}")
            self.save()

    def search_reserve(self) -> float:
        p = self.p
        n = 2 * (self._doublings() + p["search_bisect"])
        # failed probes are followed by a drain of up to 8 s: about 1 + bisect_steps per configuration
        drains = 2 * (1 + p["search_bisect"]) * 8.0 if p["search_start"] < p["search_max"] else 0.0
        return n * (p["search_probe_s"] + p["tail_s"] + p["settle_s"] + 1.0) + 6.0 + drains

    def _doublings(self) -> int:
        n, r = 1, self.p["search_start"]
        while r < self.p["search_max"]:
            r *= 2
            n += 1
        return n

    # -- maximum keep-alive rate ----------------------------------------------------
    def max_rate(self):
        p = self.p
        for letter in CONFIGS:
            self.apply(letter)
            time.sleep(p["settle_s"])
            probes: list[dict] = []
            cut: list[float] = []

            # defaults bind this iteration's lists (fresh per config), not shared mutable defaults
            def probe(rate, letter=letter, probes=probes, cut=cut):  # pylint: disable=dangerous-default-value
                if self.left() < p["search_probe_s"] + 20:
                    cut.append(rate)
                    return None
                rec = self.phase(letter, -1, f"search-{rate}", rate, p["search_probe_s"])
                rec["ok"], rec["why"] = search_ok(rec)
                g = rec["gen"]
                log(f"max rate {letter} {rate}/s: sent {g['sent']} ({g['pps']:.0f}/s) answered {g['answered_200']}, "
                    f"calls ok {rec['calls']['successful']}/{rec['calls']['planned']} -> {rec['why']}")
                probes.append(rec)
                if not rec["ok"]:
                    self.drain()
                return rec
            best, _unused = overload.capacity_search(probe, p["search_start"], p["search_max"], p["search_bisect"],
                                                     floor=p["search_start"] // 4)
            last_bad = next((s for s in reversed(probes) if not s["ok"]), None)
            self.res["max_rate"][letter] = {
                "rate": best, "probes": probes,
                "capped": bool(best and best >= p["search_max"]),
                "generator_limited": bool(last_bad and "generator-limited" in last_bad["why"]),
                "budget_cut": cut[0] if cut else None}
            self.save()

    # -- analysis -----------------------------------------------------------------------
    def analyse(self):
        analyse(self.res)

    def save(self):
        (self.out / "keepalive.json").write_text(json.dumps(self.res, indent=1, default=str) + "\n")

    def run(self):
        # the harness (its /proc snapshots, etsfctl calls) is not node work: off the node's CPU
        self.saved_affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {int(harness.CPU_LOAD)})
        self.setup()
        self.start_prober()
        self.rounds()
        self.max_rate()

    def cleanup(self):
        if self.saved_affinity:
            os.sched_setaffinity(0, self.saved_affinity)
        for k, v in self.saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if self.prober is not None and self.prober.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.prober.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.prober.wait(timeout=10)
            if self.prober.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.prober.pid, signal.SIGKILL)
                self.prober.wait(timeout=10)
        if self.b.topo is not None:
            self.res["pids"] += [q.pid for q in self.b.topo.procs.procs]
        with contextlib.suppress(Exception):
            self.b.teardown_config(self.cfg)
        self.b.cleanup()


def render(out: Path) -> dict:
    """Re-analyse out/keepalive.json and rewrite it, keepalive.md and the plot."""
    out = Path(out)
    res = json.loads((out / "keepalive.json").read_text())
    analyse(res)
    res["table_md"] = table_md(res)
    res["plots"] = [PLOT] if plot(res, out / PLOT) else []
    res["report_md"] = report_md(res, PLOT if res["plots"] else None)
    (out / "keepalive.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    (out / "keepalive.md").write_text(res["report_md"])
    return res


def run(out: Path, budget_s: float, quick: bool, **overrides) -> dict:
    """Run the keep-alive benchmark (quick: the CI form) within budget_s seconds; write
    keepalive.json, keepalive.md and the plot under out; return the results.  overrides:
    profile entries (e.g. rounds=4) and work=DIR to keep the raw files."""
    out = Path(out)
    profile = "quick" if quick else "full"
    prof = dict(PROFILES[profile])
    work = overrides.pop("work", None)
    for k, v in overrides.items():
        if k not in prof:
            raise ValueError(f"keepalive: unknown profile entry {k!r} (known: {', '.join(sorted(prof))})")
        prof[k] = v
    if not 1 <= int(prof["rounds"]) <= 20:
        raise ValueError(f"keepalive: rounds must be in 1..20 (got {prof['rounds']!r})")
    if not 1 <= int(prof["sources"]) <= 4096:
        raise ValueError(f"keepalive: sources must be in 1..4096 (got {prof['sources']!r})")
    out.mkdir(parents=True, exist_ok=True)
    kb = KaBench(out, float(budget_s), prof, profile, work=Path(work) if work else None)
    log(f"{profile} run, budget {budget_s:.0f} s -> {out}")
    res = kb.res
    try:
        kb.run()
    except Exception as e:  # noqa: BLE001 - recorded; what was measured is still written
        res["errors"].append(f"{type(e).__name__}: {e}")
        log(f"ERROR: {type(e).__name__}: {e}")
    finally:
        kb.cleanup()
        if not work:
            shutil.rmtree(kb.b.work, ignore_errors=True)
            res["work_dir"] = None
        res["finished"] = harness.now_utc().isoformat()
        res["wall_seconds"] = round(time.monotonic() - kb.t0, 1)
        with contextlib.suppress(Exception):
            kb.analyse()
        res["table_md"] = table_md(res)
        res["plots"] = [PLOT] if plot(res, out / PLOT) else []
        res["report_md"] = report_md(res, PLOT if res["plots"] else None)
        (out / "keepalive.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
        (out / "keepalive.md").write_text(res["report_md"])
        log(f"done in {res['wall_seconds']} s: {out / 'keepalive.md'}")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--out", metavar="DIR", help="result directory (default bench/results/<UTC>-keepalive)")
    ap.add_argument("--quick", action="store_true", help="CI form: one round, short phases, <= 90 s")
    ap.add_argument("--budget-min", type=float, metavar="MIN", help="hard time budget (quick 1.5, full 19)")
    ap.add_argument("--rounds", type=int, metavar="N", help="paired rounds (full 10)")
    ap.add_argument("--phase-s", type=float, metavar="S",
                    help="length of each calls-only and mix phase (full 12): longer phases carry more "
                         "keep-alives against the same phase-to-phase noise of the calls")
    ap.add_argument("--work", metavar="DIR", help="keep sipp's, the generator's and Kamailio's raw files in DIR")
    ap.add_argument("--render", metavar="DIR", help="re-analyse DIR/keepalive.json and rewrite its report and plot")
    args = ap.parse_args(argv)
    if args.render:
        with contextlib.suppress(BrokenPipeError):
            print(render(Path(args.render))["table_md"])
        return 0
    if args.budget_min is not None and not 0 < args.budget_min <= 60:
        ap.error("--budget-min must be in (0, 60]")
    if args.rounds is not None and not 1 <= args.rounds <= 20:
        ap.error("--rounds must be in 1..20")
    over = {}
    if args.rounds:
        over["rounds"] = args.rounds
    if args.phase_s is not None:
        if not 2 <= args.phase_s <= 60:
            ap.error("--phase-s must be in [2, 60]")
        over["phase_s"] = args.phase_s
    if args.work:
        over["work"] = args.work
    why = harness.preflight("keepalive.py", ("sipp", "kamailio", "iptables-nft-restore", "gcc", "taskset", "nsenter"))
    if why:
        print(why, file=sys.stderr)
        return 2
    budget = args.budget_min * 60 if args.budget_min else PROFILES["quick" if args.quick else "full"]["budget_s"]
    stamp = harness.now_utc().strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else HERE / "results" / f"{stamp}-keepalive"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    res = run(out, budget, args.quick, **over)
    with contextlib.suppress(BrokenPipeError):
        print(res["table_md"])
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
