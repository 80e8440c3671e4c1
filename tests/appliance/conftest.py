"""Fixtures for the appliance tests.

* ``appliance`` (session): the artefacts of ``make appliance`` (inventory/appliance): built by
  playbooks/appliance.yml, or reused when manifest.json records the same input hash (sources,
  roles, variables) -- a cold build takes about 2.5 minutes here, a reuse a few seconds.

The build starts in the background as soon as collection has selected an appliance test, so it
runs on the second CPU beside the unit and BPF tests (tests/conftest.py runs those first; they
are single-threaded and assert no timing); the fixture then waits for it.  A session that ends
before the fixture ran still waits for the build rather than killing it: a build stopped inside
its chroot would leave /proc, /sys and /dev mounted under build/appliance.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lab import appliance as apl  # noqa: E402
from lab.netns import NsProcesses  # noqa: E402

OUT = REPO / "build" / "appliance" / "etsf-appliance"
BUILD_TIMEOUT = 1200
FIRSTBOOT_TIMEOUT = 300


def _need(cond: bool, what: str) -> None:
    if not cond:
        pytest.fail(f"appliance tests need {what}")


TOOLS = ("systemd-nspawn", "sipp", "zstd", "debootstrap", "sgdisk", "mkfs.vfat", "mcopy")
BUILD_LOG = REPO / "build/appliance/test-build.out"
_build: dict = {}           # the one build of this session: {"proc": Popen, "log": file}


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "root (chroot, nspawn, netns, BPF)"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} (make setup)"
    return None


def _start_build() -> subprocess.Popen:
    """Start playbooks/appliance.yml (niced, output to BUILD_LOG) unless this session already has."""
    if "proc" not in _build:
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
                   PATH=f"{REPO / '.venv/bin'}:{os.environ.get('PATH', '')}",
                   ANSIBLE_LOG_PATH=str(REPO / "build/appliance/.ansible-etsf-appliance.log"))
        BUILD_LOG.parent.mkdir(parents=True, exist_ok=True)
        _build["log"] = fh = open(BUILD_LOG, "w")
        _build["t0"] = time.monotonic()
        _build["proc"] = subprocess.Popen(["nice", "-n", "10", str(REPO / ".venv/bin/ansible-playbook"),
                                           "-i", "inventory/appliance", "playbooks/appliance.yml"],
                                          cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    return _build["proc"]


def _finish_build(timeout: float) -> int:
    """Wait (bounded) for the build; on a timeout, stop it and say so.  Returns its exit code."""
    if "rc" in _build:
        return _build["rc"]
    proc = _build["proc"]
    try:
        rc = proc.wait(timeout=max(1.0, timeout - (time.monotonic() - _build["t0"])))
    except subprocess.TimeoutExpired:
        proc.terminate()
        rc = proc.wait(timeout=60)
        _build["log"].write(f"\n[test] appliance build stopped after {timeout:.0f} s\n")
    _build["log"].close()
    _build["rc"] = rc
    return rc


def pytest_collection_finish(session):
    here = Path(__file__).parent
    if _missing() is None and any(here in Path(str(it.path)).parents for it in session.items):
        _start_build()


def pytest_sessionfinish(session):
    proc = _build.get("proc")
    if proc is not None and proc.poll() is None:
        print(f"\nwaiting for the background appliance build to finish (log: {BUILD_LOG})")
        _finish_build(BUILD_TIMEOUT)


@pytest.fixture(scope="session")
def appliance():
    missing = _missing()
    _need(missing is None, missing or "")
    _start_build()
    rc = _finish_build(BUILD_TIMEOUT)
    assert rc == 0, f"appliance build failed (exit {rc}), see {BUILD_LOG}"
    manifest = json.loads((OUT / "manifest.json").read_text())
    return {"out": OUT, "manifest": manifest,
            "tarball": OUT / "etsf-appliance-rootfs.tar.zst", "image": OUT / "etsf-appliance.img"}


@contextlib.contextmanager
def booted_box(appliance, allow_bpf: bool = True):
    """Extract the rootfs tarball and boot it in netns apl-box; wait (bounded) for the first-boot
    stamp and a running systemd; tear everything down afterwards.  allow_bpf=False boots it
    under nspawn's default system call filter, which refuses bpf(2): a machine eTSF cannot run on."""
    tree = Path(tempfile.mkdtemp(prefix="etsf-apl-root-", dir="/var/tmp"))
    booted = None
    try:
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "--acls", "-I", "zstd -T1 -q",
                        "-C", str(tree), "-xf", str(appliance["tarball"])], check=True, timeout=300)
        apl.net_up()
        console = appliance["out"].parent / f"nspawn-console{'' if allow_bpf else '-nobpf'}.log"
        console.write_text("")
        booted = apl.Box(tree, console, allow_bpf=allow_bpf)
        t0 = time.monotonic()
        booted.boot()
        stamp = booted.wait_file("var/lib/etsf/firstboot.json", FIRSTBOOT_TIMEOUT)
        result = None
        for _unused in range(20):              # the stamp is written last: wait for complete JSON
            try:
                result = json.loads(stamp.read_text())
                break
            except ValueError:
                time.sleep(0.5)
        assert result is not None, f"{stamp} never became valid JSON"
        booted.firstboot = result
        booted.firstboot_seconds = time.monotonic() - t0
        booted.system_state = booted.wait_system(120)
        yield booted
    finally:
        apl.teardown(booted, tree)


def wait_active(box, units, timeout: float = 60) -> dict:
    """Wait (bounded) until every unit is active; returns the last states."""
    def state():
        return {u: box.sh(["systemctl", "is-active", u]).stdout.strip() for u in units}
    deadline = time.monotonic() + timeout
    st = state()
    while any(v != "active" for v in st.values()) and time.monotonic() < deadline:
        time.sleep(1)
        st = state()
    return st


def sipp_calls_through_box(work: Path, calls: int) -> tuple[dict, int, str]:
    """`calls` sipp calls UAC -> box:5060 (Kamailio) -> UAS at 5 cps, bounded in count and time.
    Returns (the UAC's last stat row as ints where numeric, the UAC's exit code, its log)."""
    procs = NsProcesses()
    try:
        uas = procs.start(apl.UAS, ["sipp", "-sn", "uas", "-i", apl.ADDRS[apl.UAS], "-p", "5060",
                                    "-m", str(calls), "-nostdin", "-trace_stat", "-stf", "uas.csv"],
                          work / "uas.log", limit=90, cwd=work)
        time.sleep(1)
        uac = procs.start(apl.UAC, ["sipp", "-sn", "uac", f"{apl.ADDRS[apl.BOX]}:5060", "-i", apl.ADDRS[apl.UAC],
                                    "-p", "5060", "-m", str(calls), "-r", "5", "-max_retrans", "3",
                                    "-timeout", "60s", "-nostdin", "-trace_stat", "-stf", "uac.csv"],
                          work / "uac.log", limit=90, cwd=work)
        rc = procs.stop(uac, timeout=80)
        procs.stop(uas, timeout=20)
    finally:
        procs.kill_all()
    lines = [ln for ln in (work / "uac.csv").read_text().splitlines() if ln.strip()]
    row = dict(zip(lines[0].rstrip(";").split(";"), lines[-1].rstrip(";").split(";")))
    row = {k: int(v) if v.isdigit() else v for k, v in row.items()}
    return row, rc, (work / "uac.log").read_text(errors="replace")
