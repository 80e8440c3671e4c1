"""eTSF SIP benchmark: the paper's Tables 2-4 against container-networking
baselines, with Kamailio (stateful proxy) and SIPp, on this machine, in one run.

    python bench/run.py --quick            # CI smoke version (<= 5 min), correctness only
    python bench/run.py --full             # the full run (bounded, <= 40 min)
    python bench/report.py DIR             # re-render report.md + plots from DIR/results.json

Configurations (same topology, same workloads; see docs/benchmark.md):
  A-ipt-nft-N / A-ipt-legacy-N   kube-proxy iptables mode with N filler services (SIP service last)
  A'-nft-vmap-N                  kube-proxy nftables mode (verdict maps)
  C-etsf-fastpath                eTSF XDP classifier + tc_fastpath steering the VIP (rules still there)
  E-etsf-classifier              eTSF XDP classifier on the standard path (rules still there)
  D-direct                       UAC -> pod address, no NAT rules at all (ceiling)
  R-raw-rtt                      one request/response round trip, sipp <-> sipp, same veths (floor)
IPVS is not available in this kernel (no ip_vs module): kube-proxy IPVS mode is not measured.

Output: bench/results/<UTC timestamp>/{results.json, report.md, *.png, work/ (raw sipp files)}.
Timing is only ever compared as ratios within one run.
"""
from __future__ import annotations

import argparse
import atexit
import collections
import contextlib
import datetime as _dt
import json
import os
import platform
import re
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

import kubeproxy  # noqa: E402
import pcaplat  # noqa: E402
import topology as T  # noqa: E402

SCHEMA_VERSION = 1
CPU_LOAD, CPU_PROXY = "0", "1"          # sipp UAC/UAS + flood on CPU 0, Kamailio on CPU 1
HZ = os.sysconf("SC_CLK_TCK")

PROFILES = {
    # quick: prove the harness (every config kind and workload once, tiny loads, one bisection
    # step: the search itself is the full profile's); never judged on speed
    "quick": dict(services=[200], legacy_services=[200], vmap_services=[200], etsf_services=200,
                  latency_seconds=1, register_seconds=1, bisect_seconds=1, bisect_steps=1,
                  flood_seconds=1, repeats=1, fixed_rate=40, bisect_start=60, max_rate=400,
                  flood_mult=15, flood_cap_pps=3000, flood_min_pps=0, flood_sources=16, hold_ms=50,
                  kamailio_children=2, flood_configs="all", settle=0.5, min_config_s=25, light_services=[]),
    # full: one command, bounded (~34 min estimated on an idle 2-core host; --budget-min 40 enforces it)
    "full": dict(services=[0, 10000], legacy_services=[10000], vmap_services=[10000],
                 etsf_services=10000, latency_seconds=10, register_seconds=6, bisect_seconds=10,
                 bisect_steps=5, flood_seconds=10, repeats=3, fixed_rate=None, bisect_start=200,
                 max_rate=6000, flood_mult=15, flood_cap_pps=60000, flood_min_pps=20000, flood_sources=128, hold_ms=100,
                 kamailio_children=4, flood_configs="key", settle=1.0, min_config_s=150,
                 light_services=[1000, 5000]),
    # paired: latency only, the key configurations interleaved round by round (see run_paired)
    "paired": dict(services=[10000], legacy_services=[], vmap_services=[], etsf_services=10000,
                   latency_seconds=10, register_seconds=6, bisect_seconds=10, bisect_steps=5, flood_seconds=10,
                   repeats=1, fixed_rate=400, bisect_start=200, max_rate=6000, flood_mult=15, flood_cap_pps=60000,
                   flood_min_pps=20000, flood_sources=16, hold_ms=100, kamailio_children=4, flood_configs="key",
                   settle=1.0, min_config_s=60, light_services=[], rounds=8,
                   paired_configs=["A", "C", "E", "D"]),
}

# --paired configurations by letter; "Cg"/"Eg" attach the XDP classifier in generic (skb) mode
# instead of native, to see what native XDP on a veth costs (the veth then receives in NAPI mode).
PAIRED_LETTERS = {"A": "baseline", "C": "C-etsf-fastpath", "E": "E-etsf-classifier", "D": "D-direct",
                  "Cg": "C-etsf-fastpath", "Eg": "E-etsf-classifier"}


def preflight(script: str, tools, needs: str = "network namespaces, BPF") -> str | None:
    """The one line a benchmark prints (and exits 2) when it cannot run here: not root, or a
    tool missing; None when it can."""
    if os.geteuid() != 0:
        return f"bench/{script}: needs root ({needs})"
    for tool in tools:
        if not shutil.which(tool):
            return f"bench/{script}: {tool} not installed"
    return None


def steer_rps(topo) -> str:
    """RPS on every veth end of the full-stack topology: the node's ends (uplink, the pod's and
    the UAS's host ends, the pod's interface) to CPU_PROXY, the peers' (UAC, UAS) to CPU_LOAD.
    A veth runs the receiver's stack in the sender's softirq; this moves each receive to its
    side's CPU.  Returns "dev->mask, ..."; raises if the kernel kept another mask."""
    node, load = 1 << int(CPU_PROXY), 1 << int(CPU_LOAD)
    ends = ((topo.node, T.UPLINK_IF, node), (topo.node, T.POD_HOST_IF, node), (topo.node, T.UAS_HOST_IF, node),
            (topo.pod, "eth0", node), (topo.uac, T.UAC_IF, load), (topo.uas, "eth0", load))
    done = []
    for ns, dev, mask in ends:
        topo.sh(ns, "sh", "-c", f"for q in /sys/class/net/{dev}/queues/rx-*; do echo {mask:x} > $q/rps_cpus; done")
        got = topo.sh(ns, "sh", "-c", f"cat /sys/class/net/{dev}/queues/rx-*/rps_cpus").stdout.split()
        if not got or any(int(x.replace(",", ""), 16) != mask for x in got):
            raise RuntimeError(f"RPS on {dev} in {ns}: wanted mask {mask:x}, have {got}")
        done.append(f"{dev}->{mask:x}")
    return ", ".join(done)


def now_utc():
    return _dt.datetime.now(_dt.timezone.utc)


