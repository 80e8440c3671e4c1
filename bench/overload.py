"""Overload sweep on the full stack: goodput vs offered INVITE load, per configuration.

    python bench/overload.py --out DIR                  # full sweep (D, A, C; <= 14 min)
    python bench/overload.py --out DIR --quick          # CI form (<= 90 s): D only, two short steps
    python bench/overload.py --out DIR --budget-min 8   # what does not fit is skipped and listed

The Kamailio topology of bench/run.py (UAC -> node -> Kamailio pod -> UAS, built by
bench/topology.py, kube-proxy rules from bench/kubeproxy.py).  First the proxy's capacity is
measured on the first configuration (D, the direct path): the highest call rate sustained with
every call completed, no failure, >= 90 % of the offered rate achieved and no datagram dropped at
Kamailio's socket; doubling, then bisecting, bounded.  Then each configuration is offered
0.5x .. 4x that capacity, one step per multiple.  Per step: offered vs achieved rate, goodput
(calls that got their 200 and completed the BYE, per second), INVITE->200 p50/p99 of answered
calls, 503s, sipp's retransmissions, drops at Kamailio's socket (/proc/net/udp in the pod).

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
import sys
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(HERE), str(ROOT / "src"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import run as harness  # noqa: E402  pylint: disable=wrong-import-position
import topology as T  # noqa: E402  pylint: disable=wrong-import-position
import plotting  # noqa: E402  pylint: disable=wrong-import-position

SCHEMA = "overload/1"
SCENARIO = HERE / "templates" / "overload_uac.xml"
PLOT = "overload_goodput.png"

PROFILES = {
    # the sweep the paper-style curve is drawn from; ~13 min on an idle 2-core host
    "full": dict(configs=["D", "A", "C"], multiples=[0.5, 1, 1.5, 2, 3, 4], step_s=30, services=10000,
                 capacity=None, probe_s=6, cap_start=200, cap_max=6400, cap_bisect=2, cap_floor=20,
                 recv_timeout_s=4, max_retrans=5, hold_ms=100, settle_s=1.0, transport="un",
                 kamailio_children=4, budget_s=14 * 60),
    # CI: proves the harness (consistent counts), not the host's capacity: a fixed small guess
    "quick": dict(configs=["D"], multiples=[0.5, 2], step_s=5, services=0, capacity=100,
                  probe_s=3, cap_start=50, cap_max=400, cap_bisect=1, cap_floor=10,
                  recv_timeout_s=4, max_retrans=5, hold_ms=100, settle_s=0.5, transport="un",
                  kamailio_children=2, budget_s=90),
}

# configurations by letter (same names as bench/run.py); more (e.g. eTSF with an admission
# controller) are added here and picked with configs=[...]
CONFIG_KINDS = {"D": ("D-direct", "direct"), "A": ("A-ipt-nft-{n}", "iptables-nft"),
                "C": ("C-etsf-fastpath", "etsf-fastpath")}
# rough setup + teardown cost of a configuration's topology (rules, BPF attach), for planning
SETUP_S = {"direct": 12.0, "iptables-nft": 30.0, "etsf-fastpath": 35.0}


def log(msg):
    harness.log(f"[overload] {msg}")


def config(letter: str, services: int) -> dict:
    name, kind = CONFIG_KINDS[letter]
    return {"letter": letter, "name": name.format(n=services), "kind": kind,
            "services": 0 if kind == "direct" else services, "steps": []}


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
    of the offered rate achieved and no datagram dropped at the proxy's socket."""
    return (rec["completed"] == rec["planned"] and rec["failed"] == 0 and rec["unfinished"] == 0
            and rec["achieved_cps"] >= 0.9 * rec["offered_cps"] and rec.get("proxy_drops") == 0)


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


def plan(p: dict, kinds: list[str], left_s: float, first_in_place: bool = True) -> tuple[list[float], float]:
    """The multiples every configuration can run within left_s (the lowest ones: a budget cut
    drops the highest loads for all configurations alike) and the planned seconds."""
    mults = sorted(p["multiples"])
    setup = sum(SETUP_S.get(k, 30.0) for k in (kinds[1:] if first_in_place else kinds))
    for k in range(len(mults), -1, -1):
        need = setup + len(kinds) * sum(step_cost(p, m) for m in mults[:k])
        if need <= left_s:
            return mults[:k], need
    return [], setup


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
    out += ["", f"Steps of {p.get('step_s')} s, `-t {p.get('transport')}`, sipp `-recv_timeout "
                f"{p.get('recv_timeout_s')} s -max_retrans {p.get('max_retrans')}`; pinning: "
                f"{', '.join(f'{k} {v}' for k, v in ((res.get('host') or {}).get('pinning') or {}).items())}. "
                "Goodput = calls that got their 200 and completed the BYE, per second of the sending "
                "window; failed = all failed calls, (timeouts) those that timed out; error responses: calls "
                "answered with a final error response, by code.", "",
            res.get("table_md") or table_md(res)]
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
        what = [f"{s['config']} {s['multiple']:g}× ({s['why']})" if "multiple" in s
                else f"{s['config']} ({s['why']})" for s in res["skipped"]]
        out.append("Skipped: " + "; ".join(what) + ".")
        out.append("")
    return "\n".join(out)


