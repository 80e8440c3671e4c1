"""Datapath microbenchmark: ns/packet via BPF_PROG_TEST_RUN.

Baseline: bpf/xdp_count.bpf.c (count into a per-CPU array, XDP_PASS).
Classifier (xdp_sip) on: 1 KB INVITE (pass), REGISTER over its rate limit
(drop), 200 OK (pass), non-SIP UDP (pass).  The same classifier at TC ingress
(tc_fastpath with the interface's CLASSIFY flag) on the 1 KB INVITE, and the
egress program (tc_sip_egress) on the 200 OK: the reply's one parse.  Reported as ratios to the
baseline measured in the same run, the TC cases also to a count-only program at TC
(bench/bpf/progcost_ref.c's pc_ref_ingress, `tc_count_only`); JSON to bench/results/datapath-<ts>.json.

The repeated cases run one packet back to back: for an INVITE that is a retransmission after the
first run, and the telemetry and admission tables are never written.  The *_new_call cases are
what traffic looks like: NEW_CALLS INVITEs, each with a Call-ID of its own, one run each (median
ns of the runs; the syscall between runs leaves the caches part cold), so each run inserts a new
transaction; two more new-call cases write admission's table instead (telemetry off in the
policy; admission on, refusing every new INVITE silently).  --bpf-src builds the programs from another bpf/ directory (e.g. a worktree of an
older commit), so two trees can be compared with the same cases.

--base-src DIR pairs two trees in one run: both are loaded side by side (each with its own maps)
and every round runs each repeated case on the base programs and on --bpf-src's back to back (which
goes first alternates), so a drift of the machine hits both halves of a pair.  Reported per case:
both medians, the paired difference (work - base) with a bootstrap 95 % interval, the sign test
over the rounds and the smallest effect the rounds can detect (bench/stats.py); the TC cases also
as ratios to the count-only program at TC of the same tree and round.  --cpu pins the run.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/stats.py

from scapy.all import IP, UDP, Ether, Raw  # noqa: E402

from etsf import bpf  # noqa: E402
from etsf import layout as L  # noqa: E402
from etsf.datapath import hooks  # noqa: E402
from etsf.build import build, build_test_object  # noqa: E402

import stats  # noqa: E402  (bench/stats.py: paired differences, intervals)


def _eth(payload: bytes, sport=5060, dport=5060, src="198.18.1.10") -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                 / IP(src=src, dst="198.18.0.1") / UDP(sport=sport, dport=dport) / Raw(payload))


def invite_1k() -> bytes:
    hdr = ("INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
           "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
           "Max-Forwards: 70\r\n"
           "To: Bob <sip:bob@biloxi.example.com>\r\n"
           "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
           "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
           "CSeq: 314159 INVITE\r\n"
           "Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
           "Content-Type: application/sdp\r\n")
    sdp = ("v=0\r\no=alice 2890844526 2890844526 IN IP4 pc33.atlanta.example.com\r\n"
           "s=-\r\nc=IN IP4 198.18.1.10\r\nt=0 0\r\nm=audio 49172 RTP/AVP 0 8 97 101\r\n"
           "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:97 iLBC/8000\r\n"
           "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n"
           "a=sendrecv\r\n")
    pad = 1024 - len(hdr) - len("Content-Length: 0000\r\n\r\n") - len(sdp)
    sdp += "a=x-pad:" + "p" * (pad - len("a=x-pad:\r\n")) + "\r\n"
    msg = hdr + f"Content-Length: {len(sdp):04d}\r\n\r\n" + sdp
    assert len(msg) == 1024, len(msg)
    return msg.encode()


def register() -> bytes:
    return ("REGISTER sip:registrar.biloxi.example.com SIP/2.0\r\n"
            "Via: SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashds7\r\n"
            "Max-Forwards: 70\r\n"
            "To: Bob <sip:bob@biloxi.example.com>\r\n"
            "From: Bob <sip:bob@biloxi.example.com>;tag=456248\r\n"
            "Call-ID: 843817637684230@998sdasdh09\r\n"
            "CSeq: 1826 REGISTER\r\n"
            "Contact: <sip:bob@198.18.1.10>\r\n"
            "Expires: 7200\r\nContent-Length: 0\r\n\r\n").encode()


def ok200() -> bytes:
    return ("SIP/2.0 200 OK\r\n"
            "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
            "To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
            "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
            "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
            "CSeq: 314159 INVITE\r\n"
            "Contact: <sip:bob@198.18.0.1>\r\n"
            "Content-Length: 0\r\n\r\n").encode()


# struct __sk_buff (192 bytes) with ingress_ifindex (offset 36) = 1: the skb arrives on lo, as a
# packet on a real interface carries its ingress ifindex
SKB_ON_LO = (bytes(36) + (1).to_bytes(4, "little")).ljust(192, b"\0")


NEW_CALLS = 2000


def invite_new_call(i: int) -> bytes:
    """The 1 KB INVITE with a Call-ID of its own (same length)."""
    return _eth(invite_1k().replace(b"a84b4c76e66710", b"%014x" % (0x5ee0000000000 + i)))


def measure_new_calls(fd: int, rounds: int, ctx: bytes | None = None, base: int = 0):
    """Median ns of NEW_CALLS one-run calls, each a new Call-ID; the median over rounds."""
    meds = []
    ret = None
    for rnd in range(rounds):
        ns = []
        for i in range(NEW_CALLS):
            ret, _unused, t = bpf.test_run(fd, invite_new_call(base + rnd * NEW_CALLS + i), repeat=1, ctx=ctx)
            ns.append(t)
        meds.append(statistics.median(ns))
    return ret, statistics.median(meds), meds


def measure(fd: int, pkt: bytes, repeat: int, rounds: int, ctx: bytes | None = None):
    runs = []
    ret = None
    for _unused in range(rounds):
        ret, _unused, ns = bpf.test_run(fd, pkt, repeat=repeat, ctx=ctx)
        runs.append(ns)
    return ret, statistics.median(runs), runs


def _bpf_stats_enabled():
    try:
        with open("/proc/sys/kernel/bpf_stats_enabled", encoding="utf-8") as fh:
            return fh.read().strip() == "1"
    except OSError:
        return None


def load_tree(src: Path, tmp: Path, root: str) -> dict:
    """Build src's programs and the count-only program at TC, load them under root and write what
    every case runs with: the interface entry of lo (ifindex 1, where PROG_TEST_RUN's skb arrives),
    the control map and the policy.  {"progs", "ctl", "pol_map", "pol"}; the caller closes them."""
    progs = {}
    res = build(src, str(tmp))
    objs = {Path(o).name: o for o in res["objects"]}
    for name in ("xdp_count.bpf.o", "xdp_sip.bpf.o", "tc_sip.bpf.o", "tc_fastpath.bpf.o"):
        progs.update(bpf.load_object(objs[name], root))
    # the count-only program at TC (bench/progcost.py's), for the TC cases' ratio
    ref = build_test_object(ROOT / "bench" / "bpf", tmp / "ref", "progcost_ref.c")
    progs.update(bpf.load_object(ref, root))      # pc_*: closed with the others
    # the TC ingress program classifies on lo; the entry as the agent writes it (with the
    # interface's telemetry direction); a tree that does not know the direction field ignores it
    with bpf.open_map("etsf_if_cfg", root) as ifc:
        ifc.update((1).to_bytes(4, "little"),
                   bytes(L.IfCfg(flags=L.IF_F_CLASSIFY, tm=hooks.tm_field(hooks.tm_directions(root), 1))))
    ctl = bpf.open_map("etsf_ctl", root)
    pol_map = bpf.open_map("etsf_policy", root)
    ctl.update(bytes(4), bytes(L.Ctl()))          # no RECORD: production path
    # no ACL entries: the flags compile_policy sets then (no trie lookup); a tree that does
    # not know them ignores them.  Marking on, as compile_policy's default (marking.enabled):
    # the egress case rewrites the DSCP of the 200 OK as a deployed node does.
    pol = L.Policy(generation=1, flags=L.POL_F_VALID | L.POL_F_MARK | L.POL_F_NO_ACL4 | L.POL_F_NO_ACL6,
                   agg_prefix_v4=32, agg_prefix_v6=128, dscp=24)
    pol.sip_ports[0] = 5060
    pol.tls_ports[0] = 5061
    pol.method_prio[L.Method.INVITE] = L.Prio.HIGH
    pol.rate[L.RlClass.REGISTER].rate_pps = 1     # 1/s, burst 1: a flood is over limit
    pol.rate[L.RlClass.REGISTER].burst = 1
    pol_map.update(bytes(4), bytes(pol))
    # prime the REGISTER bucket so every measured run is over the limit
    bpf.test_run(progs["xdp_sip"].fd, _eth(register()), repeat=10)
    return {"progs": progs, "ctl": ctl, "pol_map": pol_map, "pol": pol}


def close_tree(tree: dict | None) -> None:
    if not tree:
        return
    for p in tree["progs"].values():
        p.close()
    tree["ctl"].close()
    tree["pol_map"].close()


def hot_cases() -> list:
    """(name, program, frame, expected return or None): one packet repeated back to back."""
    return [
        ("count_only", "xdp_count", _eth(invite_1k()), bpf.XDP_PASS),
        ("invite_1k_pass", "xdp_sip", _eth(invite_1k()), bpf.XDP_PASS),
        ("register_over_limit_drop", "xdp_sip", _eth(register()), bpf.XDP_DROP),
        ("response_200_ok_pass", "xdp_sip", _eth(ok200()), bpf.XDP_PASS),
        ("non_sip_udp_pass", "xdp_sip", _eth(b"\x80\x00" + b"\x00" * 170, sport=16384,
                                             dport=16386), bpf.XDP_PASS),
        ("tc_ingress_invite_1k_pass", "tc_fastpath", _eth(invite_1k()), bpf.TC_ACT_OK),
        ("tc_egress_200_ok", "tc_sip_egress", _eth(ok200()), bpf.TC_ACT_OK),
        ("tc_count_only", "pc_ref_ingress", _eth(invite_1k()), None),
    ]


def run_once(tree: dict, case, repeat: int) -> int:
    name, prog, pkt, want = case
    ret, _unused, ns = bpf.test_run(tree["progs"][prog].fd, pkt, repeat=repeat,
                                    ctx=SKB_ON_LO if prog.startswith("tc_") else None)
    if want is not None and ret != want:
        raise SystemExit(f"{name}: program returned {ret}, expected {want}")
    return ns


def paired_rounds(trees: dict, cases: list, rounds: int, repeat: int) -> dict:
    """{variant: {case: [ns per round]}}: each round runs each case on both trees back to back,
    base first in even rounds and work first in odd ones."""
    out = {v: {c[0]: [] for c in cases} for v in trees}
    order = list(trees)
    for rnd in range(rounds):
        for case in cases:
            for v in (order if rnd % 2 == 0 else order[::-1]):
                out[v][case[0]].append(run_once(trees[v], case, repeat))
        print(f"round {rnd + 1}/{rounds}", file=sys.stderr, flush=True)
    return out


def paired_summary(runs: dict) -> dict:
    """Per case: medians of base and work, work - base paired by round (median, bootstrap 95 %
    interval, sign test, smallest detectable mean difference); the TC cases' ratios to the
    count-only program at TC of the same tree and round."""
    res = {}
    for case in runs["base"]:
        b, w = runs["base"][case], runs["work"][case]
        d = [x - y for x, y in zip(w, b)]
        lo, hi = stats.bootstrap_ci(d)
        sg = stats.sign_test(d)
        r = {"base_ns": statistics.median(b), "work_ns": statistics.median(w),
             "diff_ns": statistics.median(d), "diff_ci95": [lo, hi],
             "work_lower_rounds": sg["neg"], "work_higher_rounds": sg["pos"], "sign_p": round(sg["p"], 4),
             "min_detectable_ns": stats.min_detectable(d), "base_runs_ns": b, "work_runs_ns": w}
        if case.startswith("tc_") and case != "tc_count_only":
            for v in ("base", "work"):
                ratios = [x / max(1, y) for x, y in zip(runs[v][case], runs[v]["tc_count_only"])]
                r[f"{v}_ratio_to_tc_count_only"] = round(statistics.median(ratios), 2)
                r[f"{v}_ratio_range"] = [round(min(ratios), 2), round(max(ratios), 2)]
        res[case] = r
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--bpf-src", default=str(ROOT / "bpf"),
                    help="bpf/ source directory to build the programs from (default: this tree's)")
    ap.add_argument("--base-src", default=None,
                    help="a second bpf/ directory: pair it with --bpf-src round by round in one run")
    ap.add_argument("--cpu", type=int, default=None, help="pin the run to this CPU (recorded)")
    args = ap.parse_args(argv)
    for opt, src in (("--bpf-src", args.bpf_src), ("--base-src", args.base_src)):
        if src is not None and not (Path(src) / "xdp_sip.bpf.c").is_file():
            ap.error(f"{opt} {src}: no xdp_sip.bpf.c there")
    if args.repeat < 100000:
        ap.error("--repeat must be >= 100000")
    if args.rounds < 1 or args.rounds > 1000:
        ap.error("--rounds must be 1..1000")
    if args.cpu is not None:
        if args.cpu not in os.sched_getaffinity(0):
            ap.error(f"--cpu {args.cpu}: not a CPU this process may run on")
        os.sched_setaffinity(0, {args.cpu})
    if args.base_src is not None:
        return main_paired(args)

    tmp = tempfile.mkdtemp(prefix="etsf-bench-")
    root = f"/sys/fs/bpf/etsf-bench-{os.getpid()}"
    tree = None
    try:
        tree = load_tree(Path(args.bpf_src), Path(tmp), root)
        progs, ctl, pol_map, pol = tree["progs"], tree["ctl"], tree["pol_map"], tree["pol"]
        cases = hot_cases()
        results = {}
        for name, prog, pkt, want in cases:
            ret, med, runs = measure(progs[prog].fd, pkt, args.repeat, args.rounds,
                                     ctx=SKB_ON_LO if prog.startswith("tc_") else None)
            if want is not None and ret != want:
                raise SystemExit(f"{name}: program returned {ret}, expected {want}")
            results[name] = {"ns_per_packet": med, "min_ns": min(runs), "runs_ns": runs,
                             "frame_bytes": len(pkt),
                             "retval": ret}
        # each new-call INVITE passes (a new transaction: telemetry and admission see it first)
        for name, prog in (("invite_1k_new_call", "xdp_sip"), ("tc_ingress_invite_1k_new_call", "tc_fastpath")):
            tc = prog.startswith("tc_")
            ret, med, runs = measure_new_calls(progs[prog].fd, args.rounds, ctx=SKB_ON_LO if tc else None,
                                               base=(1 << 40) if tc else 0)
            want = bpf.TC_ACT_OK if tc else bpf.XDP_PASS
            if ret != want:
                raise SystemExit(f"{name}: program returned {ret}, expected {want}")
            results[name] = {"ns_per_packet": med, "min_ns": min(runs), "runs_ns": runs,
                             "frame_bytes": len(invite_new_call(0)), "retval": ret,
                             "calls_per_round": NEW_CALLS}
        # admission's table, written once per new INVITE in two cases: telemetry off in the policy
        # (admission off, the INVITE noted as admitted) and admission refusing every new INVITE
        # (silently: the 503 builder would hide the table's cost)
        variants = (
            ("invite_1k_new_call_telemetry_off", L.Ctl(), L.POL_F_TM_OFF, bpf.XDP_PASS, 2 << 40),
            ("invite_1k_new_call_admission_refused",
             L.Ctl(flags=L.CTL_F_ADMIT_SILENT, invite_admit_rate=1, invite_admit_burst=0), 0, bpf.XDP_DROP,
             3 << 40),
        )
        for name, c, pol_flags, want, first in variants:
            ctl.update(bytes(4), bytes(c))
            p2 = L.Policy.from_bytes(bytes(pol))
            p2.flags |= pol_flags
            pol_map.update(bytes(4), bytes(p2))
            ret, med, runs = measure_new_calls(progs["xdp_sip"].fd, args.rounds, base=first)
            if ret != want:
                raise SystemExit(f"{name}: program returned {ret}, expected {want}")
            results[name] = {"ns_per_packet": med, "min_ns": min(runs), "runs_ns": runs,
                             "frame_bytes": len(invite_new_call(0)), "retval": ret,
                             "calls_per_round": NEW_CALLS}
        ctl.update(bytes(4), bytes(L.Ctl()))
        pol_map.update(bytes(4), bytes(pol))
        base = results["count_only"]["ns_per_packet"] or 1
        tc_base = results["tc_count_only"]["ns_per_packet"] or 1
        for name, r in results.items():
            r["ratio_to_count_only"] = round(r["ns_per_packet"] / base, 2)
            if name.startswith("tc_"):
                # the same hook's count-only program: the ratio the PROG_TEST_RUN target names
                r["ratio_to_tc_count_only"] = round(r["ns_per_packet"] / tc_base, 2)
        ts = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        doc = {
            "benchmark": "datapath",
            "timestamp": ts,
            "method": "BPF_PROG_TEST_RUN, median of rounds, avg ns per repetition; *_new_call: "
                      "median of one-run calls, each a new Call-ID, median of rounds",
            "bpf_src": str(Path(args.bpf_src).resolve()),
            "repeat": args.repeat,
            "rounds": args.rounds,
            "kernel": platform.release(),
            # kernel.bpf_stats_enabled adds two clock reads per program run (about 70 ns here); it
            # is machine-wide (the telemetry role sets it with telemetry_bpf_stats), so record it
            "bpf_stats_enabled": _bpf_stats_enabled(),
            "cpu_count": os.cpu_count(),
            "results": results,
        }
        os.makedirs(args.out, exist_ok=True)
        path = Path(args.out) / f"datapath-{ts}.json"
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(json.dumps(doc, indent=2))
        print(f"written {path}", file=sys.stderr)
    finally:
        close_tree(tree)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main_paired(args) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="etsf-bench-"))
    trees = {}
    roots = {v: f"/sys/fs/bpf/etsf-bench-{os.getpid()}-{v}" for v in ("base", "work")}
    try:
        for v, src in (("base", args.base_src), ("work", args.bpf_src)):
            trees[v] = load_tree(Path(src), tmp / v, roots[v])
        runs = paired_rounds(trees, hot_cases(), args.rounds, args.repeat)
        ts = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        doc = {
            "benchmark": "datapath-paired",
            "timestamp": ts,
            "method": "BPF_PROG_TEST_RUN, avg ns per repetition; both trees loaded at once, each "
                      "round runs every case on both back to back (order alternating by round); "
                      "diff = work - base paired by round",
            "base_src": str(Path(args.base_src).resolve()),
            "work_src": str(Path(args.bpf_src).resolve()),
            "repeat": args.repeat,
            "rounds": args.rounds,
            "cpu": args.cpu,
            "kernel": platform.release(),
            "bpf_stats_enabled": _bpf_stats_enabled(),
            "cpu_count": os.cpu_count(),
            "results": paired_summary(runs),
        }
        os.makedirs(args.out, exist_ok=True)
        path = Path(args.out) / f"datapath-paired-{ts}.json"
        path.write_text(json.dumps(doc, indent=2) + "\n")
        for case, r in doc["results"].items():
            lo, hi = r["diff_ci95"]
            extra = ""
            if "work_ratio_to_tc_count_only" in r:
                extra = f"  x count-only {r['base_ratio_to_tc_count_only']} -> {r['work_ratio_to_tc_count_only']}"
            print(f"{case:28s} {r['base_ns']:8.1f} -> {r['work_ns']:8.1f} ns  diff {r['diff_ns']:+7.1f} "
                  f"[{lo:+.1f}, {hi:+.1f}]  lower {r['work_lower_rounds']}/{args.rounds}{extra}")
        print(f"written {path}", file=sys.stderr)
    finally:
        for tree in trees.values():
            close_tree(tree)
        for root in roots.values():
            shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
