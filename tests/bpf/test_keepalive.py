"""Keep-alive OPTIONS answered in the kernel (bpf/etsf_keepalive.h): the XDP_TX output frame of
every answerable request shape compared byte for byte with a 200 built here from the request
(RFC 3261 8.2.6 / 18.2.1, RFC 3581; checksums computed by scapy), the requests that must reach
the proxy untouched (and the counter that says why), the precedence of deny / rate limit /
fail-safe, the proxy-alive gate, the 1-in-N sample, NAT keep-alives counted and dropped, and
the 200 delivered to a real UDP socket (kernel-verified checksum)."""
import os

import pytest
from scapy.all import IP, UDP, Dot1Q, Ether, IPOption_RR, IPv6, Raw

from etsf import bpf
from etsf import layout as L

from .helpers import DST4, DST6, SRC4, SRC6, M, R, V, tcp4, udp4, udp6
from .test_respond import STATUS as STATUS_503, _check, expected_503
# veth: a fixture
from .test_respond_delivery import _deliver, _snmp, veth  # noqa: F401  pylint: disable=unused-import

SECRET = 0x0DDC0FFEE_1234
STATUS_200 = b"SIP/2.0 200 OK\r\n"
TRAIL = b"Content-Length: 0\r\n\r\n"
HEADERS = (b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
           b"Accept: application/sdp\r\n"
           b"Supported: replaces, timer\r\n"
           b"Server: eTSF keep-alive\r\n")
# (host, user) identities of slot 0; a bare host answers any user part
IDENTITIES = [("198.18.0.1", ""), ("sbc.example.com", ""), ("[2001:db8::1]", ""),
              ("[2001:0db8:0000:0000:0000:0000:0000:0001]", ""), ("198.18.0.2", "keepalive")]


def options(uri="sip:198.18.0.1", to=b"To: <sip:198.18.0.1>", mf=b"Max-Forwards: 70\r\n", extra=b"",
            callid="ka-1@pc33.example.com", via=b"Via: SIP/2.0/UDP 198.18.1.10:5060;branch=z9hG4bKka1\r\n",
            cseq=b"CSeq: 17 OPTIONS\r\n"):
    return (f"OPTIONS {uri} SIP/2.0\r\n".encode() + via + mf + to + b"\r\n"
            + b"From: <sip:ping@198.18.1.10>;tag=pingf\r\n"
            + f"Call-ID: {callid}\r\n".encode() + cseq + extra
            + b"Contact: <sip:ping@198.18.1.10:5060>\r\nAccept: application/sdp\r\n"
            + b"Content-Length: 0\r\n\r\n")


def expected_200(req, src, sport, headers=HEADERS):
    """The 200 the kernel must build: the 503 of the same request (Via/From/To/Call-ID/CSeq,
    received/rport, To-tag; written out in test_respond) with the 200 status line and the
    configured header lines."""
    r503 = expected_503(req, src, sport, retry=0, secret=SECRET)
    assert r503.startswith(STATUS_503) and r503.endswith(TRAIL)
    return STATUS_200 + r503[len(STATUS_503):-len(TRAIL)] + headers + TRAIL


def expected_frame(req, v6=False, sport=5060, vlan=None, headers=HEADERS):
    payload = expected_200(req, SRC6 if v6 else SRC4, sport, headers)
    l2 = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")
    if vlan is not None:
        l2 = l2 / Dot1Q(vlan=vlan)
    l3 = IPv6(src=DST6, dst=SRC6, hlim=64) if v6 else IP(src=DST4, dst=SRC4, ttl=64, id=0, flags=0)
    return bytes(l2 / l3 / UDP(sport=5060, dport=sport) / Raw(payload))


def set_cfg(env, slot=0, headers=HEADERS):
    c = L.KaCfg(hdr_len=len(headers))
    c.hdr[:len(headers)] = list(headers)
    env.maps["etsf_ka_cfg"].update(slot.to_bytes(4, "little"), bytes(c))


