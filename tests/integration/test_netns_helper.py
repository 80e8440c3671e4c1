"""lab/netns.py on the real kernel: a Topology's namespaces, veths, bridge and routes carry a
UDP datagram end to end, close() leaves nothing behind, and run() kills a timed-out command's
whole process group.  Namespaces ``etsf-nh-*``; only 198.18.0.0/15."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import netns as N

A_IP, BR_IP, B_IP = "198.18.70.1", "198.18.71.254", "198.18.71.2"
RECV = ("import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"s.bind(('{B_IP}', 5099)); s.settimeout(20); open(sys.argv[1], 'w').close(); "
        "d, a = s.recvfrom(100); s.sendto(d.upper(), a); print(d.decode(), a[0])")
SEND = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(20); "
        f"s.sendto(b'etsf-nh', ('{B_IP}', 5099)); d, a = s.recvfrom(100); print(d.decode(), a[0])")


# A caller whose SIGTERM handler unwinds (as the benchmark's does), with a finally block
# that records which process ran it.
UNWINDING_CALLER = """
import os, signal, sys
sys.path.insert(0, sys.argv[3])
from lab import netns as N
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
try:
    N.create_netns(sys.argv[1])
    N.set_link(sys.argv[1], "lo")
    print(sys.argv[1] in N.list_netns())
finally:
    with open(sys.argv[2], "a", encoding="ascii") as f:
        f.write(f"{os.getpid()}\\n")
"""


@pytest.fixture
def tag():
    if os.geteuid() != 0:
        pytest.fail("needs root (netns)")
    return f"{os.getpid() % 100000}"


def test_topology_carries_traffic_and_close_removes_it(tag, tmp_path):
    """a --veth-- [host: bridge] --veth-- b, routed through the host."""
    a, host, b = f"etsf-nh-a{tag}", f"etsf-nh-h{tag}", f"etsf-nh-b{tag}"
    with N.Topology() as t:
        t.netns(a)
        t.netns(host, forward=True)
        t.netns(b)
        t.veth(a, "eth0", host, "nhup", addrs=[f"{A_IP}/24"], peer_addrs=["198.18.70.254/24"], mtu=1400)
        t.route(a, "198.18.0.0/15", via="198.18.70.254")
        t.bridge(host, "nhbr", addrs=[f"{BR_IP}/24"], br_forward_delay=0, br_stp_state=0)
        t.bridged(host, "nhbr", "nhbh", b, f"{B_IP}/24", via=BR_IP)

        assert N.addresses(a, "eth0") == [f"{A_IP}/24"]
        assert N.addresses(b, "eth0") == [f"{B_IP}/24"]
        assert N.link_exists(host, "nhbh") and not N.link_exists(None, "nhbh")
        assert N.exec_in(host, ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"
        assert N.exec_in(a, ["cat", "/sys/class/net/eth0/mtu"]).stdout.strip() == "1400"
        assert N.exec_in(host, ["cat", "/sys/class/net/nhbh/master/ifindex"]).stdout.strip() == \
            str(N.ifindex(host, "nhbr"))
        assert N.exec_in(a, ["cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6"]).stdout.strip() == "1"

        ready = tmp_path / "ready"
        recv = t.start(b, ["python3", "-c", RECV, str(ready)], tmp_path / "recv.log", limit=30)
        for _attempt in range(200):              # bounded: the receiver binds within seconds
            if ready.exists() or recv.poll() is not None:
                break
            time.sleep(0.1)
        assert ready.exists(), (tmp_path / "recv.log").read_text()
        reply = N.exec_in(a, ["python3", "-c", SEND], timeout=30).stdout
        assert t.stop(recv, timeout=25) == 0
        assert reply.split() == ["ETSF-NH", B_IP]          # and back: b's route via the bridge
        assert (tmp_path / "recv.log").read_text().split() == ["etsf-nh", A_IP]

        sleeper = t.start(host, ["sleep", "300"], tmp_path / "sleep.log")
    assert sleeper.poll() is not None
    assert not {a, host, b} & set(N.list_netns())


def test_run_kills_the_whole_group_on_timeout(tmp_path):
    pidfile = tmp_path / "child.pid"
    with pytest.raises(N.LabError, match=r"^timed out after 1s: sh -c"):
        N.run(["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], timeout=1)
    child = int(pidfile.read_text())
    for _attempt in range(50):                   # bounded: SIGKILL lands within milliseconds
        try:
            with open(f"/proc/{child}/stat", encoding="ascii") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except OSError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"background child {child} outlived the timed-out command")


def test_bad_input_is_one_line(tag):
    with pytest.raises(N.LabError, match=r"^netns etsf-nh-none\d+: No such file or directory$"):
        N.set_link(f"etsf-nh-none{tag}", "eth0")
    with pytest.raises(N.LabError, match=r"^command failed \(3\): sh -c echo boom >&2; exit 3: boom$"):
        N.run(["sh", "-c", "echo boom >&2; exit 3"])


def test_forked_netlink_helpers_never_run_the_callers_cleanup(tag, tmp_path):
    """pyroute2 forks a helper per namespace it creates or enters and stops it with SIGTERM:
    the helper must die there, not unwind into the caller's finally blocks."""
    ns, log = f"etsf-nh-f{tag}", tmp_path / "finally.log"
    try:
        with subprocess.Popen([sys.executable, "-c", UNWINDING_CALLER, ns, str(log),
                               str(Path(__file__).resolve().parents[2])],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
            out, err = p.communicate(timeout=60)
        assert p.returncode == 0 and out.split() == ["True"], err
        assert log.read_text().split() == [str(p.pid)]       # the caller's cleanup ran once, in the caller
    finally:
        N.delete_netns(ns)
