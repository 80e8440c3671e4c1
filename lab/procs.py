"""Processes run inside network namespaces (sipp, Kamailio, tcpdump, floods) for the lab's
traffic tests and the benchmark: each in its own session with its output in a log file,
optionally bounded by timeout(1) and pinned to CPUs, and always reaped."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path


class NsProcesses:
    """Start, stop and finally kill every process this owner started."""

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
        fh = open(log, "w")  # noqa: SIM115 - closed in stop()/kill_all()
        p = subprocess.Popen([*cmd, *args], cwd=str(cwd or log.parent), stdout=fh, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        p._etsf_log = fh  # type: ignore[attr-defined]
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen, timeout: float = 30.0, sig: int | None = None) -> int:
        """Optionally signal p's process group, wait up to timeout, then SIGKILL; return its code."""
        if sig is not None and p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # overdue: SIGTERM first (sipp writes its statistics on the way out), then SIGKILL
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        with contextlib.suppress(Exception):
            p._etsf_log.close()  # type: ignore[attr-defined]
        return p.returncode

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    p.wait(timeout=10)
            with contextlib.suppress(Exception):
                p._etsf_log.close()  # type: ignore[attr-defined]
        self.procs.clear()