def log(msg):
    print(f"[{now_utc().strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------
# system counters
# ---------------------------------------------------------------------------

CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_snap() -> dict:
    out = {"t": time.monotonic()}
    with open("/proc/stat") as f:
        for ln in f:
            if ln.startswith("cpu "):
                vals = [int(x) for x in ln.split()[1:9]]
                out.update(dict(zip(CPU_FIELDS, vals)))
            elif ln.startswith("ctxt "):
                out["ctxt"] = int(ln.split()[1])
    return out


def cpu_delta(a: dict, b: dict) -> dict:
    d = {k: (b[k] - a[k]) / HZ for k in CPU_FIELDS}          # CPU-seconds
    d["busy"] = sum(d[k] for k in CPU_FIELDS if k not in ("idle", "iowait"))
    d["ctxt"] = b["ctxt"] - a["ctxt"]
    d["elapsed"] = b["t"] - a["t"]
    return d


def proc_cpu(token: str) -> float:
    """CPU-seconds (utime+stime) of live processes whose cmdline contains token."""
    tot = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if token.encode() not in f.read():
                    continue
            with open(f"/proc/{pid}/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()
            tot += int(st[11]) + int(st[12])
        except OSError:
            continue
    return tot / HZ


def pct(vals, q):
    if not vals:
        return None
    s = sorted(vals)
    k = min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))
    return s[k]


def lat_summary(vals):
    if not vals:
        return {"n": 0, "p50": None, "p99": None, "p999": None, "mean": None}
    return {"n": len(vals), "p50": pct(vals, 0.5), "p99": pct(vals, 0.99), "p999": pct(vals, 0.999),
            "mean": statistics.fmean(vals)}


def proxy_work(iters: int) -> str:
    """Kamailio script lines for the routing work of a new call (a location or number lookup in
    a real proxy) as *iters* loop iterations of CPU: a proxy whose capacity is its own work, not
    a CPU quota that serves in bursts.  Empty for 0."""
    if iters <= 0:
        return ""
    return (f"\tif (is_method(\"INVITE\") && !has_totag()) {{\n\t\t$var(i) = 0;\n"
            f"\t\twhile ($var(i) < {iters}) {{\n\t\t\t$var(i) = $var(i) + 1;\n\t\t}}\n\t}}")


# ---------------------------------------------------------------------------
# the bench
# ---------------------------------------------------------------------------


