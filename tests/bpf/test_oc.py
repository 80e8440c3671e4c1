"""RFC 7339 overload control at TC egress (bpf/etsf_oc.h): a UDP response whose top Via
carries `oc` leaves with oc=<reduction>;oc-validity=<ms>;oc-seq=<s>.<ms>;oc-algo="loss"
in that Via value.  Each output frame is compared byte for byte with one built here from
the RFC's rules (lengths and checksums computed by scapy); responses to peers without
`oc`, requests, non-SIP and the flag off leave byte for byte untouched; what cannot be
rewritten passes untouched and is counted in etsf_oc_stats."""
import re

import pytest
from scapy.all import IP, TCP, UDP, Ether, IPv6, Raw

from etsf import bpf
from etsf import layout as L

from .helpers import DST4, DST6, M, R, SRC4, SRC6, V, H, sip_request, udp4, udp6
# veth: a fixture
from .test_respond_delivery import _deliver, _snmp, veth  # noqa: F401  pylint: disable=unused-import

OC_PARAMS = {"oc", "oc-validity", "oc-seq", "oc-algo"}
SEQ = 1764500000123         # thousandths: oc-seq=1764500000.123


def response(vias=(b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds;oc",),
             status=b"200 OK", body=b""):
    return (b"SIP/2.0 " + status + b"\r\n"
            + b"".join(v + b"\r\n" for v in vias)
            + b"To: Bob <sip:bob@example.com>;tag=a6c85cf\r\n"
            + b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
            + b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
            + b"CSeq: 314159 INVITE\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


def _split_outside_quotes(text, sep):
    """Positions of sep in text outside double-quoted strings (backslash escapes inside)."""
    out, quoted, esc = [], False, False
    for i, ch in enumerate(text):
        if esc:
            esc = False
        elif quoted and ch == "\\":
            esc = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted and ch in sep:
            out.append(i)
    return out


def oc_string(red, validity, seq):
    """The parameters RFC 7339 section 5.2 puts in the response (grammar of section 9: at most
    12 digits before the point, so the seconds wrap at 10**12)."""
    return (f";oc={min(red, 100)};oc-validity={validity};"
            f"oc-seq={seq // 1000 % 10**12}.{seq % 1000:03d};oc-algo=\"loss\"")


def expected_payload(payload, red=20, validity=500, seq=SEQ):
    """The payload with the first value of the top Via rebuilt: every oc* parameter removed,
    the advertised ones where the first `oc` was; None when that value has no `oc`."""
    text = payload.decode("latin-1")
    lines = text.split("\r\n")
    for i, ln in enumerate(lines[1:], 1):
        if not ln:
            return None
        name = ln.split(":", 1)[0].strip().lower()
        if name not in ("via", "v"):
            continue
        head, value = ln.split(":", 1)
        commas = _split_outside_quotes(value, ",")
        first, rest = (value, "") if not commas else (value[:commas[0]], value[commas[0]:])
        cuts = [0] + [c + 1 for c in _split_outside_quotes(first, ";")]
        parts = [first[a:b - 1] if b else first[a:]
                 for a, b in zip(cuts, cuts[1:] + [0])]
        out, done = parts[0], False
        for prm in parts[1:]:
            pname = prm.split("=", 1)[0].rstrip(" \t").lower()
            if pname in OC_PARAMS:
                if pname == "oc" and not done:
                    out += oc_string(red, validity, seq)
                    done = True
                continue
            out += ";" + prm
        if not done:
            return None
        lines[i] = head + ":" + out + rest
        return "\r\n".join(lines).encode("latin-1")
    return None


def expected_frame(frame, payload):
    pkt = Ether(frame)
    pkt[Raw].load = payload
    l3 = pkt[IP] if IP in pkt else pkt[IPv6]
    if IP in pkt:
        del l3.len, l3.chksum
    else:
        del l3.plen
    zero = pkt[UDP].chksum == 0 and IP in pkt
    del pkt[UDP].len, pkt[UDP].chksum
    if zero:
        pkt[UDP].chksum = 0          # IPv4 without a UDP checksum stays without one
    return bytes(pkt)


def oc_on(env, red=20, validity=500, seq=SEQ, flags=L.CTL_F_RECORD | L.CTL_F_OC, **pol):
    env.set_policy(**pol)
    c = env.ctl()
    c.flags = flags
    c.oc_reduction_pct = red
    c.oc_validity_ms = validity
    c.oc_seq = seq
    env.maps["etsf_ctl"].update(bytes(4), bytes(c))


@pytest.fixture
def oc_stats(env):
    m = bpf.open_map("etsf_oc_stats", env.root)
    yield m
    m.close()


def _stats(m):
    return {r: sum(int.from_bytes(v, "little") for v in m.lookup_percpu(int(r).to_bytes(4, "little")))
            for r in L.OcResult}


def run(env, m, frame, method=M.RESPONSE, counted=None):
    """Run tc_sip_egress once; the etsf_oc_stats delta must be exactly `counted` (or none)."""
    before = _stats(m)
    ret, out, _unused = env.tc(frame)
    assert ret == bpf.TC_ACT_OK
    assert env.last().method == method
    after = _stats(m)
    delta = {r: after[r] - before[r] for r in after if after[r] != before[r]}
    assert delta == ({counted: 1} if counted is not None else {}), delta
    return out


def check_rewrite(env, m, payload, v6=False, **kw):
    frame = (udp6 if v6 else udp4)(payload)
    want_payload = expected_payload(payload, **kw)
    assert want_payload is not None and want_payload != payload
    out = run(env, m, frame, counted=L.OcResult.REWRITTEN)
    want = expected_frame(frame, want_payload)
    assert out == want, "\n" + repr(out) + "\n!=\n" + repr(want)
    return out


def check_untouched(env, m, frame, method=M.RESPONSE, counted=None):
    out = run(env, m, frame, method, counted)
    assert out == frame


def test_oc_bare(env, oc_stats):
    oc_on(env)
    out = check_rewrite(env, oc_stats, response())
    assert (b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds;oc=20;oc-validity=500;"
            b"oc-seq=1764500000.123;oc-algo=\"loss\"\r\n") in out


def test_oc_value_and_previous_params_replaced(env, oc_stats):
    oc_on(env, red=35, validity=2000)
    via = (b"Via: SIP/2.0/UDP 198.18.1.10:5062;branch=z9hG4bKx1;oc=20;oc-validity=500;"
           b"oc-seq=1282321615.781;oc-algo=\"loss,A\"")
    out = check_rewrite(env, oc_stats, response([via]), red=35, validity=2000)
    top = re.search(rb"Via: [^\r]*", out).group(0)
    assert top.count(b";oc") == 4 and b"oc-algo=\"loss\"" in top and b"loss,A" not in top


def test_oc_shrinks(env, oc_stats):
    """Old parameters longer than the new ones: the packet gets shorter."""
    oc_on(env, red=5, validity=0, seq=1000)
    via = (b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKs;oc=100;oc-validity=4294967295;"
           b"oc-seq=999999999999.99999;oc-algo=\"loss,rate,some-very-long-algorithm-name\";rport")
    payload = response([via])
    out = check_rewrite(env, oc_stats, payload, red=5, validity=0, seq=1000)
    assert len(out) < len(udp4(payload))


def test_oc_compact_via(env, oc_stats):
    oc_on(env)
    check_rewrite(env, oc_stats, response([b"v: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKc;oc"]))


def test_oc_only_top_via(env, oc_stats):
    """Second Via header and second value of the top Via keep their oc untouched."""
    oc_on(env)
    vias = [b"Via: SIP/2.0/UDP a.example.com;branch=z9hG4bKa;oc;oc-algo=\"loss,A\" , "
            b"SIP/2.0/UDP b.example.com;branch=z9hG4bKb;oc",
            b"Via: SIP/2.0/UDP c.example.com;branch=z9hG4bKc;oc=50"]
    out = check_rewrite(env, oc_stats, response(vias))
    assert b"b.example.com;branch=z9hG4bKb;oc\r\n" in out
    assert b"c.example.com;branch=z9hG4bKc;oc=50\r\n" in out
    out = check_rewrite(env, oc_stats, response([b"Via: SIP/2.0/UDP a.example.com;oc ,SIP/2.0/UDP b;oc"]))
    assert b";oc-algo=\"loss\",SIP/2.0/UDP b;oc\r\n" in out


def test_oc_ipv6(env, oc_stats):
    oc_on(env, red=100, validity=60000)
    out = check_rewrite(env, oc_stats, response([b"Via: SIP/2.0/UDP [2001:db8:1:2::10]:5062;oc;"
                                                 b"branch=z9hG4bK6"]),
                        v6=True, red=100, validity=60000)
    assert Ether(out)[IPv6].src == SRC6


def test_oc_with_rport_received(env, oc_stats):
    oc_on(env)
    via = (b"Via: SIP/2.0/UDP pc33.example.com:5062;received=198.18.1.10;rport=5062;oc;"
           b"branch=z9hG4bK776asdhds;alias")
    out = check_rewrite(env, oc_stats, response([via]))
    assert (b";received=198.18.1.10;rport=5062;oc=20;oc-validity=500;oc-seq=1764500000.123;"
            b"oc-algo=\"loss\";branch=z9hG4bK776asdhds;alias\r\n") in out


def test_oc_upper_case(env, oc_stats):
    oc_on(env)
    out = check_rewrite(env, oc_stats, response([b"VIA: SIP/2.0/UDP pc33.example.com;OC-ALGO=\"loss\";"
                                                 b"BRANCH=z9hG4bKu;OC"]))
    assert b"OC-ALGO" not in out and b";BRANCH=z9hG4bKu;oc=20;" in out


def test_oc_quoted_comma_in_algo_list(env, oc_stats):
    oc_on(env)
    check_rewrite(env, oc_stats, response([b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKq;oc;"
                                           b"oc-algo=\"loss,rate\";x=\"a\\\"b,c\""]))


@pytest.mark.parametrize("via", [
    b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds",
    b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKn;ocx;oco=1;oc-algo=\"loss\"",
    b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKn, SIP/2.0/UDP b.example.com;oc",
    b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKn;x=\";oc\"",
])
def test_no_oc_untouched(env, oc_stats, via):
    oc_on(env)
    payload = response([via])
    assert expected_payload(payload) is None
    check_untouched(env, oc_stats, udp4(payload))


def test_flag_off_untouched(env, oc_stats):
    oc_on(env, flags=L.CTL_F_RECORD)
    check_untouched(env, oc_stats, udp4(response()))
    check_untouched(env, oc_stats, udp6(response()))


def test_no_policy_untouched(env, oc_stats):
    c = env.set_ctl(flags=L.CTL_F_RECORD | L.CTL_F_OC, oc_reduction_pct=20, oc_validity_ms=500)
    assert c.flags & L.CTL_F_OC
    check_untouched(env, oc_stats, udp4(response()))


def test_request_untouched(env, oc_stats):
    oc_on(env)
    req = sip_request("INVITE").replace(b"z9hG4bK776asdhds", b"z9hG4bK776asdhds;oc")
    check_untouched(env, oc_stats, udp4(req), method=M.INVITE)


def test_non_sip_and_tcp_untouched(env, oc_stats):
    oc_on(env)
    pkt = udp4(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;oc\r\n\r\n", sport=40000, dport=53)
    before = _stats(oc_stats)
    ret, out, _unused = env.tc(pkt)
    assert (ret, out, _stats(oc_stats)) == (bpf.TC_ACT_OK, pkt, before)
    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=SRC4, dst=DST4)
                  / TCP(sport=5060, dport=40000, flags="PA")
                  / Raw(response()))
    check_untouched(env, oc_stats, frame)


def test_stop_reduction_and_validity_zero(env, oc_stats):
    """RFC 7339 5.2: oc-validity=0 tells the client to stop."""
    oc_on(env, red=0, validity=0, seq=1764500001007)
    out = check_rewrite(env, oc_stats, response(), red=0, validity=0, seq=1764500001007)
    assert b";oc=0;oc-validity=0;oc-seq=1764500001.007;oc-algo=\"loss\"\r\n" in out


def test_oc_seq_grammar(env, oc_stats):
    """oc-seq = 1*12DIGIT "." 1*5DIGIT, the reduction never above 100."""
    for seq, text in ((7, b"0.007"), (10**15 + 42, b"0.042"), (2**64 - 1, b"744073709551.615")):
        oc_on(env, red=250, seq=seq)
        out = check_rewrite(env, oc_stats, response(), red=250, seq=seq)
        assert b";oc=100;" in out and b";oc-seq=" + text + b";" in out
        assert re.search(rb";oc-seq=\d{1,12}\.\d{1,5};", out)


def test_oc_and_dscp_mark(env, oc_stats):
    oc_on(env, flags=L.CTL_F_RECORD | L.CTL_F_OC, dscp=24, skb_priority=6)
    env.set_policy(flags=L.POL_F_VALID | L.POL_F_MARK, dscp=24, skb_priority=6)
    payload = response()
    frame = udp4(payload)
    before = env.counter(H.TC_EGRESS, M.RESPONSE, V.MARK, R.OK)
    out = run(env, oc_stats, frame, counted=L.OcResult.REWRITTEN)
    assert env.counter(H.TC_EGRESS, M.RESPONSE, V.MARK, R.OK) - before == 1
    want = Ether(frame)
    want[IP].tos = 24 << 2
    assert out == expected_frame(bytes(want), expected_payload(payload))


def test_ipv4_zero_udp_checksum_stays_zero(env, oc_stats):
    oc_on(env)
    payload = response()
    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=SRC4, dst=DST4)
                  / UDP(sport=5060, dport=5060, chksum=0) / Raw(payload))
    out = run(env, oc_stats, frame, counted=L.OcResult.REWRITTEN)
    assert out == expected_frame(frame, expected_payload(payload))
    assert Ether(out)[UDP].chksum == 0


