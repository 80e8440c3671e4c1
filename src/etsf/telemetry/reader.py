"""One bounded read of every telemetry map (batch lookups): the data behind /metrics, top and show."""

from __future__ import annotations

import os
import socket
import time

from .. import layout as L
from ..paths import pin_root

NS_PER_S = 1e9
#: histogram bucket upper bounds in seconds: 2^b microseconds, b = 0..30 (+Inf = slot 31)
BUCKET_BOUNDS = tuple((1 << b) / 1e6 for b in range(L.TM_BUCKETS - 1))
STAGE_LABEL = {L.TmStage.TRYING: "trying", L.TmStage.RINGING: "ringing",
               L.TmStage.FINAL_2XX: "final_2xx", L.TmStage.FINAL_3XX: "final_3xx",
               L.TmStage.FINAL_4XX: "final_4xx", L.TmStage.FINAL_5XX: "final_5xx",
               L.TmStage.FINAL_6XX: "final_6xx"}
#: maps whose occupancy is exported (read with batch lookups)
OCCUPANCY_MAPS = ("etsf_rl", "etsf_tm_txn", "etsf_ifstats", "etsf_tm_ifcfg")

DEFAULT_PORT = 9761
DEFAULT_WINDOW = 300.0


class ExporterError(ValueError):
    """A user-facing exporter failure (one line; etsfctl reports ValueError as such)."""


def _bpf():
    from .. import bpf
    return bpf


def enum_name(cls, v: int) -> str:
    try:
        return cls(v).name
    except ValueError:
        return str(v)


# ---------------------------------------------------------------------------
# snapshot: one read of every map (the exporter, `etsfctl top` and the tests use it)
# ---------------------------------------------------------------------------


class Snapshot(dict):
    """Plain dict: t, stats, interfaces, hist, codes, events, ctl, keepalive, programs, maps, cost, oc
    (RFC 7339 rewrite outcomes at TC egress), hooks (per interface: the classifying hook and the
    etsf_if_cfg flags)."""


def open_counted(name: str, root: str, cost: dict):
    bpf = _bpf()
    m = bpf.open_map(name, root, read_only=True)
    cost["maps_opened"] += 1
    return m


def _sums(m, cost: dict, words: int | None = None, nonzero_only: bool = True, limit: int | None = None):
    """Per key, the value's u64 fields summed over the CPUs (Map.percpu_sums): a counter array
    is read without one Python object per entry and CPU, so a read costs about the same on a
    host with many CPUs and stays cheap at a watchdog's tick rate."""
    rows = m.percpu_sums(words, nonzero_only, limit)
    cost["batch_calls"] += getattr(m, "last_batch_calls", 0) or 0
    cost["entries_read"] += m.last_entries
    return rows


#: what snapshot() can read; parts= names a subset (a daemon's tick reads only what it uses).
#: "stats_xdp" fills stats with the XDP hook's rows alone: the leading third of etsf_stats.
PARTS = ("stats", "stats_xdp", "interfaces", "hist", "codes", "events", "ctl", "oc", "keepalive", "hooks", "maps")