def add_ids(env, ids=None, slot=0):
    for host, user in ids or IDENTITIES:
        env.maps["etsf_ka_id"].update(L.ka_id_key(slot, host.encode(), user.encode()),
                                      L.KA_ID_PRIMARY.to_bytes(4, "little"))


def ka_on(env, flags=L.POL_F_VALID | L.POL_F_KA, alive=True, sample_every=0, headers=HEADERS, **pol):
    env.set_policy(flags=flags, **pol)
    set_cfg(env, headers=headers)
    add_ids(env)
    c = env.ctl()
    c.node_secret = SECRET
    c.proxy_alive_until_ns = bpf.monotonic_ns() + 3600 * 10**9 if alive else 0
    c.ka_sample_every = sample_every
    env.maps["etsf_ctl"].update(bytes(4), bytes(c))


def answer(env, frame):
    """Run frame; it must come back as XDP_TX counted REDIRECT/KA_ANSWERED; the output frame."""
    before = env.counter(L.Hook.XDP, M.OPTIONS, V.REDIRECT, R.KA_ANSWERED)
    ka0 = env.ka_stats()["answered"]
    ret, out, _unused = bpf.test_run(env.progs["xdp_sip"].fd, frame)
    assert ret == bpf.XDP_TX, (ret, env.last(), env.ka_stats())
    assert env.counter(L.Hook.XDP, M.OPTIONS, V.REDIRECT, R.KA_ANSWERED) - before == 1
    assert env.ka_stats()["answered"] - ka0 == 1
    assert (env.last().verdict, env.last().reason) == (V.REDIRECT, R.KA_ANSWERED)
    return out


def passed(env, frame, why, verdict=V.PASS, reason=R.OK, method=M.OPTIONS):
    """Run frame; it must leave untouched with verdict/reason, and only ka counter `why` moves."""
    before = env.counter(L.Hook.XDP, method, verdict, reason)
    ka0 = env.ka_stats()
    ret, out, _unused = bpf.test_run(env.progs["xdp_sip"].fd, frame)
    want = bpf.XDP_DROP if verdict == V.DROP else bpf.XDP_PASS
    assert ret == want, (ret, env.last())
    assert out == frame
    assert env.counter(L.Hook.XDP, method, verdict, reason) - before == 1
    delta = {k: v - ka0[k] for k, v in env.ka_stats().items() if v != ka0[k] and k != "sample_seq"}
    assert delta == ({why: 1} if why else {}), delta


def _vias(n, combined=False):
    vias = [f"SIP/2.0/UDP proxy{i}.example.com:5060;branch=z9hG4bK{i}k".encode() for i in range(n - 1, 0, -1)]
    vias.append(b"SIP/2.0/UDP 198.18.1.10;rport;branch=z9hG4bK0k")
    if combined:
        return b"Via: " + b", ".join(vias) + b"\r\n"
    return b"".join(b"Via: " + v + b"\r\n" for v in vias)


