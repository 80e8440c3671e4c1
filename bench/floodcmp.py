"""eTSF flood baselines: what a REGISTER flood costs the receiving host with eTSF and with the
filters an operator would deploy instead, side by side in one run.

    python bench/floodcmp.py --quick       # CI form (~45 s, hard bound 90 s): the counts add up
    python bench/floodcmp.py --full        # 50,000/s for 4 s from 64 sources, 4 rounds (<= 10 min)

Topology: two namespaces joined by one veth pair; the flood generator (bench/flood.c,
REGISTER only, paced, from 64 source addresses) in one, a UDP sink (bench/sink.c) on the SIP
port in the other.  The filter sits on the sink's side of the veth:

  N   no filter: every datagram reaches the socket
  X   eTSF native XDP (etsfctl attach --hook xdp --mode native), REGISTER limited to 20/s per source
  G   eTSF generic XDP (--hook xdp --mode generic), the same policy (--full only)
  T   eTSF at TC ingress (etsfctl attach --hook tc, the default on a veth), the same policy
  T0  with --base REF: T with the BPF programs of git ref REF (its bpf/ built apart), so a change
      to the datapath is measured before/after in the same rounds (the paired T - T0 table)
  F   nftables prerouting (priority raw): payload match on "REGISTER" at the start of the UDP
      payload + per-source `meter ... limit rate over 20/second` -> counter, drop
  I   iptables raw PREROUTING `-m string --algo bm --string REGISTER` + `-m hashlimit
      --hashlimit-above 20/sec --hashlimit-mode srcip` -> DROP (Debian's default iptables:
      the nf_tables backend, the xt matches through nft_compat)
  IL  the same rule with iptables-legacy (x_tables), when it is installed

Every limit allows a burst of 5 (nft's and hashlimit's default; eTSF's burst set to match).
Configurations run in interleaved rounds (Williams order).  Per run: the whole machine's busy
CPU ((elapsed x CPUs) - idle - iowait, bench/cpuacct.py) from the flood's first packet until
the sink has drained, the same less the CPU of tasks that are not the benchmark's (other
tenants), datagrams sent, reaching the socket (Udp InDatagrams + RcvbufErrors in the sink's
namespace), dropped by the filter (its own counter: eTSF's stats map, the nft named counter,
the iptables rule counter) and lost elsewhere (veth drops, UDP errors).  The report gives
medians over rounds, CPU per flood datagram and per dropped datagram, each configuration's
paired difference to F with a bootstrap interval and the smallest detectable effect
(bench/stats.py), and ratios to F.

Output: bench/results/<UTC>-flood/{results.json, report.md}.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
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

import cpuacct  # noqa: E402
import progcost  # noqa: E402
import run as R  # noqa: E402
import stats  # noqa: E402
from trees import Trees  # noqa: E402
from lab.netns import Topology  # noqa: E402

SCHEMA = "etsf-bench-flood/1"
NS_PREFIX = "etsf-bn-f"
SINK, SRC_BASE, PORT = "198.18.44.1", "198.18.44.100", 5060
SRC_IF, SINK_IF = "bfs", "bfk"
CPU_FLOOD, CPU_SINK = "0", "1"
LIMIT, BURST = 20, 5                  # per source, REGISTER/s; burst: nft's and hashlimit's default
REGISTER_HEX = "0x" + b"REGISTER".hex()

CONFIGS = {
    "N": "no filter",
    "X": "eTSF native XDP, REGISTER 20/s per source",
    "G": "eTSF generic XDP, REGISTER 20/s per source",
    "T": "eTSF TC ingress (hook tc), REGISTER 20/s per source",
    "T0": "T with the BPF programs of --base",
    "F": "nftables prerouting: payload \"REGISTER\" + meter limit rate over 20/second, drop",
    "I": "iptables raw (nf_tables backend): string REGISTER + hashlimit above 20/sec srcip, DROP",
    "IL": "iptables-legacy raw: string REGISTER + hashlimit above 20/sec srcip, DROP",
}
BASELINE = "F"
# etsfctl attach arguments of the eTSF configurations, and the hook their drops are counted at
ETSF = {"X": (["--hook", "xdp", "--mode", "native"], "XDP"), "G": (["--hook", "xdp", "--mode", "generic"], "XDP"),
        "T": (["--hook", "tc"], "TC_INGRESS"), "T0": (["--hook", "tc"], "TC_INGRESS")}

PROFILES = {
    # quick: G (generic XDP) left out for T, so the CI run does not grow
    "quick": dict(rate=5000, seconds=1.5, sources=64, rounds=1, quiet_limit_s=1.0, budget_min=1.5,
                  configs=["N", "X", "T", "F", "I", "IL"]),
    "full": dict(rate=50000, seconds=4.0, sources=64, rounds=4, quiet_limit_s=5.0, budget_min=10.0,
                 configs=[c for c in CONFIGS if c != "T0"]),
}


def nft_rules() -> str:
    """F: the nftables rule an operator writes for this flood (raw priority: before conntrack)."""
    return ("table ip etsf_flood {\n"
            "  counter dropped { }\n"
            "  chain pre {\n"
            "    type filter hook prerouting priority raw; policy accept;\n"
            f"    udp dport {PORT} @th,64,64 {REGISTER_HEX} meter etsf_reg {{ ip saddr limit rate over "
            f"{LIMIT}/second burst {BURST} packets }} counter name dropped drop\n"
            "  }\n}\n")


def iptables_rule() -> list[str]:
    """I / IL: the iptables rule (after `iptables` or `iptables-legacy`)."""
    return ["-t", "raw", "-A", "PREROUTING", "-p", "udp", "--dport", str(PORT), "-m", "string", "--algo", "bm",
            "--string", "REGISTER", "-m", "hashlimit", "--hashlimit-above", f"{LIMIT}/sec", "--hashlimit-burst",
            str(BURST), "--hashlimit-mode", "srcip", "--hashlimit-name", "etsf_reg", "-j", "DROP"]


def policy() -> str:
    return (f"version: 1\nsip_ports: [{PORT}]\nrate_limits:\n  register: {{rate: {LIMIT}, burst: {BURST}}}\n")


def parse_snmp_udp(text: str) -> dict:
    """The Udp: counters of /proc/net/snmp."""
    rows = [ln.split() for ln in text.splitlines() if ln.startswith("Udp:")]
    if len(rows) < 2:
        return {}
    return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:])}


def parse_iptables_drops(text: str) -> int:
    """Packets counted by the DROP rules of `iptables -nvxL` output."""
    n = 0
    for ln in text.splitlines():
        f = ln.split()
        if len(f) > 2 and f[0].isdigit() and f[2] == "DROP":
            n += int(f[0])
    return n


def etsf_drops(st: dict, hook: str = "XDP") -> tuple[int, int]:
    """(REGISTERs dropped, REGISTERs passed) at `hook` from `etsfctl stats --json`."""
    drop = passed = 0
    for r in st.get("counters", []):
        if r["hook"].upper() != hook or r["method"].upper() != "REGISTER":
            continue
        if r["verdict"].upper() == "DROP":
            drop += r["packets"]
        elif r["verdict"].upper() == "PASS":
            passed += r["packets"]
    return drop, passed


class FloodBench:
    def __init__(self, args, prof: dict, out: Path):
        self.args, self.p, self.out = args, prof, out
        self.work = Path(args.work or tempfile.mkdtemp(prefix="etsf-bench-flood-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.tag = str(os.getpid() % 100000)
        self.src_ns, self.sink_ns = f"{NS_PREFIX}s{self.tag}", f"{NS_PREFIX}k{self.tag}"
        self.pin_root = f"/sys/fs/bpf/etsf-bnf-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.trees = Trees(self.work, self.pin_root, args.base)
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.budget_min * 60
        self.topo: Topology | None = None
        self.configs = [c for c in prof["configs"] if c != "IL" or shutil.which("iptables-legacy")]
        if args.base:
            self.configs.append("T0")
        self.res = {"schema": SCHEMA, "profile": args.profile, "started": R.now_utc().isoformat(),
                    "params": dict(prof, limit_per_source=LIMIT, burst=BURST, port=PORT,
                                   base_ref=args.base, base_commit=progcost.git("rev-parse", args.base)
                                   if args.base else None),
                    "configs": {c: {"what": CONFIGS[c], "runs": []} for c in self.configs},
                    "skipped": [], "errors": [], "notes": [],
                    "resources": {"namespaces": [self.src_ns, self.sink_ns], "pin_root": self.pin_root,
                                  "work_dir": str(self.work)}}
        if "IL" in prof["configs"] and "IL" not in self.configs:
            self.res["skipped"].append("IL (iptables-legacy not installed)")

    # -- plumbing -------------------------------------------------------------------
    def sh(self, ns: str, *cmd, inp: str | None = None, check: bool = True, timeout: float = 60):
        return self.topo.sh(ns, *cmd, inp=inp, check=check, timeout=timeout)

    def etsfctl(self, *args, check=True, base=False):
        return self.trees.etsfctl(self.sink_ns, *args, check=check, base=base)

    def prepare(self):
        for src in ("flood", "sink"):
            r = subprocess.run(["gcc", "-O2", "-Wall", "-o", str(self.work / src), str(HERE / f"{src}.c")],
                               capture_output=True, text=True, timeout=120, check=False)
            if r.returncode != 0:
                raise RuntimeError(f"gcc {src}.c: {r.stderr.strip()[:500]}")
        self.trees.build()

    def host_info(self) -> dict:
        def out(*c):
            try:
                return subprocess.run(list(c), capture_output=True, text=True, timeout=10, check=False).stdout.strip()
            except (OSError, subprocess.SubprocessError):
                return None
        return {"kernel": os.uname().release, "cpus": os.cpu_count(), "nft": out("nft", "--version"),
                "iptables": out("iptables", "--version"), "iptables_legacy": out("iptables-legacy", "--version"),
                "loadavg_at_start": Path("/proc/loadavg").read_text(encoding="ascii").split()[:3],
                "pinning": {"flood": f"cpu{CPU_FLOOD}", "sink": f"cpu{CPU_SINK}",
                            "softirq": "the flood's CPU (a veth delivers in the sender's softirq)"}}

    # -- one configuration, one round --------------------------------------------------
    def setup(self, cfg: str):
        self.topo = Topology()
        for ns in (self.src_ns, self.sink_ns):
            self.topo.netns(ns)
        base = int(SRC_BASE.rsplit(".", 1)[1])
        self.topo.veth(self.src_ns, SRC_IF, self.sink_ns, SINK_IF,
                       addrs=[f"198.18.44.{base + i}/24" for i in range(self.p["sources"])],
                       peer_addrs=[f"{SINK}/24"])
        self.sh(self.src_ns, "ping", "-c1", "-W1", "-I", SRC_BASE, SINK, check=False)
        if cfg in ETSF:
            self.etsfctl(*self.trees.attach_args(SINK_IF, ETSF[cfg][0], base=cfg == "T0"), base=cfg == "T0")
            pol = self.work / "policy.yml"
            pol.write_text(policy())
            self.etsfctl("policy", "apply", str(pol), base=cfg == "T0")
        elif cfg == "F":
            self.sh(self.sink_ns, "nft", "-f", "-", inp=nft_rules())
        elif cfg in ("I", "IL"):
            self.sh(self.sink_ns, "iptables" if cfg == "I" else "iptables-legacy", *iptables_rule())

    def teardown(self, cfg: str):
        if self.topo and cfg in ETSF:
            self.etsfctl("detach", "--iface", SINK_IF, check=False, base=cfg == "T0")
        if self.topo:
            self.topo.close()
        self.topo = None
        shutil.rmtree(self.pin_root, ignore_errors=True)

    def counters(self, cfg: str) -> dict:
        """Everything the accounting identity needs, read in the sink's namespace."""
        c = {"udp": parse_snmp_udp(self.sh(self.sink_ns, "cat", "/proc/net/snmp").stdout), "links": {}}
        for ns, dev, what in ((self.src_ns, SRC_IF, "tx_dropped"), (self.sink_ns, SINK_IF, "rx_dropped")):
            c["links"][f"{dev}.{what}"] = int(self.sh(ns, "cat", f"/sys/class/net/{dev}/statistics/{what}").stdout)
        if cfg in ETSF:
            c["filter_dropped"], c["filter_passed"] = etsf_drops(json.loads(self.etsfctl("stats", "--json").stdout),
                                                                 ETSF[cfg][1])
        elif cfg == "F":
            doc = json.loads(self.sh(self.sink_ns, "nft", "-j", "list", "counter", "ip", "etsf_flood",
                                     "dropped").stdout)
            c["filter_dropped"] = next(o["counter"]["packets"] for o in doc["nftables"] if "counter" in o)
        elif cfg in ("I", "IL"):
            tool = "iptables" if cfg == "I" else "iptables-legacy"
            c["filter_dropped"] = parse_iptables_drops(self.sh(self.sink_ns, tool, "-t", "raw", "-nvxL",
                                                               "PREROUTING").stdout)
        else:
            c["filter_dropped"] = 0
        return c

    def one(self, cfg: str, rnd: int) -> dict:
        d = self.work / f"{cfg}-{rnd}"
        d.mkdir(parents=True, exist_ok=True)
        rate, secs = self.p["rate"], self.p["seconds"]
        sink = self.topo.start(self.sink_ns, [str(self.work / "sink"), SINK, str(PORT), str(int(secs + 60))],
                               d / "sink.log", limit=secs + 70, cpu=CPU_SINK)
        t_ready = time.monotonic() + 10
        while "ready" not in (d / "sink.log").read_text() and time.monotonic() < t_ready:
            if sink.poll() is not None:
                raise RuntimeError(f"sink exited: {(d / 'sink.log').read_text()[-300:]}")
            time.sleep(0.05)
        c0 = self.counters(cfg)
        cmd = ["ip", "netns", "exec", self.src_ns, "taskset", "-c", CPU_FLOOD, str(self.work / "flood"), SINK,
               str(PORT), str(rate), str(secs), SRC_BASE, str(self.p["sources"]), "register"]
        a = cpuacct.snapshot()
        a["reaped"].pop(os.getpid(), None)
        with open(d / "flood.log", "w", encoding="utf-8") as log:
            # ip netns exec and taskset exec: this Popen is the generator itself, so wait4()
            # gives its exact CPU time, the veth delivery it runs in its softirq included
            p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
            ru, t_end = None, time.monotonic() + secs + 30
            while ru is None:
                pid, status, usage = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    ru, p.returncode = usage, os.waitstatus_to_exitcode(status)
                elif time.monotonic() > t_end:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
                else:
                    time.sleep(0.02)
        time.sleep(0.3)                   # the sink drains its queue inside the window
        roles = {pid: "sink" for pid, comm in cpuacct.session_pids(sink.pid).items() if comm == "sink"}
        b = cpuacct.snapshot()
        b["reaped"].pop(os.getpid(), None)
        acc = cpuacct.account(a, b, roles)
        flood_cpu = ru.ru_utime + ru.ru_stime
        acc["parts_s"]["flood (generator + its softirq)"] = flood_cpu
        acc["tasks_sum_s"] += flood_cpu
        acc["residual_s"] = acc["whole_s"] - acc["tasks_sum_s"]
        acc["residual_ratio"] = acc["residual_s"] / acc["whole_s"] if acc["whole_s"] > 0 else None
        c1 = self.counters(cfg)
        self.topo.stop(sink, timeout=5, sig=signal.SIGTERM)
        fl = json.loads((d / "flood.log").read_text().strip().splitlines()[-1])
        sk = json.loads((d / "sink.log").read_text().strip().splitlines()[-1])
        du = {k: c1["udp"].get(k, 0) - c0["udp"].get(k, 0) for k in c1["udp"]}
        links = {k: c1["links"][k] - c0["links"][k] for k in c1["links"]}
        reached = du.get("InDatagrams", 0) + du.get("RcvbufErrors", 0)
        dropped = c1["filter_dropped"] - c0["filter_dropped"]
        lost = (sum(links.values()) + du.get("NoPorts", 0) + du.get("InErrors", 0) - du.get("RcvbufErrors", 0)
                + du.get("InCsumErrors", 0))
        others = acc["parts_s"].get("other tasks", 0.0)
        rec = {"round": rnd, "flood_rc": p.returncode, "sent": fl["sent"], "send_errors": fl["errors"],
               "flood_seconds": fl["seconds"], "pps": fl["pps"], "sink_received": sk["received"],
               "reached": reached, "rcvbuf_errors": du.get("RcvbufErrors", 0), "filter_dropped": dropped,
               "lost_elsewhere": lost, "udp": du, "links": links,
               "adds_up": fl["sent"] == reached + dropped + lost,
               "cpu": {"whole_ms": acc["whole_s"] * 1000, "less_other_tasks_ms": (acc["whole_s"] - others) * 1000,
                       "bench_ms": (flood_cpu + acc["parts_s"].get("sink", 0.0)
                                    + acc["parts_s"].get("softirq threads", 0.0)) * 1000,
                       "flood_ms": flood_cpu * 1000, "sink_ms": acc["parts_s"].get("sink", 0.0) * 1000,
                       "parts_s": acc["parts_s"], "residual_ratio": acc["residual_ratio"],
                       "elapsed_s": acc["elapsed_s"], "idle_s": acc["idle_s"], "softirq_s": acc["softirq_s"]}}
        if "filter_passed" in c1:
            rec["filter_passed"] = c1["filter_passed"] - c0["filter_passed"]
        return rec

    # -- the run ----------------------------------------------------------------------
    def run(self):
        self.res["host"] = self.host_info()
        self.prepare()
        orders = R.williams_orders(len(self.configs))
        per = self.p["seconds"] + 8
        self.res["orders"] = []
        for rnd in range(self.p["rounds"]):
            order = [self.configs[i] for i in orders[rnd % len(orders)]]
            self.res["orders"].append(order)
            for cfg in order:
                if self.deadline - time.monotonic() < per:
                    self.res["skipped"].append(f"{cfg} round {rnd + 1} (time budget)")
                    continue
                waited = R.wait_quiet(limit_s=self.p["quiet_limit_s"])
                try:
                    self.setup(cfg)
                    rec = self.one(cfg, rnd + 1)
                    rec["quiet_wait_s"] = round(waited, 2)
                    self.res["configs"][cfg]["runs"].append(rec)
                    R.log(f"round {rnd + 1} {cfg}: sent {rec['sent']}, reached {rec['reached']}, dropped "
                          f"{rec['filter_dropped']}, lost {rec['lost_elsewhere']}; bench "
                          f"{rec['cpu']['bench_ms']:.0f} ms, busy "
                          f"{rec['cpu']['whole_ms']:.0f} ms (less others {rec['cpu']['less_other_tasks_ms']:.0f})")
                except Exception as e:  # noqa: BLE001 - recorded, the others go on
                    self.res["errors"].append(f"{cfg} round {rnd + 1}: {type(e).__name__}: {e}")
                    R.log(f"ERROR {cfg} round {rnd + 1}: {e}")
                finally:
                    self.teardown(cfg)
            self.save()
        self.res["summary"] = summarize(self.res)
        self.res["finished"] = R.now_utc().isoformat()
        self.res["wall_seconds"] = round(time.monotonic() - self.t0, 1)
        self.save()

    def save(self):
        (self.out / "results.json").write_text(json.dumps(self.res, indent=1, default=str) + "\n")

    def cleanup(self):
        with contextlib.suppress(Exception):
            if self.topo:
                self.topo.close()
        for ns in (self.src_ns, self.sink_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        shutil.rmtree(self.pin_root, ignore_errors=True)


def _med(vals):
    return statistics.median(vals) if vals else None


METRICS = {"whole_ms": "whole machine busy", "less_other_tasks_ms": "less other tenants' tasks",
           "bench_ms": "the benchmark's tasks (flood with its softirq, sink, ksoftirqd)"}


def summarize(res: dict) -> dict:
    """Medians per configuration, CPU per datagram, and the paired comparison with F."""
    out = {}
    by_round = {}
    for name, c in res["configs"].items():
        runs = c["runs"]
        if not runs:
            continue
        by_round[name] = {m: {r["round"]: r["cpu"][m] for r in runs} for m in METRICS}
        s = {"rounds": len(runs), **{m: _med([r["cpu"][m] for r in runs]) for m in METRICS},
             "flood_ms": _med([r["cpu"]["flood_ms"] for r in runs]),
             "sink_ms": _med([r["cpu"]["sink_ms"] for r in runs]),
             "residual_ratio": _med([r["cpu"]["residual_ratio"] for r in runs
                                     if r["cpu"]["residual_ratio"] is not None]),
             # busy share of the machine: near 1 the whole-machine figure is capped by other work
             "busy_share": _med([r["cpu"]["whole_ms"] / (r["cpu"]["elapsed_s"] * 1000 * res.get("host", {}).get(
                 "cpus", os.cpu_count())) for r in runs if r["cpu"].get("elapsed_s")]),
             "sent": _med([r["sent"] for r in runs]), "reached": _med([r["reached"] for r in runs]),
             "filter_dropped": _med([r["filter_dropped"] for r in runs]),
             "lost_elsewhere": sum(r["lost_elsewhere"] for r in runs),
             "adds_up": all(r["adds_up"] for r in runs)}
        for m in METRICS:
            s[f"ns_per_sent_{m[:-3]}"] = _med([r["cpu"][m] * 1e6 / r["sent"] for r in runs if r["sent"]])
            s[f"ns_per_dropped_{m[:-3]}"] = _med([r["cpu"][m] * 1e6 / r["filter_dropped"] for r in runs
                                                 if r["filter_dropped"]])
        out[name] = s
    n = out.get("N")
    for name, s in out.items():
        # what each dropped datagram saves against letting the flood reach the socket
        if n and name != "N" and s["filter_dropped"]:
            s["saved_ns_per_dropped_vs_N"] = {m: (n[m] - s[m]) * 1e6 / s["filter_dropped"] for m in METRICS}
        if BASELINE in by_round and name != BASELINE:
            base = out[BASELINE]
            s["vs_F"] = {m: {"ratio": s[m] / base[m] if base[m] else None,
                             "paired": stats.paired(by_round[name][m], by_round[BASELINE][m])} for m in METRICS}
            for m in METRICS:
                # the paired difference spread over the datagrams dropped: what a drop costs more than F's
                med = s["vs_F"][m]["paired"]["median"]
                s["vs_F"][m]["ns_per_dropped_more_than_F"] = (med * 1e6 / s["filter_dropped"]
                                                              if med is not None and s["filter_dropped"] else None)
    if "T" in out and "T0" in by_round:
        # the datapath change itself: this tree's programs against --base's, same rounds
        t = out["T"]
        t["vs_T0"] = {m: {"paired": stats.paired(by_round["T"][m], by_round["T0"][m])} for m in METRICS}
        for m in METRICS:
            med = t["vs_T0"][m]["paired"]["median"]
            t["vs_T0"][m]["ns_per_dropped"] = (med * 1e6 / t["filter_dropped"]
                                               if med is not None and t["filter_dropped"] else None)
    return out


def _f(v, nd=0):
    return "-" if v is None else f"{v:,.{nd}f}"


def render(res: dict) -> str:
    p = res["params"]
    s = res.get("summary", {})
    lines = [f"# Flood baselines ({res['profile']}): eTSF against nftables and iptables", "",
             f"REGISTER flood {p['rate']:,}/s for {p['seconds']} s from {p['sources']} sources into a namespace with "
             f"a UDP sink on port {p['port']} (one veth); limit {p['limit_per_source']}/s per source, burst "
             f"{p['burst']}; {p['rounds']} interleaved rounds, medians.  Host: kernel {res['host']['kernel']}, "
             f"{res['host']['cpus']} CPUs, {res['host']['nft']}, {res['host']['iptables']}.", "",
             "CPU over the flood and the sink's drain, three ways: busy = (elapsed x CPUs) - idle - iowait of the "
             "whole machine; less others = busy less the CPU of live tasks that are not the benchmark's; bench = "
             "the generator (whose softirq runs the veth delivery and the filter), the sink and ksoftirqd.  On a "
             "shared machine the first two carry other tenants' work (\"residual\": busy CPU in no live task); "
             "the third is what this flood costs.", "",
             "## Counts", "",
             "| config | what | sent | reached socket | dropped by filter | lost elsewhere | counts add up |",
             "|---|---|--:|--:|--:|--:|---|"]
    for name in CONFIGS:
        if name in s:
            x = s[name]
            lines.append(f"| {name} | {res['configs'][name]['what']} | {_f(x['sent'])} | {_f(x['reached'])} | "
                         f"{_f(x['filter_dropped'])} | {x['lost_elsewhere']} | {'yes' if x['adds_up'] else 'NO'} |")
    lines += ["", "## CPU", "",
              "| config | bench ms | busy ms | less others ms | residual | bench ns per sent | bench ns per dropped | "
              "bench ns saved per drop vs N | ratio to F (bench) | ratio to F (busy) |",
              "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for name in CONFIGS:
        if name not in s:
            continue
        x = s[name]
        v = x.get("vs_F", {})
        saved = x.get("saved_ns_per_dropped_vs_N", {}).get("bench_ms")
        rb = "1 (baseline)" if name == BASELINE else _f(v.get("bench_ms", {}).get("ratio"), 2)
        rw = "1 (baseline)" if name == BASELINE else _f(v.get("whole_ms", {}).get("ratio"), 2)
        rr = x["residual_ratio"]
        lines.append(f"| {name} | {_f(x['bench_ms'])} | {_f(x['whole_ms'])} | {_f(x['less_other_tasks_ms'])} | "
                     f"{'-' if rr is None else f'{100 * rr:.0f} %'} | {_f(x['ns_per_sent_bench'])} | "
                     f"{_f(x['ns_per_dropped_bench'])} | {_f(saved)} | {rb} | {rw} |")
    lines += ["", "## Paired differences to F", "",
              "config - F in ms, per round; median over rounds, bootstrap 95 % interval, sign test, smallest "
              "effect the rounds detect at 80 % power:", "",
              "| config | CPU | median diff ms | 95 % interval | sign +/- (p) | smallest detectable ms | "
              "ns per dropped datagram more than F |",
              "|---|---|--:|---|---|--:|--:|"]
    for name in CONFIGS:
        v = s.get(name, {}).get("vs_F")
        for m in METRICS if v else ():
            pw = v[m]["paired"]
            lines.append(f"| {name} | {m[:-3]} | {_f(pw['median'])} | [{_f(pw['ci95'][0])}, {_f(pw['ci95'][1])}] | "
                         f"{pw['sign']['pos']}/{pw['sign']['neg']} ({pw['sign']['p']:.3f}) | {_f(pw['mde'])} | "
                         f"{_f(v[m].get('ns_per_dropped_more_than_F'))} |")
    v = s.get("T", {}).get("vs_T0")
    if v:
        lines += ["", f"## T - T0: this tree's programs against `{p.get('base_ref')}` "
                  f"({(p.get('base_commit') or '')[:12]})", "",
                  "| CPU | median diff ms | 95 % interval | sign +/- (p) | smallest detectable ms | "
                  "ns per dropped datagram |", "|---|--:|---|---|--:|--:|"]
        for m in METRICS:
            pw = v[m]["paired"]
            lines.append(f"| {m[:-3]} | {_f(pw['median'])} | [{_f(pw['ci95'][0])}, {_f(pw['ci95'][1])}] | "
                         f"{pw['sign']['pos']}/{pw['sign']['neg']} ({pw['sign']['p']:.3f}) | {_f(pw['mde'])} | "
                         f"{_f(v[m].get('ns_per_dropped'))} |")
    busy = [x.get("busy_share") for x in s.values() if x.get("busy_share") is not None]
    if busy and statistics.median(busy) > 0.95:
        lines += ["", f"**The machine was saturated** (median busy share {100 * statistics.median(busy):.0f} % of "
                  "elapsed x CPUs): other work filled every idle cycle, so the whole-machine figures are capped and "
                  "do not compare configurations; read the bench figures."]
    lines += ["", f"A two-sided sign test needs {stats.sign_rounds_needed()} unanimous rounds to reach p < 0.05; "
              f"with {p['rounds']} rounds the interval and the smallest detectable effect are the figures to read.",
              "", f"Orders: {res.get('orders')}", ""]
    if res["skipped"]:
        lines += ["Skipped: " + "; ".join(res["skipped"]), ""]
    if res["errors"]:
        lines += ["Errors: " + "; ".join(res["errors"]), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="profile", action="store_const", const="quick")
    g.add_argument("--full", dest="profile", action="store_const", const="full")
    ap.add_argument("--out", metavar="DIR", help="result directory (default bench/results/<UTC>-flood)")
    ap.add_argument("--budget-min", type=float, default=None, metavar="MIN",
                    help="hard time budget (quick 1.5, full 10)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (quick 1, full 4)")
    ap.add_argument("--rate", type=int, help="flood datagrams/s (quick 5,000, full 50,000)")
    ap.add_argument("--work", metavar="DIR", help="raw per-run files (default: a temp dir, removed at the end)")
    ap.add_argument("--render", metavar="DIR", help="only re-render DIR/report.md from DIR/results.json")
    ap.add_argument("--base", metavar="REF", help="also run T0: T with the BPF programs of git ref REF")
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
    if args.rate is not None:
        prof["rate"] = args.rate
    if not 1 <= prof["rounds"] <= 20:
        ap.error("--rounds: 1..20 expected")
    if not 100 <= prof["rate"] <= 200000:
        ap.error("--rate: 100..200000 datagrams/s expected")
    args.budget_min = args.budget_min if args.budget_min is not None else prof["budget_min"]
    if not 0.5 <= args.budget_min <= 30:
        ap.error("--budget-min: 0.5..30 expected")
    if args.base:
        try:
            progcost.git("rev-parse", "--verify", args.base + "^{commit}")
        except subprocess.CalledProcessError:
            ap.error(f"--base: not a commit in this repository: {args.base}")
    why = R.preflight("floodcmp.py", ("nft", "iptables", "gcc", "taskset", "nsenter"))
    if why:
        print(why, file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else HERE / "results" / (R.now_utc().strftime("%Y%m%dT%H%M%SZ") + "-flood")
    out.mkdir(parents=True, exist_ok=True)
    fb = FloodBench(args, prof, out)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    R.log(f"eTSF flood baselines ({args.profile}, budget {args.budget_min} min) -> {out}")
    try:
        fb.run()
    finally:
        fb.cleanup()
        fb.save()
        if not args.work:
            shutil.rmtree(fb.work, ignore_errors=True)
    if "summary" in fb.res:
        (out / "report.md").write_text(render(fb.res))
    R.log(f"done in {fb.res.get('wall_seconds')} s: {out / 'report.md'}")
    if fb.res["errors"]:
        R.log(f"errors: {fb.res['errors']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
