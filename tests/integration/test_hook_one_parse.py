"""One SIP parse per packet per node, on the hook the agent chose, with real SIP traffic.

Topology (namespaces ``etsf-hk-*`` created here, only 198.18.0.0/15):

    etsf-hk-c<T>  sipp UAC 198.18.36.1 --veth-- hkup 198.18.36.254 [etsf-hk-h<T>: the node]
                                                 hkbr 198.18.37.254 (bridge)
                                                  `-- hkb1h -- etsf-hk-b<T> sipp UAS 198.18.37.11
    service VIP 198.18.38.100:5060/udp -> backend 198.18.37.11:5060

The node has no NAT rule: a request reaches the backend only through eTSF's fast path
(tc_fastpath on the uplink and on the backend's bridge port).  The classifier is attached on
the uplink with each hook in turn:

* ``--hook auto`` on a veth picks TC: the one TC ingress program classifies and steers from
  one parse; XDP parses nothing; the replies are parsed once, by tc_sip_egress;
* ``--hook xdp`` (native XDP on the veth): xdp_sip parses, TC ingress takes its result from
  the XDP metadata and parses nothing;
* the XDP program swapped for the count-only one (the XDP flag still set, no metadata):
  TC ingress parses every request itself (fail-open) and counts the missing metadata.

What reached the backend is counted by nftables counters in the client's and the backend's
namespaces (datagrams and bytes, requests and replies); the parses by etsf_parse_stats, the
verdicts by etsf_stats.  Every load is bounded (sipp -m/-timeout, ``timeout`` around every
process); everything is torn down even on failure.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import SRC, etsfctl
from lab.netns import Topology

NS_PREFIX = "etsf-hk-"
UAC, UPLINK = "198.18.36.1", "198.18.36.254"
BR, BACKEND = "198.18.37.254", "198.18.37.11"
VIP, PORT = "198.18.38.100", 5060
UP_IF, BK_IF = "hkup", "hkb1h"
CALLS = 20                               # INVITE, ACK, BYE and 3 replies each

POLICY = f"""\
version: 1
sip_ports: [{PORT}]
services:
  - name: sip-proxy
    vip: {VIP}
    port: {PORT}
    protocol: udp
    affinity: call-id
    backends:
      - {{address: {BACKEND}, port: {PORT}, weight: 1}}
