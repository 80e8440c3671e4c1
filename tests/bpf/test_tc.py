"""tc_sip_egress: marking of locally generated SIP (DSCP + skb->priority)."""
from scapy.all import IP, UDP, Dot1Q, Ether, IPv6

from etsf import bpf
from etsf import layout as L

from .helpers import M, R, V, H, eth, sip_request, sip_response, tcp4, udp4


def tc_expect(env, pkt, verdict, method, reason, priority=0):
    before = env.counter(H.TC_EGRESS, method, verdict, reason)
    ret, out, skb = env.tc(pkt, priority)
    after = env.counter(H.TC_EGRESS, method, verdict, reason)
    assert ret == bpf.TC_ACT_OK
    assert after - before == 1, (after - before, env.last())
    return out, skb


def test_mark_ipv4(env):
    env.set_policy(flags=L.POL_F_VALID | L.POL_F_MARK, dscp=24, skb_priority=6)
    pkt = udp4(sip_request("INVITE"), sport=5060, dport=5060)
    out, skb = tc_expect(env, pkt, V.MARK, M.INVITE, R.OK)
    ip = Ether(out)[IP]
    assert ip.tos >> 2 == 24
    assert skb.priority == 6
    chk = ip.chksum
    del ip.chksum
    assert IP(bytes(ip)).chksum == chk          # header checksum still valid
    assert out[14 + 20:] == pkt[14 + 20:]       # nothing else changed


def test_mark_ipv4_keeps_ecn(env):
    env.set_policy(flags=L.POL_F_VALID | L.POL_F_MARK, dscp=46, skb_priority=7)
    raw = bytes(Ether() / IP(src="198.18.0.1", dst="198.18.1.1", tos=0x03)
                / UDP(sport=5060, dport=5060) / sip_response(200))
    out, skb = tc_expect(env, raw, V.MARK, M.RESPONSE, R.OK)
    ip = Ether(out)[IP]
    assert ip.tos == (46 << 2) | 0x03
    chk = ip.chksum
    del ip.chksum
    assert IP(bytes(ip)).chksum == chk
    assert skb.priority == 7


def test_mark_ipv6(env):
    env.set_policy(flags=L.POL_F_VALID | L.POL_F_MARK, dscp=24, skb_priority=5)
    raw = bytes(eth() / IPv6(src="2001:db8::1", dst="2001:db8::2", tc=0x01, fl=0xABCDE)
                / UDP(sport=5060, dport=5060) / sip_request("OPTIONS"))
    out, skb = tc_expect(env, raw, V.MARK, M.OPTIONS, R.OK)
    ip6 = Ether(out)[IPv6]
    assert ip6.tc == (24 << 2) | 0x01
    assert ip6.fl == 0xABCDE
    assert skb.priority == 5


def test_mark_rewrites_every_dscp_with_a_valid_checksum(env):
    """The TOS byte is rewritten in place with the checksum fixed by RFC 1624: every DSCP over
    every ECN value and a spread of header checksums (IP ids), with and without a VLAN tag."""
    payload = sip_response(200)
    seen = set()
    for dscp in range(64):
        env.set_policy(flags=L.POL_F_VALID | L.POL_F_MARK, dscp=dscp, skb_priority=1)
        for ecn in range(4):
            ip_id = (dscp * 4 + ecn) * 257 % 65536
            vlan = 7 if ecn == 2 else None
            l2 = Ether() / Dot1Q(vlan=vlan) if vlan is not None else Ether()
            raw = bytes(l2 / IP(src="198.18.0.1", dst="198.18.1.1", tos=(37 << 2) | ecn, id=ip_id)
                        / UDP(sport=5060, dport=5060) / payload)
            out, _skb = tc_expect(env, raw, V.MARK, M.RESPONSE, R.OK)
            ip = Ether(out)[IP]
            assert ip.tos == (dscp << 2) | ecn, (dscp, ecn, ip.tos)
            chk = ip.chksum
            seen.add(chk)
            del ip.chksum
            assert IP(bytes(ip)).chksum == chk, (dscp, ecn, hex(chk))
            l3 = 18 if vlan is not None else 14
            assert out[l3 + 12:] == raw[l3 + 12:] and out[:l3 + 1] == raw[:l3 + 1]
    assert len(seen) > 200                       # the checksums were spread, not one value


