"""In-traffic cost of eTSF's TC programs (ns per run, kernel.bpf_stats_enabled) at a low rate.

Two namespaces joined by a veth (198.18.44.0/24 only):

    <prefix>c  client 198.18.44.1 --veth-- pcn 198.18.44.2  <prefix>n  (the node: eTSF attached)

`etsfctl attach --hook tc` puts tc_fastpath (classify) on pcn's ingress and tc_sip_egress on its
egress.  A trivial count-only program (bench/bpf/progcost_ref.c) sits in front of each on the
same hook and hands every packet on: the cold floor of any program there.  Per round and
variant, `--count` packets per phase at `--rate` per second:
  invite   1 KB INVITEs, each answered from the node by a 350-byte 200 OK (egress);
  reply    350-byte 200 OKs into the node (the reply path of tc_fastpath);
  options  keep-alive OPTIONS to the node's address (policy `keepalive:` on, the proxy-alive gate
           written fresh, no sampling): tc_fastpath answers every one in the kernel, the 200
           comes back to the client; the keep-alive `answered` counter must move by the count;
  deny     1 KB INVITEs from a second client address the policy denies (dropped at the hook).
At 500/s the program's code and maps go cold between packets, as in traffic.  After the passes,
PROG_TEST_RUN (hot: one packet repeated) of tc_fastpath on the OPTIONS and on the INVITE, and
the INVITE as one call of REPEAT_RUNS runs for tc_fastpath and the count-only program (their ratio
is the one the issue's PROG_TEST_RUN target names).

The floor passes (every round unless --no-floor): eTSF detached, the count-only programs and
progcost_ref.c's floor programs on the same hooks, the invite and reply phases; a second pass
runs them without their table (parse).  A floor program does the least a Call-ID-aware
classifier has to (L2-L4 and port check, the start line, the Call-ID found by a SWAR line-end
search in place and hashed a word at a time, one line of a 512 KiB table written by a request
and read otherwise) and leaves out the rest of the job, so its ns per run is a lower bound for
any program doing the whole job on this machine.  Its hot
figures: one-run PROG_TEST_RUN calls on the INVITE as for tc_fastpath, and a repeat of
REPEAT_RUNS (bench/datapath.py's method) for it and the count-only program.

Variants: `base` = bpf/ of git ref --base, `work` = a copy of this tree's bpf/ taken at the start (or
bpf/ of --work), each built into its own directory and attached with its own pin root; rounds
interleave them, the order flipping every round.
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
import struct
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

CLI_ADDR, NODE_ADDR, DENIED_ADDR, PORT = "198.18.44.1", "198.18.44.2", "198.18.44.3", 5060
NODE_IF, CLI_IF = "pcn", "pcc"
REF_HANDLE = 0xB8            # same priority as eTSF's filters, added after them: runs first
FLOOR_HANDLE = 0xB9          # the floor pass: after the count-only program (eTSF detached)
FLOOR_PHASES = ("invite", "reply")
REPEAT_RUNS = 200000         # bench/datapath.py's repeat: the code and data fully hot
TC_IN_HANDLE, TC_EG_HANDLE, TC_PRIO = 0xE75E, 0xE75F, 1
PHASES = ("invite", "reply", "options", "deny")
# the client's OPTIONS must not meet a rate limit: every one is to be answered
POLICY = (f"version: 1\nsip_ports: [{PORT}]\ndeny: [{DENIED_ADDR}]\n"
          "rate_limits:\n  options: {rate: 0}\n  invite: {rate: 0}\n"
          f"keepalive:\n  enabled: true\n  identities: [\"{NODE_ADDR}\"]\n  sample_every: 0\n"
          "  server: \"eTSF progcost\"\n")
GATE_S = 3600                # proxy-alive gate written before every pass: open for the whole pass
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
TC_ACT_OK, TC_ACT_REDIRECT = 0, 7
# one run per PROG_TEST_RUN call: a repeat would run the program again on the answer it made
HOT_RUNS = 1000
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


def options(seq: int = 0) -> bytes:
    """A device's keep-alive OPTIONS to the node (the shape bench/kagen.c sends), Call-ID per seq."""
    return ("OPTIONS sip:198.18.44.2 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {CLI_ADDR}:{PORT};branch=z9hG4bKka{seq};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:dev1@{CLI_ADDR}>;tag=k{seq}\r\n"
            f"To: <sip:{NODE_ADDR}>\r\n"
            f"Call-ID: ka-{seq}-progcost@kagen\r\n"
            "CSeq: 1 OPTIONS\r\n"
            f"Contact: <sip:dev1@{CLI_ADDR}:{PORT}>\r\n"
            "User-Agent: kagen-device/1.0\r\n"
            "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REFER, INFO, MESSAGE, UPDATE\r\n"
            "Supported: replaces, timer, path\r\n"
            "Accept: application/sdp\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def frame(payload: bytes, src: str = CLI_ADDR, dst: str = NODE_ADDR, sport: int = PORT,
          dport: int = PORT) -> bytes:
    """Ethernet + IPv4 + UDP around payload (PROG_TEST_RUN input; UDP checksum 0 = none)."""
    ulen = 8 + len(payload)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0x4000, 64, 17, 0,
                               socket.inet_aton(src), socket.inet_aton(dst)))
    s = sum(struct.unpack("!10H", bytes(ip)))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    ip[10:12] = struct.pack("!H", ~s & 0xffff)
    eth = bytes.fromhex("020000000002" + "020000000001" + "0800")   # destination, source, IPv4
    return eth + bytes(ip) + struct.pack("!HHHH", sport, dport, ulen, 0) + payload


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
    keys = sorted({(ph, pg) for r in rounds for name, v in r.items() if name in (a, b)
                   for ph, pr in v.items() for pg in pr})
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


