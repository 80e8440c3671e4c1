"""In-traffic cost of eTSF's TC programs (ns per run, kernel.bpf_stats_enabled) at a low rate.

Two namespaces joined by a veth (198.18.44.0/24 only):

    <prefix>c  client 198.18.44.1 --veth-- pcn 198.18.44.2  <prefix>n  (the node: eTSF attached)

`etsfctl attach --hook tc` puts tc_fastpath (classify) on pcn's ingress and tc_sip_egress on its
egress.  A trivial count-only program (bench/bpf/progcost_ref.c) sits in front of each on the
same hook and hands every packet on: the cold floor of any program there.  Per round and
variant: `--count` 1 KB INVITEs at `--rate` per second, each answered from the node by a
350-byte 200 OK (egress), then `--count` 350-byte 200 OKs into the node (the reply path of
tc_fastpath).  At 500/s the program's code and maps go cold between packets, as in traffic.

Variants: `base` = bpf/ of git ref --base, `work` = this tree's bpf/ (or that of --work), each built into its own
directory and attached with its own pin root; rounds interleave them, the order flipping every round.
kernel.bpf_stats_enabled is 1 only while packets are sent and restored after every pass.
Report: medians over the rounds and the paired difference (work - base), JSON + markdown.

    flock /work/wt/bench.lock .venv/bin/python bench/progcost.py --base HEAD~1 --rounds 5
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

CLI_ADDR, NODE_ADDR, PORT = "198.18.44.1", "198.18.44.2", 5060
NODE_IF, CLI_IF = "pcn", "pcc"
REF_HANDLE = 0xB8            # same priority as eTSF's filters, added after them: runs first
TC_IN_HANDLE, TC_EG_HANDLE, TC_PRIO = 0xE75E, 0xE75F, 1
PHASES = ("invite", "reply")
POLICY = f"version: 1\nsip_ports: [{PORT}]\n"
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
MIN_RUNS = 10
WARMUP = 200                 # exchanges before the measured phases: ARP and map entries exist


# ---------------------------------------------------------------- pure parts
def ok200(size: int = 350, seq: int = 0) -> bytes:
    """A 200 OK to an INVITE, padded (in its Call-ID) to exactly `size` bytes."""
    def msg(cid: str) -> str:
        return ("SIP/2.0 200 OK\r\n"
                "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
                "To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
                "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
                f"Call-ID: {cid}\r\n"
                "CSeq: 314159 INVITE\r\n"
                "Contact: <sip:bob@198.18.44.2>\r\n"
                "Content-Length: 0\r\n\r\n")
    base = f"pc{seq:08d}@pc33.atlanta.example.com"
    pad = size - len(msg(base))
    if pad < 0:
        raise ValueError(f"200 OK of {size} bytes: too small (at least {len(msg(base))})")
    return msg("x" * pad + base).encode()


def invite(seq: int = 0) -> bytes:
    """bench/datapath.py's 1 KB INVITE with a Call-ID of its own (same length) per `seq`."""
    from datapath import invite_1k
    msg = invite_1k()
    old = b"a84b4c76e66710@"
    if msg.count(old) != 1:
        raise ValueError("the 1 KB INVITE's Call-ID changed")
    return msg.replace(old, f"{seq % 10**14:014d}@".encode())


def per_run(before: dict, after: dict, min_runs: int = MIN_RUNS) -> dict:
    """{prog: {run_cnt, run_time_ns}} before and after a pass -> {prog: {runs, ns_per_run}};
    no figure from fewer than min_runs runs (an ARP or neighbour probe on a hook the phase does
    not load)."""
    out = {}
    for name, a in after.items():
        b = before.get(name, {"run_cnt": 0, "run_time_ns": 0})
        cnt = a["run_cnt"] - b["run_cnt"]
        ns = a["run_time_ns"] - b["run_time_ns"]
        out[name] = {"runs": cnt, "ns_per_run": ns / cnt if cnt >= min_runs else None}
    return out


