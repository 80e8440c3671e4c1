"""The in-kernel 503 frames are valid on the wire: the XDP_TX output frame, injected into a
veth pair whose far end (in a namespace of its own, receive checksum offload off so the
kernel verifies the UDP checksum) has the caller's address, reaches a bound UDP socket there
byte for byte; the same frame with one payload byte changed is dropped as a checksum error."""
import os
import socket
import subprocess
import sys

import pytest

from etsf import bpf

from .helpers import DST4, DST6, SRC4, SRC6, sip_request, udp4, udp6
from .test_respond import expected_503, reject_all

RECEIVER = r"""
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(20)
print("ready", flush=True)
data, addr = s.recvfrom(65535)
print(data.hex(), addr[0], addr[1], flush=True)
"""


def _run(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


def _snmp(ns, proto, field):
    out = subprocess.run(["ip", "netns", "exec", ns, "cat", f"/proc/net/{proto}"], check=True,
                         capture_output=True, text=True).stdout
    key = {"snmp": "Udp:", "snmp6": "Udp6"}[proto]
    if proto == "snmp":
        rows = [ln.split() for ln in out.splitlines() if ln.startswith(key)]
        return int(rows[1][rows[0].index(field)])
    return int(next(ln.split()[1] for ln in out.splitlines() if ln.startswith(key + field)))


@pytest.fixture
def veth():
    tag = f"{os.getpid() % 100000}"
    ns, a, b = f"i16r-rx-{tag}", f"i16ra{tag}", f"i16rb{tag}"
    _run("ip", "netns", "add", ns)
    try:
        _run("ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns)
        _run("ip", "link", "set", a, "up")
        for cmd in (["ip", "link", "set", b, "address", "02:00:00:00:00:01"],
                    ["ip", "addr", "add", f"{SRC4}/15", "dev", b],
                    ["ip", "-6", "addr", "add", f"{SRC6}/32", "dev", b, "nodad"],
                    ["ip", "link", "set", b, "up"],
                    ["ip", "link", "set", "lo", "up"],
                    ["ethtool", "-K", b, "rx", "off"]):
            _run("ip", "netns", "exec", ns, *cmd)
        yield ns, a
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def _deliver(ns, iface, frames, addr, port):
    rx = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", RECEIVER, addr, str(port)],
                          stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout.readline().strip() == "ready"
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((iface, 0))
            for f in frames:
                s.send(f)
        out, _unused = rx.communicate(timeout=30)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    data, src, sport = out.split()
    return bytes.fromhex(data), src, int(sport)


@pytest.mark.parametrize("v6", [False, True])
def test_503_arrives_at_a_real_socket(env, veth, v6):
    ns, iface = veth
    reject_all(env)
    req = sip_request("INVITE").replace(b"z9hG4bK776asdhds", b"z9hG4bK776asdhds;rport")
    frame = (udp6 if v6 else udp4)(req, sport=5062)
    ret, out, _unused = bpf.test_run(env.progs["xdp_sip"].fd, frame)
    assert ret == bpf.XDP_TX
    want = expected_503(req, SRC6 if v6 else SRC4, 5062)
    assert out.endswith(want)
    bad = bytearray(out)
    bad[-5] ^= 0x01                    # inside the payload: only the UDP checksum can tell
    proto = "snmp6" if v6 else "snmp"
    field = "InCsumErrors"
    errs = _snmp(ns, proto, field)
    data, src, sport = _deliver(ns, iface, [bytes(bad), out], SRC6 if v6 else SRC4, 5062)
    assert (data, src, sport) == (want, DST6 if v6 else DST4, 5060)
    assert _snmp(ns, proto, field) == errs + 1
