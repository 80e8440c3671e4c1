"""In-kernel answers longer than their request, on a real veth with native XDP.

BPF_PROG_TEST_RUN always gives an XDP frame a page of tailroom, so there the answer grows at the
tail.  A veth runs XDP on an skb buffer sized to the data (tailroom: its alignment slack, more
only for the last fragment of a page-pool page), so the answer must grow at the head, into the
XDP_PACKET_HEADROOM every XDP frame has.  Here the request comes from a real UDP socket in a
namespace of its own, through the veth pair into the node's namespace, where xdp_sip is attached
(native); the answer leaves with XDP_TX and must reach that socket: every one of N requests
answered, byte for byte, counted N times."""
import os
import subprocess

import pytest

from etsf import bpfmaps
from etsf import layout as L

from .helpers import DST4, DST6, SRC4, SRC6, M, R, V, udp_exchange
from .test_keepalive import expected_200, ka_on
from .test_respond import expected_503, reject_all

N = 40
SPORT = 5062


def _run(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def pair(env):
    """Client and node namespaces joined by a veth pair; xdp_sip (native) on the node's end, the
    count-only XDP_PASS program on the client's (a veth delivers XDP_TX frames only to a peer
    running NAPI, i.e. with an XDP program)."""
    tag = f"{os.getpid() % 100000}"
    cli, node, ci, ni = f"i18f-c-{tag}", f"i18f-n-{tag}", f"i18fc{tag}", f"i18fn{tag}"
    pins = {p: os.path.join(env.root, f"veth_{p}") for p in ("xdp_sip", "xdp_count")}
    _run("ip", "netns", "add", cli)
    try:
        _run("ip", "netns", "add", node)
        _run("ip", "link", "add", ci, "netns", cli, "type", "veth", "peer", "name", ni, "netns", node)
        for ns, dev, a4, a6 in ((cli, ci, SRC4, SRC6), (node, ni, DST4, DST6)):
            for cmd in (["ip", "addr", "add", f"{a4}/15", "dev", dev],
                        ["ip", "-6", "addr", "add", f"{a6}/32", "dev", dev, "nodad"],
                        ["ip", "link", "set", dev, "up"],
                        ["ip", "link", "set", "lo", "up"],
                        ["ethtool", "-K", dev, "rx", "off"]):
                _run("ip", "netns", "exec", ns, *cmd)
        for prog, ns, dev in (("xdp_sip", node, ni), ("xdp_count", cli, ci)):
            bpfmaps.pin_program(env.progs[prog], pins[prog])
            # nsenter, not `ip -n`: that remounts /sys and would hide the pin
            _run("nsenter", f"--net=/run/netns/{ns}", "ip", "link", "set", "dev", dev, "xdpdrv",
                 "pinned", pins[prog])
        yield cli
    finally:
        subprocess.run(["ip", "netns", "del", cli], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", node], capture_output=True, check=False)
        for path in pins.values():
            bpfmaps.unpin(path)


def _exchange(cli, reqs, v6):
    return udp_exchange(cli, reqs, v6, SPORT, 5)


def _bare_options(k):
    """A sipp-like bare ping: no Contact, Accept, Allow, User-Agent, Max-Forwards."""
    return (b"OPTIONS sip:198.18.0.1 SIP/2.0\r\n"
            + f"Via: SIP/2.0/UDP 198.18.1.10:{SPORT};branch=z9hG4bK-veth-{k};rport\r\n".encode()
            + f"From: <sip:ping@198.18.1.10>;tag={k}\r\n".encode()
            + b"To: <sip:198.18.0.1>\r\n"
            + f"Call-ID: veth-ka-{k}\r\n".encode()
            + b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")


def _short_invite(k):
    return (b"INVITE sip:bob@198.18.0.1 SIP/2.0\r\n"
            + f"Via: SIP/2.0/UDP 198.18.1.10:{SPORT};branch=z9hG4bK-veth-i{k};rport\r\n".encode()
            + f"f: <sip:a@198.18.1.10>;tag={k}\r\n".encode()
            + b"t: <sip:bob@198.18.0.1>\r\n"
            + f"i: veth-inv-{k}\r\n".encode()
            + b"CSeq: 1 INVITE\r\nl: 0\r\n\r\n")


@pytest.mark.parametrize("v6", [False, True])
def test_bare_options_all_answered_on_veth(env, pair, v6):
    ka_on(env)
    reqs = [_bare_options(k) for k in range(N)]
    src = SRC6 if v6 else SRC4
    wants = [expected_200(q, src, SPORT) for q in reqs]
    # longer than the tail slack of a buffer sized to the data: the head path is needed
    assert min(len(w) - len(q) for q, w in zip(reqs, wants)) > 64
    before = env.counter(L.Hook.XDP, M.OPTIONS, V.REDIRECT, R.KA_ANSWERED)
    ka0 = env.ka_stats()
    got = _exchange(pair, reqs, v6)
    assert got == [(w, DST6 if v6 else DST4, 5060) for w in wants]
    assert env.counter(L.Hook.XDP, M.OPTIONS, V.REDIRECT, R.KA_ANSWERED) - before == N
    delta = {k: v - ka0[k] for k, v in env.ka_stats().items() if v != ka0[k] and k != "sample_seq"}
    assert delta == {"answered": N}


@pytest.mark.parametrize("v6", [False, True])
def test_503_to_short_invites_all_sent_on_veth(env, pair, v6):
    reject_all(env)
    reqs = [_short_invite(k) for k in range(N)]
    src = SRC6 if v6 else SRC4
    wants = [expected_503(q, src, SPORT) for q in reqs]
    assert min(len(w) - len(q) for q, w in zip(reqs, wants)) > 64
    before = env.counter(L.Hook.XDP, M.INVITE, V.DROP, R.ADMIT_503)
    a0 = env.admit()
    got = _exchange(pair, reqs, v6)
    assert got == [(w, DST6 if v6 else DST4, 5060) for w in wants]
    assert env.counter(L.Hook.XDP, M.INVITE, V.DROP, R.ADMIT_503) - before == N
    a = env.admit()
    assert (a.replied - a0.replied, a.reply_unfit - a0.reply_unfit) == (N, 0)
