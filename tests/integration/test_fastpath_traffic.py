"""Fast path with real SIP traffic: sipp UAC -> VIP -> 3 Kamailio backends -> sipp UAS.

Topology (all namespaces created here, prefix ``etsf-fp-``, only 198.18.0.0/15):

    etsf-fp-c<T>  UAC 198.18.30.1 --veth-- fpup 198.18.30.254 [etsf-fp-h<T>: the "host"]
                                                fpbr 198.18.31.254 (bridge)
                                                 |-- fpb1h -- etsf-fp-b1<T> kamailio 198.18.31.11
                                                 |-- fpb2h -- etsf-fp-b2<T> kamailio 198.18.31.12
                                                 |-- fpb3h -- etsf-fp-b3<T> kamailio 198.18.31.13
                                                 `-- fpuh  -- etsf-fp-u<T>  sipp UAS 198.18.31.50
    VIP 198.18.32.100:5060/udp

The host carries the standard container-platform path: a bridge, iptables DNAT
(nth-packet statistic over the 3 backends) from the VIP, conntrack.  Kamailio
relays statelessly (``forward``) to the UAS and logs every request / reply with
its Call-ID.  The fast path is eTSF's tc_fastpath on the uplink and on the
backends' bridge ports (host ends of their veths), plus the XDP classifier on
the uplink.

Every load is bounded (sipp -m/-r/-timeout/-max_retrans, `timeout` around
kamailio, sipp UAS and tcpdump); everything is torn down even on failure.
IPv4 only: no IPv6 range is allowed for real traffic (IPv6 rewrite and
checksums are verified through BPF_PROG_TEST_RUN in tests/bpf/test_fastpath.py).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import etsfctl
from lab.netns import Topology

HERE = Path(__file__).resolve().parent
KAM_CFG = HERE / "fastpath" / "kamailio.cfg.in"
NS_PREFIX = "etsf-fp-"
UAC = "198.18.30.1"
UPLINK = "198.18.30.254"
BR = "198.18.31.254"
BACKENDS = {"b1": "198.18.31.11", "b2": "198.18.31.12", "b3": "198.18.31.13"}
UAS = "198.18.31.50"
VIP = "198.18.32.100"
PORT = 5060
CALLS, RATE = 60, 10                  # 60 calls at 10 cps: far under capacity

POLICY = f"""\
version: 1
sip_ports: [5060]
services:
  - name: sip-proxy
    vip: {VIP}
    port: {PORT}
    protocol: udp
    affinity: call-id
    backends:
