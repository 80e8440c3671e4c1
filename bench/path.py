"""eTSF path benchmark (`make bench-path`): what the node's SIP path itself costs, per packet
and per call, with a light responder in the pod instead of Kamailio so the application no
longer hides the path.

    python bench/path.py --quick           # CI form (<= 4.75 min), correctness + consistency
    python bench/path.py --full            # bounded (--budget-min, default 40), quiet host
    python bench/path_report.py DIR        # re-render report.md + plots from DIR/results.json

Configurations (bench/topology.py's topology; docs/benchmark.md):
  D            UAC -> pod address, no NAT rules (the node routes and bridges only)
  A-<fam>-N    kube-proxy emulation with N filler services (fam: ipt-nft, ipt-legacy, nft-vmap = A')
  C-N          eTSF as deployed: `etsfctl attach` with the default hook (auto: TC on a veth), one TC
               ingress program classifying and steering the VIP (N rules still loaded)
  C-xdp-N      the deployment before the TC hook: XDP classifier + TC fast path (--hook xdp, native)
  C0-N         the TC fast path alone (no classifier)
  E0           the XDP classifier alone on the direct path (D + classifier, --hook xdp, native)
  E0-tc        the classifier alone on the direct path at TC ingress (--hook tc)
  E0-tc-nt     E0-tc with transaction telemetry off in the policy (`telemetry.transactions: false`):
               E0-tc − E0-tc-nt is what the in-kernel latency measurement costs on the path
  E-N          the XDP classifier on A-ipt-nft-N
  R            raw floor: the UAC's veth straight into the pod, no node at all

Key configurations (D, A-ipt-nft-K, C-K, C-xdp-K, C0-K, E0, E0-tc, E0-tc-nt, E-K, R with K = 10,000
in --full; --quick swaps C0, E0-tc-nt and E for C-xdp and E0-tc) run
in paired rounds in Williams order with a quiet-machine start (run.py's --paired machinery);
the service sweep (A' included) runs once per point.  Then a separate pass with
kernel.bpf_stats_enabled=1 (restored) for eTSF's in-traffic ns per packet, next to the
PROG_TEST_RUN microbenchmark (bench/datapath.py), then the keep-alive mix (OPTIONS from
thousands of sources plus calls; the pod's responder answers them vs eTSF in the kernel; paired
rounds), the service sweep, then the overload sweep (bench/overload.py, when present) with the
budget that is left.

Output: bench/results/<UTC>-path/{results.json, report.md, *.png}.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import cpuacct  # noqa: E402
import etsfread  # noqa: E402
import keepalive as KA  # noqa: E402
import kubeproxy  # noqa: E402
import run as R  # noqa: E402
import stats  # noqa: E402
import topology as T  # noqa: E402
import transit  # noqa: E402

SCHEMA = "etsf-bench-path/1"
CPU_UAC, CPU_POD = "0", "1"          # sipp (and the node's softirq it drives) on 0, responder on 1
SOURCES = 64                          # -t un calls leave from 64 addresses (new conntrack entry each)
SWEEP_FAMILIES = ("ipt-nft", "ipt-legacy", "nft-vmap", "C")

PROFILES = {
    "quick": dict(rate=40, seconds=2, u1_seconds=1, rounds=1, key_services=200, sweep=[0],
                  key_kinds=["direct", "ipt-nft", "C", "C-xdp", "E0", "E0-tc", "raw"],
                  stats_kinds=["C", "C-xdp", "E0", "E0-tc"],
                  sweep_families=["ipt-legacy", "nft-vmap"], vmap_max_services=200, quiet_limit_s=3.0, stats_seconds=1,
                  datapath_repeat=100000, overload_reserve_min=1.0, ka_rounds=1, ka_phase_s=2.0, ka_per_call=20,
                  ka_sources=1024, budget_min=4.75, overload=True),
    # full: ~25 min for the path passes on a quiet 2-core host, ~31 min on a busy one (key: 10
    # configurations x 10 rounds x ~11 s; bpf_stats + PROG_TEST_RUN ~1.5 min; keep-alive mix ~3.3 min;
    # sweep: 20 single runs, ~4.5 min with the rule loads), the rest of the 40-minute budget for the
    # overload sweep
    "full": dict(rate=200, seconds=3, u1_seconds=2, rounds=10, key_services=10000,
                 key_kinds=["direct", "ipt-nft", "C", "C-xdp", "C0", "E0", "E0-tc", "E0-tc-nt", "E", "raw"],
                 stats_kinds=["C", "C-xdp", "C0", "E0", "E0-tc", "E0-tc-nt", "E"],
                 sweep=[0, 1000, 5000, 20000, 30000], sweep_families=list(SWEEP_FAMILIES), vmap_max_services=10000,
                 quiet_limit_s=20.0, stats_seconds=4, datapath_repeat=200000, overload_reserve_min=14.0,
                 ka_rounds=7, ka_phase_s=4.0, ka_per_call=20, ka_sources=4096, budget_min=40.0, overload=True),
}

# what each configuration is: kind of rules, eTSF parts (classifier: the `etsfctl attach` arguments
# that choose its hook, [] = the default, auto), target
XDP_NATIVE = ["--hook", "xdp", "--mode", "native"]
KINDS = {
    "direct": dict(rules=None, classifier=None, fastpath=False, vip=False),
    "ipt-nft": dict(rules="iptables-nft-restore", classifier=None, fastpath=False, vip=True),
    "ipt-legacy": dict(rules="iptables-legacy-restore", classifier=None, fastpath=False, vip=True),
    "nft-vmap": dict(rules="nft", classifier=None, fastpath=False, vip=True),
    "C": dict(rules="iptables-nft-restore", classifier=[], fastpath=True, vip=True),
    "C-xdp": dict(rules="iptables-nft-restore", classifier=XDP_NATIVE, fastpath=True, vip=True),
    "C0": dict(rules="iptables-nft-restore", classifier=None, fastpath=True, vip=True),
    "E0": dict(rules=None, classifier=XDP_NATIVE, fastpath=False, vip=False),
    "E0-tc": dict(rules=None, classifier=["--hook", "tc"], fastpath=False, vip=False),
    "E0-tc-nt": dict(rules=None, classifier=["--hook", "tc"], fastpath=False, vip=False, telemetry=False),
    "E": dict(rules="iptables-nft-restore", classifier=XDP_NATIVE, fastpath=False, vip=True),
    "raw": dict(rules=None, classifier=None, fastpath=False, vip=False),
}


def node_policy(text: str, spec: dict) -> str:
    """The node's policy for a configuration: the bench's policy text, and transaction telemetry
    turned off where the kind says so (E0-tc-nt)."""
    return text + ("" if spec.get("telemetry", True) else "telemetry:\n  transactions: false\n")


def cfg_name(kind: str, n: int) -> str:
    return {"direct": "D", "raw": "R", "E0": "E0", "E0-tc": "E0-tc", "E0-tc-nt": "E0-tc-nt", "C": f"C-{n}", "C-xdp": f"C-xdp-{n}",
            "C0": f"C0-{n}", "E": f"E-{n}", "ipt-nft": f"A-ipt-nft-{n}", "ipt-legacy": f"A-ipt-legacy-{n}",
            "nft-vmap": f"A'-nft-vmap-{n}"}[kind]


def kind_services(kind: str, k: int) -> int:
    """The key rounds' service count of a kind: K where rules are loaded, 0 on the direct path."""
    return k if KINDS[kind]["rules"] else 0