def summarize(rounds: list[dict], a: str = "base", b: str = "work") -> dict:
    """rounds: [{variant: {phase: {prog: {ns_per_run}}}}] -> per (phase, prog): median ns of
    each variant and the median paired difference b - a over the rounds that have both."""
    keys = sorted({(ph, pg) for r in rounds for v in r.values() for ph, pr in v.items() for pg in pr})
    out = {}
    for ph, pg in keys:
        def val(r, v, ph=ph, pg=pg):
            return ((r.get(v) or {}).get(ph) or {}).get(pg, {}).get("ns_per_run")
        va = [x for x in (val(r, a) for r in rounds) if x is not None]
        vb = [x for x in (val(r, b) for r in rounds) if x is not None]
        diffs = [val(r, b) - val(r, a) for r in rounds if val(r, a) is not None and val(r, b) is not None]
        out[f"{ph}/{pg}"] = {
            a: statistics.median(va) if va else None, b: statistics.median(vb) if vb else None,
            "diff": statistics.median(diffs) if diffs else None,
            "diffs": diffs, "rounds": len(diffs),
            "lower_in": sum(1 for d in diffs if d < 0)}
    return out


def render(doc: dict) -> str:
    s = doc["summary"]
    lines = [f"# Program cost in traffic ({doc['stamp']})", "",
             f"{doc['params']['count']} packets per phase at {doc['params']['rate']}/s, "
             f"{doc['params']['rounds']} rounds, variants interleaved (order flipped every round); base = bpf/ of "
             f"`{doc['base_ref']}` ({doc['base_commit'][:12]}), work = bpf/ of `{doc.get('work_ref', '(tree)')}` "
             f"({doc['work_commit'][:12]}{' + changes' if doc['work_dirty'] else ''}).", "",
             "ns per program run (run_time_ns / run_cnt), medians over the rounds; diff = median of the "
             "paired per-round differences (work - base); 'lower' = rounds where work was lower.", "",
             "| phase | program | base | work | diff | lower |", "|---|---|---|---|---|---|"]
    for key, v in s.items():
        ph, pg = key.split("/", 1)
        lines.append(f"| {ph} | {pg} | {fmt(v['base'])} | {fmt(v['work'])} | {fmt(v['diff'], True)} | "
                     f"{v['lower_in']}/{v['rounds']} |")
    lines += ["", "Runs per pass (first round): " + "; ".join(
        f"{var} {ph}: " + ", ".join(f"{pg} {x['runs']}" for pg, x in progs.items())
        for var, phases in doc["rounds"][0].items() for ph, progs in phases.items()) if doc["rounds"] else "",
        "", f"Lost exchanges: {doc['lost']}.  kernel.bpf_stats_enabled restored to {doc['stats_restored_to']}."]
    return "\n".join(lines) + "\n"


def fmt(v, sign=False) -> str:
    if v is None:
        return "-"
    return f"{v:+.0f}" if sign else f"{v:.0f}"


# ---------------------------------------------------------------- the run
class Variant:
    def __init__(self, name: str, src: Path, work: Path):
        from etsf.build import build
        self.name = name
        self.src = src
        self.build_dir = work / f"build-{name}"
        build(src, self.build_dir)
        self.env = {"ETSF_BPF_SRC": str(src), "ETSF_BUILD_DIR": str(self.build_dir),
                    "ETSF_PIN_ROOT": f"/sys/fs/bpf/etsf-pc-{os.getpid()}-{name}",
                    "ETSF_STATE_DIR": str(work / f"state-{name}"), "ETSF_RUN_DIR": str(work / f"run-{name}")}


