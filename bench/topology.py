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

import subprocess
import time
from pathlib import Path

from lab.procs import NsProcesses

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


def run(*cmd, check=True, timeout=120, inp=None):
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False, input=inp)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... failed ({r.returncode}): {r.stderr.strip()[:500]}")
    return r


class Topo:
    def __init__(self, tag: str, work: Path, flood_sources: int = 0):
        self.tag = tag
        self.work = work
        self.flood_sources = flood_sources
        self.node = f"{NS_PREFIX}h{tag}"
        self.uac = f"{NS_PREFIX}c{tag}"
        self.pod = f"{NS_PREFIX}p{tag}"
        self.uas = f"{NS_PREFIX}u{tag}"
        self.procs = NsProcesses()

    @property
    def namespaces(self):
        return [self.node, self.uac, self.pod, self.uas]

    def ns(self, ns, *cmd, check=True, timeout=120, inp=None):
        return run("ip", "netns", "exec", ns, *cmd, check=check, timeout=timeout, inp=inp)

    def setup(self):
        for ns in self.namespaces:
            run("ip", "netns", "del", ns, check=False)
            run("ip", "netns", "add", ns)
            self.ns(ns, "ip", "link", "set", "lo", "up")
            self.ns(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", check=False)
        h = self.node
        self.ns(h, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # conntrack table big enough for socket-per-call runs (per-netns on this kernel)
        self.ns(h, "sysctl", "-qw", "net.netfilter.nf_conntrack_max=262144", check=False)
        run("ip", "link", "add", UPLINK_IF, "netns", h, "type", "veth", "peer", "name", UAC_IF, "netns", self.uac)
        self.ns(h, "ip", "addr", "add", f"{UPLINK}/24", "dev", UPLINK_IF)
        self.ns(h, "ip", "link", "set", UPLINK_IF, "up")
        self.ns(self.uac, "ip", "addr", "add", f"{UAC}/24", "dev", UAC_IF)
        base = [int(x) for x in FLOOD_BASE.split(".")]
        for i in range(self.flood_sources):
            self.ns(self.uac, "ip", "addr", "add", f"198.18.40.{base[3] + i}/24", "dev", UAC_IF)
        self.ns(self.uac, "ip", "link", "set", UAC_IF, "up")
        self.ns(self.uac, "ip", "route", "add", "198.18.0.0/15", "via", UPLINK)
        self.ns(h, "ip", "link", "add", BR_IF, "type", "bridge")
        self.ns(h, "ip", "addr", "add", f"{BRIDGE}/24", "dev", BR_IF)
        self.ns(h, "ip", "link", "set", BR_IF, "up")
        for ns, hif, addr in ((self.pod, POD_HOST_IF, POD), (self.uas, UAS_HOST_IF, UAS)):
            run("ip", "link", "add", hif, "netns", h, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self.ns(h, "ip", "link", "set", hif, "master", BR_IF)
            self.ns(h, "ip", "link", "set", hif, "up")
            self.ns(ns, "ip", "addr", "add", f"{addr}/24", "dev", "eth0")
            self.ns(ns, "ip", "link", "set", "eth0", "up")
            self.ns(ns, "ip", "route", "add", "198.18.0.0/15", "via", BRIDGE)
        # resolve neighbours once (no ARP in the first measured calls)
        self.ns(self.uac, "ping", "-c1", "-W1", POD, check=False)
        self.ns(self.pod, "ping", "-c1", "-W1", UAS, check=False)

    def popen(self, ns, args, log: Path, limit: float, cpu: str | None = None, env=None):
        return self.procs.start(ns, args, log, limit=limit, cpu=cpu, env=env)

    def stop(self, p, timeout=30.0, sig=None):
        return self.procs.stop(p, timeout=timeout, sig=sig)

    def teardown(self):
        self.procs.kill_all()
        for ns in self.namespaces:
            run("ip", "netns", "del", ns, check=False)
        time.sleep(0.2)
