"""eTSF pinned ping-pong: what the classifier adds to one SIP request/answer round trip on the
direct path, with both ends on one CPU.

    python bench/pingpong.py --quick       # CI form (~40 s, hard bound 2 min): the counts add up
    python bench/pingpong.py --full        # 20 interleaved rounds of 6,000 round trips per configuration

Topology: a client namespace with two veth pairs, each to a node namespace of its own
(198.18.46.0/24 and 198.18.47.0/24 only):

    <prefix>c  client 198.18.46.1 qpa --veth-- qpn 198.18.46.2  <prefix>a  node A: server, no filter (D)
               client 198.18.47.1 qpb --veth-- qpn 198.18.47.2  <prefix>b  node B: server + the filter

The client (bench/pingpong.c) sends a 1 KB INVITE, waits for the server's 350-byte 200 OK of the
same Call-ID, and times the exchange; then the next, with a new Call-ID (every exchange is a new
call: telemetry starts a transaction per INVITE and closes it with the 200).  Its exchanges take
turns between the two paths (a, b, b, a, ...), so D and the filter are measured in the same moments:
this VM's speed moves between phases (the same round trip is 12.6 or 15.5 µs for seconds at a time),
and a difference taken between runs made seconds apart carries those phases.  Client and both
servers are pinned to the same CPU (--cpu), so no exchange waits for an idle vCPU to wake (tens of
µs on a VM: a round trip across two CPUs is ~4x one on a single CPU, and never compared with it).
The namespaces, the servers and the client live for the whole run; between runs only node B's
filter changes.  The filter sits on node B's side of its veth, where requests arrive and answers
leave:

  D     no filter (the direct path)
  T     eTSF as `etsfctl attach` deploys it on a veth (hook auto: TC ingress + TC egress; TC API
        auto: tcx links where the kernel has them, as here)
  T-nt  T with transaction telemetry off in the policy (`telemetry.transactions: false`)
  X     eTSF native XDP (--hook xdp --mode native) + TC egress
  G     eTSF generic XDP (--hook xdp --mode generic) + TC egress (--full)
  K     a count-only BPF program at TC ingress and one at TC egress: what any program there costs
  KX    K's programs on tcx links (kernel >= 6.6) instead of clsact filters: what the hook costs
  TX    T with its two TC programs on tcx links (`etsfctl attach --tc-api tcx`): T itself on a kernel
        with tcx, so T - TX is 0 within the run's noise there
  T-cls T with its two TC programs in clsact filters (`--tc-api clsact`, the default before auto)
  P     bench/bpf/progcost_ref.c's floor programs there (L2-L4, the start line, the Call-ID found
        and hashed, one table line written by the request and read by the answer): the least a
        Call-ID-aware classifier does, so T - P is what eTSF does beyond it
  F     the nftables rule an operator deploys instead (bench/floodcmp.py's F: payload match on
        "REGISTER" + per-source meter): what a netfilter hook costs a passing INVITE
  T0    with --base REF: T with the BPF programs of git ref REF, paired with T in the same rounds
        (--base-src DIR: built from the bpf/ source directory DIR instead)

Per run: COUNT timed exchanges on each path after WARMUP untimed ones; p50 / p90 / p99 / mean of
each path's round trip.  Per configuration: medians over runs; per round the filter's difference to
the D of the same run (and T - T0, T - F through those), with a bootstrap 95 % interval, the sign
test and the smallest difference the rounds detect (bench/stats.py).  eTSF's counters must show every INVITE passed at the chosen hook, and its parse
counters one parse per packet: requests at ingress, answers at egress.  A separate pass (one run
per eTSF configuration) sets kernel.bpf_stats_enabled=1 and reads each program's
run_time_ns / run_cnt: its in-traffic ns per INVITE (ingress) and per 200 OK (egress) back to back.

Output: bench/results/<UTC>-pingpong/{results.json, report.md}.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import datapath  # noqa: E402
import etsfread  # noqa: E402
import floodcmp  # noqa: E402
import progcost  # noqa: E402
import run as R  # noqa: E402
import stats  # noqa: E402
from trees import Trees  # noqa: E402
from lab.netns import Topology  # noqa: E402

SCHEMA = "etsf-bench-pingpong/1"
NS_PREFIX = "etsf-bn-q"
# path a: the client's qpa to node A (no filter, D); path b: its qpb to node B (the filter)
PATHS = {"a": ("198.18.46.1", "198.18.46.2", "qpa"), "b": ("198.18.47.1", "198.18.47.2", "qpb")}
PORT = 5060
NODE_IF = "qpn"
FIELD = b"a84b4c76e66710"          # the 14 characters of the Call-ID each exchange sets
ANSWER_SIZE = 350
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")

CONFIGS = {
    "D": "no filter (the direct path)",
    "T": "eTSF as attached by default (hook auto: TC on a veth; TC API auto)",
    "T-nt": "T with transaction telemetry off",
    "X": "eTSF native XDP + TC egress",
    "G": "eTSF generic XDP + TC egress",
    "K": "count-only BPF programs at TC ingress and egress (the floor of any program there)",
    "KX": "K's programs attached through tcx links instead of clsact filters",
    "P": "bench/bpf/progcost_ref.c's floor programs at TC ingress and egress (the least a Call-ID classifier does)",
    "F": "nftables prerouting: payload \"REGISTER\" + per-source meter (the flood rule)",
    "T0": "T with the BPF programs of --base (or --base-src)",
    "TX": "T with its two TC programs on tcx links (attach --tc-api tcx)",
    "T-cls": "T with its two TC programs in clsact filters (attach --tc-api clsact)",
}
BASELINE = "D"
# etsfctl attach arguments of the eTSF configurations, the hook its INVITEs are counted at
# the tc filter handles of K and P (eTSF's own are 0xE75E / 0xE75F)
REF_PROGS = {"K": (("pc_ref_ingress", "ingress", 0xB8), ("pc_ref_egress", "egress", 0xB8)),
             "P": (("pc_floor_ingress", "ingress", 0xB9), ("pc_floor_egress", "egress", 0xB9))}
ETSF = {"T": ([], None), "T-nt": (["--hook", "tc"], "TC_INGRESS"), "T0": (["--hook", "tc"], "TC_INGRESS"),
        "TX": (["--hook", "tc", "--tc-api", "tcx"], "TC_INGRESS"),
        "T-cls": (["--hook", "tc", "--tc-api", "clsact"], "TC_INGRESS"),
        "X": (["--hook", "xdp", "--mode", "native"], "XDP"), "G": (["--hook", "xdp", "--mode", "generic"], "XDP")}

PROFILES = {
    "quick": dict(count=300, warmup=50, rounds=2, quiet_limit_s=1.0, budget_min=2.0,
                  configs=["D", "T", "X", "K", "F"], stats_configs=["T", "K"]),
    "full": dict(count=6000, warmup=500, rounds=20, quiet_limit_s=5.0, budget_min=15.0,
                 configs=["D", "T", "T-nt", "T-cls", "X", "G", "K", "P", "F"],
                 stats_configs=["T", "T-nt", "T-cls", "X", "K", "P", "KX", "TX"]),
}


# ---------------------------------------------------------------- pure parts
def messages() -> tuple[bytes, int, bytes, int]:
    """(request, its field's offset, answer, its field's offset): bench/datapath.py's 1 KB INVITE
    and its 200 OK, the answer padded to ANSWER_SIZE bytes by a Server header."""
    req = datapath.invite_1k()
    ok = datapath.ok200()
    pad = ANSWER_SIZE - len(ok) - len(b"Server: \r\n")
    if pad < 0 or req.count(FIELD) != 1 or ok.count(FIELD) != 1:
        raise ValueError("the ping-pong messages no longer match bench/datapath.py's")
    ans = ok.replace(b"Content-Length: 0\r\n", b"Server: " + b"p" * pad + b"\r\nContent-Length: 0\r\n")
    assert len(ans) == ANSWER_SIZE, len(ans)
    return req, req.index(FIELD), ans, ans.index(FIELD)


def policy(telemetry: bool = True) -> str:
    """Every INVITE passes (no INVITE limit); the flood's REGISTER limit, as in bench/floodcmp.py."""
    text = (f"version: 1\nsip_ports: [{PORT}]\nrate_limits:\n  invite: {{rate: 0}}\n"
            f"  register: {{rate: {floodcmp.LIMIT}, burst: {floodcmp.BURST}}}\n")
    return text + ("" if telemetry else "telemetry:\n  transactions: false\n")