ANSWERED = {
    "plain": options(),
    "uri_port": options(uri="sip:198.18.0.1:5060"),
    "uri_params": options(uri="sip:198.18.0.1;transport=udp"),
    "uri_port_params": options(uri="sip:198.18.0.1:5060;transport=udp?x=y"),
    "scheme_upper": options(uri="SIP:198.18.0.1"),
    "fqdn": options(uri="sip:sbc.example.com"),
    "fqdn_case": options(uri="sip:SBC.Example.COM:5060"),
    "any_user": options(uri="sip:ping@sbc.example.com"),
    "any_user_password": options(uri="sip:ping:pw@198.18.0.1;lr"),
    "named_user": options(uri="sip:keepalive@198.18.0.2"),
    "named_user_port": options(uri="sip:keepalive@198.18.0.2:5060;transport=udp"),
    "named_user_password": options(uri="sip:keepalive:secret@198.18.0.2"),
    "compact": (b"OPTIONS sip:198.18.0.1 SIP/2.0\r\n"
                b"v: SIP/2.0/UDP 198.18.1.10:5060;branch=z9hG4bKc1\r\n"
                b"t: <sip:198.18.0.1>\r\n"
                b"f: <sip:ping@198.18.1.10>;tag=c1\r\n"
                b"i: compact-ka@pc33\r\n"
                b"CSeq: 5 OPTIONS\r\n"
                b"l: 0\r\n\r\n"),
    "case_and_space": (b"OPTIONS sip:198.18.0.1 SIP/2.0\r\n"
                       b"VIA : SIP/2.0/UDP 198.18.1.10:5062;branch=z9hG4bKcs\r\n"
                       b"max-forwards:   9\r\n"
                       b"tO:<sip:198.18.0.1>\r\n"
                       b"FROM:   <sip:ping@198.18.1.10>;tag=99\r\n"
                       b"CALL-ID: cs-1@h\r\n"
                       b"cseq: 7 OPTIONS\r\n\r\n"),
    "folded": (b"OPTIONS sip:198.18.0.1 SIP/2.0\r\n"
               b"Via: SIP/2.0/UDP 198.18.1.10\r\n"
               b" ;branch=z9hG4bKfold;rport\r\n"
               b"Max-Forwards:\r\n 70\r\n"
               b"To:\r\n\tNode\r\n <sip:198.18.0.1>\r\n"
               b"Subject: folded\r\n  and skipped\r\n"
               b"From: <sip:ping@198.18.1.10>\r\n ;tag=f1\r\n"
               b"Call-ID: folded-ka@pc33\r\n"
               b"CSeq:\r\n 2 OPTIONS\r\n"
               b"Content-Length: 0\r\n\r\n"),
    "bare_lf": options().replace(b"\r\n", b"\n"),
    "rport_bare": options(via=b"Via: SIP/2.0/UDP 198.18.1.10:5060;branch=z9hG4bKka1;rport\r\n"),
    "rport_first": options(via=b"Via: SIP/2.0/UDP 198.18.1.10:5060;rport;branch=z9hG4bKka1\r\n"),
    "rport_value": options(via=b"Via: SIP/2.0/UDP 198.18.1.10:5060;branch=z9hG4bKka1;rport=5999\r\n"),
    "long_callid": options(callid="k" * 240 + "@example.com"),
    "to_params": options(to=b"To: \"The Node\" <sip:198.18.0.1;transport=udp>;x-param=1"),
    "to_bare_uri": options(to=b"To: sip:198.18.0.1"),
    "no_max_forwards": options(mf=b""),
    "max_forwards_1": options(mf=b"Max-Forwards: 1\r\n"),
    "max_forwards_10": options(mf=b"Max-Forwards: 10\r\n"),
    "other_headers": options(extra=b"User-Agent: pinger/1.0\r\nSupported: timer\r\nX-Require: no\r\n"),
}
for _n in range(1, 6):
    ANSWERED[f"vias_{_n}"] = options(via=_vias(_n))
for _n in (2, 5):
    ANSWERED[f"vias_{_n}_combined"] = options(via=_vias(_n, combined=True))


def test_at_least_thirty_answered_shapes():
    assert len(ANSWERED) >= 30


@pytest.mark.parametrize("case", sorted(ANSWERED))
def test_200_v4_byte_exact(env, case):
    ka_on(env)
    req = ANSWERED[case]
    out = answer(env, udp4(req, sport=5062))
    _check(out, expected_frame(req, sport=5062))


V6_CASES = {
    "plain": options(uri="sip:[2001:db8::1]", to=b"To: <sip:[2001:db8::1]>"),
    "port": options(uri="sip:[2001:DB8::1]:5060;transport=udp"),
    "expanded": options(uri="sip:[2001:0db8:0000:0000:0000:0000:0000:0001]"),
    "user": options(uri="sip:ping@[2001:db8::1]"),
    "compact": ANSWERED["compact"].replace(b"sip:198.18.0.1 SIP", b"sip:[2001:db8::1] SIP"),
    "folded": ANSWERED["folded"].replace(b"sip:198.18.0.1 SIP", b"sip:[2001:db8::1] SIP"),
    "vias_5": options(uri="sip:[2001:db8::1]", via=_vias(5)),
    "long_callid": options(uri="sip:[2001:db8::1]", callid="x" * 200),
}


