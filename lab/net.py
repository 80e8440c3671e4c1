"""Lab networking: a switch netns holding two bridges, one netns per host and per SIP peer.

Nothing is created in the root network namespace.  Only 198.18.0.0/15 addresses are used.
"""
from __future__ import annotations

import os
import re
import signal
import time

from lab.common import (BR_MGMT, BR_SIP, MGMT_NET, NAME_PREFIX, PEERS, SIP_NET,
                        SWITCH_MGMT_ADDR, SWITCH_NS, SWITCH_SIP_ADDR, kill, run)


def ns_of(name: str) -> str:
    return f"{NAME_PREFIX}{name}"


def list_netns() -> list[str]:
    out = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


# netns names the lab creates: etsf-lab, etsf-<peer>, etsf-<prefix>sbcN (nothing else is touched)
LAB_NETNS_RE = re.compile(rf"^{NAME_PREFIX}([a-z0-9-]*sbc\d+|lab|{'|'.join(PEERS)})$")


def lab_netns() -> list[str]:
    return [n for n in list_netns() if LAB_NETNS_RE.match(n)]


def link_exists(ns: str, dev: str) -> bool:
    return run(["ip", "-n", ns, "link", "show", "dev", dev], check=False).returncode == 0


def _ensure_ns(ns: str) -> bool:
    if ns in list_netns():
        return False
    run(["ip", "netns", "add", ns])
    # no IPv6 (no link-local addresses either): the lab only ever uses 198.18.0.0/15
    run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
         "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"], check=False)
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    return True


def _ensure_addr(ns: str, dev: str, cidr: str) -> None:
    out = run(["ip", "-n", ns, "-4", "-o", "addr", "show", "dev", dev]).stdout
    if f" {cidr} " not in out:
        run(["ip", "-n", ns, "addr", "add", cidr, "dev", dev])


def _ensure_port(switch_dev: str, bridge: str, ns: str, inner_dev: str, cidr: str) -> None:
    """veth pair: `switch_dev` (in the switch, enslaved to `bridge`) <-> `inner_dev` in `ns`."""
    if link_exists(ns, inner_dev) and not link_exists(SWITCH_NS, switch_dev):
        run(["ip", "-n", ns, "link", "del", inner_dev])
    if not link_exists(SWITCH_NS, switch_dev):
        run(["ip", "-n", SWITCH_NS, "link", "add", switch_dev, "type", "veth",
             "peer", "name", inner_dev, "netns", ns])
    run(["ip", "-n", SWITCH_NS, "link", "set", switch_dev, "master", bridge, "up"])
    _ensure_addr(ns, inner_dev, cidr)
    run(["ip", "-n", ns, "link", "set", inner_dev, "up"])


def ensure_switch() -> bool:
    created = _ensure_ns(SWITCH_NS)
    for br, addr in ((BR_MGMT, SWITCH_MGMT_ADDR), (BR_SIP, SWITCH_SIP_ADDR)):
        if not link_exists(SWITCH_NS, br):
            run(["ip", "-n", SWITCH_NS, "link", "add", br, "type", "bridge",
                 "forward_delay", "0", "stp_state", "0"])
        _ensure_addr(SWITCH_NS, br, f"{addr}/24")
        run(["ip", "-n", SWITCH_NS, "link", "set", br, "up"])
    return created


def ensure_peers() -> None:
    for peer, octet in PEERS.items():
        ns = ns_of(peer)
        _ensure_ns(ns)
        _ensure_port(f"vp-{peer}", BR_SIP, ns, "sip0", f"{SIP_NET}.{octet}/24")


def ensure_host_net(name: str, octet: int) -> None:
    ns = ns_of(name)
    _ensure_ns(ns)
    _ensure_port(f"vm-{name}", BR_MGMT, ns, "mgmt0", f"{MGMT_NET}.{octet}/24")
    _ensure_port(f"vs-{name}", BR_SIP, ns, "sip0", f"{SIP_NET}.{octet}/24")


def netns_pids(ns: str) -> list[int]:
    cp = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in cp.stdout.split() if p.isdigit()]


def delete_netns(ns: str, timeout: float = 10) -> None:
    """Kill whatever still runs in `ns` (bounded), then delete it."""
    if ns not in list_netns():
        return
    deadline = time.monotonic() + timeout
    sig = signal.SIGTERM
    while time.monotonic() < deadline:
        pids = [p for p in netns_pids(ns) if p != os.getpid()]
        if not pids:
            break
        for p in pids:
            kill(p, sig)
        sig = signal.SIGKILL
        time.sleep(0.3)
    run(["ip", "netns", "delete", ns], check=False)


def delete_host_net(name: str) -> None:
    for dev in (f"vm-{name}", f"vs-{name}"):
        if SWITCH_NS in list_netns() and link_exists(SWITCH_NS, dev):
            run(["ip", "-n", SWITCH_NS, "link", "del", dev], check=False)
    delete_netns(ns_of(name))


def delete_switch_and_peers() -> None:
    for peer in PEERS:
        delete_netns(ns_of(peer))
    delete_netns(SWITCH_NS)
