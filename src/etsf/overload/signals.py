"""The controller's signals, each cheap and local: proxy socket receive queues and drops
(/proc/net/udp, /proc/net/udp6), eTSF's own INVITE -> 100 (else 180) latency and 5xx ratio
(the telemetry maps, via the exporter's snapshot reader), host CPU busy share (/proc/stat)
and the new INVITEs admission refused (etsf_admit); and, per CPU that received INVITEs
(etsf_stats per CPU), what passes to the proxy (the cuts start from it) and what it serves:
INVITE 2xx per second (the telemetry's response codes; a bound of the admission rate).

Counters (drops, latency sums, response codes, CPU jiffies) are turned into per-tick deltas
here, so the control law sees one tick's worth and stays pure.
"""

from __future__ import annotations

import os
from typing import Any

from ..telemetry.reader import invite_codes, snapshot
from .law import Signals

#: columns of /proc/net/udp{,6} (after the "sl" column): local address, rx_queue, drops
_COL_LOCAL, _COL_QUEUES, _COL_DROPS = 1, 4, 12


def udp_sockets(ports, net_dir: str = "/proc/net") -> dict[str, int]:
    """{"queue": largest rx_queue (bytes), "drops": total drops, "sockets": n} over the
    IPv4 and IPv6 UDP sockets bound to one of *ports* in *net_dir*'s network namespace
    (``/proc/<pid>/net`` reads another process's)."""
    want = set(ports)
    queue = drops = n = 0
    for name in ("udp", "udp6"):
        try:
            with open(os.path.join(net_dir, name), encoding="ascii") as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:          # no IPv6 in this kernel/namespace
            continue
        for ln in lines:
            col = ln.split()
            if len(col) <= _COL_DROPS:
                continue
            port = int(col[_COL_LOCAL].rpartition(":")[2], 16)
            if port not in want:
                continue
            n += 1
            queue = max(queue, int(col[_COL_QUEUES].partition(":")[2], 16))
            drops += int(col[_COL_DROPS])
    return {"queue": queue, "drops": drops, "sockets": n}


