"""tc_fastpath through BPF_PROG_TEST_RUN on the real kernel.

Fixture packets go in, the rewritten packet comes out of the kernel and is
parsed and checksum-verified with scapy (IPv4 header + UDP/TCP checksums for
IPv4 and IPv6).  Packets never leave the process: this is how the IPv6 rewrite
is verified (no IPv6 range is allowed for real traffic here).

Services are compiled with etsf.fastpath.plan_slot/write_slot (the code policy
apply uses) into the real pinned maps; egress of each backend is given
explicitly (redirect_peer to a made-up ifindex: test_run does not execute the
redirect, it returns TC_ACT_REDIRECT with the rewritten packet).
"""
from __future__ import annotations

import pytest
from scapy.all import IP, TCP, UDP, Ether, IPv6, Raw

from etsf import bpf, fastpath
from etsf import layout as L
from etsf import policy as P

from .helpers import SkBuff, eth, sip_request, sip_response, tcp4, udp4, udp6

TC_ACT_OK = 0
TC_ACT_REDIRECT = 7
VIP4, VIP6 = "198.18.5.100", "2001:db8:5::100"
CLIENT4, CLIENT6 = "198.18.0.1", "2001:db8:1::1"
B4 = ["198.18.1.11", "198.18.1.12", "198.18.1.13"]
B6 = ["2001:db8:2::11", "2001:db8:2::12", "2001:db8:2::13"]
MAC_CLIENT, MAC_HOST = "02:00:00:00:00:01", "02:00:00:00:00:02"
FP = L.FpReason


def svc(name, vip, backends, port=5060, protocol="udp", bport=5070):
    return {"name": name, "vip": vip, "port": port, "protocol": protocol, "affinity": "call-id",
            "backends": [{"address": a, "port": bport, "weight": 1} for a in backends]}


SERVICES = [svc("v4", VIP4, B4), svc("v6", VIP6, B6), svc("v4tcp", VIP4, B4, protocol="tcp", bport=5080),
            svc("v6tcp", VIP6, B6, protocol="tcp", bport=5080)]


@pytest.fixture(scope="module")
def fp(loaded, objects):
    progs = bpf.load_object(objects["tc_fastpath.bpf.o"], loaded["root"])
    maps = {n: bpf.open_map(n, loaded["root"]) for n in fastpath.FP_MAPS}
    yield {"prog": progs["tc_fastpath"], "maps": maps, "root": loaded["root"]}
    for m in maps.values():
        m.close()
    for p in progs.values():
        p.close()


class Fp:
    def __init__(self, env, fp):
        self.env, self.prog, self.maps, self.root = env, fp["prog"], fp["maps"], fp["root"]

    def clear(self):
        for name in (fastpath.MAP_SVC, fastpath.MAP_AFF, fastpath.MAP_FLOW):
            m = self.maps[name]
            for k in m.keys():
                m.delete(k)
        for i in range(L.FP_BACKENDS_MAX):
            self.maps[fastpath.MAP_BACKENDS].update(i.to_bytes(4, "little"), bytes(L.FpBackend()))

    def apply(self, services, target, active):
        """What policy.apply does for services: plan, write, flip ctl, release."""
        with P.Maps(self.root) as maps:
            plan = fastpath.plan_slot(services, target, active, maps, resolve=False)
            # explicit egress: redirect_peer into made-up veth ifindexes
            for i, e in plan["backends"].items():
                if e.flags & L.fp_b_slot(target):
                    e.flags |= L.FP_B_L2 | L.FP_B_PEER
                    e.ifindex = 1000 + i
                    e.mac[:] = [0x02, 0xbe, 0, 0, 0, i & 0xff]
                    e.smac[:] = [0x02, 0x40, 0, 0, 0, i & 0xff]
            fastpath.write_slot(plan, maps)
            c = self.env.ctl()
            c.active_slot = target
            c.generation += 1
            self.env.maps["etsf_ctl"].update(bytes(4), bytes(c))
            fastpath.release_slot(active, maps, plan)
        return plan

    def backends(self):
        out = {}
        for i in range(L.FP_BACKENDS_MAX):
            b = L.FpBackend.from_bytes(self.maps[fastpath.MAP_BACKENDS].lookup(i.to_bytes(4, "little")))
            if b.family:
                out[i] = b
        return out

    def bid(self, addr, port):
        for i, b in self.backends().items():
            if fastpath.addr_str(b.family, b.addr) == addr and b.port == port:
                return i
        raise KeyError(addr)

    def set_up(self, addr, port, up):
        i = self.bid(addr, port)
        b = self.backends()[i]
        b.up = 1 if up else 0
        self.maps[fastpath.MAP_BACKENDS].update(i.to_bytes(4, "little"), bytes(b))

    def reason(self, r):
        vals = self.maps[fastpath.MAP_STATS].lookup_percpu(int(r).to_bytes(4, "little"))
        return sum(L.Counter.from_bytes(v).packets for v in vals)

    def bstat(self, i):
        vals = self.maps[fastpath.MAP_BSTATS].lookup_percpu(i.to_bytes(4, "little"))
        tot = {f: 0 for f, *_rest in L.FpBstat._fields_}
        for v in vals:
            s = L.FpBstat.from_bytes(v)
            for f in tot:
                tot[f] += getattr(s, f)
        return tot

    def run(self, pkt, ingress_ifindex=1):
        skb = SkBuff()
        skb.ingress_ifindex = ingress_ifindex       # as on a real interface (lo here)
        ret, out, _ns, _ctx = bpf.test_run_ctx(self.prog.fd, pkt, ctx=bytes(skb))
        return ret, out[: len(pkt)]

    def dst(self, sip, **kw):
        """IPv4 destination of a UDP SIP message to VIP4 after tc_fastpath."""
        return Ether(self.run(udp4(sip, src=CLIENT4, dst=VIP4, dport=5060, **kw))[1])[IP].dst