def test_mark_ipv6_every_dscp_keeps_ecn_and_flow_label(env):
    # one scapy build (an IPv6 build looks up routes), then only the traffic class varies
    base = bytearray(bytes(eth() / IPv6(src="2001:db8::1", dst="2001:db8::2", fl=0xF0F0F)
                           / UDP(sport=5060, dport=5060) / sip_request("OPTIONS")))
    for dscp in range(64):
        env.set_policy(flags=L.POL_F_VALID | L.POL_F_MARK, dscp=dscp, skb_priority=1)
        ecn = dscp % 4
        tc = (9 << 2) | ecn
        raw = bytearray(base)
        raw[14] = 0x60 | tc >> 4
        raw[15] = (tc & 0x0F) << 4 | 0x0F
        out, _skb = tc_expect(env, bytes(raw), V.MARK, M.OPTIONS, R.OK)
        want = (dscp << 2) | ecn
        assert (out[14], out[15]) == (0x60 | want >> 4, (want & 0x0F) << 4 | 0x0F), dscp
        assert out[16:] == raw[16:] and out[:14] == raw[:14]


def test_mark_tcp(env):
    env.set_policy(flags=L.POL_F_VALID | L.POL_F_MARK)
    out, _unused = tc_expect(env, tcp4(sip_request("REGISTER"), sport=40000, dport=5060), V.MARK,
                             M.REGISTER, R.OK)
    assert Ether(out)[IP].tos >> 2 == 24


def test_no_mark_flag(env):
    env.set_policy(flags=L.POL_F_VALID)
    pkt = udp4(sip_request("INVITE"))
    out, skb = tc_expect(env, pkt, V.PASS, M.INVITE, R.OK, priority=3)
    assert out == pkt and skb.priority == 3


def test_tc_no_policy(env):
    pkt = udp4(sip_request("BYE"))
    out, _unused = tc_expect(env, pkt, V.PASS, M.BYE, R.NO_POLICY)
    assert out == pkt


def test_tc_bypass(env):
    env.set_policy(flags=L.POL_F_VALID | L.POL_F_MARK)
    env.set_ctl(bypass=1)
    pkt = udp4(sip_request("INVITE"))
    out, _unused = tc_expect(env, pkt, V.PASS, M.UNKNOWN, R.BYPASS)
    assert out == pkt


def test_tc_non_sip_untouched(env):
    env.set_policy(flags=L.POL_F_VALID | L.POL_F_MARK)
    pkt = udp4(b"hello", sport=40000, dport=53)
    out, _unused = tc_expect(env, pkt, V.PASS, M.UNKNOWN, R.NOT_SIP_PORT)
    assert out == pkt
    pkt = udp4(b"\x00\x01junk")
    out, _unused = tc_expect(env, pkt, V.PASS, M.UNKNOWN, R.NOT_SIP)
    assert out == pkt


def test_tc_tls_counted(env):
    env.set_policy(flags=L.POL_F_VALID | L.POL_F_MARK)
    tc_expect(env, tcp4(b"\x17\x03\x03", sport=5061, dport=41000), V.PASS, M.UNKNOWN, R.TLS)


def test_tc_records_parse(env):
    env.set_policy(flags=L.POL_F_VALID | L.POL_F_MARK)
    tc_expect(env, udp4(sip_request("CANCEL", callid="tc@x", cseq=5)), V.MARK, M.CANCEL, R.OK)
    li = env.last()
    assert (li.method, li.cseq, li.callid_hash, li.verdict) == (M.CANCEL, 5, L.fnv1a64(b"tc@x"),
                                                                V.MARK)


def test_own_answer_leaves_unmarked_and_uncounted(env):
    """An answer TC ingress sent out of the interface (cb[0] = CB_OWN_ANSWER, cb[1] = its length)
    is not parsed, marked or counted at egress, like an XDP_TX answer that never reaches it: its
    503 must not reach the response-code counters the overload controller reads."""
    from .helpers import SkBuff
    env.set_policy(flags=L.POL_F_VALID | L.POL_F_MARK, dscp=24, skb_priority=6)
    pkt = udp4(sip_response(503, "Service Unavailable"), sport=5060, dport=5060)
    skb = SkBuff()
    skb.cb[0] = L.CB_OWN_ANSWER
    skb.cb[1] = len(pkt)
    before = env.counter(H.TC_EGRESS, M.RESPONSE, V.MARK, R.OK)
    ret, out, _unused, _ctx = bpf.test_run_ctx(env.progs["tc_sip_egress"].fd, pkt, ctx=bytes(skb))
    assert (ret, out) == (bpf.TC_ACT_OK, pkt)
    assert env.counter(H.TC_EGRESS, M.RESPONSE, V.MARK, R.OK) == before
    # a stale cb (another length) is any other response: marked and counted
    skb.cb[1] = len(pkt) + 1
    ret, out, _unused, _ctx = bpf.test_run_ctx(env.progs["tc_sip_egress"].fd, pkt, ctx=bytes(skb))
    assert ret == bpf.TC_ACT_OK and Ether(out)[IP].tos >> 2 == 24
    assert env.counter(H.TC_EGRESS, M.RESPONSE, V.MARK, R.OK) == before + 1
