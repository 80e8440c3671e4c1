# SPDX-License-Identifier: GPL-2.0-only
"""Readiness for Type=notify units: the agent's services tell systemd when they work, not when
their process exists, so a service that cannot start fails its start (and the rollout) instead
of sitting in systemd's restart loop while the fail-safe waits for its heartbeat to go stale."""
from __future__ import annotations

import os
import socket
import sys


def sd_notify(state: str, who: str = "etsfctl") -> bool:
    """Send *state* (e.g. ``READY=1``) to $NOTIFY_SOCKET (path or ``@abstract``); False outside
    systemd.  A notification that cannot be sent is one line on stderr: systemd then fails the
    start by its timeout, which names the unit."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]                 # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(state.encode())
    except OSError as e:
        sys.stderr.write(f"{who}: cannot notify systemd ({addr!r}): {e}\n")
        return False
    return True