def floor_summary(rounds: list[dict], v: str = "work") -> dict:
    """eTSF (variant v) against the floor passes, per round: median of each, the median paired
    difference (eTSF - floor) and ratio, the parse-only floor (no table) and the count-only
    program of the floor pass."""
    rows = (("invite", "tc_fastpath", "ingress"), ("invite", "tc_sip_egress", "egress"),
            ("reply", "tc_fastpath", "ingress"), ("invite_hot", "tc_fastpath", "ingress"),
            ("invite_repeat", "tc_fastpath", "ingress"))
    out = {}
    for ph, prog, d in rows:
        def val(r, var, pg, ph=ph):
            return ((r.get(var) or {}).get(ph) or {}).get(pg, {}).get("ns_per_run") if pg else None
        e = [val(r, v, prog) for r in rounds]
        f = [val(r, "floor", f"floor_{d}") for r in rounds]
        c = [val(r, "floor", f"ref_{d}") for r in rounds]
        pv = [x for x in (val(r, "parse", f"parse_{d}") for r in rounds) if x is not None]
        pairs = [(a, b) for a, b in zip(e, f) if a is not None and b]
        fv = [x for x in f if x is not None]
        cv = [x for x in c if x is not None]
        ev = [x for x in e if x is not None]
        fc = [b / a for a, b in zip(c, f) if a and b is not None]
        if not fv:
            continue
        out[f"{ph}/{prog or '-'}"] = {
            "etsf": statistics.median(ev) if ev else None, "floor": statistics.median(fv),
            "parse_only": statistics.median(pv) if pv else None,
            "count_only": statistics.median(cv) if cv else None,
            "diff": statistics.median(a - b for a, b in pairs) if pairs else None,
            "ratio": statistics.median(a / b for a, b in pairs) if pairs else None,
            "floor_over_count_only": statistics.median(fc) if fc else None,
            "rounds": len(pairs)}
    return out