def _padded(target_len, red=20, validity=500, seq=SEQ):
    """A response whose rewritten payload is exactly target_len bytes (a long header pads it)."""
    base = response()
    grown = len(expected_payload(base, red, validity, seq)) - len(base)
    filler = target_len - grown - len(base) - len(b"X-Pad: \r\n")
    payload = response().replace(b"CSeq:", b"X-Pad: " + b"p" * filler + b"\r\nCSeq:")
    assert len(expected_payload(payload, red, validity, seq)) == target_len
    return payload


def test_long_via_at_the_limit(env, oc_stats):
    oc_on(env)
    payload = _padded(L.PARSE_BYTES)
    out = check_rewrite(env, oc_stats, payload)
    assert len(Ether(out)[Raw].load) == L.PARSE_BYTES


def test_one_byte_over_the_limit_untouched(env, oc_stats):
    oc_on(env)
    check_untouched(env, oc_stats, udp4(_padded(L.PARSE_BYTES + 1)), counted=L.OcResult.TOO_LONG)


def test_payload_over_parse_bytes_untouched(env, oc_stats):
    oc_on(env)
    payload = response(body=b"b" * (L.PARSE_BYTES + 10))
    check_untouched(env, oc_stats, udp4(payload), counted=L.OcResult.TOO_LONG)