def invites_passed(st: dict, hook: str) -> int:
    """INVITEs passed at `hook` in `etsfctl stats --json`."""
    return sum(r["packets"] for r in st.get("counters", [])
               if r["hook"].upper() == hook and r["method"].upper() == "INVITE" and r["verdict"].upper() == "PASS")


def _med(vals):
    return statistics.median(vals) if vals else None


def summarize(res: dict) -> dict:
    """Medians per configuration and the paired differences (µs per round trip): each filter's
    path against the D path of the same run; two filters against each other through those pairs."""
    out, delta = {}, {}
    for name, c in res["configs"].items():
        runs = [r for r in c["runs"] if r.get("timed")]
        if not runs:
            continue
        out[name] = {"runs": len(runs), **{f"{m}_us": _med([r[f"{m}_ns"] / 1000 for r in runs])
                                           for m in ("min", "p50", "p90", "p99", "mean")},
                     "timed": sum(r["timed"] for r in runs), "lost": sum(r["lost"] for r in runs),
                     "stale": sum(r["stale"] for r in runs), "counts_add_up": all(r["counts_add_up"] for r in runs)}
        if name != BASELINE:
            delta[name] = {m: {r["round"]: (r[f"{m}_ns"] - r[f"ref_{m}_ns"]) / 1000 for r in runs if f"ref_{m}_ns" in r}
                           for m in ("p50", "mean")}
    pairs = [(n, BASELINE) for n in delta] + [("T", "F"), ("T", "T0"), ("T", "T-nt"), ("T", "X"), ("T", "TX"), ("T", "T-cls"), ("K", "KX")]
    diffs = {}
    for a, b in pairs:
        if a in delta and (b in delta or b == BASELINE) and a != b:
            db = delta.get(b)
            diffs[f"{a} - {b}"] = {m: stats.paired(delta[a][m], db[m] if db else {r: 0.0 for r in delta[a][m]})
                                   for m in ("p50", "mean")}
    return {"configs": out, "paired": diffs}