def plot(res: dict, path: Path) -> bool:
    """Goodput vs offered load (the overload-collapse curve) and INVITE->200 p99 vs offered."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cap = (res.get("capacity") or {}).get("cps")
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    top = 0.0
    for c in res.get("configs", []):
        allst = c.get("steps") or []
        st = [s for s in allst if not s.get("sipp_aborted")]
        bad = [s for s in allst if s.get("sipp_aborted")]
        if not allst:
            continue
        top = max(top, *[s["offered_cps"] for s in allst])
        line = ax.plot([s["offered_cps"] for s in st], [s["goodput_cps"] for s in st], marker="o", label=c["name"])
        if bad:
            ax.plot([s["offered_cps"] for s in bad], [s["goodput_cps"] for s in bad], ls="", marker="x",
                    color=line[0].get_color(), label=f"{c['name']}: sipp aborted (partial)")
        p99 = [(s["offered_cps"], (s.get("invite_200_ms") or {}).get("p99")) for s in st]
        p99 = [(a, b) for a, b in p99 if b]
        if p99:
            xs, ys = zip(*p99)
            ax2.plot(xs, ys, marker="o", label=c["name"])
    if top:
        ax.plot([0, top], [0, top], ls=":", color="grey", label="goodput = offered")
    if cap:
        ax.axhline(cap, ls="--", color="black", lw=0.8, label=f"capacity {cap}/s")
    plotting.label(ax, "offered INVITE load (calls/s)", "goodput (completed calls/s)", "Goodput vs offered load",
                   legend=8)
    ax.grid(alpha=0.3)
    ax2.set_xlabel("offered INVITE load (calls/s)")
    ax2.set_ylabel("INVITE→200 p99 (ms, answered calls)")
    ax2.set_yscale("log")
    ax2.set_title("Latency of answered calls")
    ax2.grid(alpha=0.3)
    if ax2.lines:
        ax2.legend(fontsize=8)
    plotting.save(fig, path)
    return True


# ---------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------

class Sweep:
    def __init__(self, out: Path, budget_s: float, prof: dict, profile: str, work: Path | None = None):
        self.out, self.p, self.budget_s = out, prof, budget_s
        hp = dict(harness.PROFILES["full"])
        hp.update(kamailio_children=prof["kamailio_children"], flood_sources=0, settle=prof["settle_s"],
                  hold_ms=prof["hold_ms"])
        args = types.SimpleNamespace(work=str(work) if work else None, budget_min=budget_s / 60,
                                     profile=f"overload-{profile}", only=None, keep_pcaps=False)
        self.b = harness.Bench(args, hp, out)
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
        kam0, c0, t0 = harness.proc_cpu(b.kam_token), harness.cpu_snap(), time.monotonic()
        sp = b.topo.popen(b.topo.uac, cmd, d / "sipp.log", limit=hard + 5, cpu=harness.CPU_LOAD)
        self.res["pids"].append(sp.pid)
        rc = b.topo.stop(sp, timeout=hard + 15)
        wall = time.monotonic() - t0
        c1, kam1 = harness.cpu_snap(), harness.proc_cpu(b.kam_token)
        s1, udp1 = self.sock(), b.udp_errors()
        rows = read_rows((d / "stat.csv").read_text(errors="replace")) if (d / "stat.csv").exists() else []
        counts = {}
        for f in d.glob("*_counts.csv"):
            crow = read_rows(f.read_text(errors="replace"))
            counts = crow[-1] if crow else {}
        rec = {"label": label, "seconds": seconds, **summarize(rows, counts, rate, planned),
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
            self.res["capacity"] = {"cps": int(p["capacity"]), "from": "a fixed guess (quick form)", "probes": []}
            return int(p["capacity"])

        def probe(rate):
            if self.left() < p["probe_s"] + call_life(p) + 60:
                return None
            rec = self.step(cfg, rate, p["probe_s"], "cap")
            rec["ok"] = capacity_ok(rec)
            log(f"capacity probe {rate}/s: completed {rec['completed']}/{rec['planned']}, failed {rec['failed']}, "
                f"achieved {rec['achieved_cps']}/s, drops {rec['proxy_drops']} -> {'ok' if rec['ok'] else 'FAIL'}")
            return rec
        cps, probes = capacity_search(probe, p["cap_start"], p["cap_max"], p["cap_bisect"], p["cap_floor"])
        self.res["capacity"] = {"cps": cps, "from": f"measured on {cfg['name']}, {p['probe_s']} s probes",
                                "probes": probes}
        if not cps:
            self.res["capacity"]["why"] = "no probe passed" if probes else "time budget"
        return cps

    def run(self) -> dict:
        p = self.p
        self.res["host"] = self.b.host_info()
        cfgs = [config(x, p["services"]) for x in p["configs"]]
        if any(c["kind"].startswith("etsf") for c in cfgs):
            self.b.prepare()
        mults: list[float] = []
        for i, cfg in enumerate(cfgs):
            t_cfg = time.monotonic()
            self.res["configs"].append(cfg)
            try:
                if i > 0 and not mults:
                    raise _Skip("no capacity" if not self.res["capacity"].get("cps") else "time budget")
                log(f"== {cfg['name']}")
                self.b.setup_config(cfg)
                cfg["proxy_ready_s"] = self.wait_proxy()
                if i == 0:
                    cap = self.capacity(cfg)
                    if not cap:
                        raise _Skip("no capacity")
                    mults, need = plan(p, [c["kind"] for c in cfgs], self.left() - 5)
                    self.res["plan"] = {"multiples": mults, "planned_s": round(need, 1),
                                        "left_s": round(self.left(), 1)}
                    for m in sorted(set(p["multiples"]) - set(mults)):
                        self.res["skipped"] += [{"config": c["name"], "multiple": m, "why": "time budget (planned)"}
                                                for c in cfgs]
                cap = self.res["capacity"]["cps"]
                for m in mults:
                    if self.left() < step_cost(p, m, worst=True):
                        self.res["skipped"].append({"config": cfg["name"], "multiple": m, "why": "time budget"})
                        continue
                    rate = round(cap * m, 1)
                    rec = self.step(cfg, rate, p["step_s"], f"x{m:g}")
                    if rec["sipp_aborted"] and self.left() >= step_cost(p, m, worst=True):
                        log(f"{cfg['name']} {m:g}x: sipp aborted ({rec['sipp_aborted']}): once more")
                        first = rec
                        rec = self.step(cfg, rate, p["step_s"], f"x{m:g}-again")
                        rec["aborted_attempts"] = [first]
                    rec["multiple"] = m
                    cfg["steps"].append(rec)
                    lat = rec["invite_200_ms"]
                    log(f"{cfg['name']} {m:g}x ({rate:g}/s): achieved {rec['achieved_cps']}/s goodput "
                        f"{rec['goodput_cps']}/s, completed {rec['completed']}/{rec['attempted']}, failed {rec['failed']} "
                        f"(timeouts {rec['failed_timeout']}, error responses {rec['final_codes'] or 0}), retrans "
                        f"{rec['retransmissions']}, p50/p99 {lat['p50']}/{lat['p99']} ms, drops {rec['proxy_drops']}, "
                        f"proxy out of memory {rec['proxy_out_of_memory']}")
            except _Skip as e:
                self.res["skipped"].append({"config": cfg["name"], "why": str(e)})
            except Exception as e:  # noqa: BLE001 - record and go on with the others
                cfg["error"] = f"{type(e).__name__}: {e}"
                log(f"ERROR in {cfg['name']}: {cfg['error']}")
            finally:
                if self.b.topo is not None:
                    self.res["pids"] += [q.pid for q in self.b.topo.procs.procs]
                self.b.teardown_config(cfg)
                cfg.pop("_dir", None)
                cfg["wall_s"] = round(time.monotonic() - t_cfg, 1)
        return self.res

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
    if not prof["multiples"] or any(not 0 < float(m) <= 10 for m in prof["multiples"]):
        raise ValueError(f"overload: multiples must be in (0, 10] (got {prof['multiples']!r})")
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
        res["plots"] = [PLOT] if plot(res, out / PLOT) else []
        res["report_md"] = report_md(res, PLOT if res["plots"] else None)
        (out / "overload.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
        (out / "overload.md").write_text(res["report_md"])
        log(f"done in {res['wall_seconds']} s: {out / 'overload.md'}")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--out", metavar="DIR", help="result directory (default bench/results/<UTC>-overload)")
    ap.add_argument("--quick", action="store_true", help="CI form: D only, two short steps, <= 90 s")
    ap.add_argument("--budget-min", type=float, metavar="MIN", help="hard time budget (quick 1.5, full 14)")
    ap.add_argument("--configs", metavar="LETTERS", help=f"comma list of {', '.join(CONFIG_KINDS)} (default D,A,C)")
    ap.add_argument("--work", metavar="DIR", help="keep sipp's and Kamailio's raw files in DIR")
    args = ap.parse_args(argv)
    if args.budget_min is not None and not 0 < args.budget_min <= 60:
        ap.error("--budget-min must be in (0, 60]")
    over = {}
    if args.configs:
        over["configs"] = [x.strip() for x in args.configs.split(",") if x.strip()]
        if any(x not in CONFIG_KINDS for x in over["configs"]):
            ap.error(f"--configs: letters of {', '.join(CONFIG_KINDS)} (got {args.configs!r})")
    if args.work:
        over["work"] = args.work
    if os.geteuid() != 0:
        print("bench/overload.py: needs root (network namespaces, BPF)", file=sys.stderr)
        return 2
    for tool in ("sipp", "kamailio", "iptables-nft-restore", "taskset", "nsenter"):
        if not shutil.which(tool):
            print(f"bench/overload.py: {tool} not installed", file=sys.stderr)
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
