"""kube-proxy emulations for the benchmark "node".

* :func:`iptables_ruleset` -- kube-proxy **iptables mode**: ``KUBE-SERVICES`` with one
  match rule per service, ``KUBE-SVC-*`` chains (masquerade mark for traffic from
  outside the cluster CIDR, ``statistic --mode random`` endpoint choice),
  ``KUBE-SEP-*`` chains (hairpin masquerade mark + DNAT), ``KUBE-MARK-MASQ`` and
  ``KUBE-POSTROUTING`` (MASQUERADE of marked packets, ``--random-fully``), as
  kube-proxy (v1.2x) writes them; loaded with one ``iptables-restore`` transaction.
* :func:`nft_ruleset` -- kube-proxy **nftables mode**: one ``ip kube-proxy`` table,
  a ``service-ips`` verdict map ``daddr . proto . dport : goto service-*``,
  ``numgen random mod N vmap`` endpoint choice, ``mark-for-masquerade`` and the
  ``masquerade fully-random`` postrouting chain; loaded with one ``nft -f``.

The N emulated services are filler (cluster IPs 198.19.x.y, endpoints 198.18.128.0/17,
TCP/UDP alternating), each with 2 endpoints; the SIP service (the VIP, UDP 5060, one
endpoint = the Kamailio pod) is placed **last** so every new flow to it walks every
filler rule in iptables mode.  Only 198.18.0.0/15 addresses are generated.
"""
from __future__ import annotations

import hashlib
import ipaddress

CLUSTER_CIDR = "198.18.41.0/24"        # the "pod" network of the bench node
FILLER_EP_BASE = int(ipaddress.IPv4Address("198.18.128.0"))
FILLER_VIP_BASE = int(ipaddress.IPv4Address("198.19.0.0"))
MAX_SERVICES = 30000


def _ip(n: int) -> str:
    return str(ipaddress.IPv4Address(n))


def filler(n: int):
    """(name, vip, proto, port, [endpoints]) of the n filler services."""
    if not 0 <= n <= MAX_SERVICES:
        raise ValueError(f"services must be in 0..{MAX_SERVICES}")
    for i in range(n):
        vip = _ip(FILLER_VIP_BASE + 1 + i)                     # 198.19.0.1 ...
        eps = [_ip(FILLER_EP_BASE + 1 + 2 * i + k) for k in range(2)]
        yield f"ns{i // 100}/svc{i}:p", vip, ("tcp" if i % 2 == 0 else "udp"), 80 + (i % 7), eps


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16].upper()


def iptables_ruleset(n: int, vip: str, port: int, backend: str, bport: int) -> str:
    """iptables-restore input (nat table only; filter untouched)."""
    chains = [":KUBE-SERVICES - [0:0]", ":KUBE-POSTROUTING - [0:0]", ":KUBE-MARK-MASQ - [0:0]",
              ":KUBE-NODEPORTS - [0:0]"]
    rules = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
    ]
    svc_rules: list[str] = []

    def service(name, svip, proto, sport, eps, eport=None):
        sc = f"KUBE-SVC-{_h(name)}"
        chains.append(f":{sc} - [0:0]")
        svc_rules.append(f'-A KUBE-SERVICES -d {svip}/32 -p {proto} -m comment --comment "{name} cluster IP" '
                         f"-m {proto} --dport {sport} -j {sc}")
        rules.append(f'-A {sc} ! -s {CLUSTER_CIDR} -d {svip}/32 -p {proto} -m comment --comment "{name} cluster IP" '
                     f"-m {proto} --dport {sport} -j KUBE-MARK-MASQ")
        for k, ep in enumerate(eps):
            ec = f"KUBE-SEP-{_h(name + ep)}"
            chains.append(f":{ec} - [0:0]")
            left = len(eps) - k
            stat = (f"-m statistic --mode random --probability {1.0 / left:.11f} " if left > 1 else "")
            rules.append(f'-A {sc} -m comment --comment "{name} -> {ep}:{eport or sport}" {stat}-j {ec}')
            rules.append(f'-A {ec} -s {ep}/32 -m comment --comment "{name}" -j KUBE-MARK-MASQ')
            rules.append(f'-A {ec} -p {proto} -m comment --comment "{name}" -m {proto} '
                         f"-j DNAT --to-destination {ep}:{eport or sport}")

    for name, svip, proto, sport, eps in filler(n):
        service(name, svip, proto, sport, eps)
    service("sip/kamailio:sip", vip, "udp", port, [backend], bport)
    svc_rules.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports" '
                     "-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")
    return "\n".join(["*nat", *chains, *rules, *svc_rules, "COMMIT", ""])


def nft_ruleset(n: int, vip: str, port: int, backend: str, bport: int) -> str:
    """nft -f input: kube-proxy nftables mode (verdict maps)."""
    chains: list[str] = []
    elems: list[str] = []

    def service(name, svip, proto, sport, eps, eport=None):
        sc = f"service-{_h(name)}"
        ecs = []
        for ep in eps:
            ec = f"endpoint-{_h(name + ep)}"
            ecs.append(ec)
            chains.append(f"  chain {ec} {{\n    ip saddr {ep} jump mark-for-masquerade\n"
                          f"    meta l4proto {proto} dnat to {ep}:{eport or sport}\n  }}")
        vm = ", ".join(f"{k} : goto {ec}" for k, ec in enumerate(ecs))
        chains.append(f"  chain {sc} {{\n    ip daddr {svip} {proto} dport {sport} ip saddr != {CLUSTER_CIDR} "
                      f"jump mark-for-masquerade\n    numgen random mod {len(ecs)} vmap {{ {vm} }}\n  }}")
        elems.append(f"{svip} . {proto} . {sport} : goto {sc}")

    for name, svip, proto, sport, eps in filler(n):
        service(name, svip, proto, sport, eps)
    service("sip/kamailio:sip", vip, "udp", port, [backend], bport)
    out = ["table ip kube-proxy {",
           "  map service-ips {\n    type ipv4_addr . inet_proto . inet_service : verdict",
           "    elements = { " + ",\n      ".join(elems) + " }\n  }",
           "  chain mark-for-masquerade {\n    meta mark set meta mark or 0x4000\n  }",
           "  chain masquerading {\n    meta mark & 0x4000 == 0 return\n"
           "    meta mark set meta mark xor 0x4000\n    masquerade fully-random\n  }",
           "  chain services {\n    ip daddr . meta l4proto . th dport vmap @service-ips\n  }",
           "  chain nat-prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n"
           "    jump services\n  }",
           "  chain nat-output {\n    type nat hook output priority -100; policy accept;\n    jump services\n  }",
           "  chain nat-postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n"
           "    jump masquerading\n  }",
           *chains, "}", ""]
    return "\n".join(out)
