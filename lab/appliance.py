"""Boot an eTSF appliance root filesystem (the tarball of `make appliance`) in the lab.

The appliance is booted the way lab hosts are (systemd-nspawn --boot inside its own network
namespace with a fresh sysfs: lab.hosts.nspawn_argv_for), on a small signalling segment of its
own so it can never collide with the lab fleet or its crash sweep (`lab down` only removes
etsf-* namespaces):

    netns apl-sw   bridge br0 (no address)
    netns apl-box  sip0 198.18.9.10/24   the appliance (its own systemd, networkd, Kamailio, eTSF)
    netns apl-uac  sip0 198.18.9.201/24  sipp UAC
    netns apl-uas  sip0 198.18.9.202/24  sipp UAS (the appliance's SIP next hop)

Only 198.18.0.0/15 addresses; nothing in the root network namespace.  Every wait is bounded.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from lab import hosts
from lab.common import LabError, pid_alive, run, wait_pid_gone
from lab.netns import add_bridge, add_veth, create_netns, delete_netns, set_link

PREFIX = "apl-"
SWITCH = f"{PREFIX}sw"
BOX = f"{PREFIX}box"
UAC = f"{PREFIX}uac"
UAS = f"{PREFIX}uas"
NET = "198.18.9"
ADDRS = {BOX: f"{NET}.10", UAC: f"{NET}.201", UAS: f"{NET}.202"}
MACHINE = "etsf-apl"


def net_up() -> None:
    """(Re)create the appliance segment from scratch."""
    net_down()
    for ns in (SWITCH, BOX, UAC, UAS):
        create_netns(ns)
    add_bridge(SWITCH, "br0", br_forward_delay=0, br_stp_state=0)
    set_link(SWITCH, "br0")
    for ns, addr in ADDRS.items():
        port = f"p-{ns[len(PREFIX):]}"
        add_veth(SWITCH, port, ns, "sip0")
        set_link(SWITCH, port, master="br0")
        set_link(ns, "sip0", addrs=[f"{addr}/24"])


def net_down() -> None:
    for ns in (BOX, UAC, UAS, SWITCH):
        delete_netns(ns, sig=signal.SIGKILL)


class Box:
    """One booted appliance tree."""

    def __init__(self, root: Path, console_log: Path, allow_bpf: bool = True) -> None:
        self.root = Path(root)
        self.console_log = Path(console_log)
        self.allow_bpf = allow_bpf
        self.proc: subprocess.Popen | None = None

    def boot(self) -> None:
        # read-only: the container's console output (the first-boot line) goes to the log
        argv = hosts.nspawn_argv_for(BOX, self.root, MACHINE, console="read-only", allow_bpf=self.allow_bpf)
        env = dict(os.environ, SYSTEMD_NSPAWN_API_VFS_WRITABLE="1")
        with open(self.console_log, "ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,  # noqa: SIM115
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def pid1(self) -> int | None:
        return hosts.container_pid1_in(BOX)

    def sh(self, cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        pid = self.pid1()
        if pid is None:
            raise LabError("appliance container is not running")
        return run(["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "--", *cmd],
                   check=False, timeout=timeout)

    def wait_file(self, rel: str, timeout: float) -> Path:
        """Wait (bounded) until the box wrote `rel` (a path inside its tree)."""
        path = self.root / rel.lstrip("/")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                return path
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError(f"appliance exited ({self.proc.returncode}) before {rel} appeared; "
                               f"see {self.console_log}")
            time.sleep(1)
        raise LabError(f"{rel} did not appear within {timeout:.0f}s; see {self.console_log}")

    def wait_system(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        state = "down"
        while time.monotonic() < deadline:
            if self.pid1() is not None:
                state = (self.sh(["systemctl", "is-system-running"], timeout=15).stdout or "").strip()
                if state in ("running", "degraded"):
                    return state
            time.sleep(1)
        raise LabError(f"appliance systemd not up within {timeout:.0f}s (last state {state!r})")

    def poweroff(self, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # SIGTERM to nspawn asks the container's systemd for an orderly shutdown
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def teardown(box: Box | None, tree: Path | None) -> None:
    if box is not None:
        box.poweroff()
        if box.proc is not None and pid_alive(box.proc.pid):
            wait_pid_gone(box.proc.pid, 5)
    net_down()
    if tree is not None:
        shutil.rmtree(tree, ignore_errors=True)
