"""Network namespaces, veth pairs, bridges and processes for the lab, the benchmark and the
integration tests.

Links, addresses and routes go through netlink (pyroute2), never through parsed ``ip``
output.  Commands run bounded: in their own session, killed as a group when their time is
up.  :class:`Topology` records every namespace it creates and every process it starts and
removes them all on :meth:`Topology.close` (or on leaving its ``with`` block); deleting a
namespace takes its links, addresses, routes, rules and conntrack entries with it.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pyroute2.config
from pyroute2 import IPRoute, NetNS
from pyroute2 import netns as _netns

# pyroute2 forks a helper for every namespace it enters or creates and stops it with SIGTERM.
# The fork inherits the caller's handlers (the benchmark's SIGTERM -> sys.exit): the helper
# would unwind the caller's stack and run its cleanup (deleting the namespaces just made).
# With this set the helper takes SIGTERM's default action instead.
pyroute2.config.disable_mp_signal = True

NETNS_DIR = Path("/run/netns")


class LabError(RuntimeError):
    """A failure with one clear line for the user."""


# ---------------------------------------------------------------- bounded commands
def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def run(cmd: list[str], *, check: bool = True, capture: bool = True, timeout: float = 120,
        input: str | None = None, env: dict | None = None,  # pylint: disable=redefined-builtin
        cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run cmd in its own session; past `timeout` the whole group is killed (a child it
    forked cannot outlive it); a failure raises LabError with the last line of stderr."""
    cmd = [str(c) for c in cmd]
    pipe = subprocess.PIPE if capture else None
    try:
        p = subprocess.Popen(cmd, text=True, stdin=subprocess.PIPE if input is not None else None,
                             stdout=pipe, stderr=pipe, env=env, cwd=cwd, start_new_session=True)
    except OSError as exc:
        raise LabError(f"cannot run {cmd[0]}: {exc.strerror}") from exc
    try:
        out, err = p.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise LabError(f"timed out after {timeout}s: {' '.join(cmd)}") from exc
    except BaseException:
        _killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise
    cp = subprocess.CompletedProcess(cmd, p.returncode, out, err)
    if check and cp.returncode != 0:
        lines = (err or "").strip().splitlines()
        raise LabError(f"command failed ({cp.returncode}): {' '.join(cmd)}: "
                       f"{lines[-1] if lines else ''}")
    return cp


def exec_in(ns: str, cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """run() inside netns `ns` (``ip netns exec``: /sys is that namespace's)."""
    return run(["ip", "netns", "exec", ns, *cmd], **kw)


def sysctl(ns: str, *settings: str, check: bool = True) -> subprocess.CompletedProcess:
    """Set `key=value` sysctls inside `ns` (net.* sysctls are per namespace)."""
    return exec_in(ns, ["sysctl", "-q", "-w", *settings], check=check, timeout=30)


# ---------------------------------------------------------------- namespaces
def list_netns() -> list[str]:
    return list(_netns.listnetns())


def netns_pids(ns: str) -> list[int]:
    """Processes whose network namespace is `ns` (what ``ip netns pids`` reports)."""
    try:
        ino = os.stat(NETNS_DIR / ns).st_ino
    except OSError:
        return []
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{d}/ns/net").st_ino == ino:
                    out.append(int(d))
    return out


def create_netns(ns: str, *, replace: bool = False, ipv6: bool = False) -> bool:
    """Create `ns` with lo up (and IPv6 off unless asked for); an existing one is kept, or
    deleted first with `replace`.  True when it was created."""
    if ns in list_netns():
        if not replace:
            return False
        delete_netns(ns)
    _netns.create(ns)
    if not ipv6:
        # no IPv6 (no link-local addresses either): only 198.18.0.0/15 is ever used
        sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
               check=False)
    set_link(ns, "lo", up=True)
    return True


def delete_netns(ns: str, timeout: float = 10, sig: int = signal.SIGTERM) -> None:
    """Stop whatever still runs in `ns` (`sig`, then SIGKILL; bounded), then delete it."""
    if ns not in list_netns():
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in netns_pids(ns) if p != os.getpid()]
        if not pids:
            break
        for p in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, sig)
        sig = signal.SIGKILL
        time.sleep(0.3)
    with contextlib.suppress(OSError):
        _netns.remove(ns)