def key_configs(k: int, kinds=("direct", "ipt-nft", "C", "C-xdp", "C0", "E0", "E0-tc", "E", "raw")) -> list[dict]:
    return [{"name": cfg_name(kind, kind_services(kind, k)), "kind": kind, "services": kind_services(kind, k)}
            for kind in kinds]


def source_snat() -> str:
    """nft input for the UAC namespace: each new flow from the UAC leaves from the next of the
    SOURCES addresses, so -t un calls reach the node from 64 sources (NAT here, before the
    UAC's TC egress stamp: outside the measured transit)."""
    base = int(T.FLOOD_BASE.rsplit(".", 1)[1])
    elems = ", ".join(f"{i} : 198.18.40.{base + i}" for i in range(SOURCES))
    return ("table ip etsf_bench_src {\n  chain post {\n    type nat hook postrouting priority srcnat; "
            f"policy accept;\n    ip saddr {T.UAC} snat ip to numgen inc mod {SOURCES} map {{ {elems} }}\n"
            "  }\n}\n")


# -- the keep-alive pass (pure parts: tests/unit/test_bench_path_keepalive.py) ------------------
KA_CALL_MESSAGES = {"request": ("INVITE", "ACK", "BYE"), "response": ("100", "180")}
KA_TAIL_S, KA_SETTLE_S = 1.2, 0.5
#: per keep-alive figures of a visit, and the issue's targets for E / R
KA_PER = {"ctx_per_ka_node": 0.1, "ctx_per_ka_node_tasks": 0.1, "ctx_per_ka_bench": None, "ctx_per_ka_responder": None,
          "cpu_us_per_ka_node": 0.2, "cpu_us_per_ka_node_tasks": 0.2, "cpu_us_per_ka_bench": None,
          "cpu_us_per_ka_responder": None}
#: the tasks that answer or forward keep-alives: the pod's responder, the agent's prober, the
#: softirq threads (sipp and kagen, the load generators, are the peers)
KA_NODE_TASKS = ("responder", "prober", "ksoftirqd")
KA_LATENCY = ("call_request_p50_us", "call_request_p99_us", "call_response_p50_us", "call_response_p99_us")


def call_transit(m: dict) -> dict:
    """The calls' node transit (µs) in a keep-alive phase from transit.match()'s result: the
    calls' own requests (INVITE, ACK, BYE) and provisional responses (100, 180); a 200 may
    answer an OPTIONS as well as an INVITE or BYE, so the 200s are left out.  Also how many
    OPTIONS crossed the node into the pod."""
    out = {}
    for dname, kinds in KA_CALL_MESSAGES.items():
        by = (m.get(dname) or {}).get("by_what") or {}
        out[dname] = stats.summary([x / 1000 for k in kinds for x in by.get(k, [])])
    out["options_to_pod"] = len(((m.get("request") or {}).get("by_what") or {}).get("OPTIONS", []))
    return out


def ka_visit(calls: dict, mix: dict) -> dict:
    """One configuration's figures in one round: the marginal cost per keep-alive ((mix -
    calls only) / keep-alives sent) and the calls' node transit in the mix phase."""
    sent = (mix.get("gen") or {}).get("sent") or 0

    def flat(ph):
        g = ph.get("groups") or {}
        r = g.get("responder") or {"cpu_s": 0.0, "ctx": 0}
        return {**ph, "responder_ctx": r["ctx"], "responder_s": r["cpu_s"],
                "node_tasks_ctx": sum(g[k]["ctx"] for k in KA_NODE_TASKS if k in g),
                "node_tasks_s": sum(g[k]["cpu_s"] for k in KA_NODE_TASKS if k in g)}
    fm, fc = flat(mix), flat(calls)
    out = {"config": mix["config"], "round": mix["round"], "sent": sent,
           "ctx_per_ka_node": KA.marginal(fm, fc, "ctxt", sent),
           "ctx_per_ka_node_tasks": KA.marginal(fm, fc, "node_tasks_ctx", sent),
           "ctx_per_ka_bench": KA.marginal(fm, fc, "bench_ctx", sent),
           "ctx_per_ka_responder": KA.marginal(fm, fc, "responder_ctx", sent)}
    for key, src in (("cpu_us_per_ka_node", "busy_s"), ("cpu_us_per_ka_node_tasks", "node_tasks_s"),
                     ("cpu_us_per_ka_bench", "bench_cpu_s"), ("cpu_us_per_ka_responder", "responder_s")):
        v = KA.marginal(fm, fc, src, sent)
        out[key] = None if v is None else v * 1e6
    ct = mix.get("call_transit") or {}
    for dname in KA_CALL_MESSAGES:
        for q in ("p50", "p99"):
            out[f"call_{dname}_{q}_us"] = (ct.get(dname) or {}).get(q)
    return out


