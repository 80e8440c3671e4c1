"""xdp_sip: L2-L4 parsing and SIP classification (verdict + exact counter + etsf_last)."""
import pytest
from scapy.all import ARP, ICMP, IP, UDP, Ether, IPv6, IPv6ExtHdrFragment, Raw, fragment

from etsf import layout as L

from .helpers import (DST4, DST6, SRC4, SRC6, M, R, V, eth, sip_request, sip_response, tcp4, udp4,
                      udp6)

CALLID = "a84b4c76e66710@pc33.example.com"

REQUEST_METHODS = [
    ("INVITE", M.INVITE), ("ACK", M.ACK), ("BYE", M.BYE), ("CANCEL", M.CANCEL),
    ("REGISTER", M.REGISTER), ("OPTIONS", M.OPTIONS), ("PRACK", M.PRACK),
    ("SUBSCRIBE", M.SUBSCRIBE), ("NOTIFY", M.NOTIFY), ("PUBLISH", M.PUBLISH),
    ("INFO", M.INFO), ("REFER", M.REFER), ("MESSAGE", M.MESSAGE), ("UPDATE", M.UPDATE),
    ("FOOBAR", M.OTHER), ("INVITEX", M.OTHER), ("invite", M.OTHER),
]


@pytest.mark.parametrize("name,method", REQUEST_METHODS)
def test_request_methods(env, name, method):
    env.set_policy()
    li = env.xdp(udp4(sip_request(name, cseq=77)), V.PASS, method, R.OK)
    assert li.method == method
    assert li.status == 0
    assert li.cseq == 77
    assert li.cseq_method == method
    assert li.has_callid == 1
    assert li.callid_hash == L.fnv1a64(CALLID.encode())
    assert li.has_to_tag == 0
    assert (li.family, li.l4proto) == (4, 17)


@pytest.mark.parametrize("status", [100, 180, 200, 302, 486, 503, 699])
def test_responses(env, status):
    env.set_policy()
    li = env.xdp(udp4(sip_response(status, "Whatever", cseq=9, cseq_method="BYE")),
                 V.PASS, M.RESPONSE, R.OK)
    assert (li.method, li.status, li.cseq, li.cseq_method, li.has_to_tag) == \
        (M.RESPONSE, status, 9, M.BYE, 1)


def test_no_policy_classifies_with_defaults(env):
    li = env.xdp(udp4(sip_request("REGISTER")), V.PASS, M.REGISTER, R.NO_POLICY)
    assert li.callid_hash == L.fnv1a64(CALLID.encode())


def test_ipv6(env):
    env.set_policy()
    li = env.xdp(udp6(sip_request("OPTIONS")), V.PASS, M.OPTIONS, R.OK)
    assert li.family == 6


def test_from_sip_port(env):
    env.set_policy()
    env.xdp(udp4(sip_response(180), sport=5060, dport=33000), V.PASS, M.RESPONSE, R.OK)


def test_vlan_single(env):
    env.set_policy()
    li = env.xdp(udp4(sip_request("INVITE"), vlan=100), V.PASS, M.INVITE, R.OK)
    assert li.cseq == 314159


def test_vlan_double(env):
    env.set_policy()
    env.xdp(udp4(sip_request("INVITE"), vlan=[100, 200]), V.PASS, M.UNKNOWN, R.VLAN_NESTED)


def test_compact_headers(env):
    env.set_policy()
    msg = (b"BYE sip:bob@example.com SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
           b"t: <sip:bob@example.com>;tag=xyz\r\nf: <sip:a@b>;tag=1\r\n"
           b"i: compact-id@host\r\nCSeq: 2 BYE\r\nl: 0\r\n\r\n")
    li = env.xdp(udp4(msg), V.PASS, M.BYE, R.OK)
    assert li.callid_hash == L.fnv1a64(b"compact-id@host")
    assert li.has_to_tag == 1


