"""Packet builders and a small map-writing helper for the BPF tests."""
from __future__ import annotations

import ctypes
import ipaddress
import json
import subprocess
import sys

from scapy.all import IP, TCP, UDP, Dot1Q, Ether, IPv6, Raw  # noqa: F401

from etsf import bpf
from etsf import layout as L

SRC4 = "198.18.1.10"
DST4 = "198.18.0.1"
SRC6 = "2001:db8:1:2::10"
DST6 = "2001:db8::1"

H = L.Hook
M = L.Method
V = L.Verdict
R = L.Reason


def sip_request(method="INVITE", callid="a84b4c76e66710@pc33.example.com", cseq=314159,
                cseq_method=None, to_tag=None, body=b"", extra=b"", uri="sip:bob@example.com"):
    cm = cseq_method or method
    to = b"To: Bob <sip:bob@example.com>" + (b";tag=" + to_tag.encode() if to_tag else b"")
    hdrs = (f"{method} {uri} SIP/2.0\r\n".encode()
            + b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n"
            + b"Max-Forwards: 70\r\n"
            + to + b"\r\n"
            + b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
            + f"Call-ID: {callid}\r\n".encode()
            + f"CSeq: {cseq} {cm}\r\n".encode()
            + b"Contact: <sip:alice@pc33.example.com>\r\n"
            + extra
            + f"Content-Length: {len(body)}\r\n\r\n".encode())
    return hdrs + body


def sip_response(status=200, reason="OK", callid="a84b4c76e66710@pc33.example.com", cseq=314159,
                 cseq_method="INVITE", to_tag="a6c85cf"):
    return (f"SIP/2.0 {status} {reason}\r\n".encode()
            + b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n"
            + b"To: Bob <sip:bob@example.com>" + (f";tag={to_tag}".encode() if to_tag else b"")
            + b"\r\n"
            + b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
            + f"Call-ID: {callid}\r\n".encode()
            + f"CSeq: {cseq} {cseq_method}\r\n".encode()
            + b"Content-Length: 0\r\n\r\n")


# -- etsf_tm_txn: an ARRAY of sets of ways (etsf_tm_maps.h)
def sets_clear(m) -> None:
    """Every set of a set-associative table emptied (only the sets holding an entry are
    written)."""
    for k, v in m.items():
        if any(v):
            m.update(k, bytes(len(v)))


def tm_txns(m) -> list[L.TmTxn]:
    """The open transactions (ways with a tag) of the whole table."""
    return [w for _k, v in m.items() if any(v) for w in L.TmSet.from_bytes(v).way if w.tag]


def tm_key(callid: str, cseq: int, ifindex: int, method: int) -> L.TmTxnKey:
    return L.TmTxnKey(callid_hash=L.fnv1a64(callid.encode()), cseq=cseq, ifindex=ifindex, method=int(method))


def tm_get(m, key: L.TmTxnKey) -> L.TmTxn | None:
    """The transaction of key, as the programs find it (its set, its tag), else None."""
    return L.tm_get(m.lookup, key)


def tm_set_start(m, key: L.TmTxnKey, start_ns: int) -> None:
    """Rewrite the start time of key's transaction (it must be open)."""
    idx, tag = L.tm_slot(key)
    s = L.TmSet.from_bytes(m.lookup(L.tm_set_key(idx)))
    w = L.tm_find(s, tag)
    assert w is not None, "no such transaction"
    w.start_ns = start_ns
    m.update(L.tm_set_key(idx), bytes(s))


def admit_get(m, callid: str, cseq: int) -> L.AdmitTxn | None:
    """The admission decision for an INVITE, as the programs find it (its set, its tag)."""
    return L.admit_get(m.lookup, L.fnv1a64(callid.encode()), cseq)


