"""LRU list microbenchmark (BPF_PROG_TEST_RUN): what an LRU hash insert + lookup costs with
one common LRU list and with one list per CPU (BPF_F_NO_COMMON_LRU, the datapath's affinity,
flow and transaction maps), on one CPU alone and on every CPU at once.

    python bench/lrubench.py [--rounds 7] [--repeat 300000] [--out DIR]

bench/lrubench/lru.bpf.c: two XDP programs, each inserting a key never seen before into its
65,536-entry map (so a full map evicts on every insert, the transaction LRUs' steady state)
and looking it up again.  Each measurement is one BPF_PROG_TEST_RUN per thread with
`repeat` runs; the kernel reports the mean ns per run, its timer stopped while the thread is
preempted.  "all CPUs" runs one thread pinned to each CPU at the same time (the contention a
common list's lock sees).  Rounds alternate the order of the two maps; the report gives
medians, per-round paired differences (per-CPU - common) with a bootstrap 95 % interval and
the smallest detectable effect (bench/stats.py), and checks that no insert failed and no
lookup missed.

Output: bench/results/<UTC>-lru/{results.json, report.md}.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))

import stats  # noqa: E402

SCHEMA = "etsf-bench-lru/1"
VARIANTS = {"common": "lru_common_op", "per-cpu": "lru_percpu_op"}
PKT = bytes(64)


def measure(bpf, fd: int, cpus: list[int], repeat: int) -> list[float]:
    """Mean ns per run of one PROG_TEST_RUN per CPU in cpus, all started together."""
    out: dict[int, float] = {}
    errs: list[BaseException] = []
    barrier = threading.Barrier(len(cpus))

    def worker(cpu):
        try:
            os.sched_setaffinity(0, {cpu})          # this thread only
            barrier.wait(timeout=30)
            out[cpu] = float(bpf.test_run(fd, PKT, repeat=repeat)[2])
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errs.append(e)

    ts = [threading.Thread(target=worker, args=(c,)) for c in cpus]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=600)
    if errs:
        raise errs[0]
    return [out[c] for c in cpus]


def run(rounds: int, repeat: int, work: Path) -> dict:
    from etsf import bpf
    from etsf.build import build
    obj = Path(build(HERE / "lrubench", work / "build")["objects"][0])
    root = f"/sys/fs/bpf/etsf-bnl-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    cpus = sorted(os.sched_getaffinity(0))
    res = {"schema": SCHEMA, "repeat": repeat, "rounds": rounds, "cpus": cpus,
           "kernel": os.uname().release, "bpf_stats_enabled": bpf.bpf_stats_enabled(),
           "runs": {v: {"one CPU": [], "all CPUs": []} for v in VARIANTS}}
    progs = bpf.load_object(obj, root)
    try:
        for rnd in range(rounds):
            order = list(VARIANTS) if rnd % 2 == 0 else list(reversed(VARIANTS))
            for v in order:
                fd = progs[VARIANTS[v]].fd
                res["runs"][v]["one CPU"].append(measure(bpf, fd, cpus[:1], repeat)[0])
                res["runs"][v]["all CPUs"].append(statistics.fmean(measure(bpf, fd, cpus, repeat)))
        ids = bpf.prog_info(progs["lru_common_op"].id)["map_ids"] + bpf.prog_info(progs["lru_percpu_op"].id)["map_ids"]
        for mid in sorted(set(ids)):
            m = bpf.Map.from_id(mid)
            try:
                if m.name == "lru_errs":
                    vals = [sum(int.from_bytes(x[:8], "little") for x in m.lookup_percpu(i.to_bytes(4, "little")))
                            for i in range(2)]
                    res["failed_inserts"], res["missed_lookups"] = vals
                elif m.name in ("lru_common", "lru_percpu"):
                    res.setdefault("maps", {})[m.name] = {"max_entries": m.max_entries, "map_flags": m.map_flags,
                                                          "entries_at_end": len(m.keys())}
            finally:
                m.close()
    finally:
        for p in progs.values():
            p.close()
        shutil.rmtree(root, ignore_errors=True)
    res["summary"] = {}
    for mode in ("one CPU", "all CPUs"):
        c, p = res["runs"]["common"][mode], res["runs"]["per-cpu"][mode]
        res["summary"][mode] = {"common_ns": statistics.median(c), "per_cpu_ns": statistics.median(p),
                                "paired_per_cpu_minus_common": stats.paired(dict(enumerate(p)), dict(enumerate(c)))}
    return res


def render(res: dict) -> str:
    lines = ["# LRU lists: one common list vs one per CPU (BPF_PROG_TEST_RUN)", "",
             f"Kernel {res['kernel']}, CPUs {res['cpus']}; one insert of a new key (the map full: every insert "
             f"evicts) + one lookup per run, 65,536 entries; {res['rounds']} rounds x {res['repeat']:,} runs per "
             f"thread; kernel.bpf_stats_enabled={int(bool(res['bpf_stats_enabled']))}.  Failed inserts "
             f"{res['failed_inserts']}, missed lookups {res['missed_lookups']}.", "",
             "| threads | common list ns/op (median) | per-CPU lists ns/op (median) | per-CPU - common, median of "
             "paired rounds | 95 % interval | sign +/- (p) | smallest detectable |",
             "|---|--:|--:|--:|---|---|--:|"]
    for mode, s in res["summary"].items():
        pr = s["paired_per_cpu_minus_common"]
        lines.append(f"| {mode} | {s['common_ns']:.1f} | {s['per_cpu_ns']:.1f} | {pr['median']:+.1f} | "
                     f"[{pr['ci95'][0]:+.1f}, {pr['ci95'][1]:+.1f}] | {pr['sign']['pos']}/{pr['sign']['neg']} "
                     f"({pr['sign']['p']:.3f}) | {pr['mde']:.1f} |")
    lines += ["", "Per round (ns/op): " + json.dumps(res["runs"]), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=300000)
    ap.add_argument("--out", metavar="DIR")
    args = ap.parse_args(argv)
    if not 2 <= args.rounds <= 50:
        ap.error("--rounds: 2..50 expected")
    if not 1000 <= args.repeat <= 10_000_000:
        ap.error("--repeat: 1000..10000000 expected")
    if os.geteuid() != 0:
        print("bench/lrubench.py: needs root (BPF)", file=sys.stderr)
        return 2
    from datetime import datetime, timezone
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else HERE / "results" / f"{stamp}-lru"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="etsf-bench-lru-"))
    try:
        res = run(args.rounds, args.repeat, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "report.md").write_text(render(res))
    print(render(res))
    return 0 if res["failed_inserts"] == 0 and res["missed_lookups"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
