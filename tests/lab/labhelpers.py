"""Helpers for the lab tests: run the real lab CLI (no mocks)."""
from __future__ import annotations

import hashlib
import json
import os
import re
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


def playbook_env(**extra: str) -> dict[str, str]:
    """The environment the repo's playbooks run with from the checkout."""
    return dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_HOST_KEY_CHECKING="False",
                ANSIBLE_NOCOLOR="1", PYTHONPATH=str(REPO / "src"), **extra)


def recap(out: str) -> dict[str, dict[str, int]]:
    """{host: {ok, changed, failed}} from an ansible-playbook PLAY RECAP."""
    return {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "failed": int(m.group(4))}
            for m in re.finditer(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)",
                                 out, re.M)}


def on_host_retry(host: str, cmd: str) -> str:
    """stdout of `cmd` on `host`, which must exit 0.  ssh exits 255 when the connection itself
    fails (a loaded lab host can miss the banner exchange): try the connection again, a bounded
    number of times; any other exit is a failure."""
    for _attempt in range(3):
        cp = on_host(host, cmd, check=False)
        if cp.returncode != 255:
            break
    assert cp.returncode == 0, cp.stdout
    return cp.stdout


def etsfctl_json(host: str, cmd: str):
    return json.loads(on_host_retry(host, f"/usr/local/bin/etsfctl {cmd} --json"))


def tree(path: Path) -> dict:
    """{relative path: (mode, sha256)} of everything under `path`."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            out[str(p.relative_to(path))] = (p.lstat().st_mode, digest)
    return out


def run_ok(cmd, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False, **kw)
    assert r.returncode == 0, f"{cmd[:3]} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r