def ka_analyse(visits: list[dict]) -> dict:
    """E against R for every figure of the visits (keepalive.ratio_summary: paired
    differences with their interval and smallest detectable effect, per-round ratios), with
    the verdicts: per keep-alive costs against the targets, the calls' transit unchanged."""
    an = {}
    for key in (*KA_PER, *KA_LATENCY):
        r = {v["round"]: v.get(key) for v in visits if v["config"] == "R"}
        e = {v["round"]: v.get(key) for v in visits if v["config"] == "E"}
        s = KA.ratio_summary(r, e)
        tgt = KA_PER.get(key)
        s["target"] = tgt
        if key not in KA_PER:
            s["verdict"] = KA.unchanged(s["diff"])
        elif not tgt:
            s["verdict"] = None
        elif s["k_median"] is None or s["k_median"] <= 0 or len(s["rounds"]) < len(s["diff"].get("diffs") or []):
            # a ratio to a cost that is not above the noise (other tenants' work in a machine-wide
            # figure) says nothing
            s["verdict"] = "not resolved (R's cost per keep-alive is not above the noise in every round)"
        else:
            s["verdict"] = KA.verdict(s, tgt)
        an[key] = s
    return an


def ka_visits(phases: list[dict]) -> list[dict]:
    """Every visit (the calls-only and mix phases of one configuration in one round), in run order."""
    by: dict = {}
    for ph in phases:
        by.setdefault((ph["round"], ph["config"]), {})[ph["phase"]] = ph
    return [ka_visit(d["calls"], d["mix"]) for d in by.values() if "calls" in d and "mix" in d]


class KaNode(KA.KaBench):
    """The keep-alive benchmark's node-side plumbing on the path topology: the policy switch
    (responder off for R, on for E), the agent's prober holding the proxy-alive gate open
    (it probes the pod's responder), the gate wait and the eTSF keep-alive counters."""

    # pylint: disable-next=super-init-not-called
    def __init__(self, b, sample_every: int = 100, probe_interval_ms: int = 200):
        self.b, self.prober = b, None
        self.p = {"sample_every": sample_every, "probe_interval_ms": probe_interval_ms}
        self.res = {"pids": [], "gate": {}}
        self.saved_env = {k: os.environ.get(k) for k in ("ETSF_PIN_ROOT", "ETSF_STATE_DIR", "ETSF_RUN_DIR")}
        os.environ.update({k: b.env[k] for k in self.saved_env})

    def close(self):
        """Stop the prober and put back the environment (the topology is the caller's)."""
        if self.prober is not None and self.prober.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.prober.pid, signal.SIGTERM)
            try:
                self.prober.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.prober.pid, signal.SIGKILL)
                self.prober.wait(timeout=10)
        for k, v in self.saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class RawTopo(T.Topo):
    """R: the UAC's veth straight into the pod (no node namespace in between)."""

    @property
    def namespaces(self):
        return [self.uac, self.pod]

    def setup(self):
        for ns in self.namespaces:
            self.netns(ns)
        self.veth(self.uac, T.UAC_IF, self.pod, "eth0",
                  addrs=[f"{T.UAC}/24", *T.flood_addrs(self.flood_sources)], peer_addrs=[f"{T.POD}/24"])
        self.route(self.uac, "198.18.41.0/24", dev=T.UAC_IF)
        self.route(self.pod, "198.18.40.0/24", dev="eth0")
        self.sh(self.uac, "ping", "-c1", "-W1", T.POD, check=False)