class Bench:
    def __init__(self, args, prof: dict, out: Path):
        self.args = args
        self.p = prof
        self.out = out
        # raw per-run files (sipp stat/rtt/errors, Kamailio logs, policies, captures) live
        # outside the result directory so a committed result stays small; --keep-work keeps them
        self.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="etsf-bench-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.tag = str(os.getpid() % 100000)
        self.topo: T.Topo | None = None
        self.pin_root = f"/sys/fs/bpf/etsf-bn-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        st = self.work / "etsf-state"
        self.env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), ETSF_PIN_ROOT=self.pin_root,
                        ETSF_STATE_DIR=str(st / "state"), ETSF_RUN_DIR=str(st / "run"),
                        ETSF_BUILD_DIR=str(st / "build"))
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.budget_min * 60
        self.results: dict = {"schema_version": SCHEMA_VERSION, "profile": args.profile,
                              "started": now_utc().isoformat(), "configs": [], "skipped": [],
                              "notes": [], "profile_params": dict(prof)}
        self.fixed_rate = prof["fixed_rate"]
        if self.fixed_rate:
            self.results["fixed_rate"] = self.fixed_rate
            self.results["fixed_rate_from"] = f"the profile (--{args.profile})"
        self.flood_pps = None
        self.run_seq = 0

    # -- helpers ------------------------------------------------------------
    def left(self) -> float:
        return self.deadline - time.monotonic()

    def etsfctl(self, *args, check=True, timeout=120):
        cmd = ["nsenter", f"--net=/run/netns/{self.topo.node}", sys.executable, "-m", "etsf", *args]
        r = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=timeout, check=False)
        if check and r.returncode != 0:
            raise RuntimeError(f"etsfctl {' '.join(args)}: {r.stderr.strip()}")
        return r

    def host_info(self) -> dict:
        def out(*c):
            try:
                return subprocess.run(list(c), capture_output=True, text=True, timeout=10, check=False).stdout.strip()
            except (OSError, subprocess.SubprocessError):
                return None
        ipvs = os.path.exists("/proc/net/ip_vs") or os.path.exists("/sys/module/ip_vs")
        with contextlib.suppress(OSError):
            import gzip
            with gzip.open("/proc/config.gz", "rt") as f:
                ipvs = ipvs or any(ln.startswith(("CONFIG_IP_VS=y", "CONFIG_IP_VS=m")) for ln in f)
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        return {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
                "sipp": [ln.strip() for ln in (out("sipp", "-v") or "").splitlines() if "SIPp" in ln][:1],
                "kamailio": (out("kamailio", "-v") or "").splitlines()[:1],
                "iptables": out("iptables", "--version"), "iptables_legacy": out("iptables-legacy", "--version"),
                "nft": out("nft", "--version"), "ipvs_available": ipvs, "loadavg_at_start": load,
                "pinning": {"sipp_uac_uas_flood": f"cpu{CPU_LOAD}", "kamailio": f"cpu{CPU_PROXY}",
                            "softirq": "wherever the kernel runs it (veth: the sender's CPU)"}}

    # -- per-configuration lifecycle ----------------------------------------
    def setup_config(self, cfg: dict):
        self.topo = T.Topo(self.tag, self.work, flood_sources=self.p["flood_sources"])
        self.topo.setup()
        kind, n = cfg["kind"], cfg.get("services", 0)
        t0 = time.monotonic()
        if kind in ("iptables-nft", "iptables-legacy", "etsf-fastpath", "etsf-classifier"):
            binary = "iptables-legacy-restore" if kind == "iptables-legacy" else "iptables-nft-restore"
            rules = kubeproxy.iptables_ruleset(n, T.VIP, T.PORT, T.POD, T.PORT)
            self.topo.sh(self.topo.node, binary, inp=rules, timeout=300)
            cfg["rules"] = {"tool": binary, "lines": rules.count("\n")}
        elif kind == "nft-vmap":
            rules = kubeproxy.nft_ruleset(n, T.VIP, T.PORT, T.POD, T.PORT)
            self.topo.sh(self.topo.node, "nft", "-f", "-", inp=rules, timeout=600)
            cfg["rules"] = {"tool": "nft -f", "lines": rules.count("\n")}
        cfg["rules_load_seconds"] = round(time.monotonic() - t0, 2)
        d = self.work / cfg["name"]
        d.mkdir(exist_ok=True)
        cfg["_dir"] = d
        if kind == "raw":
            self.topo.popen(self.topo.pod, ["sipp", "-sf", str(HERE / "templates" / "options_uas.xml"), "-i", T.POD,
                                            "-p", str(T.PORT), "-t", "u1", "-nostdin", "-timeout", "3000s"],
                            d / "responder.log", limit=3000, cpu=CPU_PROXY)
        else:
            kd = d / "kamailio"
            kd.mkdir(exist_ok=True)
            cfgtext = ((HERE / "templates" / "kamailio.cfg.in").read_text()
                       .replace("@ADDR@", T.POD).replace("@PORT@", str(T.PORT)).replace("@UAS@", T.UAS)
                       .replace("@UASPORT@", str(T.PORT))
                       .replace("@CHILDREN@", str(self.p["kamailio_children"]))
                       .replace("@WORKLOOPS@", str(max(100, int(self.p.get("proxy_work_iters") or 0) + 1)))
                       .replace("@WORK@", proxy_work(int(self.p.get("proxy_work_iters") or 0))))
            (kd / "kamailio.cfg").write_text(cfgtext)
            self.kam_token = str(kd / "kamailio.cfg")
            shm = str(self.p.get("kamailio_shm_mb", 128))
            self.kam = self.topo.popen(self.topo.pod, ["kamailio", "-f", self.kam_token, "-DD", "-E",
                                                       "-m", shm, "-M", "16", "-Y", str(kd)],
                                       kd / "kamailio.log", limit=3000, cpu=CPU_PROXY)
            self.uas_token = str(d / "uas-stat.csv")
            self.topo.popen(self.topo.uas, ["sipp", "-sn", "uas", "-i", T.UAS, "-p", str(T.PORT), "-t", "u1",
                                            "-nostdin", "-timeout", "3000s", "-trace_stat", "-stf",
                                            self.uas_token, "-fd", "1", "-trace_err", "-error_file",
                                            str(d / "uas-errors.log")],
                            d / "uas.log", limit=3000, cpu=CPU_LOAD)
        if kind in ("etsf-fastpath", "etsf-classifier"):
            # C as deployed: the default hook (auto: TC ingress on this veth); E and the generic-XDP
            # variants: the XDP classifier
            hook = ([] if kind == "etsf-fastpath" and "xdp_mode" not in cfg
                    else ["--hook", "xdp", "--mode", cfg.get("xdp_mode", "native")])
            self.etsfctl("attach", "--iface", T.UPLINK_IF, *hook)
            if kind == "etsf-fastpath":
                self.etsfctl("fastpath", "attach", "--iface", T.UPLINK_IF, "--iface", T.POD_HOST_IF)
            pol = d / "policy.yml"
            pol.write_text(self.policy(kind == "etsf-fastpath"))
            self.etsfctl("policy", "apply", str(pol))
            cfg["policy"] = pol.read_text()
        time.sleep(1.0)
        if kind != "raw" and self.kam.poll() is not None:
            raise RuntimeError(f"kamailio exited: {(d / 'kamailio' / 'kamailio.log').read_text()[-2000:]}")
        # background CPU of the machine (other tenants): subtracted from CPU-per-call
        a = cpu_snap()
        time.sleep(self.p["settle"] * 2)
        cfg["background"] = cpu_delta(a, cpu_snap())

    def teardown_config(self, cfg):
        d = cfg.get("_dir")
        if d is not None and cfg["kind"] != "raw":
            with contextlib.suppress(Exception):
                uas = self.parse_sipp_stat(d / "uas-stat.csv", prefix_created="IncomingCall(C)")
                uas["error_causes"] = classify_errors(d / "uas-errors.log")
                cfg["uas"] = uas
        if cfg["kind"] in ("etsf-fastpath", "etsf-classifier") and self.topo:
            if cfg["kind"] == "etsf-fastpath":
                self.etsfctl("fastpath", "detach", "--iface", T.UPLINK_IF, "--iface", T.POD_HOST_IF, check=False)
            self.etsfctl("detach", "--iface", T.UPLINK_IF, check=False)
        if self.topo:
            self.topo.teardown()
        self.topo = None
        shutil.rmtree(self.pin_root, ignore_errors=True)

    def policy(self, fastpath: bool) -> str:
        text = ("version: 1\nsip_ports: [5060]\n"
                "trust: [198.18.40.0/30]          # the legitimate UAC (a trusted peer, e.g. a P-CSCF)\n"
                "rate_limits:                     # per source address: generous for a UE or an SBC peer\n"
                "  register: {rate: 2, burst: 5}\n  options: {rate: 1, burst: 3}\n")
        if fastpath:
            text += (f"services:\n  - name: sip-proxy\n    vip: {T.VIP}\n    port: {T.PORT}\n    protocol: udp\n"
                     f"    affinity: call-id\n    backends:\n      - {{address: {T.POD}, port: {T.PORT}, weight: 1}}\n")
        return text

    def udp_errors(self) -> dict:
        """UDP receive-buffer drops per namespace (where did datagrams die?)."""
        out = {}
        for role, ns in (("uac", self.topo.uac), ("node", self.topo.node), ("pod", self.topo.pod),
                         ("uas", self.topo.uas)):
            r = self.topo.sh(ns, "cat", "/proc/net/snmp", check=False)
            rows = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("Udp:")]
            if len(rows) >= 2 and "RcvbufErrors" in rows[0]:
                out[role] = int(rows[1][rows[0].index("RcvbufErrors")])
        return out

    # -- eTSF telemetry -------------------------------------------------------
    def etsf_snap(self, cfg):
        if cfg["kind"] not in ("etsf-fastpath", "etsf-classifier"):
            return None
        try:
            from etsf import exporter
            return exporter.snapshot(root=self.pin_root, programs=False)
        except Exception as e:  # noqa: BLE001 - telemetry is optional in the report
            return {"error": str(e)}

    @staticmethod
    def etsf_delta(a, b):
        if not a or not b or "error" in a or "error" in b:
            return None
        from etsf import exporter
        from etsf import kpi
        codes = {}
        for key, n in b["codes"].items():
            codes[key] = n - a["codes"].get(key, 0)
        inv = {c: n for (m, c), n in codes.items() if m == "INVITE" and n > 0}
        out = {"invite_codes": {str(c): n for c, n in sorted(inv.items())}, "kpi": kpi.compute(inv), "latency": {}}
        for key, h in b["hist"].items():
            h0 = a["hist"].get(key, {"count": 0, "slots": [0] * len(h["slots"])})
            slots = [x - y for x, y in zip(h["slots"], h0["slots"])]
            if sum(slots) <= 0:
                continue
            q = {f"p{k}_ms": (None if (v := exporter.quantile(p, slots)) is None else round(v * 1000, 3))
                 for k, p in (("50", 0.5), ("99", 0.99))}
            out["latency"][f"{key[0]}/{key[1]}"] = {"count": sum(slots), **q}
        drops = {}
        stats_a = {tuple(row[:4]): row[4] for row in a["stats"]}
        for row in b["stats"]:
            h, m, v, r, pk = row[:5]
            dpk = pk - stats_a.get((h, m, v, r), 0)
            if v.upper() == "DROP" and dpk > 0:
                drops[f"{m}/{r}"] = drops.get(f"{m}/{r}", 0) + dpk
        out["xdp_drops"] = drops
        return out

    # -- one sipp run ---------------------------------------------------------
    def sipp_run(self, cfg, workload: str, rate: float, seconds: float, transport="un",
                 flood_pps: float | None = None) -> dict:
        self.run_seq += 1
        d = cfg["_dir"] / f"{self.run_seq:03d}-{workload}-{int(rate)}"
        d.mkdir()
        kind = cfg["kind"]
        target = f"{T.POD}:{T.PORT}" if kind in ("direct", "raw") else f"{T.VIP}:{T.PORT}"
        scn = {"call": "uac.xml", "register": "register.xml"}[workload] if kind != "raw" else "options_uac.xml"
        calls = max(1, int(round(rate * seconds)))
        limit = int(max(50, rate * 3))
        cmd = ["sipp", "-sf", str(HERE / "templates" / scn), target, "-s", "bench", "-i", T.UAC,
               "-p", "5070", "-t", transport, "-max_socket", "15000", "-m", str(calls), "-r", str(rate), "-rp", "1000",
               "-l", str(limit), "-d", str(self.p["hold_ms"]), "-max_retrans", "3",
               "-recv_timeout", "6000", "-timeout", f"{int(seconds + 25)}s", "-nostdin",
               "-trace_stat", "-stf", str(d / "stat.csv"), "-fd", "1",
               "-trace_rtt", "-rtt_freq", "1", "-trace_err", "-error_file", str(d / "errors.log")]
        fl = None
        udp0 = self.udp_errors()
        kam_cpu0 = proc_cpu(self.kam_token) if kind != "raw" else 0.0
        uas_cpu0 = proc_cpu(self.uas_token) if kind != "raw" else 0.0
        e0 = self.etsf_snap(cfg)
        c0 = cpu_snap()
        if flood_pps:
            fl = self.topo.popen(self.topo.uac, [str(self.flood_bin), target.split(":", maxsplit=1)[0], str(T.PORT),
                                                 str(int(flood_pps)), str(seconds + 1), T.FLOOD_BASE,
                                                 str(self.p["flood_sources"])],
                                 d / "flood.json", limit=seconds + 15, cpu=CPU_LOAD)
        pcap = d / "uac.pcap"
        cap = self.topo.popen(self.topo.uac, ["tcpdump", "-i", T.UAC_IF, "-n", "-s", "700", "-U", "-w", str(pcap),
                                              "-c", str(calls * 10 + 1000), "udp and host " + T.UAC],
                              d / "tcpdump.log", limit=seconds + 60, cpu=CPU_LOAD)
        t_cap = time.monotonic() + 10
        while time.monotonic() < t_cap and "listening on" not in (d / "tcpdump.log").read_text(errors="replace"):
            time.sleep(0.05)
        p = self.topo.popen(self.topo.uac, cmd, d / "sipp.log", limit=seconds + 40, cpu=CPU_LOAD)
        rc = self.topo.stop(p, timeout=seconds + 50)
        time.sleep(0.3)
        c1 = cpu_snap()
        e1 = self.etsf_snap(cfg)
        kam_cpu = (proc_cpu(self.kam_token) - kam_cpu0) if kind != "raw" else None
        uas_cpu = (proc_cpu(self.uas_token) - uas_cpu0) if kind != "raw" else None
        # libpcap hands the kernel's capture ring to tcpdump in blocks, retired when full or after
        # tcpdump's 1 s timeout, and a stopped tcpdump drops the unretired block: the last calls'
        # final responses would look lost on the wire (wire_fail_ratio).  Wait > 1 s after sipp
        # exits and until the file stops growing (bounded; outside the CPU window above).
        t_exit = time.monotonic() - 0.3
        t_min, t_end, last, stable = t_exit + 1.1, t_exit + 3.0, -1, 0
        while time.monotonic() < t_end and (time.monotonic() < t_min or stable < 2):
            time.sleep(0.1)
            size = pcap.stat().st_size if pcap.exists() else 0
            stable = stable + 1 if size == last else 0
            last = size
        self.topo.stop(cap, timeout=10, sig=signal.SIGTERM)
        flood = None
        if fl is not None:
            self.topo.stop(fl, timeout=seconds + 20)
            try:
                flood = json.loads((d / "flood.json").read_text().strip().splitlines()[-1])
            except (ValueError, IndexError):
                flood = {"error": (d / "flood.json").read_text()[-300:]}
        rec = {"workload": workload, "transport": transport, "offered_rate": rate, "seconds": seconds,
               "calls_planned": calls, "sipp_rc": rc, "dir": str(d.relative_to(self.work))}
        rec.update(self.parse_sipp(d))
        udp1 = self.udp_errors()
        rec["udp_rcvbuf_errors"] = {k: udp1.get(k, 0) - udp0.get(k, 0) for k in udp1}
        tx = pcaplat.transactions(pcap, T.UAC)
        if not self.args.keep_pcaps:
            pcap.unlink(missing_ok=True)
        method = {"call": "INVITE", "register": "REGISTER"}[workload] if kind != "raw" else "OPTIONS"
        lat = {}
        if workload == "call" and kind != "raw":
            lat["invite_180_ms"] = lat_summary(tx.get("INVITE", {}).get("first_180_183", []))
            lat["invite_200_ms"] = lat_summary(tx.get("INVITE", {}).get("final_2xx", []))
            lat["bye_200_ms"] = lat_summary(tx.get("BYE", {}).get("final_2xx", []))
        else:
            lat["first_response_ms"] = lat_summary(tx.get(method, {}).get("final_2xx", []))
        lat["no_final_response"] = sum(len(v.get("no_final", [])) for v in tx.values())
        # provisional responses that reached the UAC after their transaction's final response
        # (re-ordered by the proxy's parallel workers: harmless for an RFC 3261 UA, and for
        # templates/uac.xml, which matches responses to transactions)
        rec["late_provisional_responses"] = sum(len(v.get("late_1xx", [])) for v in tx.values())
        # requests seen leaving the UAC without any final response seen coming back: failures
        # on the wire (sipp may count more when its own CPU or sockets are the bottleneck)
        rec["wire_fail_ratio"] = (lat["no_final_response"] / rec["created"]) if rec["created"] else 1.0
        rec["sipp_rtd_ms"] = rec.pop("latency")
        rec["latency"] = lat
        cd = cpu_delta(c0, c1)
        bg = cfg["background"]
        net = {k: max(0.0, cd[k] - bg[k] / bg["elapsed"] * cd["elapsed"])
               for k in ("user", "system", "softirq", "irq", "busy")}
        net_ctxt = max(0.0, cd["ctxt"] - bg["ctxt"] / bg["elapsed"] * cd["elapsed"])
        ok = max(1, rec["successful"])
        txn = ok * (2 if workload == "call" and kind != "raw" else 1)
        rec["cpu"] = {"raw": {k: round(cd[k], 4) for k in ("user", "system", "softirq", "irq", "busy", "elapsed")},
                      "net_of_background": {k: round(v, 4) for k, v in net.items()},
                      "ms_per_call": {k: round(v * 1000 / ok, 4) for k, v in net.items()},
                      "raw_ms_per_call": {k: round(cd[k] * 1000 / ok, 4)
                                          for k in ("user", "system", "softirq", "irq", "busy")},
                      "proxy_ms_per_call": None if kam_cpu is None else round(kam_cpu * 1000 / ok, 4),
                      "uas_ms_per_call": None if uas_cpu is None else round(uas_cpu * 1000 / ok, 4)}
        rec["ctxt"] = {"raw": cd["ctxt"], "net_of_background": round(net_ctxt),
                       "per_transaction": round(net_ctxt / txn, 3), "raw_per_transaction": round(cd["ctxt"] / txn, 3)}
        rec["transactions"] = txn
        if flood is not None:
            rec["flood"] = flood
        et = self.etsf_delta(e0, e1)
        if et is not None:
            rec["etsf"] = et
        return rec

    @staticmethod
    def parse_sipp_stat(st: Path, prefix_created="TotalCallCreated") -> dict:
        """Last row of a sipp -trace_stat file: counts, and the failed calls by sipp's own cause."""
        out = {"created": 0, "successful": 0, "failed": 0, "retransmissions": 0, "elapsed_s": None,
               "fail_causes": {}}
        if not st.exists():
            return out
        lines = [ln for ln in st.read_text(errors="replace").splitlines() if ln.strip()]
        if len(lines) < 2:
            return out
        head, last = lines[0].rstrip(";").split(";"), lines[-1].rstrip(";").split(";")
        row = dict(zip(head, last))

        def gi(k):
            try:
                return int(row.get(k, 0))
            except ValueError:
                return 0
        out.update(created=gi(prefix_created), successful=gi("SuccessfulCall(C)"),
                   failed=gi("FailedCall(C)"), retransmissions=gi("Retransmissions(C)"))
        # FailedTimeoutOnRecv(C), FailedUnexpectedMessage(C), FailedMaxUDPRetrans(C), ...
        out["fail_causes"] = {k[len("Failed"):-len("(C)")]: gi(k) for k in head
                              if k.startswith("Failed") and k.endswith("(C)") and k != "FailedCall(C)" and gi(k)}
        el = row.get("ElapsedTime(C)", "")
        with contextlib.suppress(ValueError, IndexError):
            h, m, s = el.split(":")[:3]
            out["elapsed_s"] = int(h) * 3600 + int(m) * 60 + float(s)
        return out

    @staticmethod
    def parse_sipp(d: Path) -> dict:
        out = Bench.parse_sipp_stat(d / "stat.csv")
        out["error_causes"] = classify_errors(d / "errors.log")
        rtd: dict[str, list[float]] = {}
        for f in d.glob("*_rtt.csv"):
            for ln in f.read_text(errors="replace").splitlines()[1:]:
                parts = ln.strip().rstrip(";").split(";")
                if len(parts) >= 3:
                    with contextlib.suppress(ValueError):
                        rtd.setdefault(parts[2].strip(), []).append(float(parts[1]))
        names = {"1": "rtd1_ms", "2": "rtd2_ms"}
        out["latency"] = {names.get(k, f"rtd{k}"): lat_summary(v) for k, v in sorted(rtd.items())}
        planned_fail = max(0, out["created"] - out["successful"])
        out["failed_or_unfinished"] = planned_fail
        out["fail_ratio"] = (planned_fail / out["created"]) if out["created"] else 1.0
        return out

    # -- workloads --------------------------------------------------------------
    def bisect(self, cfg, transport="un") -> dict:
        """Max sustainable rate: doubling from bisect_start, then bisection; bounded in steps.
        Pass = >= 97 % of the planned calls created, (failed + unfinished) < 0.1 %."""
        workload = "call"
        steps, secs = self.p["bisect_steps"], self.p["bisect_seconds"]
        hi_cap = self.p["max_rate"]
        good, bad, zero = None, None, None
        tried = []
        r = int(self.p["bisect_start"])
        for _step in range(steps):
            if self.left() < secs + 60:
                cfg.setdefault("truncated", []).append("bisection (time budget)")
                break
            rec = self.sipp_run(cfg, workload, r, secs, transport)
            rec["pass"] = rec["created"] >= 0.97 * rec["calls_planned"] and rec["fail_ratio"] < 0.001
            rec["zero_failure"] = rec["pass"] and rec["failed_or_unfinished"] == 0
            tried.append(rec)
            log(f"    bisect {cfg['name']} {transport} {r:.0f}/s: created {rec['created']} ok {rec['successful']} "
                f"fail {rec['failed_or_unfinished']} -> {'pass' if rec['pass'] else 'FAIL'}{why(rec)}")
            if rec["pass"]:
                good = max(good or 0, r)
                if rec["zero_failure"]:
                    zero = max(zero or 0, r)
            else:
                bad = r if bad is None else min(bad, r)
            if bad is None:
                if r >= hi_cap:
                    break
                r = int(min(hi_cap, r * 2))
            else:
                lo = good or 0
                if bad - lo <= max(5.0, 0.05 * bad):
                    break
                r = int(round((lo + bad) / 2))
            time.sleep(self.p["settle"])
        wire = [st["offered_rate"] for st in tried
                if st["created"] >= 0.97 * st["calls_planned"] and st.get("wire_fail_ratio", 1.0) < 0.001]
        return {"transport": transport, "max_rate": good, "max_rate_zero_failure": zero,
                "max_rate_wire_tried": max(wire) if wire else None,
                "first_failing_rate": bad, "capped_at_max": bad is None and good is not None and good >= hi_cap,
                "steps": tried}

    def run_config(self, cfg: dict):
        log(f"== {cfg['name']} ({cfg['kind']}, services={cfg.get('services', 0)})")
        try:
            self.setup_config(cfg)
            wl = cfg["workloads"] = {}
            reps = self.p["repeats"]
            if cfg.get("bisect"):
                wl["max_rate_un"] = self.bisect(cfg, "un")
                mr = wl["max_rate_un"]["max_rate"]
                log(f"   max sustainable rate ({cfg['name']}, -t un): {mr}")
                if self.fixed_rate is None:
                    self.fixed_rate = max(10, int((mr or self.p["bisect_start"]) * 0.5))
                    self.results["fixed_rate"] = self.fixed_rate
                    self.results["fixed_rate_from"] = cfg["name"]
                    log(f"   fixed 50% load rate for every configuration: {self.fixed_rate}/s")
                if self.flood_pps is None:
                    base = mr or self.p["bisect_start"]
                    self.flood_pps = int(min(self.p["flood_cap_pps"],
                                             max(self.p["flood_min_pps"], base * self.p["flood_mult"])))
                    self.results["flood_pps"] = self.flood_pps
            rate = self.fixed_rate
            transports = ["un", "u1"] if cfg["kind"] != "raw" else ["un"]
            for tr in transports:
                runs = []
                for i in range(reps):
                    if self.left() < self.p["latency_seconds"] + 60:
                        cfg.setdefault("truncated", []).append(f"latency {tr} repeat {i} (time budget)")
                        break
                    rec = self.sipp_run(cfg, "call", rate, self.p["latency_seconds"], tr)
                    runs.append(rec)
                    log(f"    latency {tr} #{i}: ok {rec['successful']}/{rec['created']} "
                        f"INVITE->200 p50 {fmt(rec['latency'].get('invite_200_ms', {}).get('p50'))} ms, "
                        f"cpu {rec['cpu']['ms_per_call']['busy']:.3f} ms/call{why(rec)}")
                    time.sleep(self.p["settle"])
                wl[f"latency_{tr}"] = {"rate": rate, "runs": runs}
            if cfg["kind"] != "raw" and not cfg.get("light"):
                runs = []
                for i in range(reps):
                    if self.left() < self.p["register_seconds"] + 60:
                        cfg.setdefault("truncated", []).append("register (time budget)")
                        break
                    rec = self.sipp_run(cfg, "register", rate * 2, self.p["register_seconds"], "un")
                    runs.append(rec)
                    log(f"    register #{i}: ok {rec['successful']}/{rec['created']}{why(rec)}")
                    time.sleep(self.p["settle"])
                wl["register"] = {"rate": rate * 2, "runs": runs}
            if cfg.get("flood"):
                runs = []
                for i in range(reps):
                    if self.left() < self.p["flood_seconds"] + 60:
                        cfg.setdefault("truncated", []).append("flood (time budget)")
                        break
                    rec = self.sipp_run(cfg, "call", rate, self.p["flood_seconds"], "un", flood_pps=self.flood_pps)
                    runs.append(rec)
                    log(f"    flood #{i} ({self.flood_pps} pps offered, sent "
                        f"{(rec.get('flood') or {}).get('pps')}): legit ok {rec['successful']}/{rec['created']}"
                        f"{why(rec)}")
                    time.sleep(self.p["settle"])
                wl["flood"] = {"rate": rate, "flood_pps": self.flood_pps, "runs": runs}
        finally:
            self.teardown_config(cfg)
        cfg.pop("_dir", None)

    def run_paired(self):
        """Paired design for latency: each round runs every key configuration (A with the most
        services, C, E, D) once, back to back, each on a freshly built topology, in the orders of
        a Williams design (every configuration follows every other one equally often, so the
        after-effects of the previous one, e.g. the kernel tearing down a namespace with 10,000
        NAT rules, fall on all alike), and starts only once the machine is quiet again.  Slow
        drifts of the host then hit every configuration alike, and the report compares
        configurations WITHIN a round (per-round differences, median and range) instead of
        blocks run minutes apart."""
        plan = self.plan()
        cfgs = []
        for letter in self.p["paired_configs"]:     # validated in main()
            want = PAIRED_LETTERS[letter]
            base = next(dict(c) for c in plan if (c.get("baseline") if want == "baseline" else c["name"] == want))
            if letter.endswith("g"):
                base.update(name=base["name"] + "-xdpgeneric", xdp_mode="generic")
            cfgs.append(base)
        rate = self.fixed_rate
        self.results.update(mode="paired", rounds=self.p["rounds"], fixed_rate=rate,
                            fixed_rate_from="the profile (50 % of the full run's max sustainable rate)")
        for c in cfgs:
            c["workloads"] = {f"latency_{tr}": {"rate": rate, "runs": []} for tr in ("un", "u1")}
        per_run = 2 * self.p["latency_seconds"] + 45
        orders = williams_orders(len(cfgs))
        self.results["orders"] = [[cfgs[i]["name"] for i in orders[r % len(orders)]] for r in range(self.p["rounds"])]
        for rnd in range(self.p["rounds"]):
            for cfg in (cfgs[i] for i in orders[rnd % len(orders)]):
                waited = wait_quiet(limit_s=30.0)
                if self.left() < per_run:
                    cfg.setdefault("truncated", []).append(f"round {rnd} (time budget)")
                    continue
                log(f"== round {rnd + 1}/{self.p['rounds']}: {cfg['name']} (machine quiet after {waited:.1f} s)")
                try:
                    self.setup_config(cfg)
                    for tr in ("un", "u1"):
                        rec = self.sipp_run(cfg, "call", rate, self.p["latency_seconds"], tr)
                        rec["round"] = rnd
                        rec["quiet_wait_s"] = round(waited, 1)
                        cfg["workloads"][f"latency_{tr}"]["runs"].append(rec)
                        log(f"    latency {tr}: ok {rec['successful']}/{rec['created']} INVITE->180 p50 "
                            f"{fmt(rec['latency'].get('invite_180_ms', {}).get('p50'))} ms, INVITE->200 p50 "
                            f"{fmt(rec['latency'].get('invite_200_ms', {}).get('p50'))} ms{why(rec)}")
                        time.sleep(self.p["settle"])
                except Exception as e:  # noqa: BLE001 - record and go on with the others
                    cfg.setdefault("round_errors", []).append(f"round {rnd}: {type(e).__name__}: {e}")
                    log(f"   ERROR in {cfg['name']} round {rnd}: {e}")
                finally:
                    self.teardown_config(cfg)
            self.results["configs"] = cfgs
            self.save()
        for c in cfgs:
            c.pop("_dir", None)
            if len(c.get("round_errors", [])) == self.p["rounds"]:
                c["error"] = c["round_errors"][-1]
        self.results["configs"] = cfgs

    # -- plan -------------------------------------------------------------------
    def plan(self) -> list[dict]:
        """Key configurations first (so a budget cut only loses the N-sweep points);
        'light' ones (the N sweep, iptables-legacy) run bisection + latency only."""
        p = self.p
        nmax = max(p["services"])
        allf = p["flood_configs"] == "all"
        cfgs = [{"name": f"A-ipt-nft-{nmax}", "kind": "iptables-nft", "services": nmax, "bisect": True,
                 "flood": True, "baseline": True},
                {"name": "C-etsf-fastpath", "kind": "etsf-fastpath", "services": p["etsf_services"], "bisect": True,
                 "flood": True},
                {"name": "E-etsf-classifier", "kind": "etsf-classifier", "services": p["etsf_services"],
                 "bisect": True, "flood": True},
                {"name": "D-direct", "kind": "direct", "services": 0, "bisect": True, "flood": True}]
        for n in p["vmap_services"]:
            cfgs.append({"name": f"A'-nft-vmap-{n}", "kind": "nft-vmap", "services": n, "bisect": True,
                         "flood": True})
        for n in sorted(set(p["services"]) - {nmax}):
            cfgs.append({"name": f"A-ipt-nft-{n}", "kind": "iptables-nft", "services": n, "bisect": True,
                         "flood": allf})
        cfgs.append({"name": "R-raw-rtt", "kind": "raw", "services": 0, "bisect": True, "flood": False})
        for n in sorted(p["light_services"]):
            cfgs.append({"name": f"A-ipt-nft-{n}", "kind": "iptables-nft", "services": n, "bisect": True,
                         "flood": False, "light": True})
        for n in sorted(p["legacy_services"], reverse=True):
            cfgs.append({"name": f"A-ipt-legacy-{n}", "kind": "iptables-legacy", "services": n, "bisect": True,
                         "flood": allf, "light": not allf})
        if self.args.only:
            keep = set(self.args.only.split(","))
            cfgs = [c for c in cfgs if c["name"] in keep or c["kind"] in keep or c.get("baseline")]
        return cfgs

    def prepare(self):
        self.flood_bin = self.work / "flood"
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(self.flood_bin), str(HERE / "flood.c")], check=True,
                       capture_output=True, text=True, timeout=120)
        r = subprocess.run([sys.executable, "-m", "etsf", "build", "--out", self.env["ETSF_BUILD_DIR"], "--json"],
                           env=self.env, capture_output=True, text=True, timeout=600, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"etsfctl build: {r.stderr.strip()}")
        from etsf import bpf
        bpf.ensure_bpffs()

    def run(self):
        self.results["host"] = self.host_info()
        if not self.results["host"]["ipvs_available"]:
            self.results["notes"].append("IPVS (ip_vs) is not available in this kernel: kube-proxy IPVS mode "
                                         "(paper Table 3, middle column) is not measured.")
        self.prepare()
        if self.args.profile == "paired":
            self.run_paired()
            self.results["finished"] = now_utc().isoformat()
            self.results["wall_seconds"] = round(time.monotonic() - self.t0, 1)
            self.save()
            return
        for cfg in self.plan():
            if self.left() < self.p["min_config_s"]:
                self.results["skipped"].append({"name": cfg["name"], "why": "time budget"})
                log(f"   skipping {cfg['name']}: time budget")
                continue
            t0 = time.monotonic()
            try:
                self.run_config(cfg)
            except Exception as e:  # noqa: BLE001 - record and go on with the others
                cfg["error"] = f"{type(e).__name__}: {e}"
                cfg.pop("_dir", None)
                log(f"   ERROR in {cfg['name']}: {cfg['error']}")
            cfg["wall_seconds"] = round(time.monotonic() - t0, 1)
            self.results["configs"].append(cfg)
            self.save()
        self.results["finished"] = now_utc().isoformat()
        self.results["wall_seconds"] = round(time.monotonic() - self.t0, 1)
        self.save()

    def save(self):
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1, default=str) + "\n")

    def cleanup(self):
        with contextlib.suppress(Exception):
            if self.topo:
                self.topo.teardown()
        for ns in ("h", "c", "p", "u"):
            subprocess.run(["ip", "netns", "del", f"{T.NS_PREFIX}{ns}{self.tag}"], capture_output=True, check=False)
        shutil.rmtree(self.pin_root, ignore_errors=True)