@pytest.fixture
def f(env, fp):
    x = Fp(env, fp)
    x.clear()
    x.apply(SERVICES, target=0, active=1)
    return x


def check_csums(out: bytes):
    """Re-compute every checksum with scapy and compare with the kernel's."""
    pkt = Ether(out)
    l3 = pkt[IP] if IP in pkt else pkt[IPv6]
    l4 = pkt[UDP] if UDP in pkt else pkt[TCP]
    if IP in pkt:
        got = pkt[IP].chksum
        p2 = Ether(out)
        del p2[IP].chksum
        assert Ether(bytes(p2))[IP].chksum == got, "IPv4 header checksum"
    got = l4.chksum
    if UDP in pkt and IP in pkt and got == 0:
        return pkt                     # IPv4 UDP without checksum stays without
    p2 = Ether(out)
    del (p2[UDP] if UDP in p2 else p2[TCP]).chksum
    want = (Ether(bytes(p2))[UDP] if UDP in pkt else Ether(bytes(p2))[TCP]).chksum
    assert want == got, f"L4 checksum {got:#x} != {want:#x}"
    assert l3 is not None
    return pkt


def maglev_backend(f, callid: str, addrs, bport=5070):
    """The backend the Python Maglev table picks for this Call-ID (all up)."""
    table = fastpath.maglev([(f"{a}|{bport}", 1) for a in addrs])
    return addrs[table[L.fnv1a64(callid.encode()) % L.FP_RING]]


# ---------------------------------------------------------------------------


def test_forward_v4_rewrite_checksums_and_maglev(f):
    before = f.reason(FP.FWD)
    callid = "fp-v4-1@198.18.0.1"
    ret, out = f.run(udp4(sip_request("INVITE", callid=callid), src=CLIENT4, dst=VIP4,
                          sport=5062, dport=5060))
    assert ret == TC_ACT_REDIRECT
    pkt = check_csums(out)
    want = maglev_backend(f, callid, B4)
    assert pkt[IP].dst == want and pkt[UDP].dport == 5070
    assert pkt[IP].src == CLIENT4 and pkt[UDP].sport == 5062
    i = f.bid(want, 5070)
    assert pkt[Ether].dst == f"02:be:00:00:00:{i:02x}" and pkt[Ether].src == f"02:40:00:00:00:{i:02x}"
    assert bytes(pkt[Raw].load) == sip_request("INVITE", callid=callid)
    assert f.reason(FP.FWD) == before + 1
    assert f.bstat(i)["dialogs"] >= 1