# ---------------------------------------------------------------- links, addresses, routes
@contextlib.contextmanager
def _ipr(ns: str | None):
    try:
        ipr = NetNS(ns, flags=0) if ns else IPRoute()     # flags=0: never create `ns`
    except OSError as exc:
        raise LabError(f"netns {ns}: {exc.strerror}") from exc
    with ipr:
        yield ipr


def _index(ipr, ns: str | None, dev: str) -> int:
    found = ipr.link_lookup(ifname=dev)
    if not found:
        raise LabError(f"{dev}: no such link in netns {ns or '(root)'}")
    return found[0]


def ifindex(ns: str | None, dev: str) -> int:
    with _ipr(ns) as ipr:
        return _index(ipr, ns, dev)


def link_exists(ns: str | None, dev: str) -> bool:
    with _ipr(ns) as ipr:
        return bool(ipr.link_lookup(ifname=dev))


def addresses(ns: str | None, dev: str) -> list[str]:
    """IPv4 addresses of `dev` as a.b.c.d/len."""
    with _ipr(ns) as ipr:
        idx = _index(ipr, ns, dev)
        return [f"{a.get('address')}/{a['prefixlen']}" for a in ipr.addr("dump", family=2, index=idx)]


def add_veth(ns: str | None, dev: str, peer_ns: str | None, peer: str) -> None:
    """veth pair: `dev` in `ns` <-> `peer` in `peer_ns` (None: the root namespace)."""
    spec = {"ifname": peer}
    if peer_ns != ns:
        spec["net_ns_fd"] = peer_ns or "/proc/self/ns/net"
    with _ipr(ns) as ipr:
        ipr.link("add", ifname=dev, kind="veth", peer=spec)


def add_bridge(ns: str | None, dev: str, **opts) -> None:
    """A bridge; `opts` are pyroute2 IFLA_BR_* keywords (br_forward_delay=0, br_stp_state=0)."""
    with _ipr(ns) as ipr:
        ipr.link("add", ifname=dev, kind="bridge", **opts)


def del_link(ns: str | None, dev: str) -> None:
    with _ipr(ns) as ipr:
        ipr.link("del", index=_index(ipr, ns, dev))


def set_link(ns: str | None, dev: str, *, addrs=(), master: str | None = None,
             mtu: int | None = None, up: bool = True) -> None:
    """Give `dev` the addresses (a.b.c.d/len) it lacks, a bridge `master`, an MTU, then up."""
    with _ipr(ns) as ipr:
        idx = _index(ipr, ns, dev)
        have = {(a.get("address"), a["prefixlen"]) for a in ipr.addr("dump", family=2, index=idx)}
        for cidr in addrs:
            addr, plen = cidr.split("/")
            if (addr, int(plen)) not in have:
                ipr.addr("add", index=idx, address=addr, prefixlen=int(plen))
        attrs = {}
        if master is not None:
            attrs["master"] = _index(ipr, ns, master)
        if mtu is not None:
            attrs["mtu"] = mtu
        if up:
            attrs["state"] = "up"
        if attrs:
            ipr.link("set", index=idx, **attrs)


def add_route(ns: str | None, dst: str, *, via: str | None = None, dev: str | None = None) -> None:
    with _ipr(ns) as ipr:
        kw = {"dst": dst, "proto": 3}        # boot, as `ip route add` marks it
        if via is not None:
            kw["gateway"] = via
        else:
            kw["scope"] = 253                  # link, as `ip route add ... dev` sets it
        if dev is not None:
            kw["oif"] = _index(ipr, ns, dev)
        ipr.route("add", **kw)