def williams_orders(n: int) -> list[list[int]]:
    """Orders of a Williams design for n treatments: each is in every position once per n rows
    (2n when n is odd), and each follows every other one equally often (first-order carry-over
    balanced).  Row 0 is 0, 1, n-1, 2, n-2, ...; row r adds r mod n."""
    first, lo, hi = [0], 1, n - 1
    while len(first) < n:
        first.append(lo)
        lo += 1
        if len(first) < n:
            first.append(hi)
            hi -= 1
    rows = [[(x + r) % n for x in first] for r in range(n)]
    return rows if n % 2 == 0 else rows + [list(reversed(row)) for row in rows]


def wait_quiet(limit_s: float = 30.0, busy_below: float = 0.10, window_s: float = 0.5) -> float:
    """Wait (bounded) until the whole machine is below `busy_below` of its CPU time busy for two
    windows in a row, e.g. until the kernel has finished tearing down the previous namespaces;
    return the seconds waited."""
    t0 = time.monotonic()
    calm = 0
    while time.monotonic() - t0 < limit_s and calm < 2:
        a = cpu_snap()
        time.sleep(window_s)
        d = cpu_delta(a, cpu_snap())
        total = d["busy"] + d["idle"] + d["iowait"]
        calm = calm + 1 if total > 0 and d["busy"] / total < busy_below else 0
    return time.monotonic() - t0


