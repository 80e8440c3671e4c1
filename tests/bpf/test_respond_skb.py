"""In-kernel answers at TC (bpf/etsf_reply_skb.h): etsf_skb_reply turns the request sk_buff into
the same frame etsf_xdp_reply makes for XDP_TX.  Through the test-only TC program
bpf/etsf_reply_skb_check.c (xdp_sip's answer path with etsf_skb_reply): PROG_TEST_RUN of both
hooks on the same request gives byte-identical frames, equal to the response written out in
test_respond / test_keepalive (checksums recomputed by scapy), for compact, folded, multi-Via
and IPv6 requests; a frame it cannot answer leaves unchanged.  And on a real veth pair between
two namespaces, with the program at the node's TC ingress: a client UDP socket's INVITEs and
OPTIONS are answered byte for byte, with the request's checksum state NONE (the client sums in
software: the client's stack verifies ours), PARTIAL with the node's egress summing in software
(skb_checksum_help from our pseudo-header seed, then verified by the client) and PARTIAL end to
end; no checksum error is counted in the client's namespace."""
import os
import subprocess
from pathlib import Path

import pytest
from scapy.all import IP, Ether, IPOption_NOP

from etsf import bpf, bpfmaps
from etsf.build import build_test_object

from .conftest import REPO
from .helpers import DST4, DST6, SRC4, SRC6, SkBuff, sip_request, udp4, udp6, udp_exchange
from .test_keepalive import ANSWERED, SECRET, V6_CASES, expected_200, ka_on, options
from .test_keepalive import expected_frame as expected_200_frame
from .test_respond import CASES, RETRY, _check, expected_503, expected_frame

TC_ACT_OK = 0
TC_ACT_REDIRECT = 7
SOURCE = "etsf_reply_skb_check.c"
# etsf_reply_check slots (bpf/etsf_reply_skb_check.c): ip_summed seen on entry, outcomes
CSUM_NONE, CSUM_UNNECESSARY, CSUM_COMPLETE, CSUM_PARTIAL = range(4)
RC_SENT, RC_UNCHANGED, RC_DROPPED = 4, 5, 6


@pytest.fixture(scope="session")
def check_prog(objects, loaded):
    """The test-only TC program, its maps shared with xdp_sip's under the test pin root."""
    obj = build_test_object(REPO / "bpf", Path(objects["xdp_sip.bpf.o"]).parent, SOURCE)
    assert obj not in objects.values()          # never among the production objects
    prog = bpf.load_object(obj, loaded["root"])["tc_reply_check"]
    counts = bpf.open_map("etsf_reply_check", loaded["root"])
    yield prog, counts
    counts.close()
    prog.close()


def _counts(counts):
    return [int.from_bytes(counts.lookup(i.to_bytes(4, "little")), "little") for i in range(8)]


def _delta(counts, before):
    return {i: v - before[i] for i, v in enumerate(_counts(counts)) if v != before[i]}


def both_on(env):
    """Keep-alive answers on, and admission refusing every new INVITE (503 with Retry-After)."""
    ka_on(env)
    c = env.ctl()
    c.invite_admit_rate = 1
    c.invite_admit_burst = 0
    c.retry_after_s = RETRY
    env.maps["etsf_ctl"].update(bytes(4), bytes(c))


def _tc(prog, frame):
    """retval and the frame: the kernel returns skb->len bytes from the MAC header on."""
    ret, out, _unused = bpf.test_run(prog.fd, frame, ctx=bytes(SkBuff()))
    return ret, out


def _xdp(env, frame):
    ret, out, _unused = bpf.test_run(env.progs["xdp_sip"].fd, frame)
    assert ret == bpf.XDP_TX, (ret, env.last())
    return out


def _same_as_xdp(env, check_prog, frame, want):
    prog, counts = check_prog
    before = _counts(counts)
    xdp = _xdp(env, frame)
    ret, out = _tc(prog, frame)
    assert ret == TC_ACT_REDIRECT
    assert out == xdp
    _check(out, want)
    assert _delta(counts, before) == {CSUM_NONE: 1, RC_SENT: 1}


@pytest.mark.parametrize("case", ["plain", "compact", "folded", "case_and_space", "rport_bare",
                                  "vias_3", "vias_5_combined", "long_callid", "bare_lf",
                                  "big_request"])