def repeat_ratio(rounds: list[dict]) -> dict:
    """Per variant: tc_fastpath's INVITE repeat over the count-only program's, each round's pair
    from the same pass; the median ratio and the rounds' range."""
    out = {}
    for v in ("base", "work"):
        rs = []
        for r in rounds:
            rep = (r.get(v) or {}).get("invite_repeat") or {}
            e, c = (rep.get(k, {}).get("ns_per_run") for k in ("tc_fastpath", "ref_ingress"))
            if e is not None and c:
                rs.append(e / c)
        if rs:
            out[v] = {"ratio": statistics.median(rs), "min": min(rs), "max": max(rs), "rounds": len(rs)}
    return out


def render(doc: dict) -> str:
    s = doc["summary"]
    lines = [f"# Program cost in traffic ({doc['stamp']})", "",
             f"{doc['params']['count']} packets per phase at {doc['params']['rate']}/s, "
             + (f"the run pinned to CPU {doc['params']['cpu']}, " if doc["params"].get("cpu") is not None
                else "the run not pinned, ") +
             f"{doc['params']['rounds']} rounds, variants interleaved (order flipped every round); base = bpf/ of "
             f"`{doc['base_ref']}` ({doc['base_commit'][:12]}), work = bpf/ of `{doc.get('work_ref', '(tree)')}` "
             f"({doc['work_commit'][:12]}{' + changes' if doc['work_dirty'] else ''})"
             + "".join(f"; the {v} variant's policy turns transaction telemetry off (`telemetry.transactions: false`)"
                       for v in ("base", "work") if doc.get(f"{v}_telemetry") == "off") + ".", "",
             "ns per program run (run_time_ns / run_cnt), medians over the rounds; diff = median of the "
             "paired per-round differences (work - base); 'lower' = rounds where work was lower.  Phases "
             "ending in _hot: PROG_TEST_RUN of tc_fastpath, one run per call (median ns of the calls).", "",
             "| phase | program | base | work | diff | lower |", "|---|---|---|---|---|---|"]
    for key, v in s.items():
        ph, pg = key.split("/", 1)
        lines.append(f"| {ph} | {pg} | {fmt(v['base'])} | {fmt(v['work'])} | {fmt(v['diff'], True)} | "
                     f"{v['lower_in']}/{v['rounds']} |")
    lines += ["", "Runs per pass (first round): " + "; ".join(
        f"{var} {ph}: " + ", ".join(f"{pg} {x['runs']}" for pg, x in progs.items())
        for var, phases in doc["rounds"][0].items() for ph, progs in phases.items()) if doc["rounds"] else "",
        "", f"Lost exchanges: {doc['lost']}.  kernel.bpf_stats_enabled restored to {doc['stats_restored_to']}."]
    rr = doc.get("repeat_ratio") or {}
    if rr:
        lines += ["", f"`invite_repeat`: one PROG_TEST_RUN of {REPEAT_RUNS:,} runs of the 1 KB INVITE, "
                  "tc_fastpath and the count-only program (`ref_ingress`) in the same pass; "
                  "tc_fastpath / count-only, median of the rounds [range]: "
                  + "; ".join(f"{v} {x['ratio']:.1f} [{x['min']:.1f}, {x['max']:.1f}]" for v, x in rr.items())
                  + "."]
    fs = doc.get("floor") or {}
    if fs:
        lines += ["", "## The floor: the least the job costs on this machine", "",
                  "The floor pass (eTSF detached): a program that only checks L2-L4 and the port, reads the "
                  "start line, finds and hashes the Call-ID and touches one line of a 512 KiB table "
                  "(`bench/bpf/progcost_ref.c`), measured as eTSF's programs are, in the same rounds; a "
                  "second pass runs the same program without the table. "
                  "A program doing the whole job cannot cost less. eTSF = the work variant; diff and "
                  "ratio = medians of the per-round eTSF - floor and eTSF / floor. `invite_hot`: one-run "
                  "PROG_TEST_RUN calls (median); `invite_repeat`: one PROG_TEST_RUN of "
                  f"{REPEAT_RUNS:,} runs (bench/datapath.py's method).", "",
                  "| phase | eTSF program | eTSF | floor | floor without the table | count-only | eTSF - floor "
                  "| eTSF / floor | floor / count-only |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for key, v in fs.items():
            ph, pg = key.split("/", 1)
            ratio = "-" if v["ratio"] is None else f"{v['ratio']:.1f}"
            fc = "-" if v["floor_over_count_only"] is None else f"{v['floor_over_count_only']:.1f}"
            lines.append(f"| {ph} | {pg} | {fmt(v['etsf'])} | {fmt(v['floor'])} | {fmt(v.get('parse_only'))} | "
                         f"{fmt(v['count_only'])} | "
                         f"{fmt(v['diff'], True)} | {ratio} | {fc} |")
    return "\n".join(lines) + "\n"


def fmt(v, sign=False) -> str:
    if v is None:
        return "-"
    return f"{v:+.0f}" if sign else f"{v:.0f}"


# ---------------------------------------------------------------- the run
class Variant:
    def __init__(self, name: str, src: Path, work: Path, telemetry: bool = True):
        from etsf.build import build
        self.name = name
        self.src = src
        self.telemetry = telemetry
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
                       peer_addrs=[f"{CLI_ADDR}/24", f"{DENIED_ADDR}/24"])
        obj = build_test_object(HERE / "bpf", self.work / "ref", "progcost_ref.c")
        self.ref = bpf.load_object(obj)

    def ctl(self, v: Variant, *args):
        return self.py(v, "-m", "etsf", *args)

    def py(self, v: Variant, *args):
        """Python (of this venv, the variant's pin root) in the node's namespace: stdout."""
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), **v.env)
        r = subprocess.run(["nsenter", f"--net=/run/netns/{self.node}", sys.executable, *args],
                           capture_output=True, text=True, env=env, timeout=120, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)[:80]}: {r.stderr.strip()[-300:]}")
        return r.stdout

    def ka_gate(self, v: Variant) -> dict:
        """Open the proxy-alive gate for GATE_S (what the agent's prober writes after a 200) and
        return the keep-alive counters."""
        return json.loads(self.py(v, "-c", (
            "import json, time\nfrom etsf import datapath\n"
            f"datapath.set_keepalive_gate(time.monotonic_ns() + {GATE_S} * 10**9, 0)\n"
            "print(json.dumps(datapath.keepalive_counters()))")))

    def ka_counters(self, v: Variant) -> dict:
        return json.loads(self.py(v, "-c", (
            "import json\nfrom etsf import datapath\n"
            "print(json.dumps(datapath.keepalive_counters()))")))

    def attach(self, v: Variant):
        from etsf import bpf
        from transit import in_netns
        # clsact filters: the reference programs sit in the same hook beside eTSF's (a tcx program's
        # verdict would end the hook before them)
        out = json.loads(self.ctl(v, "attach", "--iface", NODE_IF, "--hook", "tc", "--tc-api", "clsact", "--json"))
        if out.get("hook") != "tc":
            raise RuntimeError(f"attach chose {out.get('hook')!r}, not tc")
        pol = self.work / "policy.yml"
        # telemetry off: the variant's policy says so (no transaction insert, lookup or code count)
        pol.write_text(POLICY + ("" if v.telemetry else "telemetry:\n  transactions: false\n"))
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

    def attach_floor(self, kind: str) -> dict:
        from etsf import bpf
        from transit import in_netns
        with in_netns(self.node):
            idx = socket.if_nametoindex(NODE_IF)
            for d in ("ingress", "egress"):
                bpf.tc_attach(idx, self.ref[f"pc_ref_{d}"].fd, d, REF_HANDLE, TC_PRIO)
                bpf.tc_attach(idx, self.ref[f"pc_{kind}_{d}"].fd, d, FLOOR_HANDLE, TC_PRIO)
        return {f"{k}_{d}": self.ref[f"pc_{k}_{d}"].id for k in ("ref", kind) for d in ("ingress", "egress")}

    def detach_floor(self):
        from etsf import bpf
        from transit import in_netns
        with contextlib.suppress(Exception), in_netns(self.node):
            idx = socket.if_nametoindex(NODE_IF)
            for d in ("ingress", "egress"):
                for h in (FLOOR_HANDLE, REF_HANDLE):
                    with contextlib.suppress(Exception):
                        bpf.tc_detach(idx, d, h, TC_PRIO)

    def skb_ctx(self) -> bytes:
        """PROG_TEST_RUN's __sk_buff context: the packet as arriving on pcn (ifindex at offset 36)."""
        from transit import in_netns
        with in_netns(self.node):
            idx = socket.if_nametoindex(NODE_IF)
        return (bytes(36) + idx.to_bytes(4, "little")).ljust(192, b"\0")

    def hot_floor(self, kind: str) -> dict:
        """The floor and count-only programs on the 1 KB INVITE: HOT_RUNS one-run calls (median),
        as hot() runs tc_fastpath, and one call of REPEAT_RUNS runs."""
        from etsf import bpf
        ctx = self.skb_ctx()
        pkt = frame(invite(1))
        out = {"invite_hot": {}, "invite_repeat": {}}
        for name in ("ref_ingress", f"{kind}_ingress"):
            fd = self.ref[f"pc_{name}"].fd
            runs = [bpf.test_run(fd, pkt, repeat=1, ctx=ctx)[2] for _i in range(HOT_RUNS)]
            out["invite_hot"][name] = {"runs": HOT_RUNS, "ns_per_run": statistics.median(runs)}
            out["invite_repeat"][name] = {"runs": REPEAT_RUNS,
                                          "ns_per_run": bpf.test_run(fd, pkt, repeat=REPEAT_RUNS, ctx=ctx)[2]}
        return out

    def pass_floor(self, kind: str) -> dict:
        """kind floor (with the table) or parse (without): eTSF detached, the count-only program and
        the kind's program on each hook, the FLOOR_PHASES, then their hot figures."""
        return self.run_pass(lambda: self.attach_floor(kind), self.detach_floor, FLOOR_PHASES,
                             lambda _ids: self.hot_floor(kind))

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
            d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with in_netns(self.node):
            n = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.bind((CLI_ADDR, PORT))
        d.bind((DENIED_ADDR, PORT))
        n.bind((NODE_ADDR, PORT))
        for s in (c, n, d):
            s.settimeout(1.0)
        return c, n, d

    def send(self, phase: str, socks, count: int):
        """`count` exchanges at `rate`/s: INVITE -> node, 200 OK back; 200 OK -> node; OPTIONS ->
        node, the kernel's 200 back to the client; INVITE from the denied address (nothing back:
        one exchange = one packet sent).  Every exchange has a Call-ID of its own, as the calls
        of real traffic."""
        c, n, d = socks
        gap = 1.0 / self.a.rate
        t = time.monotonic()
        for _i in range(count):
            self.seq += 1
            ok = ok200(seq=self.seq)
            try:
                if phase == "invite":
                    c.sendto(invite(self.seq), (NODE_ADDR, PORT))
                    n.recvfrom(4096)
                    n.sendto(ok, (CLI_ADDR, PORT))
                    c.recvfrom(4096)
                elif phase == "reply":
                    c.sendto(ok, (NODE_ADDR, PORT))
                    n.recvfrom(4096)
                elif phase == "options":
                    c.sendto(options(self.seq), (NODE_ADDR, PORT))
                    if not c.recvfrom(4096)[0].startswith(b"SIP/2.0 200 OK\r\n"):
                        self.lost += 1
                else:
                    d.sendto(invite(self.seq), (NODE_ADDR, PORT))
            except socket.timeout:
                self.lost += 1
            t += gap
            delay = t - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def hot(self, ids: dict) -> dict:
        """PROG_TEST_RUN of tc_fastpath (one packet, HOT_RUNS calls back to back: code and maps
        hot) on the OPTIONS (answered: TC_ACT_REDIRECT) and the 1 KB INVITE (passed: TC_ACT_OK),
        as arriving on pcn; the median of the runs.  Then the INVITE as one call of REPEAT_RUNS
        runs, for tc_fastpath and the count-only program alike: the ratio the issue's target
        names (bench/datapath.py's method), both in the same pass."""
        from etsf import bpf
        ctx = self.skb_ctx()
        prog = bpf.Program.from_id(ids["tc_fastpath"])
        out = {}
        try:
            for name, pkt, want in (("options_hot", frame(options(1)), TC_ACT_REDIRECT),
                                    ("invite_hot", frame(invite(1)), TC_ACT_OK)):
                runs = []
                for _i in range(HOT_RUNS):
                    ret, _unused, ns = bpf.test_run(prog.fd, pkt, repeat=1, ctx=ctx)
                    if ret != want:
                        raise RuntimeError(f"{name}: tc_fastpath returned {ret}, expected {want}")
                    runs.append(ns)
                out[name] = {"tc_fastpath": {"runs": HOT_RUNS, "ns_per_run": statistics.median(runs)}}
            pkt = frame(invite(1))
            out["invite_repeat"] = {}
            for name, fd in (("tc_fastpath", prog.fd), ("ref_ingress", self.ref["pc_ref_ingress"].fd)):
                ret, _unused, ns = bpf.test_run(fd, pkt, repeat=REPEAT_RUNS, ctx=ctx)
                if name == "tc_fastpath" and ret != TC_ACT_OK:
                    raise RuntimeError(f"invite_repeat: tc_fastpath returned {ret}, expected {TC_ACT_OK}")
                out["invite_repeat"][name] = {"runs": REPEAT_RUNS, "ns_per_run": ns}
        finally:
            prog.close()
        return out

    def run_pass(self, attach, detach, phases, hot, before=None, after=None) -> dict:
        """attach() -> {name: program id}; the warm-up exchanges, then each phase's packets with
        kernel.bpf_stats_enabled on (before(phase) -> a token, after(phase, token) checks it),
        then hot(ids); the sysctl restored, the sockets closed and detach() called whatever
        happens."""
        from etsf import bpf
        old = STATS.read_text().strip()
        res = {}
        socks = ()
        try:
            ids = attach()
            socks = self.sockets()
            self.send("invite", socks, WARMUP)
            for phase in phases:
                token = before(phase) if before else None
                STATS.write_text("1\n")
                try:
                    b4 = {k: bpf.prog_info(i) for k, i in ids.items()}
                    self.send(phase, socks, self.a.count)
                    aft = {k: bpf.prog_info(i) for k, i in ids.items()}
                finally:
                    STATS.write_text(old + "\n")
                res[phase] = per_run(b4, aft)
                if after:
                    after(phase, token)
            res.update(hot(ids))
        finally:
            STATS.write_text(old + "\n")
            for sk in socks:
                sk.close()
            detach()
        return res

    def pass_(self, v: Variant) -> dict:
        def gate(phase):
            return self.ka_gate(v) if phase == "options" else None

        def answered_all(_phase, ka0):
            if ka0 is None:
                return
            answered = self.ka_counters(v)["answered"] - ka0["answered"]
            if answered != self.a.count:
                raise RuntimeError(f"{v.name}: {answered} of {self.a.count} OPTIONS answered in the kernel")

        return self.run_pass(lambda: self.attach(v), lambda: self.detach(v), PHASES, self.hot,
                             gate, answered_all)

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