class PathBench:
    def __init__(self, args, prof: dict, out: Path):
        # run.py's Bench, for its eTSF plumbing only (etsfctl in the node, policy, build, cleanup);
        # it also makes the work directory and starts the budget clock
        self.b = R.Bench(types.SimpleNamespace(work=args.work or tempfile.mkdtemp(prefix="etsf-bench-path-"),
                                               budget_min=args.budget_min, profile="path"),
                         {"fixed_rate": None}, out)
        self.args, self.p, self.out = args, prof, out
        self.work, self.t0, self.deadline, self.tag = self.b.work, self.b.t0, self.b.deadline, self.b.tag
        self.topo: T.Topo | None = None
        self.tr: transit.Transit | None = None
        self.responder = None
        self.responder_bin = self.work / "responder"
        self.reserve = 0.0             # seconds held back for the overload sweep (set in run)
        self.seq = 0
        self.pooled: dict = {}         # (config, transport, direction) -> ns samples (CDF plots)
        self.res = {"schema": SCHEMA, "profile": args.profile, "started": R.now_utc().isoformat(),
                    "params": dict(prof), "configs": {}, "skipped": [], "notes": [], "errors": [],
                    # what this run creates, so a test can check it is all gone afterwards
                    "resources": {"namespaces": [f"{T.NS_PREFIX}{x}{self.tag}" for x in "hcpu"],
                                  "pin_roots": [self.b.pin_root, self.b.pin_root + "-transit"],
                                  "work_dir": str(self.work)}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    # -- build ------------------------------------------------------------------
    def prepare(self):
        r = subprocess.run(["gcc", "-O2", "-Wall", "-o", str(self.responder_bin),
                            str(HERE / "responder" / "responder.c")], capture_output=True, text=True, timeout=120,
                           check=False)
        if r.returncode != 0:
            raise RuntimeError(f"gcc responder.c: {r.stderr.strip()[:500]}")
        self.b.prepare()
        self.tr = transit.Transit(self.work / "transit-build", self.b.pin_root + "-transit")

    # -- one configuration ---------------------------------------------------------
    def setup(self, cfg: dict, life_s: float | None = None):
        spec = KINDS[cfg["kind"]]
        topo_cls = RawTopo if cfg["kind"] == "raw" else T.Topo
        self.topo = self.b.topo = topo_cls(self.tag, self.work, flood_sources=SOURCES)
        self.topo.setup()
        self.topo.sh(self.topo.uac, "nft", "-f", "-", inp=source_snat())
        n = cfg["services"]
        t0 = time.monotonic()
        if spec["rules"] == "nft":
            self.topo.sh(self.topo.node, "nft", "-f", "-", inp=kubeproxy.nft_ruleset(n, T.VIP, T.PORT, T.POD, T.PORT),
                         timeout=600)
        elif spec["rules"]:
            self.topo.sh(self.topo.node, spec["rules"], inp=kubeproxy.iptables_ruleset(n, T.VIP, T.PORT, T.POD, T.PORT),
                         timeout=600)
        cfg.setdefault("rules_load_s", []).append(round(time.monotonic() - t0, 2))
        if spec["classifier"] is not None:
            r = self.b.etsfctl("attach", "--iface", T.UPLINK_IF, *spec["classifier"], "--json")
            cfg["hook"] = json.loads(r.stdout).get("hook")
        if spec["fastpath"]:
            self.b.etsfctl("fastpath", "attach", "--iface", T.UPLINK_IF, "--iface", T.POD_HOST_IF)
        if spec["classifier"] is not None or spec["fastpath"]:
            pol = self.work / f"policy-{cfg['name']}.yml"
            pol.write_text(node_policy(self.b.policy(spec["fastpath"]), spec))
            self.b.etsfctl("policy", "apply", str(pol))
        self.tr.attach(self.topo.uac, T.UAC_IF, "uac")
        self.tr.attach(self.topo.pod, "eth0", "pod")
        self.tr.take()                                  # ping/ARP sightings of the setup
        d = self.work / f"{cfg['name']}-{self.seq}"
        d.mkdir(parents=True, exist_ok=True)
        cfg["_dir"] = d
        budget = int(life_s) if life_s else max(60, int(self.p["seconds"] + self.p["u1_seconds"]) * 4 + 60)
        self.responder = self.topo.popen(self.topo.pod, [str(self.responder_bin), T.POD, str(T.PORT), str(budget),
                                                         str(10_000_000)], d / "responder.log", limit=budget + 10,
                                         cpu=CPU_POD)
        time.sleep(0.3)
        if self.responder.poll() is not None:
            raise RuntimeError(f"responder exited: {(d / 'responder.log').read_text()[-500:]}")

    def teardown(self, cfg: dict):
        spec = KINDS[cfg["kind"]]
        if self.tr:
            self.tr.detach_all()
            with contextlib.suppress(Exception):
                self.tr.take()
        if self.topo and spec["fastpath"]:
            self.b.etsfctl("fastpath", "detach", "--iface", T.UPLINK_IF, "--iface", T.POD_HOST_IF, check=False)
        if self.topo and spec["classifier"] is not None:
            self.b.etsfctl("detach", "--iface", T.UPLINK_IF, check=False)
        if self.responder is not None:
            self.topo.stop(self.responder, timeout=5, sig=signal.SIGTERM)
            self.responder = None
        if self.topo:
            self.topo.teardown()
        self.topo = self.b.topo = None
        shutil.rmtree(self.b.pin_root, ignore_errors=True)

    # -- one sipp run -----------------------------------------------------------------
    def sipp_cmd(self, cfg: dict, transport: str, calls: int, seconds: float, d: Path) -> list[str]:
        rate = self.p["rate"]
        target = T.VIP if KINDS[cfg["kind"]]["vip"] else T.POD
        return ["sipp", "-sf", str(HERE / "templates" / "uac.xml"), f"{target}:{T.PORT}", "-s", "bench",
                "-i", T.UAC, "-p", "5070", "-t", transport, "-max_socket", "15000", "-m", str(calls), "-r", str(rate),
                "-rp", "1000", "-l", str(max(50, rate * 3)), "-d", "20", "-max_retrans", "3", "-recv_timeout", "4000",
                "-timeout", f"{int(seconds + 20)}s", "-nostdin", "-trace_stat", "-stf", str(d / "stat.csv"),
                "-fd", "1", "-trace_err", "-error_file", str(d / "errors.log")]

    def sipp(self, cfg: dict, transport: str, seconds: float) -> dict:
        self.seq += 1
        rate = self.p["rate"]
        d = cfg["_dir"] / f"{self.seq:03d}-{transport}"
        d.mkdir()
        calls = max(1, int(round(rate * seconds)))
        cmd = ["ip", "netns", "exec", self.topo.uac, "taskset", "-c", CPU_UAC,
               *self.sipp_cmd(cfg, transport, calls, seconds, d)]
        roles = {pid: "responder" for pid, comm in cpuacct.session_pids(self.responder.pid).items()
                 if comm == "responder"}
        a = cpuacct.snapshot()
        a["reaped"].pop(os.getpid(), None)
        with open(d / "sipp.log", "w") as log:
            # ip netns exec and taskset exec: this Popen is sipp itself, so wait4() gives its
            # exact CPU time and context switches (it is gone before the window closes)
            p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
            ru = None
            t_end = time.monotonic() + seconds + 30
            while ru is None:
                pid, status, usage = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    ru, p.returncode = usage, os.waitstatus_to_exitcode(status)
                elif time.monotonic() > t_end:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
                else:
                    time.sleep(0.02)
        b = cpuacct.snapshot()
        b["reaped"].pop(os.getpid(), None)
        acc = cpuacct.account(a, b, roles)
        acc["parts_s"]["sipp (UAC)"] = ru.ru_utime + ru.ru_stime
        acc["ctx_switches"]["sipp (UAC)"] = {"voluntary": ru.ru_nvcsw, "involuntary": ru.ru_nivcsw}
        acc["tasks_sum_s"] += ru.ru_utime + ru.ru_stime
        acc["residual_s"] = acc["whole_s"] - acc["tasks_sum_s"]
        acc["residual_ratio"] = acc["residual_s"] / acc["whole_s"] if acc["whole_s"] > 0 else None
        acc["adds_up"], acc["adds_up_why"] = cpuacct.adds_up(acc)
        time.sleep(0.2)                                     # the last ACK/200 reach their far edge
        events, counters = self.tr.take()
        m = transit.match(events)
        rec = {"transport": transport, "rate": rate, "seconds": seconds, "calls_planned": calls,
               "sipp_rc": p.returncode}
        rec.update(R.Bench.parse_sipp(d))
        rec.pop("latency", None)
        ok = max(1, rec["successful"])
        rec["transit"] = {}
        for dname, dm in m.items():
            us = [x / 1000 for x in dm["ns"]]
            self.pooled.setdefault((cfg["name"], transport, dname), []).extend(us)
            rec["transit"][dname] = {**stats.summary(us),
                                     "by_message": {k: stats.summary([x / 1000 for x in v])
                                                    for k, v in sorted(dm["by_what"].items())},
                                     **{k: dm[k] for k in ("unmatched_departures", "unmatched_arrivals",
                                                           "ambiguous", "negative")}}
        rec["transit_counters"] = counters
        rec["cpu"] = {k: v for k, v in acc.items() if k not in ("ctx_switches",)}
        rec["cpu"]["ms_per_call"] = {k: v * 1000 / ok for k, v in acc["parts_s"].items()}
        rec["cpu"]["ms_per_call"]["whole"] = acc["whole_s"] * 1000 / ok
        rec["cpu"]["ms_per_call"]["softirq (ticks)"] = acc["softirq_s"] * 1000 / ok
        txn = 2 * ok                                         # INVITE and BYE transactions
        rec["ctx_switches"] = {k: {**v, "per_transaction": (v["voluntary"] + v["involuntary"]) / txn}
                               for k, v in acc["ctx_switches"].items()}
        return rec

    def run_config(self, cfg: dict, rnd: int, transports, store: dict):
        self.setup(cfg)
        try:
            for tr in transports:
                secs = self.p["seconds"] if tr == "un" else self.p["u1_seconds"]
                rec = self.sipp(cfg, tr, secs)
                rec["round"] = rnd
                store.setdefault(tr, []).append(rec)
                t = rec["transit"]
                R.log(f"    {cfg['name']} -t {tr}: ok {rec['successful']}/{rec['created']}, transit p50 "
                      f"req {fmt(t['request']['p50'])} / resp {fmt(t['response']['p50'])} us "
                      f"(n {t['request']['n']}/{t['response']['n']}), whole CPU "
                      f"{rec['cpu']['ms_per_call']['whole']:.3f} ms/call{R.why(rec)}")
        finally:
            self.teardown(cfg)

    # -- the passes -----------------------------------------------------------------
    def key_pass(self):
        cfgs = key_configs(self.p["key_services"], self.p["key_kinds"])
        rounds = self.p["rounds"]
        orders = R.williams_orders(len(cfgs))
        self.res["orders"] = [[cfgs[i]["name"] for i in orders[r % len(orders)]] for r in range(rounds)]
        per = self.p["seconds"] + self.p["u1_seconds"] + 15
        for rnd in range(rounds):
            for cfg in (cfgs[i] for i in orders[rnd % len(orders)]):
                entry = self.res["configs"].setdefault(cfg["name"], {"kind": cfg["kind"], "services": cfg["services"],
                                                                     "key": True, "runs": {}})
                if self.path_left() < per:
                    self.res["skipped"].append(f"{cfg['name']} round {rnd + 1} (time budget)")
                    continue
                waited = R.wait_quiet(limit_s=self.p["quiet_limit_s"])
                R.log(f"== round {rnd + 1}/{rounds}: {cfg['name']} (quiet after {waited:.1f} s)")
                try:
                    self.run_config(cfg, rnd, ("un", "u1"), entry["runs"])
                except Exception as e:  # noqa: BLE001 - recorded, the others go on
                    self.res["errors"].append(f"{cfg['name']} round {rnd + 1}: {type(e).__name__}: {e}")
                    R.log(f"   ERROR {cfg['name']}: {e}")
                entry["rules_load_s"] = cfg.get("rules_load_s")
                entry["hook"] = cfg.get("hook")
            self.save()

    def keepalive_pass(self):
        """Keep-alive mix: OPTIONS from ka_sources addresses (bench/kagen.c) plus calls through
        eTSF as deployed (C-0), R: the pod's responder answers the OPTIONS (policy
        keepalive.enabled false) vs E: eTSF answers them in the kernel at C's hook (enabled, gate
        held open by the prober, 1 in 100 still to the pod); one topology, the policy switched between visits,
        paired rounds in alternating order, each visit a calls-only and a mix phase."""
        p = self.p
        rounds, ph_s = int(p["ka_rounds"]), float(p["ka_phase_s"])
        ka_rate = p["rate"] * p["ka_per_call"]
        visit_s = 2 * (ph_s + KA_TAIL_S + KA_SETTLE_S + 2.0) + 2.0
        out = self.res["keepalive"] = {"params": {"rounds": rounds, "phase_s": ph_s, "call_rate": p["rate"],
                                                  "ka_rate": ka_rate, "ka_per_call": p["ka_per_call"],
                                                  "sources": p["ka_sources"], "sample_every": 100,
                                                  "config": "C-0"},
                                       "phases": [], "visits": []}
        if self.path_left() < 40 + 2 * visit_s:
            self.res["skipped"].append("keep-alive pass (time budget)")
            return
        gen_bin = self.work / "kagen"
        cfg = {"name": "KA-C-0", "kind": "C", "services": 0}
        node = None
        try:
            r = subprocess.run(["gcc", "-O2", "-Wall", "-o", str(gen_bin), str(KA.GEN_SRC)], capture_output=True,
                               text=True, timeout=120, check=False)
            if r.returncode != 0:
                raise RuntimeError(f"gcc kagen.c: {r.stderr.strip()[:500]}")
            self.setup(cfg, life_s=60 + rounds * 2 * visit_s)
            topo = self.topo
            # the devices: KA_NET local to the UAC namespace (one socket sends from each address
            # and receives its answers); a pass-only XDP program on the UAC's veth so that
            # XDP_TX frames are delivered (a veth peer needs NAPI), in R and E alike
            topo.sh(topo.uac, "ip", "route", "add", "local", KA.KA_NET, "dev", "lo")
            topo.sh(topo.node, "ip", "route", "add", KA.KA_NET, "via", T.UAC, "dev", T.UPLINK_IF)
            obj = Path(self.b.env["ETSF_BUILD_DIR"]) / "xdp_count.bpf.o"
            topo.sh(topo.uac, "ip", "link", "set", "dev", T.UAC_IF, "xdp", "obj", str(obj), "sec", "xdp")
            node = KaNode(self.b)
            node.start_prober()
            for rnd in range(rounds):
                if self.path_left() < 2 * visit_s:
                    self.res["skipped"].append(f"keep-alive round {rnd + 1} and later (time budget)")
                    break
                for letter in (("R", "E") if rnd % 2 == 0 else ("E", "R")):
                    node.apply(letter)
                    time.sleep(KA_SETTLE_S)
                    self.tr.take()
                    calls = self.ka_phase(cfg, node, (letter, rnd, "calls"), 0, ph_s, gen_bin)
                    mix = self.ka_phase(cfg, node, (letter, rnd, "mix"), ka_rate, ph_s, gen_bin)
                    out["phases"] += [calls, mix]
                    v = ka_visit(calls, mix)
                    out["visits"].append(v)
                    g = mix["gen"]
                    R.log(f"    keep-alive round {rnd + 1} {letter}: sent {g['sent']} answered {g['answered_200']}, "
                          f"ctx/ka node {fmt(v['ctx_per_ka_node'])} responder {fmt(v['ctx_per_ka_responder'])}, "
                          f"CPU us/ka node {fmt(v['cpu_us_per_ka_node'])}, calls ok "
                          f"{mix['calls']['successful']}/{mix['calls']['planned']}, INVITE.. transit p50/p99 "
                          f"{fmt(v['call_request_p50_us'])}/{fmt(v['call_request_p99_us'])} us")
                self.save()
        except Exception as e:  # noqa: BLE001 - recorded, the other passes go on
            self.res["errors"].append(f"keep-alive pass: {type(e).__name__}: {e}")
            R.log(f"   ERROR keep-alive pass: {e}")
        finally:
            if node is not None:
                node.close()
            self.teardown(cfg)
        out["visits"] = ka_visits(out["phases"])
        out["analysis"] = ka_analyse(out["visits"])
        self.save()

    def ka_phase(self, cfg: dict, node: KaNode, what: tuple, ka_rate: float, seconds: float, gen_bin: Path) -> dict:
        """One phase of a keep-alive visit: sipp's calls and (ka_rate > 0) kagen's OPTIONS
        together, in a fixed window; the node's figures between two snapshots."""
        letter, rnd, label = what
        self.seq += 1
        d = cfg["_dir"] / f"{self.seq:03d}-ka-{letter}-{label}"
        d.mkdir()
        planned = max(1, int(round(self.p["rate"] * seconds)))
        topo = self.topo
        roles = {pid: "responder" for pid, comm in cpuacct.session_pids(self.responder.pid).items()
                 if comm == "responder"}
        roles[node.prober.pid] = "prober"
        e0 = node.ka_counters()
        a = KA.KaBench.snap()
        t0 = time.monotonic()
        gen = None
        if ka_rate:
            gen = topo.popen(topo.uac, [str(gen_bin), T.VIP, str(T.PORT), T.VIP, f"{ka_rate:g}", f"{seconds:g}",
                                        KA.KA_BASE, str(self.p["ka_sources"]), str(KA.KA_PORT), "1"],
                             d / "kagen.json", limit=seconds + 15, cpu=CPU_UAC)
        sp = topo.popen(topo.uac, self.sipp_cmd(cfg, "un", planned, seconds, d), d / "sipp.log", limit=seconds + 40,
                        cpu=CPU_UAC)
        rc = topo.stop(sp, timeout=seconds + 50)
        grc = topo.stop(gen, timeout=seconds + 20) if gen else None
        rest = t0 + seconds + KA_TAIL_S - time.monotonic()     # the same window in both phases
        if rest > 0:
            time.sleep(rest)
        b = KA.KaBench.snap()
        e1 = node.ka_counters()
        events, counters = self.tr.take()
        rec = {"config": letter, "round": rnd, "phase": label, "ka_rate": ka_rate, "seconds": seconds,
               **KA.phase_figures(a, b, roles), "call_transit": call_transit(transit.match(events)),
               "transit_counters": counters}
        # the busy time adds up: every live task's schedstat plus the children that ran and
        # exited in the window (sipp, kagen: getrusage) against idle accounting
        acc = cpuacct.account(a["acct"], b["acct"], roles)
        acc["tasks_sum_s"] += b["children"][0] - a["children"][0]
        acc["residual_s"] = acc["whole_s"] - acc["tasks_sum_s"]
        acc["residual_ratio"] = acc["residual_s"] / acc["whole_s"] if acc["whole_s"] > 0 else None
        rec["adds_up"], rec["adds_up_why"] = cpuacct.adds_up(acc)
        rec["residual_ratio"] = acc["residual_ratio"]
        sp_res = R.Bench.parse_sipp(d)
        rec["calls"] = {"planned": planned, "created": sp_res["created"], "successful": sp_res["successful"],
                        "failed": sp_res["failed"], "retransmissions": sp_res["retransmissions"], "sipp_rc": rc}
        if gen is not None:
            g = KA.parse_gen((d / "kagen.json").read_text(errors="replace"))
            if g is None:
                raise RuntimeError(f"keep-alive generator (rc {grc}): {(d / 'kagen.json').read_text()[-300:]}")
            g["consistency"] = KA.gen_consistent(g)
            rec["gen"] = g
        if e0 and e1:
            rec["etsf_keepalive"] = {k: e1[k] - e0.get(k, 0) for k in e1 if isinstance(e1[k], int)}
        if self.responder.poll() is not None:
            raise RuntimeError(f"responder exited during {letter} {label}")
        time.sleep(KA_SETTLE_S)
        return rec

    def sweep_pass(self):
        k = self.p["key_services"]
        # the nftables emulation is not in the key rounds: nft 1.0.x loads the vmap ruleset in a
        # time that grows with the square of N (~80 s at 10,000 services on this host), so it runs
        # here, once per point up to vmap_max_services, the key N included.  The ends of the
        # sweep (0 and the largest N, which the headline quotes) go first, so a short budget
        # drops the points in between.
        ns = sorted(set(self.p["sweep"]) | {k})
        ends = [x for x in (ns[0], ns[-1]) if x != k] if len(ns) > 1 else ns
        order = list(dict.fromkeys(ends + ns))
        # at the key N, iptables-nft and C come from the key rounds; the other families run here
        plan = [(n, fam) for n in order for fam in self.p["sweep_families"]
                if (n <= self.p["vmap_max_services"] if fam == "nft-vmap" else n != k or fam not in ("ipt-nft", "C"))]
        per = self.p["seconds"] + 12
        for n, fam in plan:
            cfg = {"name": cfg_name(fam, n), "kind": fam, "services": n}
            if fam == "ipt-legacy" and not shutil.which("iptables-legacy-restore"):
                self.res["skipped"].append(f"{cfg['name']} (iptables-legacy not installed)")
                continue
            # rule loads measured on this host: iptables-restore 6 s at 10,000 services and 54 s at
            # 30,000 (it grows with N^2 too), nft vmap 80 s at 10,000
            if self.path_left() < per + (80 if fam == "nft-vmap" else 7) * (n / 10000) ** 2:
                self.res["skipped"].append(f"{cfg['name']} (time budget)")
                continue
            entry = self.res["configs"].setdefault(cfg["name"], {"kind": fam, "services": n, "key": False,
                                                                 "runs": {}})
            R.wait_quiet(limit_s=self.p["quiet_limit_s"])
            R.log(f"== sweep: {cfg['name']}")
            try:
                self.run_config(cfg, 0, ("un",), entry["runs"])
            except Exception as e:  # noqa: BLE001
                self.res["errors"].append(f"{cfg['name']}: {type(e).__name__}: {e}")
                R.log(f"   ERROR {cfg['name']}: {e}")
            entry["rules_load_s"] = cfg.get("rules_load_s")
            entry["hook"] = cfg.get("hook")
            self.save()

    def bpf_stats_pass(self):
        """eTSF's own ns per packet in traffic, with kernel.bpf_stats_enabled=1 for this pass
        only (it adds two clock reads to every BPF program run, so not in the timed passes)."""
        k = self.p["key_services"]
        out = {}
        path = Path("/proc/sys/kernel/bpf_stats_enabled")
        old = path.read_text().strip()
        try:
            for kind in self.p["stats_kinds"]:
                n = kind_services(kind, k)
                cfg = {"name": cfg_name(kind, n), "kind": kind, "services": n}
                if self.path_left() < self.p["stats_seconds"] + 20:
                    self.res["skipped"].append(f"bpf_stats {cfg['name']} (time budget)")
                    continue
                try:
                    self.setup(cfg)
                    path.write_text("1\n")
                    before = self.prog_stats()
                    rec = self.sipp(cfg, "un", self.p["stats_seconds"])
                    after = self.prog_stats()
                    path.write_text(old + "\n")
                    progs = etsfread.runs_delta(before, after)
                    out[cfg["name"]] = {"programs": progs, "calls_ok": rec["successful"],
                                        "calls": rec["created"], "hook": cfg.get("hook"),
                                        "parses": self.parse_stats()}
                    R.log(f"   bpf_stats {cfg['name']}: " + ", ".join(
                        f"{p} {v['ns_per_run']:.0f} ns x {v['run_cnt']}" for p, v in progs.items() if v["ns_per_run"]))
                except Exception as e:  # noqa: BLE001
                    self.res["errors"].append(f"bpf_stats {cfg['name']}: {type(e).__name__}: {e}")
                finally:
                    path.write_text(old + "\n")
                    self.teardown(cfg)
        finally:
            path.write_text(old + "\n")
        self.res["bpf_stats"] = {"in_traffic": out, "sysctl_restored_to": old}

    def parse_stats(self) -> dict | None:
        """etsf_parse_stats summed over the CPUs, by hook: how many SIP parses the run took."""
        return etsfread.parse_counts(self.b.pin_root)

    def prog_stats(self) -> dict:
        # the benchmark's own stamps too, for what the measurement itself costs per packet
        return etsfread.prog_runs(self.b.pin_root, {f"(bench) {name}": prog.id
                                                    for name, prog in (self.tr.progs.items() if self.tr else ())})

    def datapath_pass(self):
        if self.path_left() < 60:
            self.res["skipped"].append("PROG_TEST_RUN microbenchmark (time budget)")
            return
        d = self.work / "datapath"
        r = subprocess.run([sys.executable, str(HERE / "datapath.py"), "--out", str(d), "--repeat",
                            str(self.p["datapath_repeat"]), "--rounds", "3"], capture_output=True, text=True,
                           timeout=600, check=False, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
        files = sorted(d.glob("datapath-*.json"))
        if r.returncode != 0 or not files:
            self.res["errors"].append(f"datapath microbenchmark: {r.stderr.strip()[-300:]}")
            return
        doc = json.loads(files[-1].read_text())
        self.res["prog_test_run"] = {k: v["ns_per_packet"] for k, v in doc["results"].items()}
        self.res["prog_test_run_bpf_stats_enabled"] = doc.get("bpf_stats_enabled")

    def overload_pass(self):
        if not self.p["overload"]:
            self.res["overload"] = {"available": False,
                                    "note": "overload sweep: not run (overload=false; bench/overload.py runs it alone)"}
            R.log("overload sweep: not run (overload=false)")
            return
        try:
            import overload  # noqa: PLC0415 - built on another branch; optional here
        except ImportError:
            self.res["overload"] = {"available": False, "note": "overload sweep: not available"}
            R.log("overload sweep: not available")
            return
        budget = self.left()
        R.log(f"== overload sweep (budget {budget:.0f} s)")
        try:
            quick = self.args.profile == "quick"
            # the full form: no eTSF, fixed admission and the controller (the sweep's own default
            # adds A and C, which the path passes above already characterise)
            over = {} if quick else {"configs": ["D", "F", "K"]}
            self.res["overload"] = {"available": True, **overload.run(self.out, budget, quick, **over)}
        except Exception as e:  # noqa: BLE001
            self.res["overload"] = {"available": True, "error": f"{type(e).__name__}: {e}"}
            self.res["errors"].append(f"overload: {type(e).__name__}: {e}")

    def path_left(self) -> float:
        """Budget left for the path passes (the overload sweep's reserve held back)."""
        return self.left() - self.reserve

    def run(self):
        self.res["host"] = self.b.host_info()
        # machine-wide (e.g. set by the exporter's role or another user): when it is already 1,
        # every pass carries its two clock reads per BPF program run; recorded, not changed
        self.res["host"]["bpf_stats_enabled_at_start"] = Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()
        self.res["host"]["pinning"] = {"sipp_uac": f"cpu{CPU_UAC}", "responder": f"cpu{CPU_POD}",
                                       "softirq": "the sending task's CPU (veth delivers in the sender's softirq)"}
        # the overload sweep's time is held back only when its module is there
        self.reserve = (self.p["overload_reserve_min"] * 60
                        if self.p["overload"] and importlib.util.find_spec("overload") else 0.0)
        self.prepare()
        if self.args.only == "keepalive":
            self.res["only"] = "keepalive"
            self.keepalive_pass()
            self.res["path_seconds"] = round(time.monotonic() - self.t0, 1)
            self.res["finished"] = R.now_utc().isoformat()
            self.res["wall_seconds"] = round(time.monotonic() - self.t0, 1)
            self.save()
            return
        self.key_pass()
        # the two short passes the headline needs before the sweep, which takes what is left
        self.bpf_stats_pass()
        self.datapath_pass()
        self.keepalive_pass()
        self.sweep_pass()
        self.res["transit_cdf_us"] = {f"{c}|{t}|{d}": stats.ecdf(v, 300) for (c, t, d), v in self.pooled.items()
                                      if t == "un"}
        self.res["path_seconds"] = round(time.monotonic() - self.t0, 1)
        self.save()
        self.overload_pass()
        self.res["finished"] = R.now_utc().isoformat()
        self.res["wall_seconds"] = round(time.monotonic() - self.t0, 1)
        self.save()

    def save(self):
        def clean(o):
            if isinstance(o, dict):
                return {k: clean(v) for k, v in o.items() if not k.startswith("_")}
            if isinstance(o, list):
                return [clean(v) for v in o]
            return o
        (self.out / "results.json").write_text(json.dumps(clean(self.res), indent=1, default=str) + "\n")

    def cleanup(self):
        with contextlib.suppress(Exception):
            if self.responder is not None and self.topo:
                self.topo.stop(self.responder, timeout=2, sig=signal.SIGKILL)
        with contextlib.suppress(Exception):
            if self.topo:
                self.topo.teardown()
        with contextlib.suppress(Exception):
            if self.tr:
                self.tr.close()
        self.b.cleanup()
        shutil.rmtree(self.b.pin_root + "-transit", ignore_errors=True)


def fmt(v):
    return "-" if v is None else f"{v:.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="profile", action="store_const", const="quick")
    g.add_argument("--full", dest="profile", action="store_const", const="full")
    ap.add_argument("--out", metavar="DIR", help="result directory (default bench/results/<UTC>-path)")
    ap.add_argument("--budget-min", type=float, default=None, metavar="MIN",
                    help="hard time budget for everything, overload sweep included (quick 4.75, full 40)")
    ap.add_argument("--rounds", type=int, help="paired rounds of the key configurations (default: quick 1, full 10)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a profile entry (JSON value), e.g. --set 'sweep=[0,30000]'")
    ap.add_argument("--work", metavar="DIR", help="raw per-run files (default: a temp dir, removed at the end)")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--only", choices=("keepalive",), help="run this pass alone (the keep-alive mix, R vs E)")
    args = ap.parse_args(argv)
    args.profile = args.profile or "quick"
    prof = dict(PROFILES[args.profile])
    for kv in args.set:
        k, _sep, v = kv.partition("=")
        if k not in prof:
            ap.error(f"--set: unknown profile key {k!r} (known: {', '.join(sorted(prof))})")
        try:
            prof[k] = json.loads(v)
        except ValueError:
            ap.error(f"--set {k}: not a JSON value: {v!r}")
    if args.rounds is not None:
        prof["rounds"] = args.rounds
    if not 1 <= int(prof["rounds"]) <= 20:
        ap.error("rounds must be in 1..20")
    if not 1 <= float(prof["rate"]) <= 1000:
        ap.error("rate must be in 1..1000 calls/s")
    for k in ("seconds", "u1_seconds", "stats_seconds"):
        if not 0 < float(prof[k]) <= 60:
            ap.error(f"{k} must be in (0, 60] seconds")
    if any(not isinstance(n, int) or not 0 <= n <= kubeproxy.MAX_SERVICES for n in prof["sweep"]):
        ap.error(f"sweep: a list of service counts in 0..{kubeproxy.MAX_SERVICES}")
    if not isinstance(prof["vmap_max_services"], int) or not 0 <= prof["vmap_max_services"] <= kubeproxy.MAX_SERVICES:
        ap.error(f"vmap_max_services: a service count in 0..{kubeproxy.MAX_SERVICES}")
    if not isinstance(prof["overload"], bool):
        ap.error("overload: true or false")
    if not set(prof["sweep_families"]) <= set(SWEEP_FAMILIES):
        ap.error(f"sweep_families: a subset of {', '.join(SWEEP_FAMILIES)}")
    args.budget_min = args.budget_min if args.budget_min is not None else prof["budget_min"]
    if not 1 <= args.budget_min <= 120:
        ap.error("--budget-min must be in 1..120")
    why = R.preflight("path.py", ("sipp", "iptables-nft-restore", "nft", "gcc", "taskset", "nsenter"))
    if why:
        print(why, file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else HERE / "results" / (R.now_utc().strftime("%Y%m%dT%H%M%SZ") + "-path")
    out.mkdir(parents=True, exist_ok=True)
    pb = PathBench(args, prof, out)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    R.log(f"eTSF path bench ({args.profile}, budget {args.budget_min} min) -> {out}")
    try:
        pb.run()
    finally:
        pb.cleanup()
        pb.save()
        if not args.work:
            shutil.rmtree(pb.work, ignore_errors=True)
    import path_report  # noqa: PLC0415
    path_report.render(out, plots=not args.no_plots)
    R.log(f"done in {pb.res.get('wall_seconds')} s: {out / 'report.md'}")
    if pb.res["errors"]:
        R.log(f"errors: {pb.res['errors']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