""" + "".join(f"      - {{address: {a}, port: {PORT}, weight: 1}}\n" for a in BACKENDS.values())


class Topo(Topology):
    def __init__(self, tag: str, work: Path):
        super().__init__()
        self.tag = tag
        self.work = work
        self.host = f"{NS_PREFIX}h{tag}"
        self.cli = f"{NS_PREFIX}c{tag}"
        self.uas = f"{NS_PREFIX}u{tag}"
        self.bns = {b: f"{NS_PREFIX}{b}{tag}" for b in BACKENDS}
        self.kam: dict[str, subprocess.Popen] = {}

    @property
    def namespaces(self):
        return [self.host, self.cli, self.uas, *self.bns.values()]

    def setup(self):
        for ns in self.namespaces:
            self.netns(ns)
        h = self.host
        self.sh(h, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.sh(h, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", check=False)
        # uplink
        self.veth(h, "fpup", self.cli, "fpc", addrs=[f"{UPLINK}/24"], peer_addrs=[f"{UAC}/24"])
        self.route(self.cli, "198.18.0.0/15", via=UPLINK)
        # bridge with the backends and the UAS
        self.bridge(h, "fpbr", addrs=[f"{BR}/24"])
        ports = {**{b: (self.bns[b], f"fp{b}h", a) for b, a in BACKENDS.items()},
                 "uas": (self.uas, "fpuh", UAS)}
        for ns, hif, addr in ports.values():
            self.bridged(h, "fpbr", hif, ns, f"{addr}/24", via=BR)
        # full checksums on the wire so captures can be verified (no CHECKSUM_PARTIAL)
        self.sh(self.cli, "ethtool", "-K", "fpc", "tx", "off")
        for b in BACKENDS:
            self.sh(self.bns[b], "ethtool", "-K", "eth0", "tx", "off")
        # the standard path: DNAT from the VIP to the 3 backends (+ conntrack)
        addrs = list(BACKENDS.values())
        for i, a in enumerate(addrs):
            rest = len(addrs) - i
            stat = (["-m", "statistic", "--mode", "nth", "--every", str(rest), "--packet", "0"]
                    if rest > 1 else [])
            self.sh(h, "iptables", "-t", "nat", "-A", "PREROUTING", "-d", VIP, "-p", "udp",
                    "--dport", str(PORT), *stat, "-m", "comment", "--comment", "etsf-fp-dnat",
                    "-j", "DNAT", "--to-destination", f"{a}:{PORT}")

    def popen(self, ns, args, log, limit=240):
        return self.procs.start(ns, args, log, limit=limit)

    def start_kamailio(self, b):
        d = self.work / f"kam-{b}"
        d.mkdir(exist_ok=True)
        cfg = (KAM_CFG.read_text().replace("@NAME@", b).replace("@ADDR@", BACKENDS[b])
               .replace("@PORT@", str(PORT)).replace("@UAS@", UAS).replace("@UASPORT@", str(PORT)))
        (d / "kamailio.cfg").write_text(cfg)
        log = d / f"kamailio-{len(list(d.glob('kamailio-*.log')))}.log"
        p = self.popen(self.bns[b], ["kamailio", "-f", str(d / "kamailio.cfg"), "-DD", "-E",
                                     "-m", "16", "-M", "4", "-n", "1", "-Y", str(d)], log, limit=600)
        self.kam[b] = p
        return p

    def kam_requests(self, b) -> list[tuple[str, str]]:
        """(method, Call-ID) of every request backend b logged (all its runs)."""
        out = []
        for log in sorted((self.work / f"kam-{b}").glob("kamailio-*.log")):
            for m in re.finditer(r"ETSF-BACKEND \S+ .*?REQ (\S+) (\S+)", log.read_text(errors="replace")):
                out.append((m.group(1), m.group(2)))
        return out

    def teardown(self):
        self.close()


# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def topo(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("needs root")
    for tool in ("sipp", "kamailio", "iptables", "conntrack", "tcpdump", "ethtool"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not installed (run `make setup`)")
    work = tmp_path_factory.mktemp("fastpath")
    t = Topo(str(os.getpid() % 100000), work)
    try:
        t.setup()
        for b in BACKENDS:
            t.start_kamailio(b)
        (work / "uas").mkdir()
        t.uas_proc = t.popen(t.uas, ["sipp", "-sn", "uas", "-i", UAS, "-p", str(PORT), "-nostdin",
                                     "-timeout", "590s", "-trace_stat", "-stf", "uas.csv"],
                             work / "uas" / "sipp.log", limit=600)
        time.sleep(1.0)
        for b in BACKENDS:
            assert t.kam[b].poll() is None, (work / f"kam-{b}").glob("*.log")
        yield t
    finally:
        t.teardown()


@pytest.fixture(scope="module")
def fpenv(tmp_path_factory, build_dir, etsf_bpf):
    d = tmp_path_factory.mktemp("fp-state")
    pin_root = f"/sys/fs/bpf/etsf-fp-it-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    env = {"ETSF_PIN_ROOT": pin_root, "ETSF_STATE_DIR": str(d / "state"),
           "ETSF_RUN_DIR": str(d / "run"), "ETSF_BUILD_DIR": build_dir}
    etsf_bpf.ensure_bpffs()
    yield env
    shutil.rmtree(pin_root, ignore_errors=True)


def ctl(topo, fpenv, *args, check=True):
    return etsfctl(*args, env=fpenv, netns=topo.host, check=check)


def sipp_calls(topo, name, calls=CALLS, rate=RATE, pause_ms=200):
    d = topo.work / name
    d.mkdir()
    p = topo.popen(topo.cli, ["sipp", "-sn", "uac", f"{VIP}:{PORT}", "-i", UAC, "-p", str(PORT),
                              "-m", str(calls), "-r", str(rate), "-d", str(pause_ms),
                              "-max_retrans", "3", "-timeout", "90s", "-nostdin",
                              "-trace_stat", "-stf", "uac.csv"], d / "sipp.log", limit=120)
    return p, d


def sipp_result(topo, p, d):
    rc = topo.stop(p, timeout=150)
    lines = [ln for ln in (d / "uac.csv").read_text().splitlines() if ln.strip()]
    head, last = lines[0].rstrip(";").split(";"), lines[-1].rstrip(";").split(";")
    row = dict(zip(head, last))
    return rc, {k: int(row[k]) for k in ("SuccessfulCall(C)", "FailedCall(C)", "TotalCallCreated")}


def dnat_packets(topo) -> int:
    out = topo.sh(topo.host, "iptables", "-t", "nat", "-L", "PREROUTING", "-v", "-x", "-n").stdout
    return sum(int(ln.split()[0]) for ln in out.splitlines() if "etsf-fp-dnat" in ln)


def conntrack_lines(topo) -> list[str]:
    r = topo.sh(topo.host, "conntrack", "-L", "-p", "udp", check=False)
    return [ln for ln in r.stdout.splitlines() if "dport=" in ln]


def distribution(topo, since: dict[str, int] | None = None) -> dict[str, dict[str, set[str]]]:
    """{backend: {Call-ID: {methods}}} from the Kamailio logs (requests after `since` lines)."""
    out = {}
    for b in BACKENDS:
        reqs = topo.kam_requests(b)[(since or {}).get(b, 0):]
        d: dict[str, set[str]] = {}
        for m, cid in reqs:
            if m == "OPTIONS":
                continue
            d.setdefault(cid, set()).add(m)
        out[b] = d
    return out


def marks(topo) -> dict[str, int]:
    return {b: len(topo.kam_requests(b)) for b in BACKENDS}


def verify_pcap(path: Path, expect_src=None, expect_dst=None) -> int:
    """Every captured IPv4/UDP 5060 packet has correct IP and UDP checksums (scapy)."""
    from scapy.all import IP, UDP, Ether, rdpcap
    n = 0
    for pkt in rdpcap(str(path)):
        if IP not in pkt or UDP not in pkt:
            continue
        if expect_src and pkt[IP].src != expect_src:
            continue
        if expect_dst and pkt[IP].dst != expect_dst:
            continue
        raw = bytes(pkt)
        p2 = Ether(raw)
        ip_ck, udp_ck = p2[IP].chksum, p2[UDP].chksum
        del p2[IP].chksum
        del p2[UDP].chksum
        p3 = Ether(bytes(p2))
        assert p3[IP].chksum == ip_ck, f"bad IPv4 checksum in {path.name}: {pkt.summary()}"
        assert udp_ck != 0 and p3[UDP].chksum == udp_ck, f"bad UDP checksum in {path.name}: {pkt.summary()}"
        n += 1
    return n


# ---------------------------------------------------------------------------
# 1. fast path off: the standard path (bridge + DNAT + conntrack) works
# ---------------------------------------------------------------------------


def test_baseline_standard_path(topo):
    topo.sh(topo.host, "conntrack", "-F", check=False)
    topo.sh(topo.host, "iptables", "-t", "nat", "-Z")
    before = marks(topo)
    p, d = sipp_calls(topo, "baseline", calls=30)
    rc, st = sipp_result(topo, p, d)
    assert st["SuccessfulCall(C)"] == 30 and st["FailedCall(C)"] == 0, st
    assert rc == 0
    assert dnat_packets(topo) > 0, "calls went through the DNAT rules"
    ct = conntrack_lines(topo)
    assert any(f"dst={VIP}" in ln for ln in ct), ct
    dist = distribution(topo, before)
    print("baseline distribution (calls per backend):", {b: len(v) for b, v in dist.items()})
    assert sum(len(v) for v in dist.values()) == 30


# ---------------------------------------------------------------------------
# 2. fast path on: affinity, no netfilter, checksums on real captures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fastpath_on(topo, fpenv):
    r = ctl(topo, fpenv, "attach", "--hook", "xdp", "--iface", "fpup", "--mode", "native", "--json")
    assert json.loads(r.stdout)["xdp_prog_id"]
    ifs = ["fpup", "fpb1h", "fpb2h", "fpb3h"]
    r = ctl(topo, fpenv, "fastpath", "attach", *sum((["--iface", i] for i in ifs), []), "--json")
    assert set(json.loads(r.stdout)["interfaces"]) == set(ifs)
    pol = topo.work / "policy.yml"
    pol.write_text(POLICY)
    ctl(topo, fpenv, "policy", "apply", str(pol))
    show = json.loads(ctl(topo, fpenv, "policy", "show", "--json").stdout)
    svc = show.get("services") or show.get("policy", {}).get("services")
    assert svc and svc[0]["vip"] == VIP and len(svc[0]["backends"]) == 3, show
    # idempotent: the same policy again changes nothing
    r = ctl(topo, fpenv, "policy", "apply", str(pol), "--json")
    assert json.loads(r.stdout)["changed"] is False
    bk = json.loads(ctl(topo, fpenv, "fastpath", "health", "--json").stdout)
    assert {b["address"]: (b["up"], b["redirect"]) for b in bk} == {
        a: (True, "peer") for a in BACKENDS.values()}, bk
    yield
    ctl(topo, fpenv, "fastpath", "detach", *sum((["--iface", i] for i in ifs), []), check=False)
    ctl(topo, fpenv, "detach", "--iface", "fpup", check=False)


def fp_stats(topo, fpenv):
    return json.loads(ctl(topo, fpenv, "fastpath", "stats", "--json").stdout)


def test_fastpath_affinity_bypasses_netfilter(topo, fpenv, fastpath_on):
    topo.sh(topo.host, "conntrack", "-F", check=False)
    topo.sh(topo.host, "iptables", "-t", "nat", "-Z")
    caps = {}
    for name, ns, ifn in (("client", topo.cli, "fpc"), ("b1", topo.bns["b1"], "eth0")):
        f = topo.work / f"cap-{name}.pcap"
        cmd = ["tcpdump", "-i", ifn, "-U", "--immediate-mode", "-n", "-c", "5000", "-w", str(f),
               "udp", "port", str(PORT)]
        caps[name] = (topo.popen(ns, cmd, topo.work / f"tcpdump-{name}.log", limit=120), f)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not all(
            "listening on" in (topo.work / f"tcpdump-{n}.log").read_text() for n in caps):
        time.sleep(0.1)
    time.sleep(0.3)
    before, s0 = marks(topo), fp_stats(topo, fpenv)
    p, d = sipp_calls(topo, "fastpath")
    rc, st = sipp_result(topo, p, d)
    time.sleep(0.5)
    for proc, _path in caps.values():
        topo.stop(proc, timeout=10, sig=signal.SIGTERM)
    s1 = fp_stats(topo, fpenv)

    assert st["SuccessfulCall(C)"] == CALLS and st["FailedCall(C)"] == 0, st
    assert rc == 0
    # every Call-ID: INVITE, ACK and BYE all at one backend, and only there
    dist = distribution(topo, before)
    owner = {}
    for b, calls in dist.items():
        for cid, methods in calls.items():
            assert cid not in owner, f"{cid} reached {owner.get(cid)} and {b}"
            owner[cid] = b
            assert {"INVITE", "ACK", "BYE"} <= methods, (b, cid, methods)
    assert len(owner) == CALLS
    per_backend = {b: len(v) for b, v in dist.items()}
    print("fast-path distribution (calls per backend):", per_backend)
    assert all(n > 0 for n in per_backend.values()), per_backend
    # kernel counters agree: new dialogs per backend == Call-IDs per backend
    dialogs = {b["address"]: b["dialogs"] for b in s1["backends"]}
    dialogs0 = {b["address"]: b["dialogs"] for b in s0["backends"]}
    assert {b: dialogs[a] - dialogs0[a] for b, a in BACKENDS.items()} == per_backend
    fwd = s1["forward"]["packets"] - s0["forward"]["packets"]
    ret = s1["return"]["packets"] - s0["return"]["packets"]
    assert fwd >= 3 * CALLS and ret >= 3 * CALLS, (fwd, ret)
    print(f"fast path: forward {fwd} packets, return {ret} packets; fallbacks {s1['fallback']}")
    # nothing of it went through DNAT / conntrack
    assert dnat_packets(topo) == 0
    ct = conntrack_lines(topo)
    assert not [ln for ln in ct if f"port={PORT}" in ln], ct     # no SIP flow at all
    # checksums of the rewritten packets on the wire (IPv4; IPv6 via BPF_PROG_TEST_RUN)
    n_fwd = verify_pcap(caps["b1"][1], expect_src=UAC, expect_dst=BACKENDS["b1"])
    n_ret = verify_pcap(caps["client"][1], expect_src=VIP, expect_dst=UAC)
    n_out = verify_pcap(caps["client"][1], expect_src=UAC, expect_dst=VIP)
    print(f"checksums verified: {n_fwd} forward (at b1), {n_ret} return + {n_out} sent (at UAC)")
    assert n_fwd >= 3 * per_backend["b1"] and n_ret >= 3 * CALLS and n_out >= 3 * CALLS


def test_checksum_offload_on_calls_succeed(topo, fpenv, fastpath_on):
    """Default veth offload (CHECKSUM_PARTIAL skbs): the incremental rewrite keeps
    partial checksums consistent and every call still succeeds."""
    topo.sh(topo.cli, "ethtool", "-K", "fpc", "tx", "on")
    for b in BACKENDS:
        topo.sh(topo.bns[b], "ethtool", "-K", "eth0", "tx", "on")
    try:
        s0 = fp_stats(topo, fpenv)
        p, d = sipp_calls(topo, "offload-on", calls=20)
        rc, st = sipp_result(topo, p, d)
        s1 = fp_stats(topo, fpenv)
    finally:
        topo.sh(topo.cli, "ethtool", "-K", "fpc", "tx", "off")
        for b in BACKENDS:
            topo.sh(topo.bns[b], "ethtool", "-K", "eth0", "tx", "off")
    assert st["SuccessfulCall(C)"] == 20 and st["FailedCall(C)"] == 0, st
    assert s1["forward"]["packets"] - s0["forward"]["packets"] >= 60


def test_policy_swaps_under_load_keep_affinity(topo, fpenv, fastpath_on):
    """Policy slot swaps (backend weights change -> new Maglev tables) while calls
    run: no call fails and every Call-ID still stays on one backend."""
    from etsf import policy as P
    variants = [POLICY, POLICY.replace(f"{BACKENDS['b3']}, port: {PORT}, weight: 1",
                                       f"{BACKENDS['b3']}, port: {PORT}, weight: 3")]
    assert variants[0] != variants[1]
    files = []
    for i, text in enumerate(variants):
        P.load_text(text)                       # both valid
        f = topo.work / f"swap{i}.yml"
        f.write_text(text)
        files.append(f)
    before = marks(topo)
    p, d = sipp_calls(topo, "swaps", calls=40, rate=10, pause_ms=1000)
    swaps = 0
    deadline = time.monotonic() + 4.0
    while swaps < 6 and time.monotonic() < deadline and p.poll() is None:
        r = json.loads(ctl(topo, fpenv, "policy", "apply", str(files[(swaps + 1) % 2]), "--json").stdout)
        assert r["changed"] is True
        swaps += 1
    rc, st = sipp_result(topo, p, d)
    ctl(topo, fpenv, "policy", "apply", str(files[0]))
    assert swaps >= 3
    assert st["SuccessfulCall(C)"] == 40 and st["FailedCall(C)"] == 0, st
    owner = {}
    for b, calls in distribution(topo, before).items():
        for cid, methods in calls.items():
            assert cid not in owner, f"{cid} reached {owner[cid]} and {b} across a swap"
            owner[cid] = b
            assert {"INVITE", "ACK", "BYE"} <= methods
    assert len(owner) == 40
    print(f"{swaps} policy swaps under load: 0 failed calls, every Call-ID on one backend")


# ---------------------------------------------------------------------------
# 3. health: down backends get no new dialogs; nobody else's calls fail
# ---------------------------------------------------------------------------


def test_drain_under_load_fails_no_call(topo, fpenv, fastpath_on):
    """b3 is marked down while calls are in flight: no call fails (b3's own dialogs
    finish there: affinity), and b3 gets no new dialog after the mark."""
    p, d = sipp_calls(topo, "drain", calls=40, rate=10, pause_ms=1500)
    time.sleep(2.0)
    r = ctl(topo, fpenv, "fastpath", "health", f"{BACKENDS['b3']}:{PORT}", "down", "--json")
    assert json.loads(r.stdout)["up"] is False
    at_mark = {b["address"]: b["dialogs"] for b in fp_stats(topo, fpenv)["backends"]}
    rc, st = sipp_result(topo, p, d)
    after = {b["address"]: b["dialogs"] for b in fp_stats(topo, fpenv)["backends"]}
    assert st["SuccessfulCall(C)"] == 40 and st["FailedCall(C)"] == 0, st
    assert after[BACKENDS["b3"]] == at_mark[BACKENDS["b3"]], "b3 got a new dialog while down"
    new_others = sum(after[BACKENDS[b]] - at_mark[BACKENDS[b]] for b in ("b1", "b2"))
    assert new_others > 0
    print(f"drain: dialogs at mark {at_mark}, after {after}")
    ctl(topo, fpenv, "fastpath", "health", f"{BACKENDS['b3']}:{PORT}", "up")


def test_options_probe_marks_dead_backend_down(topo, fpenv, fastpath_on):
    topo.stop(topo.kam["b2"], timeout=10, sig=signal.SIGTERM)     # b2 dies
    r = ctl(topo, fpenv, "fastpath", "probe", "--interval", "0.2", "--threshold", "2",
            "--rounds", "3", "--timeout", "0.3", "--json")
    res = json.loads(r.stdout)
    assert res["backends"] == {f"{BACKENDS['b1']}:{PORT}": True, f"{BACKENDS['b2']}:{PORT}": False,
                               f"{BACKENDS['b3']}:{PORT}": True}, res
    assert [t["backend"] for t in res["transitions"]] == [f"{BACKENDS['b2']}:{PORT}"]
    before = marks(topo)
    p, d = sipp_calls(topo, "after-down", calls=30)
    rc, st = sipp_result(topo, p, d)
    assert st["SuccessfulCall(C)"] == 30 and st["FailedCall(C)"] == 0, st
    dist = distribution(topo, before)
    per_backend = {b: len(v) for b, v in dist.items()}
    print("after b2 down (calls per backend):", per_backend)
    assert per_backend["b2"] == 0 and per_backend["b1"] + per_backend["b3"] == 30
    # b2 back: the prober marks it up after `threshold` good probes
    topo.start_kamailio("b2")
    time.sleep(1.0)
    r = ctl(topo, fpenv, "fastpath", "probe", "--interval", "0.2", "--threshold", "2",
            "--rounds", "2", "--timeout", "0.5", "--json")
    assert json.loads(r.stdout)["backends"][f"{BACKENDS['b2']}:{PORT}"] is True


def test_bypass_falls_back_to_standard_path(topo, fpenv, fastpath_on):
    """Fail-safe: with the bypass flag every packet takes the standard path (DNAT)."""
    ctl(topo, fpenv, "bypass", "on")
    try:
        topo.sh(topo.host, "conntrack", "-F", check=False)
        topo.sh(topo.host, "iptables", "-t", "nat", "-Z")
        s0 = fp_stats(topo, fpenv)
        p, d = sipp_calls(topo, "bypass", calls=10)
        rc, st = sipp_result(topo, p, d)
        s1 = fp_stats(topo, fpenv)
    finally:
        ctl(topo, fpenv, "bypass", "off")
    assert st["SuccessfulCall(C)"] == 10 and st["FailedCall(C)"] == 0, st
    assert dnat_packets(topo) > 0
    assert s1["forward"]["packets"] == s0["forward"]["packets"]
    assert s1["reasons"]["BYPASS"]["packets"] > s0["reasons"]["BYPASS"]["packets"]