def snapshot_bpf(dest: Path, src: Path | None = None) -> Path:
    """A copy of this tree's bpf/ (or of the source directory src) as it is now: `etsfctl attach`
    rebuilds from its source directory when the sources change, so a variant built from the live
    tree would pick up edits made while the run goes on."""
    shutil.copytree(src or ROOT / "bpf", dest / "bpf", ignore=shutil.ignore_patterns("__pycache__", "*.o"))
    return dest / "bpf"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="HEAD", help="git ref whose bpf/ is the base variant")
    ap.add_argument("--work", default="", help="git ref whose bpf/ is the work variant (default: this tree's)")
    ap.add_argument("--work-telemetry", choices=("on", "off"), default="on",
                    help="off: the work variant's policy turns transaction telemetry off (with --base HEAD: "
                         "what telemetry costs per packet, same programs)")
    ap.add_argument("--base-telemetry", choices=("on", "off"), default="on",
                    help="off: the base variant's policy turns transaction telemetry off")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=2000, help="packets per phase and pass")
    ap.add_argument("--rate", type=int, default=500, help="packets per second")
    ap.add_argument("--no-floor", action="store_true",
                    help="leave out the floor passes (eTSF detached, the floor programs measured)")
    ap.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1,
                    help="pin the run (its sockets' sends and receives, so the veth's receive path "
                         "and the programs too) to this CPU; -1: no pinning (default: the last CPU)")
    ap.add_argument("--prefix", default="etsf-pc-", help="namespace name prefix")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    a = ap.parse_args(argv)
    if not 1 <= a.rounds <= 50 or not 10 <= a.count <= 100000 or not 10 <= a.rate <= 20000:
        ap.error("--rounds 1..50, --count 10..100000, --rate 10..20000")
    if os.geteuid() != 0:
        ap.error("needs root")
    if a.cpu >= 0:
        if a.cpu not in os.sched_getaffinity(0):
            ap.error(f"--cpu {a.cpu}: not a CPU this process may run on ({sorted(os.sched_getaffinity(0))})")
        # sender and receiver on one CPU: every packet meets the caches that CPU left, and
        # the programs (run in the sender's softirq on a veth) never change CPU between passes
        os.sched_setaffinity(0, {a.cpu})
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = Path(tempfile.mkdtemp(prefix="etsf-progcost-"))
    pc = ProgCost(a, work)
    rounds = []
    old = STATS.read_text().strip()
    dirty = not a.work and bool(git("status", "--porcelain", "bpf"))   # as snapshot_bpf copies it
    try:
        variants = [Variant("base", export_bpf(a.base, work / "base-src"), work, telemetry=a.base_telemetry == "on"),
                    Variant("work", export_bpf(a.work, work / "work-src") if a.work else snapshot_bpf(work / "work-src"), work,
                            telemetry=a.work_telemetry == "on")]
        pc.setup()
        for i in range(a.rounds):
            r = {}
            # ABBA: the order flips every round, so neither variant always runs second
            order = variants + ([] if a.no_floor else ["floor", "parse"])
            for v in (order if i % 2 == 0 else order[::-1]):
                name = v if isinstance(v, str) else v.name
                r[name] = pc.pass_floor(v) if isinstance(v, str) else pc.pass_(v)
                print(f"round {i + 1} {name}: " + "; ".join(
                    f"{ph} " + ", ".join(f"{pg} {fmt(x['ns_per_run'])} ns x {x['runs']}" for pg, x in progs.items())
                    for ph, progs in r[name].items()), flush=True)
            rounds.append(r)
    finally:
        STATS.write_text(old + "\n")
        pc.close()
        shutil.rmtree(work, ignore_errors=True)
    doc = {"stamp": stamp, "params": {"rounds": a.rounds, "count": a.count, "rate": a.rate,
                                      "cpu": a.cpu if a.cpu >= 0 else None},
           "base_ref": a.base, "base_commit": git("rev-parse", a.base), "work_ref": a.work or "(tree)",
           "work_commit": git("rev-parse", a.work or "HEAD"), "work_telemetry": a.work_telemetry,
           "base_telemetry": a.base_telemetry,
           "work_dirty": dirty, "kernel": os.uname().release,
           "rounds": rounds, "summary": summarize(rounds), "repeat_ratio": repeat_ratio(rounds),
           "floor": floor_summary(rounds), "lost": pc.lost,
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
