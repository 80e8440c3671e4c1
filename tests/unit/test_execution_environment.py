"""The execution environment definition generates a build context (ansible-builder create) that
installs the collection from the staged tarball, offline from Galaxy, and whose introspection
(the script the image build runs) yields the collection's requirements.txt and bindep.txt.
The image build itself (ansible-builder build) needs podman or docker."""
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile

import yaml
from bindep.depends import Depends

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"


def _run(*cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, check=False, **kw)
    assert r.returncode == 0, f"{cmd[0]} failed: {r.stdout}{r.stderr}"
    return r


def _lines(path):
    return [ln.split("#")[0].strip() for ln in path.read_text().splitlines() if ln.split("#")[0].strip()]


def test_collection_meta_points_at_the_requirement_files():
    meta = yaml.safe_load((ROOT / "meta/execution-environment.yml").read_text())
    assert meta["dependencies"] == {"python": "requirements.txt", "system": "bindep.txt"}
    assert {"setuptools>=61", "wheel", "PyYAML>=6", "bcrypt>=3.2"} <= set(_lines(ROOT / "requirements.txt"))


def test_bindep_compilers_only_for_controller_builds():
    deps = Depends((ROOT / "bindep.txt").read_text())
    for platform in (["platform:dpkg", "platform:debian"], ["platform:rpm", "platform:fedora"]):
        default = [r[0] for r in deps.active_rules(platform + ["default"])]
        build = [r[0] for r in deps.active_rules(platform + ["controller-build"])]
        assert "python3" in default and "clang" not in default and "bpftool" not in default
        assert {"clang", "llvm", "bpftool"} <= set(build)
        assert ("libbpf-dev" if "platform:dpkg" in platform else "libbpf-devel") in build


def test_builder_context_lists_our_requirements(tmp_path):
    # the definition refers to ../build/ee/etsf-sip.tar.gz: lay it out the way `make ee` does
    shutil.copytree(ROOT / "ee", tmp_path / "ee")
    stage = tmp_path / "build" / "ee"
    _run(BIN / "ansible-galaxy", "collection", "build", "--force", "--output-path", stage, ROOT)
    built = list(stage.glob("etsf-sip-*.tar.gz"))
    assert len(built) == 1
    built[0].rename(stage / "etsf-sip.tar.gz")
    ctx = tmp_path / "context"
    _run(BIN / "ansible-builder", "create", "--file", tmp_path / "ee" / "execution-environment.yml",
         "--context", ctx)

    dockerfile = (ctx / "Dockerfile").read_text()
    assert 'ARG ANSIBLE_GALAXY_CLI_COLLECTION_OPTS="--offline"' in dockerfile
    assert "ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml" in dockerfile
    reqs = yaml.safe_load((ctx / "_build" / "requirements.yml").read_text())
    assert reqs == {"collections": [{"name": "collections/etsf-sip.tar.gz", "type": "file"}]}
    staged = ctx / "_build" / "collections" / "etsf-sip.tar.gz"
    with tarfile.open(staged) as tar:
        for name in ("meta/execution-environment.yml", "requirements.txt", "bindep.txt"):
            assert tar.extractfile(name).read() == (ROOT / name).read_bytes(), name

    # what the image build's introspection step computes from the installed collection
    coll = tmp_path / "installed"
    # away from the checkout's ansible.cfg, whose collections path already holds etsf.sip
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["ANSIBLE_COLLECTIONS_PATH"] = str(coll)
    _run(BIN / "ansible-galaxy", "collection", "install", "--offline", staged, "-p", coll, cwd=tmp_path, env=env)
    assert (coll / "ansible_collections" / "etsf" / "sip" / "bindep.txt").is_file()
    out = yaml.safe_load(_run(sys.executable, ctx / "_build" / "scripts" / "introspect.py", "introspect",
                              "--user-bindep", ctx / "_build" / "bindep.txt", coll).stdout)
    python = [ln.split("#")[0].strip() for ln in out["python"]]
    system = [ln.split("#")[0].strip() for ln in out["system"]]
    # PyYAML comes with ansible-core in the image: ansible-builder leaves it out
    assert python == [r for r in _lines(ROOT / "requirements.txt") if not r.lower().startswith("pyyaml")]
    assert system[:len(_lines(ROOT / "bindep.txt"))] == _lines(ROOT / "bindep.txt")
    assert "clang [platform:rpm]" in system and "bpftool [platform:rpm]" in system