@pytest.mark.parametrize("case", sorted(V6_CASES))
def test_200_v6_byte_exact(env, case):
    ka_on(env)
    req = V6_CASES[case]
    out = answer(env, udp6(req, sport=5062))
    _check(out, expected_frame(req, v6=True, sport=5062))


def test_200_vlan(env):
    ka_on(env)
    req = ANSWERED["plain"]
    out = answer(env, udp4(req, sport=5062, vlan=7))
    _check(out, expected_frame(req, sport=5062, vlan=7))


@pytest.mark.parametrize("headers", [b"", b"Allow: OPTIONS\r\n",
                                     b"Server: " + b"s" * 300 + b"\r\nAllow: " + b"A" * 180 + b"\r\n"])
def test_200_header_lines_as_configured(env, headers):
    ka_on(env, headers=headers)
    req = ANSWERED["plain"]
    out = answer(env, udp4(req))
    _check(out, expected_frame(req, headers=headers))


def test_200_retransmission_same_tag_and_secret_matters(env):
    ka_on(env)
    req = ANSWERED["plain"]
    first = answer(env, udp4(req))
    assert answer(env, udp4(req)) == first
    c = env.ctl()
    c.node_secret = SECRET + 1
    env.maps["etsf_ctl"].update(bytes(4), bytes(c))
    other = answer(env, udp4(req))
    assert other != first and len(other) == len(first)


PASSED = {
    "max_forwards_0": options(mf=b"Max-Forwards: 0\r\n"),
    "max_forwards_00": options(mf=b"Max-Forwards: 00\r\n"),
    "to_tag": options(to=b"To: <sip:198.18.0.1>;tag=abc"),
    "require": options(extra=b"Require: 100rel\r\n"),
    "require_lower": options(extra=b"require: timer\r\n"),
    "proxy_require": options(extra=b"Proxy-Require: sec-agree\r\n"),
    "proxy_require_spaced": options(extra=b"PROXY-REQUIRE : foo\r\n"),
    "other_host": options(uri="sip:198.18.0.9"),
    "host_prefix": options(uri="sip:198.18.0.10"),
    "host_suffix": options(uri="sip:sbc.example.com.evil"),
    "fqdn_other": options(uri="sip:other.example.com"),
    "user_mismatch": options(uri="sip:other@198.18.0.2"),
    "user_missing": options(uri="sip:198.18.0.2"),
    "user_case": options(uri="sip:KeepAlive@198.18.0.2"),
    "sips": options(uri="sips:198.18.0.1"),
    "tel": options(uri="tel:+15551234"),
    "host_too_long": options(uri="sip:" + "h" * 70 + ".example.com"),
}


@pytest.mark.parametrize("case", sorted(PASSED))
def test_not_answerable_goes_to_the_proxy(env, case):
    ka_on(env)
    passed(env, udp4(PASSED[case]), "passed_not_matching")


def test_identity_is_per_slot(env):
    ka_on(env)
    for k in env.maps["etsf_ka_id"].keys():
        env.maps["etsf_ka_id"].delete(k)
    add_ids(env, slot=1)
    passed(env, udp4(ANSWERED["plain"]), "passed_not_matching")


def test_proxy_stale_passes(env):
    ka_on(env, alive=False)
    passed(env, udp4(ANSWERED["plain"]), "passed_proxy_stale")
    c = env.ctl()
    c.proxy_alive_until_ns = bpf.monotonic_ns() - 1
    env.maps["etsf_ctl"].update(bytes(4), bytes(c))
    passed(env, udp4(ANSWERED["plain"]), "passed_proxy_stale")
    c.proxy_alive_until_ns = bpf.monotonic_ns() + 3600 * 10**9
    env.maps["etsf_ctl"].update(bytes(4), bytes(c))
    answer(env, udp4(ANSWERED["plain"]))