def _f(v, nd=2, sign=False):
    if v is None:
        return "-"
    return f"{v:+,.{nd}f}" if sign else f"{v:,.{nd}f}"


def render(res: dict) -> str:
    p, s, h = res["params"], res.get("summary", {}), res.get("host", {})
    lines = [f"# Pinned ping-pong ({res['profile']}): what eTSF adds to one SIP round trip on the direct path", "",
             f"A {p['request_bytes']}-byte INVITE and its {p['answer_bytes']}-byte 200 OK between two namespaces "
             f"(two veths, the paths taking turns), client and both servers pinned to CPU {p['cpu']}; {p['count']:,} timed round trips "
             f"after {p['warmup']} untimed per run, {p['rounds']} interleaved rounds (Williams order).  Host: kernel "
             f"{h.get('kernel')}, {h.get('cpus')} CPUs, {h.get('cpu_model')}.", "",
             "## Round trip (µs, median over rounds of each run's quantile)", "",
             "| config | what | hook (TC API) | p50 | p90 | p99 | mean | min | timed | lost | counts add up |",
             "|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    for name in CONFIGS:
        x = s.get("configs", {}).get(name)
        if x:
            c = res["configs"][name]
            api = f" ({c['tc_api']})" if c.get("tc_api") else ""
            lines.append(f"| {name} | {CONFIGS[name]} | {c.get('hook') or '-'}{api} | "
                         f"{_f(x['p50_us'])} | {_f(x['p90_us'])} | {_f(x['p99_us'])} | {_f(x['mean_us'])} | "
                         f"{_f(x['min_us'])} | {x['timed']:,} | {x['lost']} | {'yes' if x['counts_add_up'] else 'NO'} |")
    lines += ["", "## Paired differences (µs per round trip)", "",
              "Per round, a filter's path minus the D path of the same run (their exchanges taking turns; two "
              "filters: the difference of those differences), of the runs' p50 (and mean); median over rounds, bootstrap 95 % interval, sign "
              "test, smallest difference the rounds detect at 80 % power:", "",
              "| a − b | p50: median | 95 % interval | sign +/- (p) | smallest detectable | mean: median | "
              "95 % interval |", "|---|--:|---|---|--:|--:|---|"]
    for k, v in s.get("paired", {}).items():
        a, m = v["p50"], v["mean"]
        lines.append(f"| {k} | {_f(a['median'], sign=True)} | [{_f(a['ci95'][0], sign=True)}, "
                     f"{_f(a['ci95'][1], sign=True)}] | {a['sign']['pos']}/{a['sign']['neg']} ({a['sign']['p']:.3f}) | "
                     f"{_f(a['mde'])} | {_f(m['median'], sign=True)} | [{_f(m['ci95'][0], sign=True)}, "
                     f"{_f(m['ci95'][1], sign=True)}] |")
    parses = {n: c["runs"][0].get("parses") for n, c in res["configs"].items() if c["runs"] and c["runs"][0].get("parses")}
    if parses:
        lines += ["", "## Parses per packet (first round's run: SIP parses by hook over the run, warm-up included)", "",
                  "| config | exchanges | " + " | ".join(["XDP", "TC_INGRESS", "TC_EGRESS"]) + " |", "|---|--:|--:|--:|--:|"]
        for n, ps in parses.items():
            ex = res["configs"][n]["runs"][0]["sent"]
            cells = [f"{ps.get(k, {}).get('sip_parses', 0):,}" for k in ("XDP", "TC_INGRESS", "TC_EGRESS")]
            lines.append(f"| {n} | {ex:,} | " + " | ".join(cells) + " |")
    bs = res.get("bpf_stats", {}).get("in_traffic", {})
    if bs:
        lines += ["", "## In traffic, back to back (separate pass, kernel.bpf_stats_enabled=1)", "",
                  "| config | program | runs | ns per run |", "|---|---|--:|--:|"]
        for n, rec in bs.items():
            for prog, v in rec["programs"].items():
                if v["run_cnt"]:
                    lines.append(f"| {n} | {prog} | {v['run_cnt']:,} | {_f(v['ns_per_run'], 0)} |")
    lines += ["", f"A two-sided sign test needs {stats.sign_rounds_needed()} unanimous rounds to reach p < 0.05.", "",
              f"Orders: {res.get('orders')}", ""]
    if res["skipped"]:
        lines += ["Skipped: " + "; ".join(res["skipped"]), ""]
    if res["errors"]:
        lines += ["Errors: " + "; ".join(res["errors"]), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- the run
class PingPong:
    def __init__(self, args, prof: dict, out: Path):
        self.args, self.p, self.out = args, prof, out
        self.work = Path(args.work or tempfile.mkdtemp(prefix="etsf-bench-pingpong-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.tag = str(os.getpid() % 100000)
        self.cli_ns = f"{NS_PREFIX}c{self.tag}"
        self.nodes = {k: f"{NS_PREFIX}{k}{self.tag}" for k in PATHS}
        self.node_ns = self.nodes["b"]             # where the filter goes
        self.pin_root = f"/sys/fs/bpf/etsf-bnq-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.trees = Trees(self.work, self.pin_root, args.base, args.base_src)
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.budget_min * 60
        self.topo: Topology | None = None
        self.servers: list = []
        self.client_proc: subprocess.Popen | None = None
        self.ref: dict = {}
        self.links: list = []
        self.bin = self.work / "pingpong"
        self.configs = list(prof["configs"]) + (["T0"] if args.base or args.base_src else [])
        req, roff, ans, aoff = messages()
        (self.work / "request").write_bytes(req)
        (self.work / "answer").write_bytes(ans)
        self.msg_args = [str(self.work / "request"), str(roff), str(self.work / "answer"), str(aoff)]
        self.cpu = str(args.cpu)
        self.res = {"schema": SCHEMA, "profile": args.profile, "started": R.now_utc().isoformat(),
                    "params": dict(prof, cpu=args.cpu, request_bytes=len(req), answer_bytes=len(ans), port=PORT,
                                   base_ref=args.base,
                                   base_commit=progcost.git("rev-parse", args.base) if args.base else None,
                                   base_src=str(Path(args.base_src).resolve()) if args.base_src else None),
                    "configs": {c: {"what": CONFIGS[c], "runs": []} for c in self.configs},
                    "skipped": [], "errors": [], "notes": [],
                    "resources": {"namespaces": [self.cli_ns, *self.nodes.values()], "pin_root": self.pin_root,
                                  "work_dir": str(self.work)}}

    def etsfctl(self, *args, check=True, base=False):
        return self.trees.etsfctl(self.node_ns, *args, check=check, base=base)

    def prepare(self):
        r = subprocess.run(["gcc", "-O2", "-Wall", "-o", str(self.bin), str(HERE / "pingpong.c")],
                           capture_output=True, text=True, timeout=120, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"gcc pingpong.c: {r.stderr.strip()[:500]}")
        self.trees.build()
        if any(c in REF_PROGS or c == "KX" for c in self.configs):
            from etsf import bpf  # pylint: disable=import-outside-toplevel
            from etsf.build import build_test_object  # pylint: disable=import-outside-toplevel
            self.ref = bpf.load_object(build_test_object(HERE / "bpf", self.work / "ref", "progcost_ref.c"))

    def host_info(self) -> dict:
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), None)
        return {"kernel": os.uname().release, "cpus": os.cpu_count(), "cpu_model": model,
                "loadavg_at_start": Path("/proc/loadavg").read_text(encoding="ascii").split()[:3],
                "pinning": {"client": f"cpu{self.cpu}", "servers": f"cpu{self.cpu}",
                            "softirq": "the sender's CPU (a veth delivers in the sender's softirq): the same CPU"}}

    def setup(self):
        """The namespaces, the veth, the server and the client: once for the whole run, so the
        runs of different configurations differ only in the filter on the node's side."""
        self.topo = Topology()
        for ns in (self.cli_ns, *self.nodes.values()):
            self.topo.netns(ns)
        life = int(self.args.budget_min * 60) + 60
        self.servers = []
        for k, (cli, node, cif) in PATHS.items():
            ns = self.nodes[k]
            self.topo.veth(self.cli_ns, cif, ns, NODE_IF, addrs=[f"{cli}/24"], peer_addrs=[f"{node}/24"])
            # permanent neighbours: no ARP in a run, so every packet a filter sees is an exchange's
            mac = {n: self.topo.sh(n, "cat", f"/sys/class/net/{dev}/address").stdout.strip()
                   for n, dev in ((self.cli_ns, cif), (ns, NODE_IF))}
            self.topo.sh(self.cli_ns, "ip", "neigh", "replace", node, "lladdr", mac[ns], "dev", cif, "nud", "permanent")
            self.topo.sh(ns, "ip", "neigh", "replace", cli, "lladdr", mac[self.cli_ns], "dev", NODE_IF, "nud",
                         "permanent")
            log = self.work / f"server-{k}.log"
            srv = self.topo.start(ns, [str(self.bin), "server", node, str(PORT), str(life), *self.msg_args], log,
                                  limit=life + 10, cpu=self.cpu)
            t_ready = time.monotonic() + 10
            while "ready" not in log.read_text():
                if srv.poll() is not None or time.monotonic() > t_ready:
                    raise RuntimeError(f"pingpong server {k} did not start: {log.read_text()[-300:]}")
                time.sleep(0.02)
            self.servers.append(srv)
        # the client: its own session, killed with the run (cleanup)
        self.client_proc = subprocess.Popen(
            ["ip", "netns", "exec", self.cli_ns, "timeout", "-k", "5", str(life + 10), "taskset", "-c", self.cpu,
             str(self.bin), "client", *PATHS["a"][:2], *PATHS["b"][:2], str(PORT), str(life), *self.msg_args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True)
        if self.client_proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"pingpong client did not start (rc {self.client_proc.poll()})")

    def apply(self, cfg: str):
        if cfg in ETSF:
            r = self.etsfctl(*self.trees.attach_args(NODE_IF, ETSF[cfg][0], base=cfg == "T0"), "--json",
                             base=cfg == "T0")
            out = json.loads(r.stdout)
            self.res["configs"][cfg]["hook"] = out.get("hook")
            self.res["configs"][cfg]["tc_api"] = out.get("tc_api")
            # which objects run: T0's tags differ from T's whenever the two trees' programs do
            from etsf import bpf  # pylint: disable=import-outside-toplevel
            self.res["configs"][cfg]["prog_tags"] = {
                k: bpf.prog_info(out[k])["tag"] for k in ("xdp_prog_id", "tc_ingress_prog_id", "tc_prog_id")
                if out.get(k)}
            pol = self.work / f"policy-{cfg}.yml"
            pol.write_text(policy(telemetry=cfg != "T-nt"))
            self.etsfctl("policy", "apply", str(pol), base=cfg == "T0")
        elif cfg in REF_PROGS or cfg == "KX":
            from etsf import bpf  # pylint: disable=import-outside-toplevel
            from transit import in_netns  # pylint: disable=import-outside-toplevel
            with in_netns(self.node_ns):
                idx = socket.if_nametoindex(NODE_IF)
                for prog, d, handle in REF_PROGS["K" if cfg == "KX" else cfg]:
                    if cfg == "KX":         # K's programs on tcx links
                        pin = os.path.join(self.pin_root, "kx-links", d)
                        bpf.tcx_attach(pin, idx, self.ref[prog].fd, d)
                        self.links.append((pin, idx, d))
                    else:
                        bpf.tc_attach(idx, self.ref[prog].fd, d, handle, 1)
            self.res["configs"][cfg]["tc_api"] = "tcx" if cfg == "KX" else "clsact"
        elif cfg == "F":
            self.topo.sh(self.node_ns, "nft", "-f", "-", inp=floodcmp.nft_rules())

    def remove(self, cfg: str):
        if cfg in ETSF:
            self.etsfctl("detach", "--iface", NODE_IF, check=False, base=cfg == "T0")
            shutil.rmtree(self.pin_root, ignore_errors=True)
        elif cfg == "F":
            self.topo.sh(self.node_ns, "nft", "delete", "table", "ip", "etsf_flood", check=False)
        if self.links:
            from etsf import bpf  # pylint: disable=import-outside-toplevel
            from transit import in_netns  # pylint: disable=import-outside-toplevel
            with in_netns(self.node_ns):
                while self.links:
                    bpf.tcx_detach(*self.links.pop())
        # D runs with no clsact qdisc at all, as on a host without a TC program
        self.topo.sh(self.node_ns, "tc", "qdisc", "del", "dev", NODE_IF, "clsact", check=False)

    def parse_stats(self) -> dict | None:
        return etsfread.parse_counts(self.pin_root)

    def prog_stats(self) -> dict:
        return etsfread.prog_runs(self.pin_root, {name: prog.id for name, prog in self.ref.items()})

    def client(self, count: int, warmup: int) -> dict:
        """One run of the client (COUNT timed round trips after WARMUP), bounded in time."""
        p = self.client_proc
        p.stdin.write(f"{count} {warmup}\n")
        p.stdin.flush()
        limit = time.monotonic() + 10 + (count + warmup) * 0.0005
        line = ""
        while not line:
            if p.poll() is not None or time.monotonic() > limit:
                raise RuntimeError(f"pingpong client stopped answering (rc {p.poll()})")
            if select.select([p.stdout], [], [], 0.5)[0]:
                line = p.stdout.readline()
        rec = json.loads(line)
        if "error" in rec:
            raise RuntimeError(f"pingpong client: {rec['error']}")
        return rec

    def one(self, cfg: str, rnd: int) -> tuple[dict, dict]:
        """One run: (path a's record = D, path b's record = cfg), measured in the same moments."""
        st0 = json.loads(self.etsfctl("stats", "--json").stdout) if cfg in ETSF else None
        ps0 = self.parse_stats() if cfg in ETSF else None
        both = self.client(self.p["count"], self.p["warmup"])
        ref, rec = both["a"], both["b"]
        for r in (ref, rec):
            r["round"] = rnd
            r["counts_add_up"] = r["lost"] == 0
        ref["alongside"] = cfg
        if cfg in ETSF:
            hook = ETSF[cfg][1] or {"tc": "TC_INGRESS", "xdp": "XDP"}.get(self.res["configs"][cfg].get("hook"), "TC_INGRESS")
            st1 = json.loads(self.etsfctl("stats", "--json").stdout)
            rec["invites_passed"] = invites_passed(st1, hook) - invites_passed(st0, hook)
            ps1 = self.parse_stats()
            if ps0 and ps1:
                rec["parses"] = {k: {"sip_parses": ps1[k]["sip_parses"] - ps0[k]["sip_parses"]} for k in ps1}
            rec["counts_add_up"] = rec["invites_passed"] == rec["sent"] and rec["lost"] == 0
        rec["ref_p50_ns"], rec["ref_mean_ns"] = ref["p50_ns"], ref["mean_ns"]
        return ref, rec

    def run(self):
        self.res["host"] = self.host_info()
        self.prepare()
        self.setup()
        filters = [c for c in self.configs if c != BASELINE]
        orders = R.williams_orders(len(filters))
        self.res["orders"] = []
        per = 6 + self.p["count"] / 10000
        for rnd in range(self.p["rounds"]):
            order = [filters[i] for i in orders[rnd % len(orders)]]
            self.res["orders"].append(order)
            for cfg in order:
                if self.deadline - time.monotonic() < per:
                    self.res["skipped"].append(f"{cfg} round {rnd + 1} (time budget)")
                    continue
                try:
                    self.apply(cfg)
                    waited = R.wait_quiet(limit_s=self.p["quiet_limit_s"])
                    ref, rec = self.one(cfg, rnd + 1)
                    rec["quiet_wait_s"] = round(waited, 2)
                    self.res["configs"][BASELINE]["runs"].append(ref)
                    self.res["configs"][cfg]["runs"].append(rec)
                    R.log(f"round {rnd + 1} {cfg}: {rec['timed']} timed, lost {rec['lost']}, p50 "
                          f"{rec['p50_ns'] / 1000:.2f} µs (D alongside {ref['p50_ns'] / 1000:.2f}), mean "
                          f"{rec['mean_ns'] / 1000:.2f} µs (D {ref['mean_ns'] / 1000:.2f})")
                except Exception as e:  # noqa: BLE001 - recorded, the others go on
                    self.res["errors"].append(f"{cfg} round {rnd + 1}: {type(e).__name__}: {e}")
                    R.log(f"ERROR {cfg} round {rnd + 1}: {e}")
                finally:
                    self.remove(cfg)
            self.save()
        self.bpf_stats_pass()
        self.res["summary"] = summarize(self.res)
        self.res["finished"] = R.now_utc().isoformat()
        self.res["wall_seconds"] = round(time.monotonic() - self.t0, 1)
        self.save()

    def bpf_stats_pass(self):
        """ns per program run in this traffic, with kernel.bpf_stats_enabled=1 for this pass only (it
        adds two clock reads to every BPF program run, so never in the timed rounds)."""
        out = {}
        old = STATS.read_text().strip()
        try:
            for cfg in [c for c in self.p["stats_configs"] if c in self.configs]:
                if self.deadline - time.monotonic() < 10:
                    self.res["skipped"].append(f"bpf_stats {cfg} (time budget)")
                    continue
                try:
                    self.apply(cfg)
                    STATS.write_text("1\n")
                    before = self.prog_stats()
                    rec = self.client(self.p["count"], self.p["warmup"])["b"]
                    after = self.prog_stats()
                    STATS.write_text(old + "\n")
                    progs = etsfread.runs_delta(before, after)
                    out[cfg] = {"programs": progs, "sent": rec["sent"], "hook": self.res["configs"][cfg].get("hook")}
                    R.log(f"bpf_stats {cfg}: " + ", ".join(f"{p} {v['ns_per_run']:.0f} ns x {v['run_cnt']}"
                                                           for p, v in progs.items() if v["ns_per_run"]))
                except Exception as e:  # noqa: BLE001
                    self.res["errors"].append(f"bpf_stats {cfg}: {type(e).__name__}: {e}")
                finally:
                    STATS.write_text(old + "\n")
                    self.remove(cfg)
        finally:
            STATS.write_text(old + "\n")
        self.res["bpf_stats"] = {"in_traffic": out, "sysctl_restored_to": old}

    def save(self):
        (self.out / "results.json").write_text(json.dumps(self.res, indent=1, default=str) + "\n")

    def cleanup(self):
        if self.client_proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.client_proc.pid, signal.SIGKILL)
            self.client_proc.wait()
        with contextlib.suppress(Exception):
            if self.topo:
                self.remove("T0" if "T0" in self.configs else "T")
        with contextlib.suppress(Exception):
            if self.topo:
                self.topo.close()
        for ns in (self.cli_ns, *self.nodes.values()):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        shutil.rmtree(self.pin_root, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="profile", action="store_const", const="quick")
    g.add_argument("--full", dest="profile", action="store_const", const="full")
    ap.add_argument("--out", metavar="DIR", help="result directory (default bench/results/<UTC>-pingpong)")
    ap.add_argument("--budget-min", type=float, default=None, metavar="MIN", help="hard time budget (quick 2, full 15)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (quick 2, full 20)")
    ap.add_argument("--count", type=int, help="timed round trips per run (quick 300, full 6,000)")
    ap.add_argument("--configs", metavar="LIST",
                    help="comma-separated configurations to run (D always runs alongside; default: the profile's)")
    ap.add_argument("--cpu", type=int, default=0, help="the one CPU client and server run on (default 0)")
    ap.add_argument("--work", metavar="DIR", help="raw per-run files (default: a temp dir, removed at the end)")
    ap.add_argument("--render", metavar="DIR", help="only re-render DIR/report.md from DIR/results.json")
    ap.add_argument("--base", metavar="REF", help="also run T0: T with the BPF programs of git ref REF")
    ap.add_argument("--base-src", metavar="DIR",
                    help="also run T0: T with the BPF programs built from source directory DIR (a bpf/ tree)")
    args = ap.parse_args(argv)
    if args.render:
        res = json.loads((Path(args.render) / "results.json").read_text())
        res["summary"] = summarize(res)
        (Path(args.render) / "results.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
        (Path(args.render) / "report.md").write_text(render(res))
        return 0
    args.profile = args.profile or "quick"
    prof = dict(PROFILES[args.profile])
    if args.rounds is not None:
        prof["rounds"] = args.rounds
    if args.count is not None:
        prof["count"] = args.count
    if args.configs is not None:
        chosen = [c.strip() for c in args.configs.split(",") if c.strip()]
        bad = [c for c in chosen if c not in CONFIGS or c == "T0"]
        if bad or not chosen:
            ap.error(f"--configs: unknown {', '.join(bad) or '(empty)'}; choose from "
                     f"{', '.join(c for c in CONFIGS if c != 'T0')} (T0 comes with --base or --base-src)")
        prof["configs"] = ["D", *[c for c in dict.fromkeys(chosen) if c != "D"]]
        if len(prof["configs"]) == 1 and not (args.base or args.base_src):
            ap.error("--configs: name at least one filter (D runs alongside every one)")
        prof["stats_configs"] = [c for c in prof["stats_configs"] if c in prof["configs"]]
    if not 1 <= prof["rounds"] <= 40:
        ap.error("--rounds: 1..40 expected")
    if not 10 <= prof["count"] <= 100000:
        ap.error("--count: 10..100000 round trips expected")
    if not 0 <= args.cpu < (os.cpu_count() or 1):
        ap.error(f"--cpu: 0..{(os.cpu_count() or 1) - 1} expected")
    args.budget_min = args.budget_min if args.budget_min is not None else prof["budget_min"]
    if not 0.5 <= args.budget_min <= 60:
        ap.error("--budget-min: 0.5..60 expected")
    if args.base and args.base_src:
        ap.error("--base-src: give --base REF or --base-src DIR, not both")
    if args.base:
        try:
            progcost.git("rev-parse", "--verify", args.base + "^{commit}")
        except subprocess.CalledProcessError:
            ap.error(f"--base: not a commit in this repository: {args.base}")
    if args.base_src and not (Path(args.base_src) / "etsf_parse.h").is_file():
        ap.error(f"--base-src: not an eTSF bpf/ source directory (no etsf_parse.h): {args.base_src}")
    why = R.preflight("pingpong.py", ("nft", "gcc", "taskset", "nsenter"))
    if why:
        print(why, file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else HERE / "results" / (R.now_utc().strftime("%Y%m%dT%H%M%SZ") + "-pingpong")
    out.mkdir(parents=True, exist_ok=True)
    pp = PingPong(args, prof, out)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    R.log(f"eTSF pinned ping-pong ({args.profile}, CPU {args.cpu}, budget {args.budget_min} min) -> {out}")
    try:
        pp.run()
    finally:
        pp.cleanup()
        pp.save()
        if not args.work:
            shutil.rmtree(pp.work, ignore_errors=True)
    if "summary" in pp.res:
        (out / "report.md").write_text(render(pp.res))
    R.log(f"done in {pp.res.get('wall_seconds')} s: {out / 'report.md'}")
    if pp.res["errors"]:
        R.log(f"errors: {pp.res['errors']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
