# SPDX-License-Identifier: GPL-2.0-only
"""Where the agent keeps its pins, state and locks: the one place each path is decided.

Every module that needs the bpffs pin root, the state directory or the shared
policy/ctl lock takes it from here, so an ETSF_* override means the same thing to all.
"""
from __future__ import annotations

import contextlib
import fcntl
import os

DEFAULT_PIN_ROOT = "/sys/fs/bpf/etsf"


def pin_root(override: str | None = None) -> str:
    """The bpffs directory holding maps/ and progs/ (explicit > ETSF_PIN_ROOT > default)."""
    return override or os.environ.get("ETSF_PIN_ROOT") or DEFAULT_PIN_ROOT


def state_dir() -> str:
    return os.environ.get("ETSF_STATE_DIR", "/var/lib/etsf")


def run_dir() -> str:
    return os.environ.get("ETSF_RUN_DIR", "/run/etsf")


def maps_present(root: str | None, names) -> bool:
    """True when every named map is pinned under root/maps."""
    root = pin_root(root)
    return all(os.path.exists(os.path.join(root, "maps", n)) for n in names)


@contextlib.contextmanager
def lock(name: str = "policy.lock"):
    """Exclusive advisory lock shared by every writer of etsf_ctl/etsf_policy."""
    d = run_dir()
    os.makedirs(d, exist_ok=True)
    fd = os.open(os.path.join(d, name), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