def test_case_and_whitespace(env):
    env.set_policy()
    msg = (b"INVITE sip:bob@example.com SIP/2.0\r\nvIa: SIP/2.0/UDP h\r\n"
           b"tO :   <sip:bob@example.com> ;  TAG = 77\r\n"
           b"cALL-iD\t:\t  spaced@host \t \r\n"
           b"cseq:    42    INVITE   \r\n\r\n")
    li = env.xdp(udp4(msg), V.PASS, M.INVITE, R.OK)
    assert li.callid_hash == L.fnv1a64(b"spaced@host")
    assert (li.cseq, li.cseq_method, li.has_to_tag) == (42, M.INVITE, 1)


def test_folded_headers(env):
    env.set_policy()
    msg = (b"INVITE sip:bob@example.com SIP/2.0\r\n"
           b"Subject: I know you're there,\r\n   pick up the phone\r\n"
           b"To: Bob\r\n <sip:bob@example.com>\r\n  ;tag=folded\r\n"
           b"Call-ID:\r\n   folded-id@host\r\n"
           b"CSeq:\r\n  8\r\n  INVITE\r\n\r\n")
    li = env.xdp(udp4(msg), V.PASS, M.INVITE, R.OK)
    assert li.callid_hash == L.fnv1a64(b"folded-id@host")
    assert (li.cseq, li.cseq_method, li.has_to_tag) == (8, M.INVITE, 1)


def test_to_tag_inside_uri_is_not_a_tag(env):
    env.set_policy()
    msg = sip_request("INVITE").replace(b"To: Bob <sip:bob@example.com>",
                                        b'To: "x;tag=1" <sip:bob@example.com;tag=2>')
    li = env.xdp(udp4(msg), V.PASS, M.INVITE, R.OK)
    assert li.has_to_tag == 0


def test_to_header_name_prefix_not_confused(env):
    env.set_policy()
    extra = b"Toolkit: x;tag=9\r\nTo-Tag: y;tag=1\r\n"
    msg = sip_request("INVITE", extra=extra)
    li = env.xdp(udp4(msg), V.PASS, M.INVITE, R.OK)
    assert li.has_to_tag == 0


def test_first_callid_wins(env):
    env.set_policy()
    msg = sip_request("OPTIONS", callid="first@host", extra=b"Call-ID: second@host\r\n")
    li = env.xdp(udp4(msg), V.PASS, M.OPTIONS, R.OK)
    assert li.callid_hash == L.fnv1a64(b"first@host")


def test_bare_lf_line_endings(env):
    env.set_policy()
    msg = sip_request("MESSAGE").replace(b"\r\n", b"\n")
    li = env.xdp(udp4(msg), V.PASS, M.MESSAGE, R.OK)
    assert li.callid_hash == L.fnv1a64(CALLID.encode())


def test_missing_callid(env):
    env.set_policy()
    msg = b"OPTIONS sip:x SIP/2.0\r\nCSeq: 1 OPTIONS\r\nTo: <sip:x>\r\n\r\n"
    env.xdp(udp4(msg), V.PASS, M.OPTIONS, R.NO_CALLID)


def test_missing_cseq(env):
    env.set_policy()
    msg = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: z@y\r\nTo: <sip:x>\r\n\r\n"
    env.xdp(udp4(msg), V.PASS, M.OPTIONS, R.NO_CSEQ)


def test_bad_cseq_is_no_cseq(env):
    env.set_policy()
    msg = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: z@y\r\nCSeq: 99999999999999 OPTIONS\r\n\r\n"
    env.xdp(udp4(msg), V.PASS, M.OPTIONS, R.NO_CSEQ)


def test_non_sip_udp_on_5060(env):
    env.set_policy()
    env.xdp(udp4(b"\x00\x01\x02\x03 binary junk payload"), V.PASS, M.UNKNOWN, R.NOT_SIP)


def test_bad_version_not_sip(env):
    env.set_policy()
    env.xdp(udp4(sip_request("OPTIONS").replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1)),
            V.PASS, M.UNKNOWN, R.NOT_SIP)


def test_crlf_keepalive_not_sip(env):
    env.set_policy()
    env.xdp(udp4(b"\r\n\r\n"), V.PASS, M.UNKNOWN, R.NOT_SIP)


