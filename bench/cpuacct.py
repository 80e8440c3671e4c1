"""CPU accounting for the path benchmark, in figures that add up.

* whole machine, by idle accounting: (elapsed x CPUs) - idle - iowait, from /proc/stat
  (idle time is kept in nanoseconds by the NOHZ code, unlike the tick-sampled user/system
  split, so this is the precise figure; only the USER_HZ rounding remains);
* every task on the machine from /proc/<pid>/task/<tid>/schedstat (ns on CPU, the
  scheduler's own clock), grouped: the benchmark's processes (sipp, responder) by role,
  kernel threads (ksoftirqd, kworkers, ...), and everything else (other tenants);
* softirq and irq from /proc/stat (tick-sampled: an estimate).  Without
  CONFIG_IRQ_TIME_ACCOUNTING (this kernel), softirq work done on the back of a task --
  veth forwarding runs in the sender's own softirq -- is inside that task's schedstat,
  and interrupt work on an otherwise idle CPU is in no task at all: that is the residual.

The check: sum of all tasks + residual = whole, with the residual small (<= 10 % of the
whole) when the tasks explain the CPU; the report shows the residual and says why.
"""
from __future__ import annotations

import os
import time

CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
HZ = os.sysconf("SC_CLK_TCK")


def parse_stat(text: str) -> dict:
    """/proc/stat -> {"cpus": n, user.. steal (ticks), "ctxt": n, "per_cpu": {"<cpu>": {user.. steal}}}
    (CPU numbers as strings: the figures go into JSON as they are)."""
    out = {"cpus": 0, "per_cpu": {}}
    for ln in text.splitlines():
        if ln.startswith("cpu "):
            out.update(zip(CPU_FIELDS, (int(x) for x in ln.split()[1:9])))
        elif ln.startswith("cpu"):
            out["cpus"] += 1
            f = ln.split()
            out["per_cpu"][f[0][3:]] = dict(zip(CPU_FIELDS, (int(x) for x in f[1:9])))
        elif ln.startswith("ctxt "):
            out["ctxt"] = int(ln.split()[1])
    return out


def parse_schedstat(text: str) -> int:
    """ns on CPU from a schedstat line ("<run ns> <wait ns> <timeslices>")."""
    return int(text.split()[0])


def parse_status(text: str) -> dict:
    """voluntary / involuntary context switches from /proc/<pid>/status."""
    out = {"voluntary": 0, "involuntary": 0}
    for ln in text.splitlines():
        if ln.startswith("voluntary_ctxt_switches:"):
            out["voluntary"] = int(ln.split()[1])
        elif ln.startswith("nonvoluntary_ctxt_switches:"):
            out["involuntary"] = int(ln.split()[1])
    return out


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def reaped(proc: str = "/proc") -> dict:
    """{pid: CPU ticks of its reaped children (cutime + cstime)}: where the time of tasks
    that exited inside a window shows up (tick-sampled), provided their parent lives on."""
    out = {}
    for pid in os.listdir(proc):
        if pid.isdigit() and (st := _read(f"{proc}/{pid}/stat")) is not None:
            f = st.rsplit(")", 1)[1].split()
            out[int(pid)] = int(f[13]) + int(f[14])
    return out


def session_pids(sid: int, proc: str = "/proc") -> dict[int, str]:
    """{pid: comm} of the processes in session sid (what NsProcesses started: its own session)."""
    out = {}
    for pid in os.listdir(proc):
        if pid.isdigit() and (st := _read(f"{proc}/{pid}/stat")) is not None:
            head, tail = st.rsplit(")", 1)
            if int(tail.split()[3]) == sid:
                out[int(pid)] = head.split("(", 1)[1]
    return out


def tasks(proc: str = "/proc") -> dict:
    """{tid: (pid, comm, ns on CPU, voluntary, involuntary, kernel thread?)} of every task."""
    out = {}
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            tids = os.listdir(f"{proc}/{pid}/task")
        except OSError:
            continue
        st = _read(f"{proc}/{pid}/stat")
        if st is None:
            continue
        flags = int(st.rsplit(")", 1)[1].split()[6])
        kthread = bool(flags & 0x00200000)             # PF_KTHREAD
        for tid in tids:
            ss = _read(f"{proc}/{pid}/task/{tid}/schedstat")
            sts = _read(f"{proc}/{pid}/task/{tid}/status")
            comm = _read(f"{proc}/{pid}/task/{tid}/comm")
            if ss is None or sts is None:
                continue
            cs = parse_status(sts)
            out[int(tid)] = (int(pid), (comm or "?").strip(), parse_schedstat(ss), cs["voluntary"],
                             cs["involuntary"], kthread)
    return out


