"""`etsfctl failsafe status` says whether a watchdog runs: a live process that wrote its state file
within the last few ticks.  The role's rollout waits on it; `failsafe ack` decides by it whether the
watchdog or the command itself re-engages; the exporter exports it, and whether a watchdog that does
not run was stopped on purpose, for the EtsfWatchdogDown alert."""
import json
import os
import subprocess
import sys
import time

from prometheus_client import CollectorRegistry, generate_latest

from etsf.failsafe import running
from etsf.telemetry.collector import EtsfCollector


def test_running_needs_a_live_process_that_ticks():
    now = time.time()
    me = {"pid": os.getpid(), "updated_at": now, "interval_s": 0.2}
    assert running(me)
    assert not running(None) and not running({}) and not running({"pid": None})
    assert not running(dict(me, updated_at=now - 6))              # 5 s, or 10 ticks when longer
    assert running(dict(me, interval_s=2.0, updated_at=now - 15))
    assert not running(dict(me, interval_s=2.0, updated_at=now - 25))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    assert not running(dict(me, pid=int(gone.stdout)))             # exited (its pid not reused here)
    assert not running(dict(me, pid="x")) and not running(dict(me, updated_at="soon"))


def _status(state_dir, *args):
    env = dict(os.environ, ETSF_STATE_DIR=str(state_dir))
    return subprocess.run([sys.executable, "-m", "etsf", "failsafe", "status", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_status_require_running_is_the_exit_code(tmp_path):
    """What the failsafe role polls after a start: exit 0 only with a live watchdog that ticks."""
    cp = _status(tmp_path)
    assert cp.returncode == 0 and "no state (watchdog never ran)" in cp.stdout
    cp = _status(tmp_path, "--require-running")
    assert cp.returncode == 1 and "no state (watchdog never ran)" in cp.stdout, cp
    now = time.time()
    doc = {"state": "engaged", "since": now, "trips_total": 0, "pid": os.getpid(), "updated_at": now,
           "interval_s": 0.2}
    (tmp_path / "failsafe.json").write_text(json.dumps(doc))
    cp = _status(tmp_path, "--require-running")
    assert cp.returncode == 0 and cp.stdout.rstrip().endswith("watchdog running"), cp
    (tmp_path / "failsafe.json").write_text(json.dumps(dict(doc, updated_at=now - 60)))
    cp = _status(tmp_path, "--require-running")
    assert cp.returncode == 1 and cp.stdout.rstrip().endswith("watchdog NOT running"), cp
    (tmp_path / "failsafe.json").write_text(json.dumps(dict(doc, updated_at=now - 60, stopped=True)))
    cp = _status(tmp_path, "--require-running")
    assert cp.returncode == 1 and cp.stdout.rstrip().endswith("watchdog stopped"), cp


def _series(tmp_path, monkeypatch) -> dict[str, float]:
    monkeypatch.setenv("ETSF_STATE_DIR", str(tmp_path))
    reg = CollectorRegistry()
    reg.register(EtsfCollector(root=str(tmp_path / "no-pins")))
    return {ln.split()[0]: float(ln.split()[1]) for ln in generate_latest(reg).decode().splitlines()
            if ln.startswith("etsf_failsafe_watchdog_")}


def test_exporter_says_whether_the_watchdog_runs(tmp_path, monkeypatch):
    assert _series(tmp_path, monkeypatch) == {}                       # never ran on this host
    now = time.time()
    doc = {"state": "engaged", "pid": os.getpid(), "updated_at": now, "interval_s": 0.2}
    for extra, up, stopped in (({}, 1, 0),                             # ticking
                               ({"updated_at": now - 60}, 0, 0),       # died, or systemd gave up
                               ({"stopped": True}, 0, 1)):             # stopped on purpose
        (tmp_path / "failsafe.json").write_text(json.dumps({**doc, **extra}))
        assert _series(tmp_path, monkeypatch) == {"etsf_failsafe_watchdog_up": up,
                                                  "etsf_failsafe_watchdog_stopped": stopped}, extra
    (tmp_path / "failsafe.json").write_text("{not json")
    assert _series(tmp_path, monkeypatch) == {}