def test_empty_udp(env):
    env.set_policy()
    env.xdp(udp4(b""), V.PASS, M.UNKNOWN, R.EMPTY)


def test_not_sip_port(env):
    env.set_policy()
    env.xdp(udp4(sip_request("INVITE"), sport=40000, dport=5070), V.PASS, M.UNKNOWN,
            R.NOT_SIP_PORT)


def test_policy_port_set(env):
    env.set_policy(sip_ports=[5080, 5090])
    env.xdp(udp4(sip_request("INVITE"), sport=40000, dport=5090), V.PASS, M.INVITE, R.OK)
    env.xdp(udp4(sip_request("INVITE"), sport=40000, dport=5060), V.PASS, M.UNKNOWN,
            R.NOT_SIP_PORT)


def test_tls_port(env):
    env.set_policy()
    env.xdp(udp4(b"\x16\x03\x01\x02\x00", sport=40000, dport=5061), V.PASS, M.UNKNOWN, R.TLS)
    env.xdp(tcp4(b"\x17\x03\x03\x00\x20" + b"x" * 32, dport=5061), V.PASS, M.UNKNOWN, R.TLS)


def test_tls_port_no_policy_default(env):
    env.xdp(tcp4(b"\x16\x03\x01", dport=5061), V.PASS, M.UNKNOWN, R.TLS)


def test_tcp_start(env):
    env.set_policy()
    li = env.xdp(tcp4(sip_request("INVITE")), V.PASS, M.INVITE, R.OK)
    assert li.l4proto == 6


def test_tcp_continuation(env):
    env.set_policy()
    env.xdp(tcp4(b"a=rtpmap:0 PCMU/8000\r\nm=audio 49170 RTP/AVP 0\r\n"), V.PASS, M.UNKNOWN,
            R.TCP_CONT)


def test_tcp_large_continuation(env):
    env.set_policy()
    env.xdp(tcp4(b"a=" + b"q" * 2500), V.PASS, M.UNKNOWN, R.TCP_CONT)


def test_tcp_from_sip_port_response(env):
    env.set_policy()
    env.xdp(tcp4(sip_response(183, "Session Progress"), sport=5060, dport=40000), V.PASS,
            M.RESPONSE, R.OK)


def test_tcp_pure_ack(env):
    env.set_policy()
    env.xdp(tcp4(b"", flags="A"), V.PASS, M.UNKNOWN, R.EMPTY)


def test_not_ip(env):
    pkt = bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=DST4))
    env.xdp(pkt, V.PASS, M.UNKNOWN, R.NOT_IP)


def test_not_udp_tcp(env):
    env.xdp(bytes(Ether() / IP(src=SRC4, dst=DST4) / ICMP()), V.PASS, M.UNKNOWN, R.NOT_UDP_TCP)


def test_bad_ihl(env):
    pkt = bytearray(udp4(sip_request("INVITE")))
    pkt[14] = 0x44          # version 4, ihl 4
    env.xdp(bytes(pkt), V.PASS, M.UNKNOWN, R.BAD_IP)


@pytest.mark.parametrize("cut,reason", [
    (14, R.TRUNC_L2L3),     # Ethernet only (test_run needs >= ETH_HLEN)
    (14 + 10, R.TRUNC_L2L3),  # inside IPv4
    (14 + 20 + 4, R.TRUNC_L4),  # inside UDP
])
def test_truncated_v4(env, cut, reason):
    env.set_policy()
    env.xdp(udp4(sip_request("INVITE"))[:cut], V.PASS, M.UNKNOWN, reason)


def test_truncated_vlan(env):
    env.xdp(udp4(b"x", vlan=5)[:16], V.PASS, M.UNKNOWN, R.TRUNC_L2L3)


def test_truncated_v6(env):
    env.xdp(udp6(sip_request("INVITE"))[:14 + 30], V.PASS, M.UNKNOWN, R.TRUNC_L2L3)


def test_truncated_sip_headers(env):
    env.set_policy()
    msg = sip_request("INVITE")
    cut = msg.index(b"Call-ID")
    env.xdp(udp4(msg[:cut]), V.PASS, M.INVITE, R.SIP_TRUNC)


