"""The version lives in src/etsf/__init__.py: the wheel derives it (pyproject dynamic version),
galaxy.yml must carry the same, and no changelog release is newer."""
import pathlib
import re
import subprocess
import sys
import zipfile

import yaml

from etsf import __version__
from etsf.agentid import source_fingerprint

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _key(version):
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


def test_galaxy_version_is_the_agent_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    assert yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"] == __version__


def test_pyproject_has_no_second_version():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text
    assert 'version = { attr = "etsf.__version__" }' in text
    assert not re.search(r"^version\s*=\s*['\"]", text, re.M)


def test_no_changelog_release_newer_than_the_version():
    releases = yaml.safe_load((ROOT / "changelogs/changelog.yaml").read_text()).get("releases") or {}
    assert all(_key(str(v)) <= _key(__version__) for v in releases)


def test_wheel_takes_the_version(tmp_path):
    src = tmp_path / "tree"
    (src / "src").mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-r", str(ROOT / "src" / "etsf"), str(src / "src")], check=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (src / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path / "dist"), str(src)], check=True, capture_output=True,
                   timeout=300)
    wheels = list((tmp_path / "dist").glob("etsf_agent-*.whl"))
    assert [w.name for w in wheels] == [f"etsf_agent-{__version__}-py3-none-any.whl"]
    with zipfile.ZipFile(wheels[0]) as z:
        meta = z.read(f"etsf_agent-{__version__}.dist-info/METADATA").decode()
        z.extractall(tmp_path / "installed")
    assert f"\nVersion: {__version__}\n" in meta
    # the roles compare the installed agent's fingerprint with the collection's source: the
    # wheel must carry exactly the files the fingerprint reads (a stale __pycache__ in the tree
    # the wheel was built from changes nothing)
    assert source_fingerprint(str(tmp_path / "installed" / "etsf")) == source_fingerprint(str(ROOT / "src" / "etsf"))


def test_fingerprint_follows_the_source(tmp_path):
    pkg = tmp_path / "etsf"
    (pkg / "sub" / "__pycache__").mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    first = source_fingerprint(str(pkg))
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    (pkg / "sub" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    (pkg / "notes.txt").write_text("not in the wheel")
    assert source_fingerprint(str(pkg)) == first
    (pkg / "sub" / "__init__.py").write_text("y = 2\n")
    assert source_fingerprint(str(pkg)) != first
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").rename(pkg / "sub" / "other.py")      # a rename is a change
    assert source_fingerprint(str(pkg)) != first