def test_every_message_of_a_dialog_same_backend_and_spread(f):
    seen = {}
    for n in range(60):
        callid = f"spread-{n}@198.18.0.1"
        msgs = [sip_request("INVITE", callid=callid),
                sip_request("INVITE", callid=callid),                      # retransmission
                sip_request("ACK", callid=callid, cseq_method="ACK", to_tag="t1"),
                sip_request("BYE", callid=callid, cseq=2, to_tag="t1"),
                sip_response(200, callid=callid, cseq=2, cseq_method="BYE")]
        dsts = set()
        for m in msgs:
            ret, out = f.run(udp4(m, src=CLIENT4, dst=VIP4, sport=5062, dport=5060))
            assert ret == TC_ACT_REDIRECT
            dsts.add(check_csums(out)[IP].dst)
        assert len(dsts) == 1, (callid, dsts)
        seen[callid] = dsts.pop()
        assert seen[callid] == maglev_backend(f, callid, B4)
    assert set(seen.values()) == set(B4), "60 Call-IDs spread over all 3 backends"


def test_return_path_v4_source_becomes_vip(f):
    callid = "ret-v4@198.18.0.1"
    ret, out = f.run(udp4(sip_request("INVITE", callid=callid), src=CLIENT4, dst=VIP4,
                          sport=5062, dport=5060))
    b = Ether(out)[IP].dst
    before = f.reason(FP.RET)
    reply = bytes(Ether(src="02:be:00:00:00:01", dst="02:40:00:00:00:01")
                  / IP(src=b, dst=CLIENT4) / UDP(sport=5070, dport=5062)
                  / Raw(sip_response(180, "Ringing", callid=callid)))
    ret, out = f.run(reply)
    assert ret == TC_ACT_REDIRECT
    pkt = check_csums(out)
    assert pkt[IP].src == VIP4 and pkt[UDP].sport == 5060
    assert pkt[IP].dst == CLIENT4 and pkt[UDP].dport == 5062
    assert f.reason(FP.RET) == before + 1
    # a backend's own traffic to someone else (e.g. the UAS) is not touched
    other = bytes(Ether() / IP(src=b, dst="198.18.1.50") / UDP(sport=5070, dport=5060)
                  / Raw(sip_request("INVITE", callid=callid)))
    ret, out = f.run(other)
    assert ret == TC_ACT_OK and out == other


def test_forward_and_return_v6_checksums(f):
    callid = "fp-v6@[2001:db8:1::1]"
    ret, out = f.run(udp6(sip_request("INVITE", callid=callid), src=CLIENT6, dst=VIP6,
                          sport=5062, dport=5060))
    assert ret == TC_ACT_REDIRECT
    pkt = check_csums(out)
    assert pkt[IPv6].dst == maglev_backend(f, callid, B6) and pkt[UDP].dport == 5070
    b = pkt[IPv6].dst
    for m in (sip_request("ACK", callid=callid, cseq_method="ACK", to_tag="x"),
              sip_request("BYE", callid=callid, cseq=2, to_tag="x")):
        ret, out = f.run(udp6(m, src=CLIENT6, dst=VIP6, sport=5062, dport=5060))
        assert ret == TC_ACT_REDIRECT and check_csums(out)[IPv6].dst == b
    reply = bytes(eth() / IPv6(src=b, dst=CLIENT6) / UDP(sport=5070, dport=5062)
                  / Raw(sip_response(200, callid=callid)))
    ret, out = f.run(reply)
    assert ret == TC_ACT_REDIRECT
    pkt = check_csums(out)
    assert pkt[IPv6].src == VIP6 and pkt[UDP].sport == 5060 and pkt[IPv6].dst == CLIENT6


def test_udp_zero_checksum_v4_stays_zero(f):
    raw = bytearray(udp4(sip_request("INVITE", callid="zero@x"), src=CLIENT4, dst=VIP4, dport=5060))
    raw[14 + 20 + 6: 14 + 20 + 8] = b"\0\0"
    ret, out = f.run(bytes(raw))
    assert ret == TC_ACT_REDIRECT
    pkt = check_csums(out)
    assert pkt[UDP].chksum == 0 and pkt[IP].dst in B4