# ---------------------------------------------------------------- background processes
class NsProcesses:
    """Processes run inside network namespaces (sipp, Kamailio, tcpdump, floods): each in its
    own session with its output in a log file, optionally bounded by timeout(1) and pinned to
    CPUs; stop() or kill_all() always reaps them."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, ns: str, args: list[str], log: Path | str, *, limit: float | None = None,
              cpu: str | None = None, env: dict | None = None, cwd: Path | str | None = None) -> subprocess.Popen:
        """Run args in netns ns; stdout+stderr to log; killed after limit seconds if given."""
        log = Path(log)
        cmd = ["ip", "netns", "exec", ns]
        if limit is not None:
            cmd += ["timeout", "-k", "5", str(int(limit))]
        if cpu is not None:
            cmd += ["taskset", "-c", cpu]
        fh = open(log, "w")  # noqa: SIM115 - closed in stop()/kill_all()  pylint: disable=consider-using-with
        p = subprocess.Popen([*cmd, *args], cwd=str(cwd or log.parent), stdout=fh, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        p._etsf_log = fh  # type: ignore[attr-defined]  pylint: disable=protected-access
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen, timeout: float = 30.0, sig: int | None = None) -> int:
        """Optionally signal p's process group, wait up to timeout, then SIGKILL; return its code."""
        if sig is not None and p.poll() is None:
            _killpg(p.pid, sig)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # overdue: SIGTERM first (sipp writes its statistics on the way out), then SIGKILL
            _killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        with contextlib.suppress(Exception):
            p._etsf_log.close()  # type: ignore[attr-defined]  pylint: disable=protected-access
        return p.returncode

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                _killpg(p.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    p.wait(timeout=10)
            with contextlib.suppress(Exception):
                p._etsf_log.close()  # type: ignore[attr-defined]  pylint: disable=protected-access
        self.procs.clear()


# ---------------------------------------------------------------- one run's topology
class Topology:
    """Namespaces and processes of one test or benchmark run, removed together by close()."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self.procs = NsProcesses()

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def netns(self, ns: str, *, ipv6: bool = False, forward: bool = False) -> str:
        """A fresh `ns` (a stale one of the same name is deleted first)."""
        create_netns(ns, replace=True, ipv6=ipv6)
        self.created.append(ns)
        if forward:
            sysctl(ns, "net.ipv4.ip_forward=1")
        return ns

    @staticmethod
    def veth(ns: str, dev: str, peer_ns: str, peer: str, *, addrs=(), peer_addrs=(),
             mtu: int | None = None) -> None:
        """A veth pair with both ends addressed and up."""
        add_veth(ns, dev, peer_ns, peer)
        set_link(ns, dev, addrs=addrs, mtu=mtu)
        set_link(peer_ns, peer, addrs=peer_addrs, mtu=mtu)

    @staticmethod
    def bridge(ns: str, dev: str, *, addrs=(), **opts) -> None:
        """A bridge, addressed and up; `opts` as for add_bridge()."""
        add_bridge(ns, dev, **opts)
        set_link(ns, dev, addrs=addrs)

    def bridged(self, host_ns: str, bridge: str, host_if: str, ns: str, cidr: str, *, via: str,
                dev: str = "eth0", dst: str = "198.18.0.0/15") -> None:
        """Plug `ns` into `bridge` of `host_ns`: veth `host_if` (a bridge port) <-> `dev` in `ns`
        with address `cidr`, and a route to `dst` via the bridge's address `via`."""
        self.veth(host_ns, host_if, ns, dev, peer_addrs=[cidr])
        set_link(host_ns, host_if, master=bridge)
        add_route(ns, dst, via=via)

    @staticmethod
    def route(ns: str, dst: str, *, via: str | None = None, dev: str | None = None) -> None:
        add_route(ns, dst, via=via, dev=dev)

    @staticmethod
    def sh(ns: str, *cmd, check: bool = True, timeout: float = 120, inp: str | None = None):
        return exec_in(ns, list(cmd), check=check, timeout=timeout, input=inp)

    def start(self, ns: str, args: list[str], log: Path | str, **kw) -> subprocess.Popen:
        return self.procs.start(ns, args, log, **kw)

    def stop(self, p: subprocess.Popen, timeout: float = 30.0, sig: int | None = None) -> int:
        return self.procs.stop(p, timeout=timeout, sig=sig)

    def alive(self) -> bool:
        present = set(list_netns())
        return all(ns in present for ns in self.created)

    def close(self) -> None:
        self.procs.kill_all()
        for ns in reversed(self.created):
            delete_netns(ns)
        self.created.clear()
