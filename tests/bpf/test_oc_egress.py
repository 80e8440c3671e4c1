"""The RFC 7339 rewrite on a real egress path: tc_sip_egress attached to the egress of a veth in
a namespace of its own, a UDP socket there sends a response to a client in a second namespace.
With the veth's transmit checksum offload on, the packet reaches TC with CHECKSUM_PARTIAL (the
field holds only the pseudo-header sum, the device adds the rest): the captured field must be
the pseudo-header sum with the new UDP length.  With the offload off, the socket computes the
whole checksum in software and the receiving kernel (receive offload off) verifies it: the
client's socket gets the rewritten payload and InCsumErrors does not move."""
import os
import socket
import struct
import subprocess
import sys

import pytest
from scapy.all import IP, UDP, Ether, IPv6

from etsf import layout as L

# oc_stats: a fixture
from .test_oc import _stats, expected_payload, oc_on, oc_stats, response  # noqa: F401  pylint: disable=unused-import
from .test_respond_delivery import _snmp

SRV4, CLI4 = "198.18.251.1", "198.18.251.2"
SRV6, CLI6 = "2001:db8:fb::1", "2001:db8:fb::2"

# in the server's namespace: load tc_sip.bpf.o against the test's pinned maps, attach at egress
ATTACH = r"""
import socket, sys
from etsf import bpf
obj, root, dev = sys.argv[1:4]
progs = bpf.load_object(obj, root)
bpf.tc_attach(socket.if_nametoindex(dev), progs["tc_sip_egress"].fd, "egress")
print("attached", flush=True)
"""

# in the client's namespace: the socket's datagram and the frame captured on the veth
CLIENT = r"""
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 5062))
s.settimeout(20)
cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
cap.bind((sys.argv[2], 0))
cap.settimeout(20)
print("ready", flush=True)
data, _unused = s.recvfrom(65535)
for _unused in range(64):
    f = cap.recv(65535)
    if (f[12:14] == b"\x08\x00" and f[23] == 17) or (f[12:14] == b"\x86\xdd" and f[20] == 17):
        if (f[36:38] if f[12:14] == b"\x08\x00" else f[56:58]) == (5062).to_bytes(2, "big"):
            break
print(data.hex(), f.hex(), flush=True)
"""

SEND = r"""
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 5060))
s.sendto(bytes.fromhex(sys.argv[3]), (sys.argv[2], 5062))
"""


def _run(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


def _nsexec(ns, *cmd):
    return ["ip", "netns", "exec", ns, *cmd]


def _py(ns, script, *args):
    """A Python child in ns (nsenter --net: /sys/fs/bpf stays the test's)."""
    return ["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-c", script, *args]


@pytest.fixture
def pair():
    tag = f"{os.getpid() % 100000}"
    srv, cli = f"i16o-s-{tag}", f"i16o-c-{tag}"
    a, b = f"i16oa{tag}", f"i16ob{tag}"
    _run("ip", "netns", "add", srv)
    _run("ip", "netns", "add", cli)
    try:
        _run("ip", "link", "add", a, "netns", srv, "type", "veth", "peer", "name", b, "netns", cli)
        for ns, dev, v4, v6 in ((srv, a, SRV4, SRV6), (cli, b, CLI4, CLI6)):
            for cmd in (["ip", "addr", "add", f"{v4}/30", "dev", dev],
                        ["ip", "-6", "addr", "add", f"{v6}/64", "dev", dev, "nodad"],
                        ["ip", "link", "set", dev, "up"], ["ip", "link", "set", "lo", "up"]):
                _run(*_nsexec(ns, *cmd))
        _run(*_nsexec(cli, "ethtool", "-K", b, "rx", "off"))
        yield srv, cli, a, b
    finally:
        subprocess.run(["ip", "netns", "del", srv], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", cli], capture_output=True, check=False)


def _fold(s):
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s


def _sum16(b):
    b = b + b"\0" * (len(b) % 2)
    return sum(struct.unpack(f"!{len(b) // 2}H", b))


def _complete(s):
    """The checksum field from a ones' complement sum (0 is sent as 0xffff)."""
    return (~_fold(s)) & 0xffff or 0xffff


def _pseudo(pkt):
    udp = pkt[UDP]
    if IP in pkt:
        ip = pkt[IP]
        ph = socket.inet_aton(ip.src) + socket.inet_aton(ip.dst) + struct.pack("!BBH", 0, 17, udp.len)
    else:
        ip = pkt[IPv6]
        ph = (socket.inet_pton(socket.AF_INET6, ip.src) + socket.inet_pton(socket.AF_INET6, ip.dst)
              + struct.pack("!IxxxB", udp.len, 17))
    return _sum16(ph)


@pytest.mark.parametrize("offload", ["partial", "software"])
@pytest.mark.parametrize("v6", [False, True])
def test_rewrite_on_a_real_egress(env, objects, oc_stats, pair, v6, offload):
    srv, cli, a, b = pair
    if offload == "software":
        _run(*_nsexec(srv, "ethtool", "-K", a, "tx", "off"))
    oc_on(env)
    src, dst = (SRV6, CLI6) if v6 else (SRV4, CLI4)
    payload = response([f"Via: SIP/2.0/UDP [{dst}]:5062;branch=z9hG4bKe;rport=5062;oc".encode()
                        if v6 else f"Via: SIP/2.0/UDP {dst}:5062;branch=z9hG4bKe;rport=5062;oc".encode()])
    want = expected_payload(payload)
    att = subprocess.run(_py(srv, ATTACH, objects["tc_sip.bpf.o"], env.root, a), capture_output=True,
                         text=True, check=False, env=dict(os.environ))
    assert att.stdout.strip() == "attached", att.stderr
    proto = "snmp6" if v6 else "snmp"
    errs = _snmp(cli, proto, "InCsumErrors")
    before = _stats(oc_stats)
    rx = subprocess.Popen(_py(cli, CLIENT, dst, b), stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout.readline().strip() == "ready"
        subprocess.run(_py(srv, SEND, src, dst, payload.hex()), check=True, capture_output=True)
        out, _unused = rx.communicate(timeout=30)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    data_hex, frame_hex = out.split()
    assert bytes.fromhex(data_hex) == want
    pkt = Ether(bytes.fromhex(frame_hex))
    assert bytes(pkt[UDP].payload) == want and pkt[UDP].len == 8 + len(want)
    after = _stats(oc_stats)
    assert after[L.OcResult.REWRITTEN] - before[L.OcResult.REWRITTEN] == 1
    field = pkt[UDP].chksum
    hdr = bytes(pkt[UDP])[:6] + b"\0\0"
    full = _complete(_pseudo(pkt) + _sum16(hdr) + _sum16(want))
    if offload == "partial":
        # the device's part is still to come: the field is the pseudo-header sum (new length)
        assert field == _fold(_pseudo(pkt))
        assert _complete(field + _sum16(hdr) + _sum16(want)) == full   # what the device writes
    else:
        assert field == full
        assert _snmp(cli, proto, "InCsumErrors") == errs
