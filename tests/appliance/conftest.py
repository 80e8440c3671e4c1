"""Fixtures for the appliance tests.

* ``appliance`` (session): the artefacts of ``make appliance`` (inventory/appliance): built by
  playbooks/appliance.yml, or reused when manifest.json records the same input hash (sources,
  roles, variables) -- a cold build takes about 2.5 minutes here, a reuse a few seconds.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

OUT = REPO / "build" / "appliance" / "etsf-appliance"
BUILD_TIMEOUT = 1200


def _need(cond: bool, what: str) -> None:
    if not cond:
        pytest.fail(f"appliance tests need {what}")


@pytest.fixture(scope="session")
def appliance():
    _need(os.geteuid() == 0, "root (chroot, nspawn, netns, BPF)")
    for tool in ("systemd-nspawn", "sipp", "zstd", "debootstrap", "sgdisk", "mkfs.vfat", "mcopy"):
        _need(shutil.which(tool) is not None, f"{tool} (make setup)")
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               PATH=f"{REPO / '.venv/bin'}:{os.environ.get('PATH', '')}",
               ANSIBLE_LOG_PATH=str(REPO / "build/appliance/.ansible-etsf-appliance.log"))
    (REPO / "build/appliance").mkdir(parents=True, exist_ok=True)
    log = REPO / "build/appliance/test-build.out"
    with open(log, "w") as fh:
        res = subprocess.run(["nice", "-n", "10", str(REPO / ".venv/bin/ansible-playbook"),
                              "-i", "inventory/appliance", "playbooks/appliance.yml"],
                             cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                             timeout=BUILD_TIMEOUT, check=False)
    assert res.returncode == 0, f"appliance build failed, see {log}"
    manifest = json.loads((OUT / "manifest.json").read_text())
    return {"out": OUT, "manifest": manifest,
            "tarball": OUT / "etsf-appliance-rootfs.tar.zst", "image": OUT / "etsf-appliance.img"}
