"""Paths, addressing plan, subprocess helpers, state file and lock shared by the lab."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sys
import time
from pathlib import Path

# re-exported: the lab modules take the error type and the command runner from here
from lab.netns import LabError, run  # noqa: F401  pylint: disable=unused-import

REPO_ROOT = Path(__file__).resolve().parent.parent

CACHE_DIR = Path(os.environ.get("ETSF_LAB_CACHE", "/var/cache/etsf-lab"))
STATE_DIR = Path(os.environ.get("ETSF_LAB_STATE", "/var/lib/etsf-lab"))
RUN_DIR = Path(os.environ.get("ETSF_LAB_RUN", "/run/etsf-lab"))

APT_ARCHIVES = CACHE_DIR / "apt-archives"
HOSTS_DIR = STATE_DIR / "hosts"
SSH_KEY = STATE_DIR / "ssh" / "id_ed25519"
STATE_FILE = RUN_DIR / "state.json"
LOCK_FILE = RUN_DIR / "lock"
PROXY_LOG = RUN_DIR / "apt-proxy.log"

NAME_PREFIX = "etsf-"            # every netns the lab creates starts with this
SWITCH_NS = "etsf-lab"           # the lab "switch": both bridges live here
BR_MGMT = "br-mgmt"
BR_SIP = "br-sip"

# Addressing: only 198.18.0.0/15, ever.
MGMT_NET = "198.18.0"            # /24, management
SIP_NET = "198.18.1"             # /24, signalling
SWITCH_MGMT_ADDR = f"{MGMT_NET}.1"
SWITCH_SIP_ADDR = f"{SIP_NET}.1"
PROXY_PORT = 3142
# SIP peers: name -> host octet on the signalling /24
PEERS = {"uac": 201, "uas": 202, "atk": 203}
# Host octets: default prefix sbcN -> 10+N (N <= 89); other prefixes use 100..199.
DEFAULT_SLOT_BASE = 10
OTHER_SLOT_RANGE = range(100, 200)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,11}$")   # keeps veth names <= 15 chars
PREFIX_RE = re.compile(r"^([a-z0-9][a-z0-9-]{0,7})?$")

SSH_PROXY_COMMAND = f"ip netns exec {SWITCH_NS} nc %h %p"


def ssh_common_args() -> list[str]:
    return [
        "-o", f"ProxyCommand={SSH_PROXY_COMMAND}",
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
    ]


def ssh_common_args_str() -> str:
    """The same options as one string, for ansible_ssh_common_args."""
    return (f'-o ProxyCommand="{SSH_PROXY_COMMAND}" '
            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null")


def log(msg: str) -> None:
    print(f"[lab {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab must run as root")


# ---------------------------------------------------------------- state & lock
@contextlib.contextmanager
def locked(timeout: float = 600):
    """Serialise lab CLI invocations (Molecule and the demo fleet may run together)."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabError(f"lab lock {LOCK_FILE} busy for {timeout}s") from None
                time.sleep(0.5)
        yield
    finally:
        os.close(fd)


def load_state() -> dict:
    try:
        data = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        data = {}
    data.setdefault("hosts", {})
    data.setdefault("proxy_pid", None)
    return data


def save_state(state: dict) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, STATE_FILE)


# ---------------------------------------------------------------- processes
def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # a zombie is not alive
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def children_of(pid: int) -> list[int]:
    out = []
    for p in all_pids():
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.append(p)
    return out


def wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.2)
    return not pid_alive(pid)


def kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def python_exe() -> str:
    return sys.executable or "/usr/bin/python3"