def test_long_top_via_over_the_limit(env, oc_stats):
    """The top Via, last header of a message just under the limit, would push it over while
    its value is rebuilt: untouched, counted too long."""
    oc_on(env)
    head = response(vias=())[:-2]
    via = b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK"
    pad = L.PARSE_BYTES - 20 - len(head) - len(via) - len(b";oc\r\n\r\n")
    payload = head + via + b"x" * pad + b";oc\r\n\r\n"
    assert len(payload) == L.PARSE_BYTES - 20
    assert len(expected_payload(payload)) > L.PARSE_BYTES
    check_untouched(env, oc_stats, udp4(payload), counted=L.OcResult.TOO_LONG)


def test_header_block_over_parse_bytes_not_classified(env, oc_stats):
    """A header block the parser cannot finish is not classified: untouched, counted by
    etsf_stats (PARSE_LIMIT), not by the oc counters."""
    oc_on(env)
    via = b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK" + b"x" * L.PARSE_BYTES + b";oc"
    frame = udp4(response([via]))
    before = _stats(oc_stats)
    ret, out, _unused = env.tc(frame)
    assert (ret, out, _stats(oc_stats)) == (bpf.TC_ACT_OK, frame, before)
    assert env.last().reason == R.PARSE_LIMIT


def test_folded_top_via_untouched(env, oc_stats):
    oc_on(env)
    via = b"Via: SIP/2.0/UDP pc33.example.com;oc;\r\n branch=z9hG4bKf"
    check_untouched(env, oc_stats, udp4(response([via])), counted=L.OcResult.UNSUPPORTED)


