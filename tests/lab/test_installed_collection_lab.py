"""site.yml from a read-only installed collection, run from another directory, with the objects
compiled once on the controller (datapath_build: controller), against one freshly booted lab
host: the rollout succeeds, the host gets no compiler and loads the pushed objects, nothing is
written into the collection and no scratch directory is left on the controller."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from labhelpers import REPO, ansible_bin, lab, on_host, playbook_failures, preconditions

from etsf import __version__, build

# its own prefix and one host: runs beside other lab users without touching their hosts
PREFIX = os.environ.get("ETSF_LAB_IC_PREFIX", "icol-")
HOST = f"{PREFIX}sbc1"


@pytest.fixture(scope="module")
def host():
    preconditions()
    lab("down", "--prefix", PREFIX, timeout=180, check=False)
    up = lab("up", "--prefix", PREFIX, "--hosts", "1")
    inv = re.search(r"inventory written: (\S+)", up.stdout)
    assert inv, up.stdout
    try:
        yield Path(inv.group(1))
    finally:
        lab("down", "--prefix", PREFIX, timeout=180, check=False)


def _tree(path: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            out[str(p.relative_to(path))] = (p.lstat().st_mode, digest)
    return out


def _run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, check=False, **kw)
    assert r.returncode == 0, f"{cmd[:3]} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def test_site_from_read_only_installed_collection_controller_build(host, tmp_path):
    out = tmp_path / "dist"
    _run(["make", "-s", "collection", f"COLLECTION_OUT={out}"], cwd=REPO)
    tarball = out / f"etsf-sip-{__version__}.tar.gz"
    coll, elsewhere, ctmp = tmp_path / "collections", tmp_path / "elsewhere", tmp_path / "controller-tmp"
    elsewhere.mkdir()
    ctmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHON"))}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(coll), ANSIBLE_HOST_KEY_CHECKING="False", TMPDIR=str(ctmp),
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"), HOME=str(tmp_path / "home"),
               PATH=f"{Path(ansible_bin('ansible-playbook')).parent}:{env.get('PATH', '/usr/bin:/bin')}")
    _run([ansible_bin("ansible-galaxy"), "collection", "install", "--offline", tarball, "-p", coll],
         cwd=elsewhere, env=env)
    _run(["chmod", "-R", "a-w", coll])
    before = _tree(coll)
    try:
        cp = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"', "sh",
             str(coll), ansible_bin("ansible-playbook"), "-i", str(host), "etsf.sip.site",
             "-e", "datapath_build=controller", "-e", f"datapath_build_arch={os.uname().machine}"],
            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=1800, check=False)
        assert cp.returncode == 0, playbook_failures(cp.stdout) or cp.stdout[-4000:] + cp.stderr[-2000:]
        recap = re.search(rf"^{re.escape(HOST)}\s*:\s*(.*)$", cp.stdout, re.M)
        assert recap and "failed=0" in recap.group(1) and "unreachable=0" in recap.group(1), cp.stdout[-3000:]

        # no compiler on the host, no sources: it loaded what the controller built
        pkgs = on_host(HOST, "dpkg-query -W -f='${Package} ${db:Status-Status}\\n' clang llvm libbpf-dev; true").stdout
        assert " installed" not in pkgs, pkgs
        assert on_host(HOST, "command -v clang", check=False).returncode != 0
        assert on_host(HOST, "test -e /usr/share/etsf/bpf", check=False).returncode != 0
        manifest = json.loads(on_host(HOST, "cat /var/lib/etsf/build/build.json").stdout)
        assert manifest["layout"] == build.layout_hash() and manifest["arch"] == os.uname().machine
        assert yaml.safe_load(on_host(HOST, "cat /etc/etsf/datapath.yml").stdout)["prebuilt"] is True
        status = json.loads(on_host(HOST, "etsfctl status --json").stdout)
        assert status["interfaces"]["sip0"]["attached"]
        assert on_host(HOST, "etsfctl --version").stdout.strip() == f"etsfctl {__version__}"

        # the installed collection is untouched and the controller's scratch directories are gone
        assert _tree(coll) == before
        assert not list(ctmp.iterdir())
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(coll)], check=False)