def admit_put(m, callid: str, cseq: int, ts_ns: int, admitted: int) -> None:
    """Write a decision where the programs would (its own way, else a free one, else the
    oldest's); admitted None empties its way instead."""
    idx, tag = L.admit_slot(L.admit_key(L.fnv1a64(callid.encode()), cseq))
    s = L.AdmitSet.from_bytes(m.lookup(L.set_key(idx)))
    if admitted is None:
        w = L.way_find(s.way, tag)
        if w is not None:
            w.ts_ns = w.tag = w.admitted = 0
    else:
        assert L.way_place(s.way, tag, ts_ns, admitted)
    m.update(L.set_key(idx), bytes(s))


def eth():
    """Ethernet with both addresses given: scapy would otherwise resolve the destination
    through its route tables, ~1 s for an IPv6 packet."""
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def udp4(payload, src=SRC4, dst=DST4, sport=5060, dport=5060, vlan=None):
    l2 = eth()
    if vlan is not None:
        for v in ([vlan] if isinstance(vlan, int) else vlan):
            l2 = l2 / Dot1Q(vlan=v)
    return bytes(l2 / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(payload))


def udp6(payload, src=SRC6, dst=DST6, sport=5060, dport=5060):
    return bytes(eth() / IPv6(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(payload))


def tcp4(payload, src=SRC4, dst=DST4, sport=40000, dport=5060, flags="PA"):
    p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=src, dst=dst) / TCP(
        sport=sport, dport=dport, flags=flags, seq=1000, ack=1)
    if payload:
        p = p / Raw(payload)
    return bytes(p)


def default_policy(**kw) -> L.Policy:
    pol = L.Policy()
    pol.generation = kw.pop("generation", 1)
    pol.flags = kw.pop("flags", L.POL_F_VALID)
    ports = kw.pop("sip_ports", [5060])
    for i, p in enumerate(ports):
        pol.sip_ports[i] = p
    for i, p in enumerate(kw.pop("tls_ports", [5061])):
        pol.tls_ports[i] = p
    prio = {M.INVITE: L.Prio.HIGH, M.ACK: L.Prio.CRITICAL, M.BYE: L.Prio.CRITICAL,
            M.CANCEL: L.Prio.CRITICAL, M.RESPONSE: L.Prio.CRITICAL, M.PRACK: L.Prio.HIGH,
            M.UPDATE: L.Prio.HIGH, M.OPTIONS: L.Prio.LOW, M.REGISTER: L.Prio.NORMAL}
    prio.update(kw.pop("method_prio", {}))
    for m in range(L.METHODS):
        pol.method_prio[m] = prio.get(m, L.Prio.LOW)
    for i, v in enumerate(kw.pop("shed_below", [0, 1, 2, 3])):
        pol.shed_below[i] = v
    pol.agg_prefix_v4 = kw.pop("agg_prefix_v4", 32)
    pol.agg_prefix_v6 = kw.pop("agg_prefix_v6", 128)
    pol.dscp = kw.pop("dscp", 24)
    pol.skb_priority = kw.pop("skb_priority", 6)
    for cls, (rate, burst) in kw.pop("rates", {}).items():
        pol.rate[cls].rate_pps = rate
        pol.rate[cls].burst = burst
    assert not kw, kw
    return pol


