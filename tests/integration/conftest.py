"""Fixtures for integration tests on the real kernel.

* ``build_dir``  (session): the BPF objects, built once with etsf.build into a tmp dir.
* ``etsf_env``   (function): a unique ETSF_PIN_ROOT under /sys/fs/bpf plus private
  state/run dirs; pins removed at teardown.
* ``lab``        (module): two network namespaces ``etsf-it-c<N>`` (prefix: $ETSF_IT_NS_PREFIX) (SIP clients:
  198.18.2.1 = UAC, 198.18.2.3 = attacker) and ``etsf-it-s<N>`` (UAS 198.18.2.2)
  joined by one veth pair; deleted at teardown even on failure.
* ``agent_venv`` (session): a throw-away venv with the etsf-agent wheel built from this
  checkout installed, readable by every user.  Processes run as another user start from
  it (``bin/etsfctl``, ``bin/python``): the checkout and its ``.venv`` may sit under a
  directory only root can enter.
Only 198.18.0.0/15 addresses are used.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lab.netns import Topology  # noqa: E402  pylint: disable=wrong-import-position
SCENARIOS = Path(__file__).resolve().parent / "scenarios"

UAC_IP = "198.18.2.1"
UAS_IP = "198.18.2.2"
ATK_IP = "198.18.2.3"
PREFIX = 24


def _need_root():
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (BPF, netns)")


@pytest.fixture(scope="session")
def etsf_bpf():
    _need_root()
    from etsf import bpf, build  # noqa: F401  pylint: disable=unused-import
    return bpf


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory, etsf_bpf):
    from etsf import build
    out = tmp_path_factory.mktemp("etsf-build")
    res = build.build(str(REPO / "bpf"), str(out))
    objs = {Path(o).name for o in res["objects"]}
    for need in ("xdp_sip.bpf.o", "tc_sip.bpf.o"):
        assert need in objs, f"build did not produce {need}: {sorted(objs)}"
    return str(out)


@pytest.fixture
def etsf_env(tmp_path, monkeypatch, build_dir, etsf_bpf):
    pin_root = f"/sys/fs/bpf/etsf-it-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    env = {
        "ETSF_PIN_ROOT": pin_root,
        "ETSF_STATE_DIR": str(tmp_path / "state"),
        "ETSF_RUN_DIR": str(tmp_path / "run"),
        "ETSF_BUILD_DIR": build_dir,
        # never the controller's own /etc/etsf: a test that wants a boot-time config writes it here
        "ETSF_DATAPATH_CONFIG": str(tmp_path / "etc" / "datapath.yml"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    etsf_bpf.ensure_bpffs()
    yield env
    shutil.rmtree(pin_root, ignore_errors=True)


@contextlib.contextmanager
def loaded(bpf, build_dir: str, obj: str, pin_root: str):
    """The programs of BPF object `obj` (from build_dir) loaded with their maps pinned under
    pin_root; the program fds are closed on the way out."""
    progs = bpf.load_object(os.path.join(build_dir, obj), pin_root)
    try:
        yield progs
    finally:
        for p in progs.values():
            p.close()


def world_tmpdir(prefix: str) -> Path:
    """A new 0755 directory every user can reach.  pytest's tmp_path is under a root-only
    directory, so files another user must read go here (the caller removes it)."""
    for base in (tempfile.gettempdir(), "/var/tmp", "/tmp"):
        p = Path(base).resolve()
        if all(os.stat(a).st_mode & stat.S_IXOTH for a in (p, *p.parents)):
            break
    else:
        pytest.fail("no temporary directory every user can enter (TMPDIR, /var/tmp, /tmp)")
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=p))
    os.chmod(d, 0o755)
    return d


# What setuptools needs to build the etsf-agent wheel (pyproject.toml: readme, packages in src).
WHEEL_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "src")


def _run_ok(cmd, what, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600,
                       check=False, **kw)
    assert r.returncode == 0, f"{what} failed ({r.returncode}): {r.stdout}{r.stderr}"
    return r


def build_agent_wheel(checkout: Path, out: Path) -> Path:
    """Build the etsf-agent wheel as the datapath role does (pip wheel, no deps, no build
    isolation), from a copy of the package inputs in ``out``: setuptools writes build/ and
    *.egg-info beside its input, and the checkout must stay untouched."""
    stage = out / "source"
    stage.mkdir(parents=True)
    for name in WHEEL_INPUTS:
        src = checkout / name
        if src.is_dir():
            shutil.copytree(src, stage / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, stage / name)
    wheels = out / "wheels"
    _run_ok([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
             "--no-cache-dir", "--no-index", "--no-deps", "--no-build-isolation",
             "--wheel-dir", wheels, stage], "pip wheel", cwd=out)
    found = sorted(wheels.glob("etsf_agent-*.whl"))
    assert len(found) == 1, found
    return found[0]


def install_agent(wheel: Path, venv: Path) -> Path:
    """Install the wheel the way the hosts do (Debian's python3 and pip, --no-index
    --no-deps; PyYAML, prometheus_client and bcrypt from Debian's packages) into a new
    venv, then make it readable and executable by every user.  Returns the venv."""
    base = os.path.realpath(sys.executable)      # the interpreter behind the test venv
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    _run_ok([base, "-m", "venv", "--system-site-packages", "--without-pip", venv], "venv",
            env=env)
    py = venv / "bin" / "python"
    _run_ok([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-cache-dir", "--no-index", "--no-deps", wheel], "pip install", env=env)
    r = subprocess.run([py, "-c", "import yaml, prometheus_client, bcrypt"], env=env,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, ("python3-yaml / python3-prometheus-client / python3-bcrypt (Debian) missing, "
                               f"run `make setup`: {r.stderr.strip().splitlines()[-1:]}")
    for top, dirs, files in os.walk(venv):
        for name in dirs + files:
            f = os.path.join(top, name)
            if not os.path.islink(f):
                mode = os.stat(f).st_mode
                os.chmod(f, mode | (0o555 if stat.S_ISDIR(mode) or mode & 0o100 else 0o444))
    os.chmod(venv, 0o755)
    return venv


@pytest.fixture(scope="session")
def agent_venv():
    """The etsf-agent wheel built from this checkout, installed in a venv every user can
    read; its bin/etsfctl and bin/python run the agent without the checkout."""
    d = world_tmpdir("etsf-agent-")
    try:
        yield install_agent(build_agent_wheel(REPO, d / "build"), d / "venv")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def etsfctl(*args, env=None, netns=None, timeout=60, check=True):
    """Run the CLI as a user would (python -m etsf), optionally inside a netns.

    nsenter --net only switches the network namespace, so /sys/fs/bpf pins stay visible
    (``ip netns exec`` would remount /sys).
    """
    e = dict(os.environ)
    e["PYTHONPATH"] = str(SRC)
    e.update(env or {})
    cmd = [sys.executable, "-m", "etsf", *args]
    if netns:
        cmd = ["nsenter", f"--net=/run/netns/{netns}", *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout, check=False)
    if check and r.returncode != 0:
        raise AssertionError(f"etsfctl {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


# lab/cli.py's crash sweep (`lab down --all`) deletes every netns named etsf-*, killing
# what runs inside; set ETSF_IT_NS_PREFIX to keep test namespaces out of its way.
NS_PREFIX = os.environ.get("ETSF_IT_NS_PREFIX", "etsf-it-")


class Lab(Topology):
    def __init__(self, tag: str, ns_prefix: str = NS_PREFIX, if_prefix: str = "etsfit"):
        super().__init__()
        self.cli_ns = f"{ns_prefix}c{tag}"
        self.srv_ns = f"{ns_prefix}s{tag}"
        self.cli_if = f"{if_prefix}{tag}c"
        self.srv_if = f"{if_prefix}{tag}s"

    def setup(self):
        self.netns(self.cli_ns)
        self.netns(self.srv_ns)
        self.veth(self.cli_ns, self.cli_if, self.srv_ns, self.srv_if,
                  addrs=[f"{UAC_IP}/{PREFIX}", f"{ATK_IP}/{PREFIX}"], peer_addrs=[f"{UAS_IP}/{PREFIX}"])

    def popen(self, ns, args, cwd, log):
        return self.procs.start(ns, args, log, cwd=cwd)


def lab_fixture(**names):
    """A Lab (Lab's keyword arguments: names) for a test module, removed afterwards even on
    failure."""
    _need_root()
    if not shutil.which("sipp"):
        pytest.fail("sipp not installed (run `make setup`)")
    with Lab(f"{os.getpid() % 100000}", **names) as lab:
        lab.setup()
        yield lab


@pytest.fixture(scope="module")
def lab():
    yield from lab_fixture()


def read_pinned_ctl(bpf, root):
    """etsf_ctl as the programs under the pin root `root` see it (layout.Ctl)."""
    from etsf import layout
    m = bpf.Map.open_pinned(os.path.join(root, "maps", "etsf_ctl"))
    try:
        return layout.Ctl.from_bytes(m.lookup(bytes(4)))
    finally:
        m.close()


def netns_names() -> set[str]:
    """The network namespaces that exist now (what a test must leave as it found)."""
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {ln.split()[0] for ln in r.stdout.splitlines() if ln.strip()}


def cmdlines_with(token: str) -> list[str]:
    """Processes (other than this one) whose command line contains *token*: what a test left
    running."""
    hits = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if token in cmd:
            hits.append(f"{pid}: {cmd[:200]}")
    return hits


def run_bench_quick(script: str, result: str, base: Path, tools) -> tuple:
    """Run ``bench/<script> --quick`` into *base* (out/, work/) as root with the checkout's
    agent; returns (completed process, out dir, work dir, the parsed *result* JSON or None)."""
    if os.geteuid() != 0:
        pytest.fail("needs root (namespaces, BPF)")
    missing = [t for t in tools if not shutil.which(t)]
    assert not missing, f"tools missing (scripts/setup.sh installs them): {missing}"
    out, work = base / "out", base / "work"
    env = dict(os.environ, PYTHONPATH=str(SRC))
    r = subprocess.run([sys.executable, str(REPO / "bench" / script), "--quick", "--out", str(out),
                        "--work", str(work)], capture_output=True, text=True, env=env, timeout=150, check=False)
    print(r.stdout[-4000:])
    print(r.stderr[-4000:])
    res = json.loads((out / result).read_text()) if (out / result).exists() else None
    return r, out, work, res