class ProgCost:
    def __init__(self, args, work: Path):
        from lab.netns import Topology
        self.a = args
        self.work = work
        tag = str(os.getpid() % 100000)
        self.cli, self.node = f"{args.prefix}{tag}c", f"{args.prefix}{tag}n"
        self.topo = Topology()
        self.ref = None
        self.lost = 0
        self.seq = 0

    def setup(self):
        from etsf import bpf
        from etsf.build import build_test_object
        self.topo.netns(self.cli)
        self.topo.netns(self.node)
        self.topo.veth(self.node, NODE_IF, self.cli, CLI_IF, addrs=[f"{NODE_ADDR}/24"],
                       peer_addrs=[f"{CLI_ADDR}/24"])
        obj = build_test_object(HERE / "bpf", self.work / "ref", "progcost_ref.c")
        self.ref = bpf.load_object(obj)

    def ctl(self, v: Variant, *args):
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), **v.env)
        r = subprocess.run(["nsenter", f"--net=/run/netns/{self.node}", sys.executable, "-m", "etsf", *args],
                           capture_output=True, text=True, env=env, timeout=120, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"etsfctl {' '.join(args)}: {r.stderr.strip()[-300:]}")
        return r.stdout

    def attach(self, v: Variant):
        from etsf import bpf
        from transit import in_netns
        out = json.loads(self.ctl(v, "attach", "--iface", NODE_IF, "--hook", "tc", "--json"))
        if out.get("hook") != "tc":
            raise RuntimeError(f"attach chose {out.get('hook')!r}, not tc")
        pol = self.work / "policy.yml"
        pol.write_text(POLICY)
        self.ctl(v, "policy", "apply", str(pol))
        with in_netns(self.node):
            idx = socket.if_nametoindex(NODE_IF)
            ids = {"tc_fastpath": bpf.tc_query(idx, "ingress", TC_IN_HANDLE, TC_PRIO),
                   "tc_sip_egress": bpf.tc_query(idx, "egress", TC_EG_HANDLE, TC_PRIO)}
            bpf.tc_attach(idx, self.ref["pc_ref_ingress"].fd, "ingress", REF_HANDLE, TC_PRIO)
            bpf.tc_attach(idx, self.ref["pc_ref_egress"].fd, "egress", REF_HANDLE, TC_PRIO)
        ids["ref_ingress"] = self.ref["pc_ref_ingress"].id
        ids["ref_egress"] = self.ref["pc_ref_egress"].id
        if not all(ids.values()):
            raise RuntimeError(f"programs not attached: {ids}")
        return ids

    def detach(self, v: Variant):
        from etsf import bpf
        from transit import in_netns
        with contextlib.suppress(Exception), in_netns(self.node):
            idx = socket.if_nametoindex(NODE_IF)
            for d in ("ingress", "egress"):
                bpf.tc_detach(idx, d, REF_HANDLE, TC_PRIO)
        try:
            self.ctl(v, "detach", "--iface", NODE_IF)
        finally:
            shutil.rmtree(v.env["ETSF_PIN_ROOT"], ignore_errors=True)

    def sockets(self):
        from transit import in_netns
        with in_netns(self.cli):
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with in_netns(self.node):
            n = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.bind((CLI_ADDR, PORT))
        n.bind((NODE_ADDR, PORT))
        for s in (c, n):
            s.settimeout(1.0)
        return c, n

    def send(self, phase: str, c, n, count: int):
        """`count` exchanges at `rate`/s: INVITE -> node, 200 OK back; or 200 OK -> node.
        Every exchange has a Call-ID of its own, as the calls of real traffic."""
        gap = 1.0 / self.a.rate
        t = time.monotonic()
        for _i in range(count):
            self.seq += 1
            ok = ok200(seq=self.seq)
            c.sendto(invite(self.seq) if phase == "invite" else ok, (NODE_ADDR, PORT))
            try:
                n.recvfrom(4096)
                if phase == "invite":
                    n.sendto(ok, (CLI_ADDR, PORT))
                    c.recvfrom(4096)
            except socket.timeout:
                self.lost += 1
            t += gap
            delay = t - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def pass_(self, v: Variant) -> dict:
        from etsf import bpf
        old = STATS.read_text().strip()
        res = {}
        c = n = None
        try:
            ids = self.attach(v)
            c, n = self.sockets()
            self.send("invite", c, n, WARMUP)
            for phase in PHASES:
                STATS.write_text("1\n")
                try:
                    before = {k: bpf.prog_info(i) for k, i in ids.items()}
                    self.send(phase, c, n, self.a.count)
                    after = {k: bpf.prog_info(i) for k, i in ids.items()}
                finally:
                    STATS.write_text(old + "\n")
                res[phase] = per_run(before, after)
        finally:
            STATS.write_text(old + "\n")
            for sk in (c, n):
                if sk is not None:
                    sk.close()
            self.detach(v)
        return res

    def close(self):
        for p in (self.ref or {}).values():
            with contextlib.suppress(Exception):
                p.close()
        self.topo.close()