def test_trailing_bytes_untouched(env, oc_stats):
    """Bytes after the UDP payload (Ethernet padding): not rewritten, counted."""
    oc_on(env)
    frame = udp4(response()) + b"\0" * 6
    check_untouched(env, oc_stats, frame, counted=L.OcResult.UNSUPPORTED)


def test_retransmitted_response_same_bytes(env, oc_stats):
    oc_on(env)
    frame = udp4(response())
    first = run(env, oc_stats, frame, counted=L.OcResult.REWRITTEN)
    assert run(env, oc_stats, frame, counted=L.OcResult.REWRITTEN) == first


@pytest.mark.parametrize("v6", [False, True])
def test_rewritten_response_arrives_at_a_real_socket(env, oc_stats, veth, v6):
    """The checksums of a rewritten frame are the ones a receiving kernel verifies: injected
    into a veth whose far end (receive offload off) has the client's address, it reaches a
    bound UDP socket byte for byte; with one payload byte changed it is a checksum error."""
    ns, iface = veth
    oc_on(env)
    payload = response([b"Via: SIP/2.0/UDP pc33.example.com:5062;branch=z9hG4bKd;rport=5062;oc"])
    l3 = IPv6(src=DST6, dst=SRC6) if v6 else IP(src=DST4, dst=SRC4)
    frame = bytes(Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01") / l3
                  / UDP(sport=5060, dport=5062) / Raw(payload))
    out = run(env, oc_stats, frame, counted=L.OcResult.REWRITTEN)
    want = expected_payload(payload)
    assert out == expected_frame(frame, want)
    bad = bytearray(out)
    bad[-5] ^= 0x01
    proto = "snmp6" if v6 else "snmp"
    errs = _snmp(ns, proto, "InCsumErrors")
    data, src, sport = _deliver(ns, iface, [bytes(bad), out], SRC6 if v6 else SRC4, 5062)
    assert (data, src, sport) == (want, DST6 if v6 else DST4, 5060)
    assert _snmp(ns, proto, "InCsumErrors") == errs + 1


def test_outcomes_exported(env, oc_stats):
    """The exporter reads etsf_oc_stats: etsf_rfc7339_responses_total{result} equals the map."""
    from etsf.telemetry.collector import EtsfCollector
    oc_on(env)
    run(env, oc_stats, udp4(response()), counted=L.OcResult.REWRITTEN)
    run(env, oc_stats, udp4(response([b"Via: SIP/2.0/UDP h;oc;\r\n branch=z9hG4bKf"])),
        counted=L.OcResult.UNSUPPORTED)
    want = {r.name.lower(): n for r, n in _stats(oc_stats).items()}
    fams = {f.name: f for f in EtsfCollector(env.root).collect()}
    got = {s.labels["result"]: s.value for s in fams["etsf_rfc7339_responses"].samples
           if s.name == "etsf_rfc7339_responses_total"}
    assert got == want and got["rewritten"] >= 1 and got["unsupported"] >= 1