"""

# requests leave the client and reach the backend, replies the other way; INVITEs counted apart
# (@th,64,48: the first 6 bytes of the UDP payload)
INVITE_HEX = "0x" + b"INVITE".hex()
NFT_CLIENT = f"""table ip etsfhk {{
  counter req {{ }}
  counter rep {{ }}
  chain out {{
    type filter hook output priority 0; policy accept;
    udp dport {PORT} counter name req
  }}
  chain in {{
    type filter hook input priority 0; policy accept;
    udp sport {PORT} counter name rep
  }}
}}
"""
NFT_BACKEND = f"""table ip etsfhk {{
  counter req {{ }}
  counter inv {{ }}
  counter rep {{ }}
  chain in {{
    type filter hook input priority 0; policy accept;
    udp dport {PORT} counter name req
    udp dport {PORT} @th,64,48 {INVITE_HEX} counter name inv
  }}
  chain out {{
    type filter hook output priority 0; policy accept;
    udp sport {PORT} counter name rep
  }}
}}
"""

# the count-only XDP program put where xdp_sip runs (same interface, same mode, atomic swap)
SWAP_XDP = """
import socket, sys
from etsf import bpf
obj, dev, old = sys.argv[1], sys.argv[2], int(sys.argv[3])
prog = bpf.load_object(obj, sys.argv[4])["xdp_count"]
bpf.xdp_attach(socket.if_nametoindex(dev), prog.fd, "native", replace_prog_id=old)
print(bpf.xdp_query(socket.if_nametoindex(dev))["prog_id"])
"""


class HookTopo(Topology):
    def __init__(self, tag: str, work: Path):
        super().__init__()
        self.work = work
        self.host, self.cli, self.bk = (f"{NS_PREFIX}{x}{tag}" for x in "hcb")
        self.uas = None

    def setup(self):
        for ns in (self.host, self.cli, self.bk):
            self.netns(ns)
        self.sh(self.host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.veth(self.host, UP_IF, self.cli, "hkc", addrs=[f"{UPLINK}/24"], peer_addrs=[f"{UAC}/24"])
        self.route(self.cli, "198.18.0.0/15", via=UPLINK)
        self.bridge(self.host, "hkbr", addrs=[f"{BR}/24"])
        self.bridged(self.host, "hkbr", BK_IF, self.bk, f"{BACKEND}/24", via=BR)
        self.sh(self.cli, "nft", "-f", "-", inp=NFT_CLIENT)
        self.sh(self.bk, "nft", "-f", "-", inp=NFT_BACKEND)
        (self.work / "uas").mkdir()
        self.uas = self.start(self.bk, ["sipp", "-sn", "uas", "-i", BACKEND, "-p", str(PORT), "-nostdin",
                                        "-timeout", "280s"], self.work / "uas" / "sipp.log", limit=300)

    def counters(self, ns: str) -> dict[str, tuple[int, int]]:
        doc = json.loads(self.sh(ns, "nft", "-j", "list", "counters", "table", "ip", "etsfhk").stdout)
        return {o["counter"]["name"]: (o["counter"]["packets"], o["counter"]["bytes"])
                for o in doc["nftables"] if "counter" in o}

    def calls(self, name: str, n: int = CALLS) -> dict[str, int]:
        d = self.work / name
        d.mkdir()
        p = self.start(self.cli, ["sipp", "-sn", "uac", f"{VIP}:{PORT}", "-i", UAC, "-p", str(PORT),
                                  "-m", str(n), "-r", "20", "-d", "50", "-max_retrans", "3", "-timeout", "30s",
                                  "-nostdin", "-trace_stat", "-stf", "uac.csv"], d / "sipp.log", limit=40)
        self.stop(p, timeout=45)
        lines = [ln for ln in (d / "uac.csv").read_text().splitlines() if ln.strip()]
        row = dict(zip(lines[0].rstrip(";").split(";"), lines[-1].rstrip(";").split(";")))
        return {k: int(row[k]) for k in ("SuccessfulCall(C)", "FailedCall(C)")}


@pytest.fixture(scope="module")
def node(tmp_path_factory, build_dir, etsf_bpf):
    if os.geteuid() != 0:
        pytest.fail("needs root")
    for tool in ("sipp", "nft", "nsenter"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not installed (run `make setup`)")
    work = tmp_path_factory.mktemp("hook")
    pin_root = f"/sys/fs/bpf/etsf-hk-it-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    env = {"ETSF_PIN_ROOT": pin_root, "ETSF_STATE_DIR": str(work / "state"), "ETSF_RUN_DIR": str(work / "run"),
           "ETSF_BUILD_DIR": build_dir}
    etsf_bpf.ensure_bpffs()
    t = HookTopo(str(os.getpid() % 100000), work)
    t.env = env
    try:
        t.setup()
        r = json.loads(ctl(t, "fastpath", "attach", "--iface", UP_IF, "--iface", BK_IF, "--json").stdout)
        assert set(r["interfaces"]) == {UP_IF, BK_IF}, r
        pol = work / "policy.yml"
        pol.write_text(POLICY)
        ctl(t, "policy", "apply", str(pol))
        yield t
    finally:
        ctl(t, "fastpath", "detach", "--iface", UP_IF, "--iface", BK_IF, check=False)
        t.close()
        shutil.rmtree(pin_root, ignore_errors=True)


def ctl(t, *args, check=True):
    return etsfctl(*args, env=t.env, netns=t.host, check=check)


def parse_stats(t) -> dict[str, dict[str, int]]:
    """etsf_parse_stats summed over the CPUs, by hook name."""
    from etsf import bpf, layout
    out = {}
    with bpf.open_map("etsf_parse_stats", t.env["ETSF_PIN_ROOT"]) as m:
        for h in layout.Hook:
            vals = [layout.ParseStat.from_buffer_copy(v) for v in m.lookup_percpu(int(h).to_bytes(4, "little"))]
            out[h.name] = {f: sum(getattr(v, f) for v in vals) for f in ("sip_parses", "meta_used", "meta_missing")}
    return out


def verdicts(t) -> dict[tuple[str, str], int]:
    """etsf_stats packets by (hook, method), every verdict and reason summed."""
    out: dict[tuple[str, str], int] = {}
    for r in json.loads(ctl(t, "stats", "--json").stdout)["counters"]:
        out[(r["hook"], r["method"])] = out.get((r["hook"], r["method"]), 0) + r["packets"]
    return out


def requests_counted(st: dict, hook: str) -> int:
    """The requests sipp's calls send (INVITE, ACK, BYE) counted at `hook` (every other packet,
    ARP and the like, is counted too, under its own method)."""
    return sum(st.get((hook, m), 0) for m in ("INVITE", "ACK", "BYE"))


def snapshot(t) -> dict:
    return {"cli": t.counters(t.cli), "bk": t.counters(t.bk), "parse": parse_stats(t), "stats": verdicts(t)}


def delta(a: dict, b: dict) -> dict:
    """b - a for every figure of two snapshots."""
    return {"cli": {k: (b["cli"][k][0] - a["cli"][k][0], b["cli"][k][1] - a["cli"][k][1]) for k in b["cli"]},
            "bk": {k: (b["bk"][k][0] - a["bk"][k][0], b["bk"][k][1] - a["bk"][k][1]) for k in b["bk"]},
            "parse": {h: {f: v - a["parse"][h][f] for f, v in fs.items()} for h, fs in b["parse"].items()},
            "stats": {k: v - a["stats"].get(k, 0) for k, v in b["stats"].items() if v != a["stats"].get(k, 0)}}


def run_calls(t, name: str) -> tuple[dict, int, int, int]:
    """CALLS calls through the VIP; (deltas, requests sent, replies sent, INVITEs delivered),
    with every call completed and every request and reply datagram delivered, byte for byte."""
    s0 = snapshot(t)
    res = t.calls(name)
    time.sleep(0.3)                 # the last BYE's 200 crosses the node before the snapshot
    d = delta(s0, snapshot(t))
    print(name, d)
    assert res == {"SuccessfulCall(C)": CALLS, "FailedCall(C)": 0}, res
    req, rep = d["cli"]["req"], d["bk"]["rep"]
    assert req[0] >= 3 * CALLS and rep[0] >= 3 * CALLS, d
    assert d["bk"]["req"] == req, "every request datagram reached the backend, byte for byte"
    assert d["cli"]["rep"] == rep, "every reply datagram reached the client, byte for byte"
    inv = d["bk"]["inv"][0]
    assert inv >= CALLS, d
    return d, req[0], rep[0], inv


def attach(t, hook: str) -> dict:
    r = json.loads(ctl(t, "attach", "--iface", UP_IF, "--hook", hook, "--mode", "native", "--json").stdout)
    return r


def iface_cfg(t) -> int | None:
    """etsf_if_cfg flags of the uplink (None: no entry)."""
    from etsf import bpf, layout
    idx = int(t.sh(t.host, "cat", f"/sys/class/net/{UP_IF}/ifindex").stdout)
    with bpf.open_map("etsf_if_cfg", t.env["ETSF_PIN_ROOT"]) as m:
        raw = m.lookup(idx.to_bytes(4, "little"))
    return None if raw is None else layout.IfCfg.from_buffer_copy(raw).flags


def xdp_prog_id(t) -> int:
    out = t.sh(t.host, "ip", "-j", "-d", "link", "show", UP_IF).stdout
    return int((json.loads(out)[0].get("xdp") or {}).get("prog", {}).get("id", 0))


# ---------------------------------------------------------------------------


def test_auto_hook_on_veth_is_tc_one_parse_per_packet(node):
    from etsf import layout
    r = attach(node, "auto")
    try:
        assert r["hook"] == "tc", r
        assert xdp_prog_id(node) == 0, "no XDP program on the veth with the TC hook"
        assert iface_cfg(node) == layout.IF_F_CLASSIFY | layout.IF_F_STEER
        d, req, rep, inv = run_calls(node, "auto-tc")
        p = d["parse"]
        # requests: parsed once, at TC ingress, where they are classified and steered
        assert p["TC_INGRESS"] == {"sip_parses": req, "meta_used": 0, "meta_missing": 0}, p
        assert p["XDP"]["sip_parses"] == 0, p
        # replies: rewritten by TC ingress on the backend's port without a parse, parsed once at egress
        assert p["TC_EGRESS"]["sip_parses"] == rep, p
        st = d["stats"]
        assert st.get(("TC_INGRESS", "INVITE")) == inv, st
        assert requests_counted(st, "TC_INGRESS") == req, st
        assert not [k for k in st if k[0] == "XDP"], st
        assert ("TC_INGRESS", "RESPONSE") not in st, "replies are not classified at TC ingress"
    finally:
        ctl(node, "detach", "--iface", UP_IF, check=False)


def test_forced_xdp_hook_hands_its_parse_to_tc(node):
    from etsf import layout
    r = attach(node, "xdp")
    try:
        assert r["hook"] == "xdp", r
        assert xdp_prog_id(node) == r["xdp_prog_id"] != 0
        assert iface_cfg(node) == layout.IF_F_XDP | layout.IF_F_STEER
        d, req, rep, inv = run_calls(node, "forced-xdp")
        p = d["parse"]
        assert p["XDP"]["sip_parses"] == req, p
        # TC ingress steers every request from the metadata xdp_sip left, without a parse
        assert p["TC_INGRESS"] == {"sip_parses": 0, "meta_used": req, "meta_missing": 0}, p
        assert p["TC_EGRESS"]["sip_parses"] == rep, p
        st = d["stats"]
        assert st.get(("XDP", "INVITE")) == inv, st
        assert requests_counted(st, "XDP") == req, st
        assert not [k for k in st if k[0] == "TC_INGRESS"], st
    finally:
        ctl(node, "detach", "--iface", UP_IF, check=False)


def test_missing_metadata_fails_open(node):
    """The XDP flag set on the uplink but the count-only program in xdp_sip's place: no
    metadata arrives, TC ingress parses every request itself and still steers it."""
    from etsf import layout
    r = attach(node, "xdp")
    try:
        old = r["xdp_prog_id"]
        sw = subprocess.run(["nsenter", f"--net=/run/netns/{node.host}", sys.executable, "-c", SWAP_XDP,
                             os.path.join(node.env["ETSF_BUILD_DIR"], "xdp_count.bpf.o"), UP_IF, str(old),
                             node.env["ETSF_PIN_ROOT"] + "-count"],
                            env={**os.environ, "PYTHONPATH": str(SRC)}, capture_output=True, text=True,
                            timeout=60, check=False)
        assert sw.returncode == 0, sw.stderr
        assert xdp_prog_id(node) == int(sw.stdout.split()[-1]) != old
        assert iface_cfg(node) & layout.IF_F_XDP
        d, req, _rep, _inv = run_calls(node, "meta-missing")
        p = d["parse"]
        assert p["XDP"]["sip_parses"] == 0, p
        assert p["TC_INGRESS"] == {"sip_parses": req, "meta_used": 0, "meta_missing": req}, p
    finally:
        node.sh(node.host, "ip", "link", "set", "dev", UP_IF, "xdp", "off", check=False)
        ctl(node, "detach", "--iface", UP_IF, check=False)
        shutil.rmtree(node.env["ETSF_PIN_ROOT"] + "-count", ignore_errors=True)