def test_503_v4_same_as_xdp(env, check_prog, case):
    both_on(env)
    req = CASES[case]
    _same_as_xdp(env, check_prog, udp4(req, sport=5062),
                 expected_frame(req, sport=5062, secret=SECRET))


@pytest.mark.parametrize("case", ["plain", "compact", "folded", "vias_3_combined"])
def test_503_v6_same_as_xdp(env, check_prog, case):
    both_on(env)
    req = CASES[case]
    _same_as_xdp(env, check_prog, udp6(req, sport=40123),
                 expected_frame(req, v6=True, sport=40123, secret=SECRET))


def test_503_vlan_same_as_xdp(env, check_prog):
    both_on(env)
    req = CASES["rport_first"]
    _same_as_xdp(env, check_prog, udp4(req, vlan=42, sport=5070),
                 expected_frame(req, vlan=42, sport=5070, secret=SECRET))


@pytest.mark.parametrize("case", ["plain", "compact", "folded", "vias_1", "vias_5",
                                  "vias_5_combined", "rport_first", "to_params"])
def test_200_v4_same_as_xdp(env, check_prog, case):
    both_on(env)
    req = ANSWERED[case]
    _same_as_xdp(env, check_prog, udp4(req, sport=5062), expected_200_frame(req, sport=5062))


def test_200_as_long_as_the_request_same_as_xdp(env, check_prog):
    """An answer exactly as long as its request: the one case where the skb is trimmed to its
    headers before it is grown (a single resize to the same length would change nothing)."""
    both_on(env)
    base = options()
    pad = len(expected_200(base, SRC4, 5062)) - len(base) - len(b"X-Pad: \r\n")
    assert pad > 0
    req = options(extra=b"X-Pad: " + b"p" * pad + b"\r\n")
    assert len(expected_200(req, SRC4, 5062)) == len(req)
    _same_as_xdp(env, check_prog, udp4(req, sport=5062), expected_200_frame(req, sport=5062))


@pytest.mark.parametrize("case", ["plain", "compact", "folded", "vias_5"])
def test_200_v6_same_as_xdp(env, check_prog, case):
    both_on(env)
    req = V6_CASES[case]
    _same_as_xdp(env, check_prog, udp6(req, sport=5062),
                 expected_200_frame(req, v6=True, sport=5062))


# Call-IDs whose 503 (to SRC4/SRC6 port 5062, this SECRET) sums to 0: sent as 0xffff (found by
# searching k in "zero-{k}@h17s")
ZERO_SUM = {False: "zero-348975@h17s", True: "zero-382078@h17s"}


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_checksum_zero_sent_as_ffff(env, check_prog, v6):
    both_on(env)
    req = sip_request("INVITE", callid=ZERO_SUM[v6])
    frame = (udp6 if v6 else udp4)(req, sport=5062)
    want = expected_frame(req, v6=v6, sport=5062, secret=SECRET)
    assert want[(54 if v6 else 34) + 6:][:2] == b"\xff\xff"
    _same_as_xdp(env, check_prog, frame, want)


def test_ip_options_leave_the_skb_unchanged(env, check_prog):
    """IPv4 with options is not answered at TC: -1, the request goes on as it came."""
    prog, counts = check_prog
    both_on(env)
    # an answerable OPTIONS with four NOP options (IHL 6), checksums rebuilt by scapy
    pkt = Ether(udp4(ANSWERED["plain"]))
    pkt[IP].options = [IPOption_NOP()] * 4
    del pkt[IP].ihl, pkt[IP].len, pkt[IP].chksum
    frame = bytes(pkt)
    assert frame[14] == 0x46
    before = _counts(counts)
    assert _tc(prog, frame) == (TC_ACT_OK, frame)
    assert _delta(counts, before) == {RC_UNCHANGED: 1}


# -------------------------------------------------------------------- a real veth pair

N = 12
SPORT = 5062


