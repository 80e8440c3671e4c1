"""Lab networking: a switch netns holding two bridges, one netns per host and per SIP peer.

Nothing is created in the root network namespace.  Only 198.18.0.0/15 addresses are used.
"""
from __future__ import annotations

import re

from lab.common import (BR_MGMT, BR_SIP, MGMT_NET, NAME_PREFIX, PEERS, SIP_NET,
                        SWITCH_MGMT_ADDR, SWITCH_NS, SWITCH_SIP_ADDR)
from lab.netns import (add_bridge, add_veth, create_netns, del_link, delete_netns, link_exists,
                       list_netns, netns_pids, set_link)

__all__ = ["delete_netns", "list_netns", "netns_pids"]   # hosts and cli use them through lab.net


def ns_of(name: str) -> str:
    return f"{NAME_PREFIX}{name}"


# netns names the lab creates: etsf-lab, etsf-<peer>, etsf-<prefix>sbcN (nothing else is touched)
LAB_NETNS_RE = re.compile(rf"^{NAME_PREFIX}([a-z0-9-]*sbc\d+|lab|{'|'.join(PEERS)})$")


def lab_netns() -> list[str]:
    return [n for n in list_netns() if LAB_NETNS_RE.match(n)]


def _ensure_port(switch_dev: str, bridge: str, ns: str, inner_dev: str, cidr: str) -> None:
    """veth pair: `switch_dev` (in the switch, enslaved to `bridge`) <-> `inner_dev` in `ns`."""
    if link_exists(ns, inner_dev) and not link_exists(SWITCH_NS, switch_dev):
        del_link(ns, inner_dev)
    if not link_exists(SWITCH_NS, switch_dev):
        add_veth(SWITCH_NS, switch_dev, ns, inner_dev)
    set_link(SWITCH_NS, switch_dev, master=bridge)
    set_link(ns, inner_dev, addrs=[cidr])


def ensure_switch() -> bool:
    created = create_netns(SWITCH_NS)
    for br, addr in ((BR_MGMT, SWITCH_MGMT_ADDR), (BR_SIP, SWITCH_SIP_ADDR)):
        if not link_exists(SWITCH_NS, br):
            add_bridge(SWITCH_NS, br, br_forward_delay=0, br_stp_state=0)
        set_link(SWITCH_NS, br, addrs=[f"{addr}/24"])
    return created


def ensure_peers() -> None:
    for peer, octet in PEERS.items():
        ns = ns_of(peer)
        create_netns(ns)
        _ensure_port(f"vp-{peer}", BR_SIP, ns, "sip0", f"{SIP_NET}.{octet}/24")


def ensure_host_net(name: str, octet: int) -> None:
    ns = ns_of(name)
    create_netns(ns)
    _ensure_port(f"vm-{name}", BR_MGMT, ns, "mgmt0", f"{MGMT_NET}.{octet}/24")
    _ensure_port(f"vs-{name}", BR_SIP, ns, "sip0", f"{SIP_NET}.{octet}/24")


def delete_host_net(name: str) -> None:
    for dev in (f"vm-{name}", f"vs-{name}"):
        if SWITCH_NS in list_netns() and link_exists(SWITCH_NS, dev):
            del_link(SWITCH_NS, dev)
    delete_netns(ns_of(name))


def delete_switch_and_peers() -> None:
    for peer in PEERS:
        delete_netns(ns_of(peer))
    delete_netns(SWITCH_NS)