def cpu_jiffies(proc_stat: str = "/proc/stat") -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot (idle and iowait are not busy)."""
    with open(proc_stat, encoding="ascii") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    total = sum(vals[:8])                  # guest time is already inside user/nice
    return total - vals[3] - (vals[4] if len(vals) > 4 else 0), total


def telemetry(root: str | None) -> dict[str, Any] | None:
    """INVITE latency histogram sums and response code counters, or None when the maps are
    not there (the controller then runs on the socket signals alone)."""
    try:
        snap = snapshot(root, programs=False, parts=("hist", "codes"))
    except Exception:  # noqa: BLE001 - maps not loaded: no telemetry this tick
        return None
    if "etsf_tm_hist" in snap["missing"] and "etsf_tm_codes" in snap["missing"]:
        return None
    lat = {st: (h["count"], h["sum_ns"]) for (m, st), h in snap["hist"].items()
           if m == "INVITE" and st in ("trying", "ringing")}
    return {"lat": lat, "codes": invite_codes(snap)}


def admission_refused() -> int | None:
    """New INVITEs refused by admission so far (first copies, all CPUs), or None when the
    data path is not loaded."""
    from .. import datapath
    try:
        return datapath.admission_counters()["rejected"]
    except Exception:  # noqa: BLE001 - maps not loaded: no admission this tick
        return None


def admit_decisions(root: str | None) -> tuple[list[int], list[int]] | None:
    """(new INVITEs admission decided so far, of them admitted) per CPU, or None when the map
    is not there."""
    from .. import layout
    from ..bpfmaps import open_map
    try:
        m = open_map("etsf_admit", root, read_only=True)
        try:
            vals = m.lookup_percpu((0).to_bytes(4, "little")) or []
        finally:
            m.close()
    except Exception:  # noqa: BLE001 - maps not loaded: no admission figures this tick
        return None
    rows = [layout.Admit.from_bytes(v) for v in vals]
    return [int(a.admitted) + int(a.rejected) for a in rows], [int(a.admitted) for a in rows]


def invite_passes(root: str | None) -> list[int] | None:
    """INVITE requests the classifier let through at ingress so far (every copy), per CPU, or
    None when the map is not there: what reaches the proxy while admission is off (etsf_admit
    then counts nothing)."""
    from .. import layout as L
    from ..bpfmaps import open_map
    try:
        m = open_map("etsf_stats", root, read_only=True)
        try:
            rows = m.items_percpu()
        finally:
            m.close()
    except Exception:  # noqa: BLE001 - maps not loaded: no counts this tick
        return None
    out: list[int] = []
    for k, vals in rows:
        hook, method, verdict, _r = L.stats_unidx(int.from_bytes(k[:4], "little"))
        if method != L.Method.INVITE or verdict == L.Verdict.DROP or hook == L.Hook.TC_EGRESS:
            continue
        if not out:
            out = [0] * len(vals)
        for i, v in enumerate(vals):
            out[i] += L.Counter.from_bytes(v).packets
    return out


def _moved(old: list[int] | None, new: list[int] | None) -> list[int] | None:
    """Per-CPU deltas of two readings of a per-CPU counter, None when not comparable."""
    if old is None or new is None or len(old) != len(new) or not new:
        return None
    return [max(0, b - a) for a, b in zip(old, new)]


def passed_per_cpu(old: dict[str, Any], new: dict[str, Any], dt: float) -> tuple[float | None, int]:
    """(INVITEs let through to the proxy per second per receiving CPU, receiving CPUs) between
    two readings: every INVITE the classifier passed (etsf_stats: admission on or off, or
    switched within the tick), else, without that map, the new INVITEs admission admitted
    (etsf_admit).  The receiving CPUs are those whose count moved: the token rate is per CPU,
    so the total rate the proxy gets is the per-CPU rate times them."""
    if dt <= 0:
        return None, 0
    pas = _moved(old.get("passed"), new.get("passed"))
    if pas is None:
        dec = _moved(old.get("decided"), new.get("decided"))
        adm = _moved(old.get("admitted"), new.get("admitted"))
        if dec is None or adm is None:
            return None, 0
        cpus = sum(1 for d in dec if d)
        return (round(sum(adm) / dt / cpus, 1), cpus) if cpus else (0.0, 0)
    cpus = sum(1 for d in pas if d)
    return (round(sum(pas) / dt / cpus, 1), cpus) if cpus else (0.0, 0)


def served_per_cpu(old: dict[str, Any], new: dict[str, Any], dt: float) -> float | None:
    """INVITE 2xx per second between two readings ({"codes", "decided", "passed"}), divided by
    the CPUs that received new INVITEs (passed_per_cpu; the admission rate is per CPU); None
    when no INVITE came in between or no time passed."""
    _rate, cpus = passed_per_cpu(old, new, dt)
    if not cpus:
        return None
    ok = sum(max(0, n - old["codes"].get(c, 0)) for c, n in new["codes"].items() if 200 <= c <= 299)
    return round(ok / dt / cpus, 1)


class Sampler:
    """Reads every signal once per tick and keeps the previous counters for the deltas."""

    def __init__(self, ports, net_dir: str = "/proc/net", pin_root: str | None = None,
                 cpu: bool = False, proc_stat: str = "/proc/stat", use_telemetry: bool = True):
        self.ports = list(ports)
        self.net_dir = net_dir
        self.pin_root = pin_root
        self.cpu = cpu
        self.proc_stat = proc_stat
        self.use_telemetry = use_telemetry
        self.prev: dict[str, Any] = {}

    def sample(self, t: float) -> Signals:
        s = Signals(t=t)
        if self.ports:
            u = udp_sockets(self.ports, self.net_dir)
            if u["sockets"]:
                s.queue = u["queue"]
                if "drops" in self.prev:
                    s.drops = max(0, u["drops"] - self.prev["drops"])
                self.prev["drops"] = u["drops"]
        if self.cpu:
            busy, total = cpu_jiffies(self.proc_stat)
            if "cpu" in self.prev and total > self.prev["cpu"][1]:
                s.cpu = round((busy - self.prev["cpu"][0]) / (total - self.prev["cpu"][1]), 4)
            self.prev["cpu"] = (busy, total)
        refused = admission_refused() if self.use_telemetry else None
        if refused is not None:
            if "refused" in self.prev:
                s.refused = max(0, refused - self.prev["refused"])
            self.prev["refused"] = refused
        tel = telemetry(self.pin_root) if self.use_telemetry else None
        if tel is not None:
            dec = admit_decisions(self.pin_root)
            tel["t"], tel["passed"] = t, invite_passes(self.pin_root)
            tel["decided"], tel["admitted"] = dec if dec is not None else (None, None)
            if "tel" in self.prev:
                dt = t - self.prev["tel"]["t"]
                s.pdd_ms, s.ratio_5xx = tick_latency_and_5xx(self.prev["tel"], tel)
                s.served = served_per_cpu(self.prev["tel"], tel, dt)
                s.admitted = passed_per_cpu(self.prev["tel"], tel, dt)[0]
            self.prev["tel"] = tel
        return s


def tick_latency_and_5xx(old: dict[str, Any], new: dict[str, Any]) -> tuple[float | None, float | None]:
    """Mean INVITE -> 100 latency (ms; 180 when no 100 was seen) and 5xx share of INVITE final
    responses between two telemetry readings; None where nothing happened in between."""
    pdd = None
    for stage in ("trying", "ringing"):
        c1, s1 = new["lat"].get(stage, (0, 0))
        c0, s0 = old["lat"].get(stage, (0, 0))
        if c1 > c0:
            pdd = round((s1 - s0) / (c1 - c0) / 1e6, 3)
            break
    d = {c: n - old["codes"].get(c, 0) for c, n in new["codes"].items()}
    finals = sum(n for c, n in d.items() if 200 <= c <= 699 and n > 0)
    r5 = round(sum(n for c, n in d.items() if 500 <= c <= 599 and n > 0) / finals, 4) if finals else None
    return pdd, r5