def _run(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


def _in(ns, *cmd):
    # nsenter, not `ip netns exec`: that remounts /sys and would hide the pinned program
    _run("nsenter", f"--net=/run/netns/{ns}", *cmd)


@pytest.fixture
def pair(env, check_prog):
    """Client and node namespaces joined by a veth pair, tc_reply_check at the node end's TC
    ingress; yields (client ns, client dev, node ns, node dev)."""
    tag = f"{os.getpid() % 100000}"
    cli, node, ci, ni = f"h17s-c-{tag}", f"h17s-n-{tag}", f"h17sc{tag}", f"h17sn{tag}"
    pin = os.path.join(env.root, "h17s_tc_reply_check")
    _run("ip", "netns", "add", cli)
    try:
        _run("ip", "netns", "add", node)
        _run("ip", "link", "add", ci, "netns", cli, "type", "veth", "peer", "name", ni, "netns", node)
        for ns, dev, a4, a6 in ((cli, ci, SRC4, SRC6), (node, ni, DST4, DST6)):
            for cmd in (["ip", "addr", "add", f"{a4}/15", "dev", dev],
                        ["ip", "-6", "addr", "add", f"{a6}/32", "dev", dev, "nodad"],
                        ["ip", "link", "set", dev, "up"],
                        ["ip", "link", "set", "lo", "up"]):
                _in(ns, *cmd)
        bpfmaps.pin_program(check_prog[0], pin)
        _in(node, "tc", "qdisc", "add", "dev", ni, "clsact")
        _in(node, "tc", "filter", "add", "dev", ni, "ingress", "bpf", "direct-action", "pinned", pin)
        yield cli, ci, node, ni
    finally:
        subprocess.run(["ip", "netns", "del", cli], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", node], capture_output=True, check=False)
        bpfmaps.unpin(pin)


def _snmp_errors(ns, v6):
    out = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp6" if v6 else "/proc/net/snmp"],
                         check=True, capture_output=True, text=True).stdout
    if v6:
        return int(next(ln.split()[1] for ln in out.splitlines() if ln.startswith("Udp6InCsumErrors")))
    rows = [ln.split() for ln in out.splitlines() if ln.startswith("Udp:")]
    return int(rows[1][rows[0].index("InCsumErrors")])


def _exchange(cli, reqs, v6):
    return udp_exchange(cli, reqs, v6, SPORT, 3)


def _requests(v6):
    host = b"[2001:db8::1]" if v6 else b"198.18.0.1"
    src = (b"[" + SRC6.encode() + b"]") if v6 else SRC4.encode()
    reqs = []
    for k in range(N):
        via = b"Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK-h17s-%d;rport\r\n" % (src, SPORT, k)
        if k % 2:
            reqs.append(b"OPTIONS sip:%s SIP/2.0\r\n" % host + via
                        + b"f: <sip:ping@%s>;tag=%d\r\nTo: <sip:%s>\r\n" % (src, k, host)
                        + b"i: h17s-ka-%d\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n" % k)
        else:
            reqs.append(b"INVITE sip:bob@%s SIP/2.0\r\n" % host + via
                        + b"From: <sip:a@%s>;tag=%d\r\nt: <sip:bob@%s>\r\n" % (src, k, host)
                        + b"Call-ID: h17s-inv-%d\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n" % k)
    return reqs


# client tx checksum offload, node tx checksum offload -> ip_summed of the request at TC ingress
MODES = {"software": ("off", "on", CSUM_NONE),
         "partial_filled_on_egress": ("on", "off", CSUM_PARTIAL),
         "partial": ("on", "on", CSUM_PARTIAL)}


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_answers_reach_the_client_socket(env, check_prog, pair, mode, v6):
    cli, ci, node, ni = pair
    client_tx, node_tx, summed = MODES[mode]
    _in(cli, "ethtool", "-K", ci, "tx", client_tx)
    _in(node, "ethtool", "-K", ni, "tx", node_tx)
    both_on(env)
    reqs = _requests(v6)
    src = SRC6 if v6 else SRC4
    wants = [expected_200(q, src, SPORT) if q.startswith(b"OPTIONS")
             else expected_503(q, src, SPORT, secret=SECRET) for q in reqs]
    # longer than their requests: the skb grows
    assert min(len(w) - len(q) for q, w in zip(reqs, wants)) > 64
    before = _counts(check_prog[1])
    errs = _snmp_errors(cli, v6)
    got = _exchange(cli, reqs, v6)
    assert got == [(w, DST6 if v6 else DST4, 5060) for w in wants]
    assert _delta(check_prog[1], before) == {summed: N, RC_SENT: N}
    assert _snmp_errors(cli, v6) == errs