def test_sampling_one_in_n_exact(env):
    ka_on(env, sample_every=4)
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})        # the sample counter is per CPU
    try:
        outcomes = []
        for _unused in range(12):
            ret, _unused1, _unused2 = bpf.test_run(env.progs["xdp_sip"].fd, udp4(ANSWERED["plain"]))
            outcomes.append(ret)
    finally:
        os.sched_setaffinity(0, cpus)
    assert outcomes == ([bpf.XDP_TX] * 3 + [bpf.XDP_PASS]) * 3
    st = env.ka_stats()
    assert (st["answered"], st["passed_sampled"], st["sample_seq"]) == (9, 3, 12)


def test_disabled_policy_flag_passes_uncounted(env):
    ka_on(env, flags=L.POL_F_VALID)
    passed(env, udp4(ANSWERED["plain"]), None)


def test_tcp_stays_with_the_proxy(env):
    ka_on(env)
    passed(env, tcp4(ANSWERED["plain"]), None)


def test_invite_to_the_node_is_not_answered(env):
    ka_on(env)
    req = options().replace(b"OPTIONS sip:", b"INVITE sip:").replace(b"17 OPTIONS", b"17 INVITE")
    passed(env, udp4(req), None, method=M.INVITE)


def test_deny_comes_first(env):
    ka_on(env)
    env.acl(SRC4 + "/32", L.AclAction.DENY)
    passed(env, udp4(ANSWERED["plain"]), None, verdict=V.DROP, reason=R.DENY)


def test_trusted_source_is_answered(env):
    ka_on(env)
    env.acl(SRC4 + "/32", L.AclAction.TRUST)
    req = ANSWERED["plain"]
    _check(answer(env, udp4(req)), expected_frame(req))


def test_rate_limit_comes_first(env):
    ka_on(env, rates={L.RlClass.OPTIONS: (1, 2)})
    answer(env, udp4(ANSWERED["plain"]))
    answer(env, udp4(ANSWERED["plain"]))
    passed(env, udp4(ANSWERED["plain"]), None, verdict=V.DROP, reason=R.RATE_LIMIT)


def test_overload_shedding_comes_first(env):
    ka_on(env, shed_below=[0, 1, 2, 3])
    c = env.ctl()
    c.overload_level = 1                     # sheds priority low: OPTIONS
    env.maps["etsf_ctl"].update(bytes(4), bytes(c))
    passed(env, udp4(ANSWERED["plain"]), None, verdict=V.DROP, reason=R.OVERLOAD)


def test_bypass_disables_the_responder(env):
    ka_on(env)
    c = env.ctl()
    c.bypass = 1
    env.maps["etsf_ctl"].update(bytes(4), bytes(c))
    passed(env, udp4(ANSWERED["plain"]), None, method=M.UNKNOWN, reason=R.BYPASS)


def test_deadman_disables_the_responder(env):
    ka_on(env)
    c = env.ctl()
    c.deadman_ns = 10**9
    c.heartbeat_ns = bpf.monotonic_ns() - 5 * 10**9
    env.maps["etsf_ctl"].update(bytes(4), bytes(c))
    passed(env, udp4(ANSWERED["plain"]), None, method=M.UNKNOWN, reason=R.DEADMAN)


def test_response_too_big_passes(env):
    ka_on(env, headers=b"Server: " + b"s" * 500 + b"\r\n")
    big = options(via=b"".join(b"Via: SIP/2.0/UDP relay%d.example.com;branch=z9hG4bK%s\r\n" % (i, b"b" * 40)
                               for i in range(12)))
    passed(env, udp4(big), "passed_not_matching")


# ---- NAT keep-alives --------------------------------------------------------------------------

