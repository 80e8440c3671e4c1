"""`ansible-galaxy collection build` produces etsf-sip-<version>.tar.gz with the collection's
content and none of the build ignores (venv, caches, generated lab inventory)."""
import pathlib
import subprocess
import tarfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_collection_builds(tmp_path):
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    subprocess.run([str(ROOT / ".venv/bin/ansible-galaxy"), "collection", "build", "--force",
                    "--output-path", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=120)
    tarball = tmp_path / f"etsf-sip-{galaxy['version']}.tar.gz"
    assert tarball.is_file()
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for needed in ("MANIFEST.json", "FILES.json", "meta/runtime.yml", "plugins/modules/datapath.py",
                   "plugins/modules/policy.py", "plugins/modules/preflight.py", "plugins/modules/health.py",
                   "roles/datapath/tasks/main.yml", "playbooks/site.yml", "bpf/etsf.h", "src/etsf/cli.py"):
        assert needed in names, needed
    for name in names:
        assert not name.startswith((".venv", ".git/", "collections/")), name
        assert "__pycache__" not in name and name != "inventory/lab/hosts.yml", name