def git(*args) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def export_bpf(ref: str, dest: Path) -> Path:
    """bpf/ of git ref `ref` (only regular files; names from our own repository) under dest."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "bpf"], capture_output=True,
                          check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf.getmembers():
            if m.isfile() and m.name.startswith("bpf/") and ".." not in m.name.split("/"):
                (dest / m.name).parent.mkdir(parents=True, exist_ok=True)
                (dest / m.name).write_bytes(tf.extractfile(m).read())
    return dest / "bpf"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="HEAD", help="git ref whose bpf/ is the base variant")
    ap.add_argument("--work", default="", help="git ref whose bpf/ is the work variant (default: this tree's)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=2000, help="packets per phase and pass")
    ap.add_argument("--rate", type=int, default=500, help="packets per second")
    ap.add_argument("--prefix", default="etsf-pc-", help="namespace name prefix")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    a = ap.parse_args(argv)
    if not 1 <= a.rounds <= 50 or not 10 <= a.count <= 100000 or not 10 <= a.rate <= 20000:
        ap.error("--rounds 1..50, --count 10..100000, --rate 10..20000")
    if os.geteuid() != 0:
        ap.error("needs root")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = Path(tempfile.mkdtemp(prefix="etsf-progcost-"))
    pc = ProgCost(a, work)
    rounds = []
    old = STATS.read_text().strip()
    try:
        variants = [Variant("base", export_bpf(a.base, work / "base-src"), work),
                    Variant("work", export_bpf(a.work, work / "work-src") if a.work else ROOT / "bpf", work)]
        pc.setup()
        for i in range(a.rounds):
            r = {}
            # ABBA: the order flips every round, so neither variant always runs second
            for v in (variants if i % 2 == 0 else variants[::-1]):
                r[v.name] = pc.pass_(v)
                print(f"round {i + 1} {v.name}: " + "; ".join(
                    f"{ph} " + ", ".join(f"{pg} {fmt(x['ns_per_run'])} ns x {x['runs']}" for pg, x in progs.items())
                    for ph, progs in r[v.name].items()), flush=True)
            rounds.append(r)
    finally:
        STATS.write_text(old + "\n")
        pc.close()
        shutil.rmtree(work, ignore_errors=True)
    doc = {"stamp": stamp, "params": {"rounds": a.rounds, "count": a.count, "rate": a.rate},
           "base_ref": a.base, "base_commit": git("rev-parse", a.base), "work_ref": a.work or "(tree)",
           "work_commit": git("rev-parse", a.work or "HEAD"),
           "work_dirty": not a.work and bool(git("status", "--porcelain", "bpf")), "kernel": os.uname().release,
           "rounds": rounds, "summary": summarize(rounds), "lost": pc.lost,
           "stats_restored_to": STATS.read_text().strip()}
    out = Path(a.out) / f"{stamp}-progcost"
    out.mkdir(parents=True, exist_ok=True)
    (out / "progcost.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "report.md").write_text(render(doc))
    print(render(doc))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