def fmt(v):
    return "-" if v is None else f"{v:.3f}"


def why(rec) -> str:
    """' (failures: ...; late 1xx: n)' for a log line, or '' for a clean run."""
    causes = {k: v for k, v in (rec.get("error_causes") or {}).items() if k != "dead_call_msg"}
    parts = []
    if rec.get("failed_or_unfinished"):
        parts.append("failures: " + (", ".join(f"{k} x{v}" for k, v in sorted(causes.items())) or "unfinished"))
    if rec.get("late_provisional_responses"):
        parts.append(f"late 1xx absorbed: {rec['late_provisional_responses']}")
    return f" ({'; '.join(parts)})" if parts else ""


# sipp writes each event as "<date>\t<time>\t<epoch>: <text>", not always on a new line
_ERR_SPLIT = re.compile(r"\d{4}-\d\d-\d\d\t[\d:.]+\t[\d.]+: ")


def classify_errors(path: Path) -> dict:
    """sipp -trace_err events by kind, e.g. {"recv_timeout@3": 2, "unexpected 408 INVITE@2": 5,
    "max_udp_retrans": 1}.  '@N' is the scenario message index the call was at (uac.xml: 1-3 the
    optional provisionals, 4 the INVITE's 200, 8 the BYE's 200).  Messages that reach an already
    aborted call ("dead_call_msg") are counted too but are not failures."""
    c: collections.Counter = collections.Counter()
    if not path.exists():
        return {}
    for ev in _ERR_SPLIT.split(path.read_text(errors="replace"))[1:]:
        if m := re.search(r"receive timeout on message \S*?:(\d+)", ev):
            c[f"recv_timeout@{m.group(1)}"] += 1
        elif m := re.search(r"unexpected message .*?\(index (\d+)\), received '(\S+)(?: (\d+))?", ev, re.S):
            what = m.group(3) if m.group(2).startswith("SIP/") else m.group(2)
            cseq = re.search(r"^CSeq:\s*\d+\s+(\w+)", ev, re.M | re.I)
            c[f"unexpected {what}{' ' + cseq.group(1) if cseq else ''}@{m.group(1)}"] += 1
        elif "retransmission timeout" in ev or "max UDP retrans" in ev:
            c["max_udp_retrans"] += 1
        elif ev.startswith("Dead call"):
            c["dead_call_msg"] += 1
        else:
            first = re.sub(r"\s+for call:.*$", "", ev.strip().splitlines()[0]) if ev.strip() else ""
            c[f"other: {first[:60]}" if first else "other"] += 1
    return dict(c)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="profile", action="store_const", const="quick")
    g.add_argument("--full", dest="profile", action="store_const", const="full")
    g.add_argument("--paired", dest="profile", action="store_const", const="paired",
                   help="latency only: A, C, E, D interleaved round by round (paired comparison)")
    ap.add_argument("--out", metavar="DIR", help="result directory (default bench/results/<UTC timestamp>)")
    ap.add_argument("--budget-min", type=float, default=None, metavar="MIN",
                    help="hard time budget; work past it is skipped and recorded (quick 5, full 40)")
    ap.add_argument("--only", metavar="NAMES", help="comma list of config names/kinds (the baseline always runs)")
    ap.add_argument("--repeats", type=int, help="override the profile's repeats")
    ap.add_argument("--rounds", type=int, help="--paired: rounds (1..12, default 8: two cycles of the 4-order Williams design)")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--keep-pcaps", action="store_true", help="keep each run's UAC capture (large)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a profile entry (JSON value), e.g. --set max_rate=800 --set 'services=[0,500]'")
    ap.add_argument("--work", metavar="DIR", help="raw per-run files (default: a temp dir, removed at the end)")
    ap.add_argument("--keep-work", action="store_true", help="keep the work directory (printed at the end)")
    args = ap.parse_args(argv)
    args.profile = args.profile or "quick"
    prof = dict(PROFILES[args.profile])
    for kv in args.set:
        k, v = kv.split("=", 1) if "=" in kv else (kv, "")
        if k not in prof:
            ap.error(f"--set: unknown profile key {k!r} (known: {', '.join(sorted(prof))})")
        try:
            prof[k] = json.loads(v)
        except ValueError:
            prof[k] = v
    for k in ("latency_seconds", "register_seconds", "bisect_seconds", "flood_seconds"):
        if not 0 < float(prof[k]) <= 60:
            ap.error(f"{k} must be in (0, 60] seconds")
    if not 1 <= int(prof["bisect_steps"]) <= 12:
        ap.error("bisect_steps must be in 1..12")
    if args.profile == "paired":
        pc = prof["paired_configs"]
        if (not isinstance(pc, list) or len(pc) < 2 or len(set(map(str, pc))) != len(pc)
                or any(not isinstance(x, str) or x not in PAIRED_LETTERS for x in pc)):
            ap.error(f"paired_configs: a list of 2 or more distinct letters of {', '.join(PAIRED_LETTERS)} (got {pc!r})")
    if args.repeats:
        prof["repeats"] = max(1, min(10, args.repeats))
    if args.rounds is not None:
        if args.profile != "paired" or not 1 <= args.rounds <= 12:
            ap.error("--rounds: only with --paired, 1..12")
        prof["rounds"] = args.rounds
    if args.budget_min is None:
        args.budget_min = {"quick": 5.0, "paired": 30.0}.get(args.profile, 40.0)
    why = preflight("run.py", ("sipp", "kamailio", "iptables-nft-restore", "nft", "gcc", "taskset", "nsenter", "tcpdump"))
    if why:
        print(why, file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else HERE / "results" / now_utc().strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    if not shutil.which("iptables-legacy-restore"):
        prof["legacy_services"] = []
    b = Bench(args, prof, out)
    atexit.register(b.cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log(f"eTSF bench ({args.profile}) -> {out}")
    try:
        b.run()
    finally:
        b.cleanup()
        b.results["work_dir"] = str(b.work) if (args.keep_work or args.work) else None
        b.save()
        if not (args.keep_work or args.work):
            shutil.rmtree(b.work, ignore_errors=True)
    import report
    report.render(out, plots=not args.no_plots)
    log(f"done in {b.results.get('wall_seconds')} s: {out / 'report.md'}")
    errs = [c["name"] for c in b.results["configs"] if c.get("error")]
    if errs:
        log(f"configurations with errors: {errs}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