def test_tcp_per_segment_connection_pinned(f):
    ret, out = f.run(tcp4(b"", src=CLIENT4, dst=VIP4, sport=40001, dport=5060, flags="S"))
    assert ret == TC_ACT_REDIRECT
    pkt = check_csums(out)
    b = pkt[IP].dst
    assert b in B4 and pkt[TCP].dport == 5080
    for payload in (sip_request("INVITE", callid="tcp-1@x"), b"continuation of a message\r\n"):
        ret, out = f.run(tcp4(payload, src=CLIENT4, dst=VIP4, sport=40001, dport=5060))
        assert ret == TC_ACT_REDIRECT
        pkt = check_csums(out)
        assert pkt[IP].dst == b and pkt[TCP].dport == 5080
    reply = bytes(Ether() / IP(src=b, dst=CLIENT4) / TCP(sport=5080, dport=40001, flags="SA", seq=5, ack=1001))
    ret, out = f.run(reply)
    assert ret == TC_ACT_REDIRECT
    pkt = check_csums(out)
    assert pkt[IP].src == VIP4 and pkt[TCP].sport == 5060
    # a mid-stream segment of an unknown connection is not ours
    before = f.reason(FP.TCP_NO_FLOW)
    seg = tcp4(b"x", src=CLIENT4, dst=VIP4, sport=40999, dport=5060)
    ret, out = f.run(seg)
    assert ret == TC_ACT_OK and out == seg and f.reason(FP.TCP_NO_FLOW) == before + 1


def test_tcp_v6_rewrite_checksums(f):
    syn = bytes(eth() / IPv6(src=CLIENT6, dst=VIP6) / TCP(sport=40002, dport=5060, flags="S", seq=7))
    ret, out = f.run(syn)
    assert ret == TC_ACT_REDIRECT
    pkt = check_csums(out)
    b = pkt[IPv6].dst
    assert b in B6 and pkt[TCP].dport == 5080
    seg = bytes(eth() / IPv6(src=CLIENT6, dst=VIP6) / TCP(sport=40002, dport=5060, flags="PA", seq=8, ack=1)
                / Raw(sip_request("INVITE", callid="tcp6@x")))
    ret, out = f.run(seg)
    assert ret == TC_ACT_REDIRECT and check_csums(out)[IPv6].dst == b
    reply = bytes(eth() / IPv6(src=b, dst=CLIENT6) / TCP(sport=5080, dport=40002, flags="SA", seq=1, ack=8))
    ret, out = f.run(reply)
    assert ret == TC_ACT_REDIRECT
    pkt = check_csums(out)
    assert pkt[IPv6].src == VIP6 and pkt[TCP].sport == 5060


@pytest.mark.parametrize("case", ["unknown_vip", "fragment", "not_sip", "no_callid", "bypass",
                                  "deadman", "all_down"])
def test_fallbacks_unchanged_and_counted(f, case):
    pkt = udp4(sip_request("INVITE", callid=f"fb-{case}@x"), src=CLIENT4, dst=VIP4, dport=5060)
    reason = {"unknown_vip": FP.NOT_SERVICE, "fragment": FP.FRAGMENT, "not_sip": FP.NOT_SIP,
              "no_callid": FP.NOT_SIP, "bypass": FP.BYPASS, "deadman": FP.DEADMAN,
              "all_down": FP.NO_BACKEND}[case]
    if case == "unknown_vip":
        pkt = udp4(sip_request("INVITE"), src=CLIENT4, dst="198.18.5.101", dport=5060)
    elif case == "fragment":
        pkt = bytes(Ether() / IP(src=CLIENT4, dst=VIP4, flags="MF") / UDP(sport=5060, dport=5060)
                    / Raw(sip_request("INVITE")))
    elif case == "not_sip":
        pkt = udp4(b"\x80\x00hello RTP-ish bytes", src=CLIENT4, dst=VIP4, dport=5060)
    elif case == "no_callid":
        pkt = udp4(b"OPTIONS sip:x SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n", src=CLIENT4, dst=VIP4, dport=5060)
    elif case == "bypass":
        c = f.env.ctl()
        c.bypass = 1
        f.env.maps["etsf_ctl"].update(bytes(4), bytes(c))
    elif case == "deadman":
        c = f.env.ctl()
        c.deadman_ns = 1_000_000
        c.heartbeat_ns = 1
        f.env.maps["etsf_ctl"].update(bytes(4), bytes(c))
    elif case == "all_down":
        for a in B4:
            f.set_up(a, 5070, False)
    before = f.reason(reason)
    ret, out = f.run(pkt)
    assert ret == TC_ACT_OK
    assert out == pkt, "fallback packets go to the stack unchanged"
    assert f.reason(reason) == before + 1