class Env:
    def __init__(self, progs, maps, root):
        self.progs = progs
        self.maps = maps
        self.root = root
        self.ncpus = maps["etsf_stats"].ncpus

    # -- state
    def reset(self):
        self.set_ctl()
        for slot in range(L.POLICY_SLOTS):
            self.maps["etsf_policy"].update(slot.to_bytes(4, "little"), bytes(L.Policy()))
        self.maps["etsf_admit"].update(bytes(4), bytes(L.Admit()))
        for slot in range(L.POLICY_SLOTS):
            self.maps["etsf_ka_cfg"].update(slot.to_bytes(4, "little"), bytes(L.KaCfg()))
        self.maps["etsf_ka_stats"].update(bytes(4), bytes(L.KaStats()))
        for name in ("etsf_acl_v4", "etsf_acl_v6", "etsf_rl", "etsf_ka_id"):
            m = self.maps[name]
            for k in m.keys():
                m.delete(k)
        sets_clear(self.maps["etsf_admit_txn"])
        sets_clear(self.maps["etsf_tm_txn"])
        self.maps["etsf_last"].update(bytes(4), bytes(L.SipInfo()))

    def set_ctl(self, **kw):
        c = L.Ctl(flags=kw.pop("flags", L.CTL_F_RECORD))
        for k, v in kw.items():
            setattr(c, k, v)
        self.maps["etsf_ctl"].update(bytes(4), bytes(c))
        return c

    def ctl(self) -> L.Ctl:
        return L.Ctl.from_bytes(self.maps["etsf_ctl"].lookup(bytes(4)))

    def set_policy(self, pol=None, slot=0, activate=True, **kw):
        pol = pol or default_policy(**kw)
        self.maps["etsf_policy"].update(slot.to_bytes(4, "little"), bytes(pol))
        if activate:
            c = self.ctl()
            c.active_slot = slot
            self.maps["etsf_ctl"].update(bytes(4), bytes(c))
        return pol

    def acl(self, cidr, action, slot=0):
        net = ipaddress.ip_network(cidr, strict=False)
        if net.version == 4:
            k = L.AclV4Key(prefixlen=8 + net.prefixlen, slot=slot)
            k.addr[:] = list(net.network_address.packed)
            m = self.maps["etsf_acl_v4"]
        else:
            k = L.AclV6Key(prefixlen=8 + net.prefixlen, slot=slot)
            k.addr[:] = list(net.network_address.packed)
            m = self.maps["etsf_acl_v6"]
        m.update(bytes(k), int(action).to_bytes(4, "little"))

    # -- counters
    def counter(self, hook, method, verdict, reason):
        idx = L.stats_idx(hook, method, verdict, reason)
        vals = self.maps["etsf_stats"].lookup_percpu(idx.to_bytes(4, "little"))
        return sum(L.Counter.from_bytes(v).packets for v in vals)

    def counters_total(self):
        tot = {}
        for k, v in self.maps["etsf_stats"].items():
            n = 0
            for i in range(self.ncpus):
                n += L.Counter.from_bytes(v[i * 16:(i + 1) * 16]).packets
            if n:
                tot[int.from_bytes(k, "little")] = n
        return tot

    def admit(self) -> L.Admit:
        """etsf_admit summed over CPUs (tat_ns: the largest)."""
        tot = L.Admit()
        for v in self.maps["etsf_admit"].lookup_percpu(bytes(4)):
            a = L.Admit.from_bytes(v)
            for name, *_unused in L.Admit._fields_:
                if name == "tat_ns":
                    tot.tat_ns = max(tot.tat_ns, a.tat_ns)
                else:
                    setattr(tot, name, getattr(tot, name) + getattr(a, name))
        return tot

    def ka_stats(self) -> dict[str, int]:
        """etsf_ka_stats summed over CPUs."""
        tot = dict.fromkeys((n for n, *_unused in L.KaStats._fields_), 0)
        for v in self.maps["etsf_ka_stats"].lookup_percpu(bytes(4)):
            s = L.KaStats.from_bytes(v)
            for name in tot:
                tot[name] += getattr(s, name)
        return tot

    def last(self) -> L.SipInfo:
        return L.SipInfo.from_bytes(self.maps["etsf_last"].lookup(bytes(4)))

    # -- running
    def xdp(self, pkt, expect_verdict, expect_method, expect_reason, n=1):
        """Run pkt through xdp_sip n times; assert retval and exact counter delta."""
        before = self.counter(H.XDP, expect_method, expect_verdict, expect_reason)
        rets = []
        for _unused in range(n):
            ret, _unused1, _unused2 = bpf.test_run(self.progs["xdp_sip"].fd, pkt)
            rets.append(ret)
        after = self.counter(H.XDP, expect_method, expect_verdict, expect_reason)
        want = bpf.XDP_DROP if expect_verdict == V.DROP else bpf.XDP_PASS
        assert rets == [want] * n, (rets, self.last())
        assert after - before == n, (
            f"counter ({M(expect_method).name},{V(expect_verdict).name},"
            f"{R(expect_reason).name}) +{after - before}, last={self.last()}")
        return self.last()

    def xdp_raw(self, pkt):
        ret, _unused1, _unused2 = bpf.test_run(self.progs["xdp_sip"].fd, pkt)
        return ret, self.last()

    def tc(self, pkt, priority=0):
        skb = SkBuff()
        skb.priority = priority
        ret, out, _unused, ctx_out = bpf.test_run_ctx(self.progs["tc_sip_egress"].fd, pkt,
                                                      ctx=bytes(skb))
        return ret, out, SkBuff.from_buffer_copy(ctx_out.ljust(ctypes.sizeof(SkBuff), b"\0"))


