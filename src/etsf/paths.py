# SPDX-License-Identifier: GPL-2.0-only
"""Where the agent keeps its pins, state and locks: the one place each path is decided.

Every module that needs the bpffs pin root, the state directory or the shared
policy/ctl lock takes it from here, so an ETSF_* override means the same thing to all.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time

DEFAULT_PIN_ROOT = "/sys/fs/bpf/etsf"


def pin_root(override: str | None = None) -> str:
    """The bpffs directory holding maps/ and progs/ (explicit > ETSF_PIN_ROOT > default)."""
    return override or os.environ.get("ETSF_PIN_ROOT") or DEFAULT_PIN_ROOT


def state_dir() -> str:
    return os.environ.get("ETSF_STATE_DIR", "/var/lib/etsf")


DEFAULT_DATAPATH_CONFIG = "/etc/etsf/datapath.yml"


def datapath_config() -> str:
    """The datapath config etsf-restore.service reads at boot (ETSF_DATAPATH_CONFIG > default)."""
    return os.environ.get("ETSF_DATAPATH_CONFIG") or DEFAULT_DATAPATH_CONFIG


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


def write_atomic(path: str, text: str, sync: bool = False) -> None:
    """Replace path with text in one rename (readers see the old or the new file, never half),
    world-readable (the exporter and `etsfctl status` read state as other users); sync: fsync
    before the rename, for records that must survive a crash."""
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{os.path.basename(path)}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_json(path: str, doc, indent: int | None = None) -> None:
    """write_atomic of a JSON document (sorted keys, a final newline)."""
    write_atomic(path, json.dumps(doc, indent=indent, sort_keys=True, default=str) + "\n")


def read_json(path: str, limit: int = 1 << 20) -> dict | None:
    """The JSON object in *path* (at most *limit* bytes read), or None when it is missing,
    unreadable or not an object."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.loads(f.read(limit))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def update_json(path: str, lock_name: str, mutate) -> dict:
    """Read-modify-write the JSON object in *path* under the lock *lock_name* (several writers
    share it); *mutate* changes the dict in place, ``updated`` is stamped, the file replaced
    atomically and readable by other users (the exporter)."""
    with lock(lock_name):
        doc = read_json(path) or {}
        mutate(doc)
        doc["updated"] = time.time()
        write_json(path, doc)
        return doc


def write_heartbeat(path: str, stopped: bool = False) -> None:
    """Atomically replace *path*; its mtime is the heartbeat the fail-safe watches.  *stopped*:
    the service was stopped on purpose (SIGTERM: `systemctl stop`, a role turning it off), which
    the fail-safe's heartbeat rule does not call stale; a service that dies writes nothing."""
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(json.dumps({"pid": os.getpid(), "time": time.time(), "stopped": stopped}) + "\n")
    os.replace(tmp, path)


def mark_heartbeat_stopped(path: str | None) -> None:
    """At a clean stop: the last heartbeat says the service was stopped on purpose.  One that
    cannot be written leaves the last live one to go stale (the fail-safe then trips: the safe
    side), and never fails the stop."""
    if path:
        with contextlib.suppress(OSError):
            write_heartbeat(path, stopped=True)


def heartbeat_stopped(path: str) -> bool:
    """The heartbeat file says its service was stopped on purpose (missing or unreadable: no)."""
    return bool((read_json(path, limit=4096) or {}).get("stopped"))


def resume_heartbeat(path: str | None) -> None:
    """At a service's start: a heartbeat left "stopped" by its last stop is made current, so the
    service has the rule's whole max age for its first tick, and a start that crashes before it
    ages from here (a crash loop never rewrites it: the rule trips)."""
    if path and heartbeat_stopped(path):
        write_heartbeat(path)