def test_truncated_frame_shorter_than_ip(env):
    """IP/UDP lengths claim the full message but the frame is cut short."""
    env.set_policy()
    full = udp4(sip_request("INVITE"))
    env.xdp(full[:14 + 28 + 60], V.PASS, M.INVITE, R.SIP_TRUNC)


def test_truncated_start_line(env):
    env.set_policy()
    env.xdp(udp4(b"INVITE sip:bob@exa"), V.PASS, M.UNKNOWN, R.SIP_TRUNC)


def test_oversized_headers_fit(env):
    env.set_policy()
    body = b"v=0\r\n" + b"a=x-filler:" + b"z" * 2600 + b"\r\n"
    msg = sip_request("INVITE", body=body)
    assert len(msg) > 2048
    li = env.xdp(udp4(msg), V.PASS, M.INVITE, R.OK)
    assert li.payload_len == len(msg)


def test_oversized_header_block(env):
    env.set_policy()
    big = b"X-Filler: " + b"y" * 2200 + b"\r\n"
    msg = (b"INVITE sip:bob@example.com SIP/2.0\r\n" + big
           + b"Call-ID: late@host\r\nCSeq: 1 INVITE\r\n\r\n")
    env.xdp(udp4(msg), V.PASS, M.INVITE, R.PARSE_LIMIT)


def test_huge_request_line(env):
    env.set_policy()
    msg = b"INVITE sip:" + b"a" * 2500 + b"@x SIP/2.0\r\nCall-ID: q\r\nCSeq: 1 INVITE\r\n\r\n"
    env.xdp(udp4(msg), V.PASS, M.UNKNOWN, R.PARSE_LIMIT)


def test_fragment_v4_first(env):
    env.set_policy()
    frags = fragment(IP(src=SRC4, dst=DST4) / UDP(sport=5060, dport=5060)
                     / Raw(sip_request("INVITE", body=b"x" * 1200)), fragsize=512)
    assert len(frags) > 1
    for f in frags:
        env.xdp(bytes(Ether() / f), V.PASS, M.UNKNOWN, R.FRAGMENT)


def test_fragment_v4_offset_only(env):
    pkt = bytes(Ether() / IP(src=SRC4, dst=DST4, frag=100, proto=17) / Raw(b"x" * 40))
    env.xdp(pkt, V.PASS, M.UNKNOWN, R.FRAGMENT)


def test_fragment_v6(env):
    env.set_policy()
    pkt = bytes(eth() / IPv6(src=SRC6, dst=DST6) / IPv6ExtHdrFragment(m=1, id=7)
                / UDP(sport=5060, dport=5060) / Raw(sip_request("INVITE")))
    env.xdp(pkt, V.PASS, M.UNKNOWN, R.FRAGMENT)


def test_v6_hop_by_hop_then_udp(env):
    from scapy.all import IPv6ExtHdrHopByHop
    env.set_policy()
    pkt = bytes(eth() / IPv6(src=SRC6, dst=DST6) / IPv6ExtHdrHopByHop()
                / UDP(sport=5060, dport=5060) / Raw(sip_request("NOTIFY")))
    env.xdp(pkt, V.PASS, M.NOTIFY, R.OK)


def test_record_flag_off(env):
    env.set_policy()
    env.set_ctl(flags=0)
    env.xdp(udp4(sip_request("INVITE")), V.PASS, M.INVITE, R.OK)
    assert env.last().method == 0      # reset() zeroed it, nothing written


def test_ifstats(env):
    env.set_policy()
    m = env.maps["etsf_ifstats"]

    def read():
        v = m.lookup_percpu((1).to_bytes(4, "little"))  # test_run ifindex = lo
        if v is None:
            return L.IfStat()
        s = L.IfStat()
        for raw in v:
            x = L.IfStat.from_bytes(raw)
            s.rx_packets += x.rx_packets
            s.sip_packets += x.sip_packets
            s.dropped += x.dropped
        return s
    b = read()
    env.xdp(udp4(sip_request("INVITE")), V.PASS, M.INVITE, R.OK)
    a = read()
    assert (a.rx_packets - b.rx_packets, a.sip_packets - b.sip_packets) == (1, 1)