def snapshot(proc: str = "/proc") -> dict:
    return {"t": time.monotonic(), "stat": parse_stat(_read(f"{proc}/stat") or ""), "tasks": tasks(proc),
            "reaped": reaped(proc)}


def account(a: dict, b: dict, roles: dict[int, str]) -> dict:
    """CPU-seconds between snapshots a and b.  roles: {pid: role} of the benchmark's own
    processes (every thread of those pids counts for the role)."""
    sa, sb = a["stat"], b["stat"]
    elapsed = b["t"] - a["t"]
    cpus = sb.get("cpus") or os.cpu_count()
    idle = (sb["idle"] - sa["idle"] + sb["iowait"] - sa["iowait"]) / HZ
    whole = elapsed * cpus - idle
    parts: dict[str, float] = {}
    ctx: dict[str, dict] = {}
    exited = 0
    for tid, (pid, comm, ns, vol, inv, kthread) in b["tasks"].items():
        prev = a["tasks"].get(tid)
        if prev is not None and prev[0] == pid:
            dns, dvol, dinv = ns - prev[2], vol - prev[3], inv - prev[4]
        else:
            dns, dvol, dinv = ns, vol, inv             # started inside the window
        if pid in roles:
            key = roles[pid]
            c = ctx.setdefault(key, {"voluntary": 0, "involuntary": 0})
            c["voluntary"] += dvol
            c["involuntary"] += dinv
        elif kthread:
            key = "softirq threads" if comm.startswith("ksoftirqd") else "kernel threads"
        else:
            key = "other tasks"
        parts[key] = parts.get(key, 0.0) + dns / 1e9
    for tid, (pid, _c, _ns, _v, _i, _k) in a["tasks"].items():
        if tid not in b["tasks"]:
            exited += 1                                 # its last slice is in no part
    ra, rb = a.get("reaped", {}), b.get("reaped", {})
    dre = sum(rb[p] - ra[p] for p in rb if p in ra and rb[p] > ra[p]) / HZ
    tasks_sum = sum(parts.values())
    # per CPU by the same idle accounting: with NOHZ idle, interrupt and softirq work that lands
    # on an otherwise idle CPU is not idle time, so it is in that CPU's busy figure
    pa, pb = sa.get("per_cpu") or {}, sb.get("per_cpu") or {}
    cpu_busy = {c: elapsed - (pb[c]["idle"] - pa[c]["idle"] + pb[c]["iowait"] - pa[c]["iowait"]) / HZ
                for c in pb if c in pa}
    return {
        "elapsed_s": elapsed, "cpus": cpus, "whole_s": whole, "idle_s": idle, "cpu_busy_s": cpu_busy,
        "parts_s": parts, "tasks_sum_s": tasks_sum, "residual_s": whole - tasks_sum,
        "residual_ratio": (whole - tasks_sum) / whole if whole > 0 else None,
        "softirq_s": (sb["softirq"] - sa["softirq"]) / HZ, "irq_s": (sb["irq"] - sa["irq"]) / HZ,
        "ctxt_machine": sb.get("ctxt", 0) - sa.get("ctxt", 0), "ctx_switches": ctx, "tasks_exited": exited,
        # CPU of children reaped in the window: the time of tasks that exited (not in any part),
        # but their whole life's time, so only a hint of what the residual holds
        "reaped_children_s": dre,
    }


def adds_up(acc: dict, tolerance: float = 0.10) -> tuple[bool, str]:
    """Whether the tasks explain the whole within tolerance, and the sentence that says so or why not."""
    r = acc["residual_ratio"]
    if r is None:
        return False, "no CPU time elapsed"
    if abs(r) <= tolerance:
        return True, f"tasks account for {100 * (1 - r):.1f} % of the busy CPU (within {tolerance:.0%})"
    if r > 0:
        return False, (f"{100 * r:.1f} % of the busy CPU is in no live task: tasks that exited in the window "
                       f"({acc['tasks_exited']} seen; children reaped meanwhile used {acc['reaped_children_s']:.2f} s "
                       f"in their lives) or interrupt work on idle CPUs (no IRQ time accounting in this kernel)")
    return False, (f"tasks sum to {100 * (1 - r):.1f} % of the busy CPU: idle accounting and schedstat "
                   f"clocks disagree by more than {tolerance:.0%} (USER_HZ rounding over "
                   f"{acc['elapsed_s']:.1f} s)")
