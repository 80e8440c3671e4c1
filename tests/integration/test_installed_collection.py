"""The collection works installed read-only, from another directory: `make collection`,
`ansible-galaxy collection install` into a fresh path, that path made read-only (chmod -R a-w
and a read-only bind mount, so even root cannot write), then a playbook elsewhere runs the
preflight role and the datapath role's install step (agent wheel built on the controller in a
temporary directory, objects compiled once on the controller and pushed: datapath_build:
controller) against localhost, installing the agent into a throwaway venv and every host path
under a temporary directory.  Nothing is written to the collection, no scratch directory is
left on the controller, and a second run changes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from etsf import __version__, build

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"

PLAYBOOK = """---
- name: Preflight and agent install from the installed collection
  hosts: localhost
  gather_facts: false
  roles:
    - role: etsf.sip.preflight
      vars:
        preflight_interfaces: []
        preflight_mount_bpffs: false
        preflight_packages: []
        preflight_report_path: "{{ host_root }}/preflight.json"
  tasks:
    - name: Build the agent wheel and the objects on the controller, push and install them
      ansible.builtin.include_role:
        name: etsf.sip.datapath
        tasks_from: install
      vars:
        datapath_packages: []
        datapath_build: controller
        datapath_build_arch: "{{ build_arch }}"
        datapath_build_dir: "{{ host_root }}/build"
        datapath_dist_dir: "{{ host_root }}/dist"
        datapath_agent_python: "{{ agent_python }}"
"""


def _run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, check=False, **kw)
    assert r.returncode == 0, f"{cmd[:3]} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def _tree(path: Path) -> dict:
    """Every file and directory under path, with content hashes and modes."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            out[str(p.relative_to(path))] = (st.st_mode, digest)
    return out


def _recap(stdout: str) -> dict:
    m = re.search(r"^localhost\s*:\s*(.*)$", stdout, re.M)
    assert m, stdout[-2000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


@pytest.fixture
def installed(tmp_path):
    out = tmp_path / "dist"
    _run(["make", "-s", "collection", f"COLLECTION_OUT={out}"], cwd=ROOT)
    tarballs = list(out.glob("etsf-sip-*.tar.gz"))
    assert [t.name for t in tarballs] == [f"etsf-sip-{__version__}.tar.gz"]
    coll = tmp_path / "collections"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # nothing of the checkout: no ansible.cfg, no in-tree collections path, no PYTHONPATH
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHON"))}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(coll), ANSIBLE_HOST_KEY_CHECKING="False",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"), HOME=str(tmp_path / "home"),
               TMPDIR=str(tmp_path / "controller-tmp"), PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}")
    (tmp_path / "controller-tmp").mkdir()
    _run([BIN / "ansible-galaxy", "collection", "install", "--offline", tarballs[0], "-p", coll],
         cwd=elsewhere, env=env)
    root = coll / "ansible_collections" / "etsf" / "sip"
    assert (root / "roles" / "datapath" / "tasks" / "install.yml").is_file()
    _run(["chmod", "-R", "a-w", coll])
    yield coll, elsewhere, env
    subprocess.run(["chmod", "-R", "u+w", str(coll)], check=False)


def test_roles_run_from_a_read_only_installed_collection(installed, tmp_path):
    coll, elsewhere, env = installed
    before = _tree(coll)
    host_root = tmp_path / "host"
    venv = tmp_path / "agent-venv"
    base = os.path.realpath(sys.executable)
    _run([base, "-m", "venv", "--system-site-packages", "--without-pip", venv], env=env)
    (elsewhere / "play.yml").write_text(PLAYBOOK)
    # a private mount namespace with the collection bind-mounted read-only: root gets EROFS
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
           'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"', "sh", coll,
           BIN / "ansible-playbook", "-i", "localhost,", "-c", "local",
           "-e", f"ansible_python_interpreter={BIN / 'python'}",
           "-e", f"host_root={host_root}", "-e", f"agent_python={venv / 'bin' / 'python'}",
           "-e", f"build_arch={os.uname().machine}", "play.yml"]
    first = _run(cmd, cwd=elsewhere, env=env)
    recap = _recap(first.stdout)
    assert recap["failed"] == 0 and recap["changed"] > 0, first.stdout[-3000:]

    # the preflight role ran its checks and wrote its report where it was told
    report = json.loads((host_root / "preflight.json").read_text())
    assert {c["name"] for c in report["checks"]} >= {"kernel_version", "btf", "bpffs"}

    # the agent from the controller-built wheel is installed in the venv, at the one version
    agent_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    r = _run([venv / "bin" / "etsfctl", "--version"], env=agent_env)
    assert r.stdout.strip() == f"etsfctl {__version__}"
    assert [p.name for p in (host_root / "dist").iterdir()] == [f"etsf_agent-{__version__}-py3-none-any.whl"]

    # objects compiled once on the controller were pushed with their stamp and manifest, and
    # the installed agent accepts them (same map layout, this machine)
    pushed = sorted(p.name for p in (host_root / "build").iterdir())
    assert pushed == ["build.json", "build.stamp", "tc_fastpath.bpf.o", "tc_sip.bpf.o",
                      "xdp_count.bpf.o", "xdp_sip.bpf.o"]
    r = _run([venv / "bin" / "python", "-c",
              "import json, sys; from etsf import build; print(json.dumps(build.check_manifest(sys.argv[1])))",
              host_root / "build"], env=agent_env)
    assert json.loads(r.stdout)["layout"] == build.layout_hash()

    # nothing written into the collection, no scratch directory left on the controller
    assert _tree(coll) == before
    assert not list((tmp_path / "controller-tmp").iterdir())

    # reproducible wheel and objects: a second run changes nothing
    again = _run(cmd, cwd=elsewhere, env=env)
    assert _recap(again.stdout)["changed"] == 0, again.stdout[-3000:]
    assert _tree(coll) == before
    assert not list((tmp_path / "controller-tmp").iterdir())