def test_exactly_one_counter_per_packet(env):
    env.set_policy()
    b = env.counters_total()
    env.xdp(udp4(sip_request("INVITE")), V.PASS, M.INVITE, R.OK)
    a = env.counters_total()
    diff = {k: a.get(k, 0) - b.get(k, 0) for k in set(a) | set(b) if a.get(k, 0) != b.get(k, 0)}
    assert diff == {L.stats_idx(0, M.INVITE, V.PASS, R.OK): 1}


def test_mutated_messages_never_dropped(env):
    """Seeded mutations/truncations of valid messages: always PASS, one counter each."""
    import random
    env.set_policy()
    rnd = random.Random(4475)
    base = [sip_request("INVITE"), sip_response(200), sip_request("REGISTER", to_tag="x"),
            sip_request("OPTIONS").replace(b"\r\n", b"\n")]
    before = sum(env.counters_total().values())
    n = 0
    for i in range(300):
        msg = bytearray(rnd.choice(base))
        for _unused in range(rnd.randint(1, 8)):
            if not msg:
                break
            op = rnd.randint(0, 3)
            pos = rnd.randrange(len(msg))
            if op == 0:
                msg[pos] = rnd.randrange(256)
            elif op == 1:
                msg.insert(pos, rnd.choice(b" \t\r\n:;<>\"\\"))
            elif op == 2:
                del msg[pos:pos + rnd.randint(1, 20)]
            else:
                msg = msg[:pos]
        ret, li = env.xdp_raw(udp4(bytes(msg)))
        assert ret == 2 and li.verdict == V.PASS, (bytes(msg), li)
        n += 1
    assert sum(env.counters_total().values()) - before == n


def test_ipv4_options(env):
    env.set_policy()
    from scapy.all import IPOption_RR
    pkt = bytes(Ether() / IP(src=SRC4, dst=DST4, options=[IPOption_RR(routers=["198.18.0.9"])])
                / UDP(sport=5060, dport=5060) / Raw(sip_request("PRACK")))
    assert pkt[14] & 0x0f > 5
    env.xdp(pkt, V.PASS, M.PRACK, R.OK)


def test_v6_unknown_ext_header(env):
    env.set_policy()
    pkt = bytes(eth() / IPv6(src=SRC6, dst=DST6, nh=51) / Raw(b"\x11\x04" + b"\x00" * 30))
    env.xdp(pkt, V.PASS, M.UNKNOWN, R.IPV6_EXTHDR)


def test_udp_length_shorter_than_frame(env):
    """Ethernet padding / trailing bytes after the UDP datagram are not parsed."""
    env.set_policy()
    msg = sip_request("UPDATE")
    pkt = udp4(msg) + b"GARBAGE-TRAILER"
    li = env.xdp(pkt, V.PASS, M.UPDATE, R.OK)
    assert li.payload_len == len(msg)


@pytest.mark.parametrize("order", ["cseq,to,callid", "to,callid,cseq", "callid,cseq,to"])
def test_header_orders_and_callid_lengths(env, order):
    """Every Call-ID length 1..80 (all word/terminator alignments, values hashed over one to
    three steps), headers in any order."""
    env.set_policy()
    for n in range(1, 81):
        cid = ("x" * n).encode() if n < 3 else (b"%d@" % n + b"h" * (n - 2 - len(str(n))))[:n]
        hdr = {"cseq": b"CSeq: %d REGISTER\r\n" % (1000 + n),
               "to": b"To: <sip:b@x>;tag=t%d\r\n" % n,
               "callid": b"Call-ID: " + cid + (b"  \r\n" if n % 2 else b"\r\n")}
        msg = (b"REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.10\r\n"
               + b"".join(hdr[h] for h in order.split(",")) + b"Content-Length: 0\r\n\r\n")
        li = env.xdp(udp4(msg), V.PASS, M.REGISTER, R.OK)
        assert li.callid_hash == L.fnv1a64(cid), n
        assert (li.cseq, li.cseq_method, li.has_to_tag) == (1000 + n, M.REGISTER, 1), n
