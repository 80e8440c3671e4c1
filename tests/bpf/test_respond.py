"""In-kernel stateless 503 (bpf/etsf_respond.h) for INVITEs refused by admission: the whole
XDP_TX output frame compared byte for byte with a response built here from the request
(checksums computed by scapy), compact/long/folded headers, 1..5 Vias, rport, IPv6, VLAN,
long Call-IDs, the fall-back when the response does not fit."""
import re

import pytest
from scapy.all import IP, UDP, Dot1Q, Ether, IPv6, Raw

from etsf import bpf
from etsf import layout as L

from .helpers import admit_put, DST4, DST6, SRC4, SRC6, M, R, V, sip_request, udp4, udp6

SECRET = 0x5EC2E7_0DDBA11_42
RETRY = 30
STATUS = b"SIP/2.0 503 Service Unavailable\r\n"
KEEP = {"via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"}


def _headers(req):
    """[(name, raw bytes of the header with its folded lines and line ending)] of the header block."""
    body = req.split(b"\n", 1)[1]
    lines = re.findall(rb"[^\n]*\n", body)
    out = []
    for ln in lines:
        if ln in (b"\r\n", b"\n"):
            break
        if ln[:1] in (b" ", b"\t"):
            out[-1][1].append(ln)
        else:
            out.append((ln.split(b":", 1)[0].strip().lower().decode(), [ln]))
    return [(n, b"".join(parts)) for n, parts in out]


def _split_end(raw):
    """(value, line ending) of a header."""
    end = b"\r\n" if raw.endswith(b"\r\n") else b"\n"
    return raw[: -len(end)], end


def _callid(req):
    for name, raw in _headers(req):
        if name in ("call-id", "i"):
            return raw.split(b":", 1)[1].strip()
    raise AssertionError("no Call-ID")


def expected_503(req, src, sport, retry=RETRY, secret=SECRET):
    """The response the kernel must build, from the RFC 3261/3581 rules written out here."""
    received = b";received=" + (
        src.encode() if ":" not in src else
        ":".join(f"{int.from_bytes(bytes.fromhex(g.zfill(4)), 'big'):x}"
                 for g in __import__("ipaddress").ip_address(src).exploded.split(":")).encode())
    tag = L.resp_tag(L.fnv1a64(_callid(req)), secret).encode()
    out = STATUS
    top_done = False
    for name, raw in _headers(req):
        if name not in KEEP:
            continue
        val, end = _split_end(raw)
        if name in ("via", "v") and not top_done:
            top_done = True
            cut = val.find(b",")
            first, rest = (val, b"") if cut < 0 else (val[:cut], val[cut:])
            first = re.sub(rb"(;rport)(?=[;,\r\n]|$)", rb"\g<1>=" + str(sport).encode(), first,
                           flags=re.I)
            val = first + received + rest
        if name in ("to", "t") and b";tag=" not in val.lower():
            val += b";tag=" + tag
        out += val + end
    if retry:
        out += f"Retry-After: {retry}\r\n".encode()
    return out + b"Content-Length: 0\r\n\r\n"


def expected_frame(req, v6=False, sport=5060, dport=5060, vlan=None, **kw):
    payload = expected_503(req, SRC6 if v6 else SRC4, sport, **kw)
    l2 = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")
    if vlan is not None:
        l2 = l2 / Dot1Q(vlan=vlan)
    if v6:
        l3 = IPv6(src=DST6, dst=SRC6, hlim=64)
    else:
        l3 = IP(src=DST4, dst=SRC4, ttl=64, id=0, flags=0)
    return bytes(l2 / l3 / UDP(sport=dport, dport=sport) / Raw(payload))


def reject_all(env, retry=RETRY, flags=L.CTL_F_RECORD):
    """Admission on with an empty bucket: every new INVITE is refused."""
    env.set_policy()
    c = env.ctl()
    c.invite_admit_rate = 1
    c.invite_admit_burst = 0
    c.retry_after_s = retry
    c.node_secret = SECRET
    c.flags = flags
    env.maps["etsf_ctl"].update(bytes(4), bytes(c))


def run_503(env, frame):
    before = env.counter(L.Hook.XDP, M.INVITE, V.DROP, R.ADMIT_503)
    ret, out, _unused = bpf.test_run(env.progs["xdp_sip"].fd, frame)
    assert ret == bpf.XDP_TX, (ret, env.last())
    assert env.counter(L.Hook.XDP, M.INVITE, V.DROP, R.ADMIT_503) - before == 1
    return out


def _check(got, want):
    assert got == want, "\n" + repr(got) + "\n!=\n" + repr(want)
    # the checksums scapy computed for want are the ones in the kernel's frame
    pkt = Ether(got)
    l4 = pkt[UDP]
    sent = l4.chksum
    del l4.chksum
    if IP in pkt:
        ipc = pkt[IP].chksum
        del pkt[IP].chksum
        rebuilt = Ether(bytes(pkt))
        assert rebuilt[IP].chksum == ipc
    else:
        rebuilt = Ether(bytes(pkt))
    assert rebuilt[UDP].chksum == sent != 0


