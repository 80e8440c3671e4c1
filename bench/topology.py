"""Benchmark topology: UAC -> "node" (bridge + netfilter) -> Kamailio "pod" -> UAS.

    etsf-bn-c<T>  UAC 198.18.40.1, flood sources 198.18.40.100.. --veth-- bnup 198.18.40.254
                                                                    [etsf-bn-h<T>: the node]
                                                                    bnbr 198.18.41.254 (bridge)
                                                                     |-- bnph -- etsf-bn-p<T> Kamailio 198.18.41.10
                                                                     `-- bnuh -- etsf-bn-u<T> sipp UAS 198.18.41.50
    service VIP 198.18.42.1:5060/udp (kube-proxy rules, or the eTSF fast path)

Only 198.18.0.0/15 addresses, only namespaces named ``etsf-bn-*``.  Every process
runs under ``timeout`` in its own session and is killed in :meth:`Topo.teardown`,
which also deletes the namespaces (and with them every rule, veth and conntrack
entry they held).
"""
from __future__ import annotations

import time
from pathlib import Path

from lab.netns import Topology

NS_PREFIX = "etsf-bn-"
UAC = "198.18.40.1"
FLOOD_BASE = "198.18.40.100"
UPLINK = "198.18.40.254"
BRIDGE = "198.18.41.254"
POD = "198.18.41.10"
UAS = "198.18.41.50"
VIP = "198.18.42.1"
PORT = 5060
UPLINK_IF, UAC_IF, BR_IF, POD_HOST_IF, UAS_HOST_IF = "bnup", "bnc", "bnbr", "bnph", "bnuh"


def flood_addrs(n: int) -> list[str]:
    """The UAC's first n flood source addresses (/24)."""
    base = int(FLOOD_BASE.rsplit(".", 1)[1])
    return [f"198.18.40.{base + i}/24" for i in range(n)]


class Topo(Topology):
    def __init__(self, tag: str, work: Path, flood_sources: int = 0):
        super().__init__()
        self.tag = tag
        self.work = work
        self.flood_sources = flood_sources
        self.node = f"{NS_PREFIX}h{tag}"
        self.uac = f"{NS_PREFIX}c{tag}"
        self.pod = f"{NS_PREFIX}p{tag}"
        self.uas = f"{NS_PREFIX}u{tag}"

    @property
    def namespaces(self):
        return [self.node, self.uac, self.pod, self.uas]

    def setup(self):
        for ns in self.namespaces:
            self.netns(ns)
        h = self.node
        self.sh(h, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # conntrack table big enough for socket-per-call runs (per-netns on this kernel)
        self.sh(h, "sysctl", "-qw", "net.netfilter.nf_conntrack_max=262144", check=False)
        self.veth(h, UPLINK_IF, self.uac, UAC_IF, addrs=[f"{UPLINK}/24"],
                  peer_addrs=[f"{UAC}/24", *flood_addrs(self.flood_sources)])
        self.route(self.uac, "198.18.0.0/15", via=UPLINK)
        self.bridge(h, BR_IF, addrs=[f"{BRIDGE}/24"])
        for ns, hif, addr in ((self.pod, POD_HOST_IF, POD), (self.uas, UAS_HOST_IF, UAS)):
            self.bridged(h, BR_IF, hif, ns, f"{addr}/24", via=BRIDGE)
        # resolve neighbours once (no ARP in the first measured calls)
        self.sh(self.uac, "ping", "-c1", "-W1", POD, check=False)
        self.sh(self.pod, "ping", "-c1", "-W1", UAS, check=False)

    def popen(self, ns, args, log: Path, limit: float, cpu: str | None = None, env=None):
        return self.procs.start(ns, args, log, limit=limit, cpu=cpu, env=env)

    def teardown(self):
        self.close()
        time.sleep(0.2)
