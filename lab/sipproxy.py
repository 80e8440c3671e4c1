"""Lab host setup, SIP side: Kamailio on the SBC hosts, like a real SBC, configured from the
appliance's own template by lab/kamailio.yml (run with the same Ansible the fleet rollout uses)."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from lab.common import REPO_ROOT, LabError, log, python_exe

PLAYBOOK = REPO_ROOT / "lab" / "kamailio.yml"
SETUP_TIMEOUT = 600.0


def ansible_playbook() -> str:
    """ansible-playbook next to the interpreter running the lab (the project venv), else PATH."""
    cand = Path(python_exe()).parent / "ansible-playbook"
    if cand.exists():
        return str(cand)
    found = shutil.which("ansible-playbook")
    if not found:
        raise LabError("ansible-playbook not found (run `make setup`, or `lab up --no-sip-proxy`)")
    return found


def setup(names: list[str], inventory: Path) -> None:
    """Install, configure and start Kamailio on `names` (bounded; one line on failure)."""
    if not names:
        return
    t0 = time.monotonic()
    log(f"kamailio: setting up on {', '.join(names)} ({PLAYBOOK.relative_to(REPO_ROOT)})")
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
               ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_NOCOLOR="1")
    argv = [ansible_playbook(), "-i", str(inventory), "--limit", ",".join(names), str(PLAYBOOK)]
    try:
        cp = subprocess.run(argv, cwd=str(REPO_ROOT), env=env, capture_output=True, text=True,
                            timeout=SETUP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"kamailio setup timed out after {SETUP_TIMEOUT:.0f}s") from exc
    if cp.returncode != 0:
        failed = [line for line in cp.stdout.splitlines() if line.startswith(("fatal:", "failed:"))]
        raise LabError(f"kamailio setup failed: {failed[0] if failed else cp.stdout[-300:]}")
    log(f"kamailio: running on {', '.join(names)} after {time.monotonic() - t0:.1f}s")