CASES = {
    "plain": sip_request("INVITE"),
    "compact": (b"INVITE sip:bob@example.com SIP/2.0\r\n"
                b"v: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKnashds8\r\n"
                b"t: <sip:bob@example.com>\r\n"
                b"f: <sip:alice@example.com>;tag=8\r\n"
                b"i: compact-1@pc33\r\n"
                b"CSeq: 1 INVITE\r\n"
                b"m: <sip:alice@pc33.example.com>\r\n"
                b"l: 0\r\n\r\n"),
    "case_and_space": (b"INVITE sip:bob@example.com SIP/2.0\r\n"
                       b"VIA : SIP/2.0/UDP 198.18.1.10:5062;branch=z9hG4bK1\r\n"
                       b"tO:Bob <sip:bob@example.com>\r\n"
                       b"FROM:   <sip:alice@example.com>;tag=99\r\n"
                       b"CALL-ID: x-1@h\r\n"
                       b"cseq: 7 INVITE\r\n\r\n"),
    "folded": (b"INVITE sip:bob@example.com SIP/2.0\r\n"
               b"Via: SIP/2.0/UDP pc33.example.com\r\n"
               b" ;branch=z9hG4bKfold;rport\r\n"
               b"To:\r\n\tBob\r\n <sip:bob@example.com>\r\n"
               b"Subject: folded\r\n  and skipped\r\n"
               b"From: <sip:alice@example.com>\r\n ;tag=f1\r\n"
               b"Call-ID: folded-1@pc33\r\n"
               b"CSeq:\r\n 2 INVITE\r\n"
               b"Content-Length: 0\r\n\r\n"),
    "rport_bare": sip_request("INVITE").replace(b"z9hG4bK776asdhds", b"z9hG4bK776asdhds;rport"),
    "rport_first": sip_request("INVITE").replace(b";branch=", b";rport;branch="),
    "rport_value": sip_request("INVITE").replace(b"z9hG4bK776asdhds",
                                                 b"z9hG4bK776asdhds;rport=1234"),
    "rport_lookalike": sip_request("INVITE").replace(b"z9hG4bK776asdhds",
                                                     b"z9hG4bK776asdhds;rportx;RPORT"),
    "long_callid": sip_request("INVITE", callid="c" * 240 + "@example.com"),
    "bare_lf": sip_request("INVITE").replace(b"\r\n", b"\n"),
    "big_request": sip_request("INVITE", body=b"v=0\r\n" + b"a=x\r\n" * 120,
                               extra=b"User-Agent: " + b"u" * 300 + b"\r\n"),
}


def _vias(n, combined=False):
    vias = [f"SIP/2.0/UDP proxy{i}.example.com:5060;branch=z9hG4bK{i}x".encode()
            for i in range(n - 1, 0, -1)]
    vias.append(b"SIP/2.0/UDP pc33.example.com;rport;branch=z9hG4bK0")
    if combined:
        hdr = b"Via: " + b", ".join(vias) + b"\r\n"
    else:
        hdr = b"".join(b"Via: " + v + b"\r\n" for v in vias)
    return (b"INVITE sip:bob@example.com SIP/2.0\r\n" + hdr
            + b"To: <sip:bob@example.com>\r\nFrom: <sip:a@example.com>;tag=1\r\n"
            + b"Call-ID: vias-%d@x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n" % n)


# ";rport" and "," at every alignment of the 8-byte copy
for _k in range(8):
    CASES[f"align_{_k}"] = sip_request("INVITE").replace(
        b";branch=z9hG4bK776asdhds",
        b";branch=z9hG4bK" + b"a" * _k + b";rport, SIP/2.0/UDP h" + b"b" * _k + b";rport")