def test_down_backend_no_new_dialogs_existing_stay(f):
    # find Call-IDs mapped to each backend
    by_b = {a: [] for a in B4}
    for n in range(200):
        c = f"h-{n}@x"
        by_b[maglev_backend(f, c, B4)].append(c)
    down = B4[1]
    old = by_b[down][0]                 # an existing dialog of the backend taken down
    ret, out = f.run(udp4(sip_request("INVITE", callid=old), src=CLIENT4, dst=VIP4, dport=5060))
    assert Ether(out)[IP].dst == down
    others = {c: f.dst(sip_request("INVITE", callid=c)) for a in (B4[0], B4[2]) for c in by_b[a][:5]}
    f.set_up(down, 5070, False)
    dialogs_before = f.bstat(f.bid(down, 5070))["dialogs"]
    for c in by_b[down][1:20]:          # new dialogs that Maglev maps to it go elsewhere
        ret, out = f.run(udp4(sip_request("INVITE", callid=c), src=CLIENT4, dst=VIP4, dport=5060))
        assert ret == TC_ACT_REDIRECT and Ether(out)[IP].dst in (B4[0], B4[2])
    assert f.bstat(f.bid(down, 5070))["dialogs"] == dialogs_before
    # in-dialog traffic of its existing dialog still reaches it (drain), others untouched
    ret, out = f.run(udp4(sip_request("BYE", callid=old, to_tag="t"), src=CLIENT4, dst=VIP4, dport=5060))
    assert Ether(out)[IP].dst == down
    for c, b in others.items():
        ret, out = f.run(udp4(sip_request("BYE", callid=c, to_tag="t"), src=CLIENT4, dst=VIP4, dport=5060))
        assert Ether(out)[IP].dst == b


def test_slot_swap_remove_backend_moves_only_its_calls(f):
    calls = [f"rm-{n}@x" for n in range(150)]
    first = {c: f.dst(sip_request("INVITE", callid=c)) for c in calls}
    gone = B4[2]
    ids_before = {a: f.bid(a, 5070) for a in B4}
    # the new policy is written into slot 1 (inactive): nothing changes until the flip
    with P.Maps(f.root) as maps:
        plan = fastpath.plan_slot([svc("v4", VIP4, B4[:2])], 1, 0, maps, resolve=False)
        for i, e in plan["backends"].items():
            if e.flags & L.fp_b_slot(1):
                e.flags |= L.FP_B_L2 | L.FP_B_PEER
                e.ifindex = 1000 + i
        fastpath.write_slot(plan, maps)
    c0 = calls[0]
    assert f.dst(sip_request("ACK", callid=c0, to_tag="t")) == first[c0]
    c = f.env.ctl()
    c.active_slot = 1
    f.env.maps["etsf_ctl"].update(bytes(4), bytes(c))
    with P.Maps(f.root) as maps:
        fastpath.release_slot(0, maps, plan)
        assert fastpath.decode_slot(1, maps)[0]["backends"] == [
            {"address": a, "port": 5070, "weight": 1} for a in B4[:2]]
        assert fastpath.decode_slot(0, maps) == []
    assert {a: f.bid(a, 5070) for a in B4[:2]} == {a: ids_before[a] for a in B4[:2]}, "stable ids"
    moved = 0
    for cid in calls:
        ret, out = f.run(udp4(sip_request("BYE", callid=cid, to_tag="t"), src=CLIENT4, dst=VIP4, dport=5060))
        now = Ether(out)[IP].dst
        if first[cid] == gone:
            assert now in B4[:2]
            moved += 1
        else:
            assert now == first[cid], "a call of a remaining backend moved"
    assert moved > 0
    # the old VIP:port in slot 0 is gone with the flip: TCP service was removed
    ret, _out = f.run(tcp4(b"", src=CLIENT4, dst=VIP4, sport=40100, dport=5060, flags="S"))
    assert ret == TC_ACT_OK


def test_maglev_minimal_disruption_and_weights():
    names = [(f"198.18.1.{i}|5060", 1) for i in range(10, 15)]
    t1 = fastpath.maglev(names)
    t2 = fastpath.maglev(names[:2] + names[3:])
    assert len(t1) == L.FP_RING and set(t1) == set(range(5))
    counts = [t1.count(i) for i in range(5)]
    assert max(counts) - min(counts) <= 1           # balanced
    remap = {0: 0, 1: 1, 3: 2, 4: 3}
    kept = sum(1 for a, b in zip(t1, t2) if a != 2 and remap[a] == b)
    moved_others = sum(1 for a in t1 if a != 2) - kept
    assert moved_others / L.FP_RING < 0.05, moved_others    # Maglev: few other buckets move
    w = fastpath.maglev([("a", 1), ("b", 3)])
    assert abs(w.count(1) / w.count(0) - 3) < 0.05