NAT = {"crlf": b"\r\n", "crlfcrlf": b"\r\n\r\n", "zeros": b"\0\0\0\0"}
NOT_NAT = {"crlf3": b"\r\n\r\n\r\n", "zeros_3": b"\0\0\0", "lf": b"\n\n", "almost": b"\0\0\0\1",
           "cr_lf_cr": b"\r\n\r\0"}


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("case", sorted(NAT))
def test_nat_keepalive_counted_and_passed(env, case, v6):
    ka_on(env)
    frame = (udp6 if v6 else udp4)(NAT[case])
    passed(env, frame, "nat_keepalive_seen", method=M.UNKNOWN, reason=R.NOT_SIP)


@pytest.mark.parametrize("case", sorted(NAT))
def test_nat_keepalive_dropped_by_policy(env, case):
    ka_on(env, flags=L.POL_F_VALID | L.POL_F_NAT_DROP)
    ka0 = env.ka_stats()
    before = env.counter(L.Hook.XDP, M.UNKNOWN, V.DROP, R.NAT_KEEPALIVE)
    ret, _unused1, _unused2 = bpf.test_run(env.progs["xdp_sip"].fd, udp4(NAT[case]))
    assert ret == bpf.XDP_DROP
    assert env.counter(L.Hook.XDP, M.UNKNOWN, V.DROP, R.NAT_KEEPALIVE) - before == 1
    st = env.ka_stats()
    assert (st["nat_keepalive_seen"] - ka0["nat_keepalive_seen"],
            st["nat_keepalive_dropped"] - ka0["nat_keepalive_dropped"]) == (1, 1)


@pytest.mark.parametrize("case", sorted(NOT_NAT))
def test_other_short_payloads_are_not_nat_keepalives(env, case):
    ka_on(env, flags=L.POL_F_VALID | L.POL_F_NAT_DROP)
    passed(env, udp4(NOT_NAT[case]), None, method=M.UNKNOWN, reason=R.NOT_SIP)


def test_nat_keepalive_deny_first_and_tcp_not_counted(env):
    ka_on(env, flags=L.POL_F_VALID | L.POL_F_NAT_DROP)
    passed(env, tcp4(b"\r\n\r\n"), None, method=M.UNKNOWN, reason=R.TCP_CONT)
    env.acl(SRC4 + "/32", L.AclAction.DENY)
    passed(env, udp4(b"\r\n\r\n"), None, verdict=V.DROP, reason=R.DENY, method=M.UNKNOWN)


def test_nat_keepalive_not_on_a_sip_port(env):
    ka_on(env, flags=L.POL_F_VALID | L.POL_F_NAT_DROP)
    ret, _unused1, _unused2 = bpf.test_run(env.progs["xdp_sip"].fd, udp4(b"\r\n\r\n", sport=4000, dport=4001))
    assert ret == bpf.XDP_PASS
    assert env.ka_stats()["nat_keepalive_seen"] == 0


# ---- on the wire --------------------------------------------------------------------------------

@pytest.mark.parametrize("v6", [False, True])
def test_200_arrives_at_a_real_socket(env, veth, v6):  # noqa: F811 (fixture)
    ns, iface = veth
    ka_on(env)
    req = V6_CASES["plain"] if v6 else ANSWERED["rport_bare"]
    frame = (udp6 if v6 else udp4)(req, sport=5062)
    out = answer(env, frame)
    want = expected_200(req, SRC6 if v6 else SRC4, 5062)
    assert out.endswith(want)
    bad = bytearray(out)
    bad[-5] ^= 0x01                    # inside the payload: only the UDP checksum can tell
    proto = "snmp6" if v6 else "snmp"
    errs = _snmp(ns, proto, "InCsumErrors")
    data, src, sport = _deliver(ns, iface, [bytes(bad), out], SRC6 if v6 else SRC4, 5062)
    assert (data, src, sport) == (want, DST6 if v6 else DST4, 5060)
    assert _snmp(ns, proto, "InCsumErrors") == errs + 1


def test_ipv4_options_go_to_the_proxy(env):
    ka_on(env)
    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                  / IP(src=SRC4, dst=DST4, options=[IPOption_RR(routers=["198.18.0.9"])])
                  / UDP(sport=5060, dport=5060) / Raw(ANSWERED["plain"]))
    passed(env, frame, "passed_not_matching")