class SkBuff(ctypes.Structure):
    """struct __sk_buff (uapi), fields used by BPF_PROG_TEST_RUN ctx in/out."""
    _fields_ = [
        ("len", ctypes.c_uint32), ("pkt_type", ctypes.c_uint32), ("mark", ctypes.c_uint32),
        ("queue_mapping", ctypes.c_uint32), ("protocol", ctypes.c_uint32),
        ("vlan_present", ctypes.c_uint32), ("vlan_tci", ctypes.c_uint32),
        ("vlan_proto", ctypes.c_uint32), ("priority", ctypes.c_uint32),
        ("ingress_ifindex", ctypes.c_uint32), ("ifindex", ctypes.c_uint32),
        ("tc_index", ctypes.c_uint32), ("cb", ctypes.c_uint32 * 5), ("hash", ctypes.c_uint32),
        ("tc_classid", ctypes.c_uint32), ("data", ctypes.c_uint32),
        ("data_end", ctypes.c_uint32), ("napi_id", ctypes.c_uint32),
        ("family", ctypes.c_uint32), ("remote_ip4", ctypes.c_uint32),
        ("local_ip4", ctypes.c_uint32), ("remote_ip6", ctypes.c_uint32 * 4),
        ("local_ip6", ctypes.c_uint32 * 4), ("remote_port", ctypes.c_uint32),
        ("local_port", ctypes.c_uint32), ("data_meta", ctypes.c_uint32),
        ("flow_keys", ctypes.c_uint64), ("tstamp", ctypes.c_uint64),
        ("wire_len", ctypes.c_uint32), ("gso_segs", ctypes.c_uint32),
        ("sk", ctypes.c_uint64), ("gso_size", ctypes.c_uint32),
        ("tstamp_type", ctypes.c_uint8), ("_pad", ctypes.c_uint8 * 3),
        ("hwtstamp", ctypes.c_uint64),
    ]


# sends each request from src:sport to dst:5060, waits for its answer (bounded: one timeout per
# request), prints [hex, address, port] or null per request as JSON
_UDP_CLIENT = r"""
import json, socket, sys
src, dst, sport, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
fam = socket.AF_INET6 if ":" in src else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((src, sport))
s.settimeout(timeout)
out = []
for req in json.loads(sys.stdin.read()):
    s.sendto(bytes.fromhex(req), (dst, 5060))
    try:
        data, addr = s.recvfrom(65535)
        out.append([data.hex(), addr[0], addr[1]])
    except socket.timeout:
        out.append(None)
print(json.dumps(out))
"""


def udp_exchange(ns: str, reqs, v6: bool, sport: int, timeout_s: float):
    """Send each request from a real UDP socket in netns `ns` (SRC -> DST:5060) and collect the
    answers: [(bytes, address, port) or None]."""
    src, dst = (SRC6, DST6) if v6 else (SRC4, DST4)
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", _UDP_CLIENT, src, dst, str(sport),
                        str(timeout_s)], input=json.dumps([q.hex() for q in reqs]), capture_output=True,
                       text=True, timeout=timeout_s * len(reqs) + 30, check=True)
    return [None if a is None else (bytes.fromhex(a[0]), a[1], a[2]) for a in json.loads(r.stdout)]
