"""Helpers for the lab tests: run the real lab CLI (no mocks)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable or "/usr/bin/python3"
STATE_FILE = Path("/run/etsf-lab/state.json")


def lab(*args: str, timeout: float = 400, check: bool = True,
        input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run `python -m lab ARGS` from the repo root; return the completed process (text)."""
    cp = subprocess.run([PY, "-m", "lab", *args], cwd=REPO, input=input,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False)
    cp.stdout = cp.stdout.decode(errors="replace")
    if check and cp.returncode != 0:
        raise AssertionError(f"lab {' '.join(args)} failed ({cp.returncode}):\n{cp.stdout}")
    return cp


def on_host(host: str, cmd: str, timeout: float = 300, check: bool = True,
            input: bytes | None = None) -> subprocess.CompletedProcess:
    return lab("ssh", host, "--", cmd, timeout=timeout, check=check, input=input)


def playbook_failures(out: str) -> str:
    """The failing tasks of an ansible-playbook run: each TASK header followed by its
    fatal/failed lines (what an operator looks for first), or '' when nothing failed."""
    found, task = [], ""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.rstrip(" *")
        elif line.startswith(("fatal: [", "failed: [")):
            found.append(task)
            found.extend(lines[i:i + 12])
    return "\n".join(found)


def lab_state() -> dict:
    return json.loads(STATE_FILE.read_text())


def ansible_bin(name: str) -> str:
    cand = Path(PY).parent / name
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not installed (run `make setup`)")
    return found


def preconditions() -> None:
    if os.geteuid() != 0:
        pytest.fail("the lab needs root")
    for tool in ("systemd-nspawn", "debootstrap", "ip", "nc", "clang", "nsenter"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not installed (run `make setup`)")


def running_prefixes() -> dict[str, int]:
    """{prefix: host count} of lab hosts running right now (from the lab's state file)."""
    try:
        hosts = lab_state().get("hosts", {})
    except (OSError, ValueError):
        return {}
    out: dict[str, int] = {}
    for h in hosts.values():
        out[h["prefix"]] = out.get(h["prefix"], 0) + 1
    return out