def snapshot(root: str | None = None, programs: bool = True, parts=None) -> Snapshot:
    """Read counters, histograms, response codes, control state, program
    stats and map occupancy.  Missing maps (older objects) are skipped and
    listed in snap['missing'].  parts (default: all of PARTS) limits the read to those keys;
    the others keep their empty values."""
    want = set(PARTS if parts is None else parts)
    unknown = want - set(PARTS)
    if unknown:
        raise ValueError(f"snapshot parts: unknown {sorted(unknown)}; known: {', '.join(PARTS)}")
    bpf = _bpf()
    root = root or pin_root()
    t0 = time.perf_counter()
    cost = {"maps_opened": 0, "batch_calls": 0, "entries_read": 0, "lookups": 0}
    snap = Snapshot(t=time.time(), mono=time.monotonic(), missing=[], stats=[], interfaces={},
                    hist={}, codes={}, events={}, ctl=None, keepalive=None, programs={}, maps={}, cost=cost,
                    oc={}, hooks={})

    def read(name, fn):
        try:
            m = open_counted(name, root, cost)
        except (OSError, bpf.BpfError):
            snap["missing"].append(name)
            return
        try:
            fn(m)
        finally:
            m.close()

    def stats(m, limit=None):
        for k, (pk, by) in _sums(m, cost, 2, limit=limit):
            if pk or by:
                h, me, v, r = L.stats_unidx(int.from_bytes(k[:4], "little"))
                snap["stats"].append((enum_name(L.Hook, h), enum_name(L.Method, me),
                                      enum_name(L.Verdict, v), enum_name(L.Reason, r), pk, by))

    def ifstats(m):
        fields = [f[0] for f in L.IfStat._fields_]
        for k, sums in _sums(m, cost, len(fields), nonzero_only=False):
            idx = int.from_bytes(k[:4], "little")
            tot = dict(zip(fields, sums))
            try:
                name = socket.if_indextoname(idx)
            except OSError:
                name = f"ifindex{idx}"
            snap["interfaces"][name] = {"ifindex": idx, **tot}

    def hooks(m):
        for k, v in m.items():
            idx = int.from_bytes(bytes(k)[:4], "little")
            flags = int(L.IfCfg.from_bytes(v).flags)
            try:
                name = socket.if_indextoname(idx)
            except OSError:
                name = f"ifindex{idx}"
            hook = "xdp" if flags & L.IF_F_XDP else "tc" if flags & L.IF_F_CLASSIFY else None
            snap["hooks"][name] = {"ifindex": idx, "hook": hook,
                                   "flags": [n for f, n in ((L.IF_F_CLASSIFY, "classify"), (L.IF_F_STEER, "steer"),
                                                            (L.IF_F_XDP, "xdp")) if flags & f]}

    def hist(m):
        for k, (count, total, *slots) in _sums(m, cost, 2 + L.TM_BUCKETS):
            idx = int.from_bytes(k[:4], "little")
            if count:
                me, st = divmod(idx, L.TM_STAGES)
                snap["hist"][(enum_name(L.Method, me), STAGE_LABEL.get(st, str(st)))] = {
                    "count": count, "sum_ns": total, "slots": slots}

    def codes(m):
        for k, (n,) in _sums(m, cost, 1):
            if n:
                idx = int.from_bytes(k[:4], "little")
                mi, off = divmod(idx, L.TM_CODES)
                snap["codes"][("INVITE" if mi == 0 else "REGISTER", L.TM_CODE_MIN + off)] = n

    def events(m):
        for k, (n,) in _sums(m, cost, 1, nonzero_only=False):
            snap["events"][enum_name(L.TmEvent, int.from_bytes(k[:4], "little"))] = n

    def oc(m):
        for k, (n,) in _sums(m, cost, 1, nonzero_only=False):
            snap["oc"][enum_name(L.OcResult, int.from_bytes(k[:4], "little"))] = n

    def ctl(m):
        raw = m.lookup(bytes(4))
        cost["lookups"] += 1
        if raw:
            c = L.Ctl.from_bytes(raw)
            now = bpf.monotonic_ns()
            hb = int(c.heartbeat_ns)
            age = (now - hb) / NS_PER_S if hb else None
            snap["ctl"] = {
                "bypass": int(c.bypass), "overload_level": int(c.overload_level),
                "active_slot": int(c.active_slot), "generation": int(c.generation),
                "deadman_s": int(c.deadman_ns) / NS_PER_S, "heartbeat_age_s": age,
                # the kernel's rule (etsf_failsafe): unsigned now - heartbeat > deadman
                "deadman_tripped": int(bool(c.deadman_ns) and
                                       ((now - hb) & ((1 << 64) - 1)) > int(c.deadman_ns)),
                # the kernel's keep-alive gate: answers while now < proxy_alive_until_ns
                "keepalive_proxy_alive": int(now < int(c.proxy_alive_until_ns)),
                "keepalive_alive_left_s": max(0, int(c.proxy_alive_until_ns) - now) / NS_PER_S,
                "keepalive_sample_every": int(c.ka_sample_every),
            }

    def keepalive(m):
        vals = m.lookup_percpu(bytes(4)) or []
        cost["lookups"] += 1
        tot = {n: 0 for n, *_unused in L.KaStats._fields_ if n != "sample_seq"}
        for v in vals:
            k = L.KaStats.from_bytes(v)
            for n in tot:
                tot[n] += int(getattr(k, n))
        snap["keepalive"] = tot

    def occupancy(name):
        def fn(m):
            if name == "etsf_tm_txn":
                # sets of ways, never emptied: what it holds is the transactions still alive
                # (started less than a transaction's life ago; the clock is bpf_ktime_get_ns's)
                raw = m.values_raw()
                n = L.tm_open_in(raw, time.monotonic_ns())
                read_n = len(raw) // m.value_size
                cap = m.max_entries * L.TM_WAYS
            else:
                n = read_n = m.count()
                cap = m.max_entries
            cost["batch_calls"] += getattr(m, "last_batch_calls", 0) or 0
            cost["entries_read"] += read_n
            snap["maps"][name] = {"entries": n, "max_entries": cap}
        return fn

    for part, name, fn in (("stats", "etsf_stats", stats), ("interfaces", "etsf_ifstats", ifstats),
                           ("hist", "etsf_tm_hist", hist), ("codes", "etsf_tm_codes", codes),
                           ("events", "etsf_tm_events", events), ("ctl", "etsf_ctl", ctl),
                           ("oc", "etsf_oc_stats", oc), ("keepalive", "etsf_ka_stats", keepalive),
                           ("hooks", "etsf_if_cfg", hooks)):
        if part in want:
            read(name, fn)
    if "stats_xdp" in want and "stats" not in want:
        read("etsf_stats", lambda m: stats(m, limit=L.stats_idx(L.Hook.XDP + 1, 0, 0, 0)))
    for name in OCCUPANCY_MAPS if "maps" in want else ():
        if name == "etsf_ifstats":
            if "interfaces" not in want:
                continue
            snap["maps"][name] = {"entries": len(snap["interfaces"]), "max_entries": L.IF_MAX}
            continue
        read(name, occupancy(name))
    if programs:
        pdir = os.path.join(root, "progs")
        try:
            names = sorted(os.listdir(pdir))
        except OSError:
            names = []
        for n in names:
            try:
                snap["programs"][n] = bpf.prog_info_pinned(os.path.join(pdir, n))
            except (OSError, bpf.BpfError) as e:
                snap["programs"][n] = {"error": str(e)}
        snap["bpf_stats_enabled"] = bpf.bpf_stats_enabled()
    cost["seconds"] = time.perf_counter() - t0
    return snap


def invite_codes(snap: Snapshot) -> dict[int, int]:
    return {c: n for (m, c), n in snap["codes"].items() if m == "INVITE"}


def quantile(q: float, slots: list[int]) -> float | None:
    """Quantile (seconds) from log2 slots, linear within a bucket (as PromQL's
    histogram_quantile); the open last bucket reports its lower bound."""
    total = sum(slots)
    if not total:
        return None
    rank = q * total
    cum = 0
    for b, n in enumerate(slots):
        if n and cum + n >= rank:
            lo = 0.0 if b == 0 else (1 << (b - 1)) / 1e6
            if b >= len(BUCKET_BOUNDS):
                return lo
            hi = BUCKET_BOUNDS[b]
            return lo + (hi - lo) * ((rank - cum) / n)
        cum += n
    return None