for _n in range(1, 6):
    CASES[f"vias_{_n}"] = _vias(_n)
    CASES[f"vias_{_n}_combined"] = _vias(_n, combined=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_503_v4_byte_exact(env, case):
    reject_all(env)
    req = CASES[case]
    out = run_503(env, udp4(req, sport=5062))
    _check(out, expected_frame(req, sport=5062))
    assert env.last().reason == R.ADMIT_503


@pytest.mark.parametrize("case", ["plain", "compact", "folded", "rport_bare", "vias_3_combined",
                                  "long_callid"])
def test_503_v6_byte_exact(env, case):
    reject_all(env)
    req = CASES[case]
    out = run_503(env, udp6(req, sport=40123))
    _check(out, expected_frame(req, v6=True, sport=40123))


def test_503_vlan(env):
    reject_all(env)
    req = CASES["rport_bare"]
    out = run_503(env, udp4(req, vlan=42, sport=5070))
    _check(out, expected_frame(req, vlan=42, sport=5070))


#: (source address, source port, Retry-After): every digit count the answer writes, with zeros
#: inside and at the end (decimal octets 0..255, ports 1..65535, Retry-After up to 2^32 - 1,
#: IPv6 groups of one to four hex digits)
DIGITS = [
    ("198.19.0.9", 1, 1),
    ("198.18.10.99", 9, 9),
    ("198.19.100.255", 10, 10),
    ("198.18.200.100", 99, 99),
    ("198.19.255.0", 100, 100),
    ("198.18.1.10", 65535, 3600),
    ("198.18.0.0", 40000, 4294967295),
    ("2001:db8:0:f:10:fff:1000:ffff", 1, 10),
    ("2001:db8::", 65535, 4294967295),
    ("2001:db8:a:ab:abc:abcd:f000:100", 10009, 100000),
]


@pytest.mark.parametrize("src,sport,retry", DIGITS)
def test_503_decimal_and_hex_digits(env, src, sport, retry):
    """The received address, the rport value and Retry-After are written without leading zeros
    and with every zero they contain, whatever their number of digits."""
    reject_all(env, retry=retry)
    req = CASES["rport_bare"]
    v6 = ":" in src
    frame = (udp6 if v6 else udp4)(req, src=src, sport=sport)
    out = run_503(env, frame)
    payload = expected_503(req, src, sport, retry=retry)
    assert Ether(out)[Raw].load == payload, "\n" + repr(Ether(out)[Raw].load) + "\n!=\n" + repr(payload)


def test_503_without_retry_after(env):
    reject_all(env, retry=0)
    req = CASES["plain"]
    out = run_503(env, udp4(req))
    _check(out, expected_frame(req, retry=0))
    assert b"Retry-After" not in out


def test_503_retransmission_same_answer(env):
    """The refused INVITE's retransmissions get the identical 503 (same To-tag), counted as such."""
    reject_all(env)
    req = CASES["plain"]
    first = run_503(env, udp4(req))
    again = run_503(env, udp4(req))
    assert first == again
    a = env.admit()
    assert (a.rejected, a.retrans_rejected, a.replied, a.admitted) == (1, 1, 2, 0)


def test_503_tag_depends_on_secret(env):
    reject_all(env)
    req = CASES["plain"]
    out1 = run_503(env, udp4(req))
    c = env.ctl()
    c.node_secret = SECRET + 1
    env.maps["etsf_ctl"].update(bytes(4), bytes(c))
    admit_put(env.maps["etsf_admit_txn"], _callid(req).decode(), 314159, 0, None)   # forgotten
    out2 = run_503(env, udp4(req))
    _check(out2, expected_frame(req, secret=SECRET + 1))
    assert out1 != out2


def test_503_too_big_falls_back_to_drop(env):
    """A response over ETSF_RESP_MAX is not sent: the INVITE is dropped and counted."""
    reject_all(env)
    many = b"".join(b"Via: SIP/2.0/UDP hop%d.example.com;branch=z9hG4bK%s\r\n" % (i, b"b" * 40)
                    for i in range(24))
    req = sip_request("INVITE", extra=many)
    assert len(expected_503(req, SRC4, 5060)) > L.RESP_MAX
    env.xdp(udp4(req), V.DROP, M.INVITE, R.ADMISSION)
    a = env.admit()
    assert (a.rejected, a.replied, a.reply_unfit) == (1, 0, 1)


def test_503_header_block_past_parse_window_falls_back(env):
    """Call-ID, CSeq and To classify the INVITE, but the header block does not end inside the
    2048 bytes examined: no response is built, the INVITE is dropped and counted."""
    reject_all(env)
    req = sip_request("INVITE", extra=b"X-Pad: " + b"p" * (L.PARSE_BYTES + 10) + b"\r\n")
    env.xdp(udp4(req), V.DROP, M.INVITE, R.ADMISSION)
    a = env.admit()
    assert (a.rejected, a.replied, a.reply_unfit) == (1, 0, 1)


def test_silent_flag_drops_without_503(env):
    reject_all(env, flags=L.CTL_F_RECORD | L.CTL_F_ADMIT_SILENT)
    env.xdp(udp4(CASES["plain"]), V.DROP, M.INVITE, R.ADMISSION)
    a = env.admit()
    assert (a.rejected, a.replied, a.reply_unfit) == (1, 0, 0)


def test_tcp_invite_refused_is_dropped(env):
    """UDP only: a refused INVITE over TCP is dropped, never answered in the kernel."""
    from .helpers import tcp4
    reject_all(env)
    env.xdp(tcp4(CASES["plain"]), V.DROP, M.INVITE, R.ADMISSION)
    assert env.admit().reply_unfit == 1
