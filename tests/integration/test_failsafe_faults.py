"""Fail-safe fault injection with real SIP traffic (sipp) on the real kernel.

Namespaces ``etsf-fs-c<N>`` (UAC 198.18.2.1) and ``etsf-fs-s<N>`` (UAS 198.18.2.2), one
veth pair, eTSF attached (native XDP + TC egress) on the UAS side, a private
ETSF_PIN_ROOT / ETSF_STATE_DIR per test.  The watchdog runs as a user would run it
(``etsfctl failsafe --config F --iterations N``) inside the UAS netns.  Every load is
bounded (sipp -m/-r/-timeout, watchdog --iterations); every timing assertion is a
generous bound derived from the configured window.  Measured times are printed as
``FAILSAFE {json}`` lines (pytest -s) for the report.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SCENARIOS, SRC, UAC_IP, UAS_IP, etsfctl, lab_fixture

SIP_PORT = 5060
TICK = 0.1

GOOD_POLICY = """\
version: 1
sip_ports: [5060]
rate_limits:
  register: {rate: 10, burst: 10}
  invite: {rate: 0}
  other: {rate: 0}
overload: {level: 0}
"""

BAD_XDP_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
/* deliberately unverifiable: reads past data_end without a bounds check */
SEC("xdp")
int xdp_sip(struct xdp_md *ctx)
{
    unsigned char *data = (unsigned char *)(long)ctx->data;
    return data[4000] ? XDP_PASS : XDP_DROP;
}
char LICENSE[] SEC("license") = "GPL";
"""


@pytest.fixture(scope="module")
def fslab():
    yield from lab_fixture(ns_prefix="etsf-fs-", if_prefix="etsffs")


def _sipp(*args):
    return ["sipp", *args, "-nostdin", "-trace_stat", "-fd", "1"]


def _stat(path: Path) -> dict[str, int]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    head = lines[0].rstrip(";").split(";")
    row = dict(zip(head, lines[-1].rstrip(";").split(";")))
    return {k: int(row[k]) for k in ("SuccessfulCall(C)", "FailedCall(C)", "TotalCallCreated")}


class Calls:
    """One UAS + one UAC sipp run (bounded: -m calls, -r rate, -timeout)."""

    def __init__(self, lab, work: Path, calls: int, rate: int, tag: str = "a", uas_scenario: str | None = None):
        self.lab, self.calls = lab, calls
        self.uas_dir, self.uac_dir = work / f"uas-{tag}", work / f"uac-{tag}"
        self.uas_dir.mkdir(parents=True)
        self.uac_dir.mkdir(parents=True)
        timeout = f"{int(calls / rate) + 40}s"
        scen = ["-sf", str(SCENARIOS / uas_scenario)] if uas_scenario else ["-sn", "uas"]
        self.uas = lab.popen(lab.srv_ns, _sipp(*scen, "-i", UAS_IP, "-p", str(SIP_PORT),
                                               "-timeout", timeout, "-stf", "uas.csv"),
                             cwd=self.uas_dir, log=self.uas_dir / "sipp.log")
        time.sleep(0.5)
        self.uac = lab.popen(lab.cli_ns, _sipp("-sn", "uac", f"{UAS_IP}:{SIP_PORT}", "-i", UAC_IP, "-p", "5070",
                                               "-m", str(calls), "-r", str(rate), "-max_retrans", "3",
                                               "-timeout", timeout, "-stf", "uac.csv"),
                             cwd=self.uac_dir, log=self.uac_dir / "sipp.log")

    def finish(self) -> dict[str, int]:
        self.lab.stop(self.uac, timeout=120)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.uas.pid, signal.SIGTERM)
        self.lab.stop(self.uas, timeout=15)
        return _stat(self.uac_dir / "uac.csv")


class Watchdog:
    """etsfctl failsafe in the UAS netns, bounded by --iterations."""

    def __init__(self, lab, env, cfg: dict, path: Path, iterations: int):
        import yaml
        path.write_text(yaml.safe_dump(cfg))
        e = {**os.environ, **env, "PYTHONPATH": str(SRC)}
        self.log = open(path.with_suffix(".log"), "w")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(["nsenter", f"--net=/run/netns/{lab.srv_ns}", sys.executable, "-m", "etsf",
                                   "failsafe", "--config", str(path), "--iterations", str(iterations)],
                                  env=e, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.logpath = path.with_suffix(".log")

    def kill(self, sig=signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.p.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.p.wait(timeout=10)

    def stop(self):
        if self.p.poll() is None:
            self.kill(signal.SIGTERM)
        if self.p.poll() is None:
            self.kill(signal.SIGKILL)
        self.log.close()
        return self.logpath.read_text()


def _cfg(**rules) -> dict:
    base = {name: {"enabled": False} for name in
            ("detached", "drop_ratio", "ser", "map_pressure", "fastpath_fallback", "heartbeat")}
    for k, v in rules.items():
        base[k] = {"enabled": True, **v}
    return {"version": 1, "interval_s": TICK,
            "actions": {"detach_after_s": None, "recovery": "manual"}, "rules": base}


def _audit(env) -> list[dict]:
    p = Path(env["ETSF_STATE_DIR"]) / "failsafe-audit.jsonl"
    if not p.exists():
        return []
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]


def _wait(pred, timeout: float, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def _reason_packets(reason: str) -> int:
    from etsf import datapath
    return sum(r["packets"] for r in datapath.stats()["counters"] if r["hook"] == "XDP" and r["reason"] == reason)


def _report(**kw):
    print("FAILSAFE", json.dumps(kw, sort_keys=True))


@pytest.fixture
def fs_attached(fslab, etsf_env, tmp_path):
    if not fslab.alive():
        pytest.fail("fail-safe lab namespaces disappeared")
    # TC egress on a tcx link: the watchdog's checks, detach and re-attach keep that API too
    # (every other lab and Molecule host runs the default clsact filters)
    info = json.loads(etsfctl("attach", "--hook", "xdp", "--iface", fslab.srv_if, "--mode", "native",
                              "--tc-api", "tcx", "--json", env=etsf_env, netns=fslab.srv_ns).stdout)
    pol = tmp_path / "policy.yml"
    pol.write_text(GOOD_POLICY)
    etsfctl("policy", "apply", str(pol), env=etsf_env)
    yield info
    etsfctl("detach", "--iface", fslab.srv_if, env=etsf_env, netns=fslab.srv_ns, check=False)


# ---------------------------------------------------------------------------


def _watchdog_series(env, monkeypatch, tmp_path) -> dict[str, float]:
    """The exporter's watchdog series, from the collector the exporter serves."""
    from prometheus_client import CollectorRegistry, generate_latest
    from etsf.telemetry.collector import EtsfCollector
    monkeypatch.setenv("ETSF_STATE_DIR", env["ETSF_STATE_DIR"])
    reg = CollectorRegistry()
    reg.register(EtsfCollector(root=str(tmp_path / "no-pins")))
    return {ln.split()[0]: float(ln.split()[1]) for ln in generate_latest(reg).decode().splitlines()
            if ln.startswith("etsf_failsafe_watchdog_")}


def test_exporter_tells_a_dead_watchdog_from_one_stopped_on_purpose(
        fslab, fs_attached, etsf_env, tmp_path, monkeypatch):
    """A watchdog that dies (SIGKILL, or systemd gave up restarting it) reverts nothing: the
    exporter says so (etsf_failsafe_watchdog_up 0, not stopped), and EtsfWatchdogDown pages.  One
    stopped on purpose (SIGTERM) writes that into its state file: up 0, stopped 1, no page."""
    state = Path(etsf_env["ETSF_STATE_DIR"]) / "failsafe.json"
    assert _watchdog_series(etsf_env, monkeypatch, tmp_path) == {}       # never ran here: nothing
    for sig, stopped in ((signal.SIGKILL, None), (signal.SIGTERM, True)):
        wd = Watchdog(fslab, etsf_env, _cfg(), tmp_path / "fs.yml", iterations=600)
        try:
            assert _wait(lambda: state.exists() and json.loads(state.read_text())["pid"] == wd.p.pid, 10)
            assert _watchdog_series(etsf_env, monkeypatch, tmp_path) == {
                "etsf_failsafe_watchdog_up": 1, "etsf_failsafe_watchdog_stopped": 0}
            wd.kill(sig)
        finally:
            wd.stop()
        assert json.loads(state.read_text()).get("stopped") is stopped
        assert _watchdog_series(etsf_env, monkeypatch, tmp_path) == {
            "etsf_failsafe_watchdog_up": 0, "etsf_failsafe_watchdog_stopped": 1 if stopped else 0}
        if sig == signal.SIGTERM:
            assert "watchdog stopped" in etsfctl("failsafe", "status", env=etsf_env).stdout


def test_kill_agent_deadman_engages(fslab, fs_attached, etsf_env, tmp_path):
    """Kill the agent (the watchdog writes the heartbeat): the dead-man switch engages within
    2x the timeout, and every call still succeeds (the programs pass everything)."""
    timeout_ms = 1000
    wd = Watchdog(fslab, etsf_env, _cfg(), tmp_path / "fs.yml", iterations=600)
    try:
        assert _wait((Path(etsf_env["ETSF_STATE_DIR"]) / "failsafe.json").exists, 10)
        pol = tmp_path / "deadman.yml"
        pol.write_text(GOOD_POLICY + f"deadman: {{timeout_ms: {timeout_ms}}}\n")
        etsfctl("policy", "apply", str(pol), env=etsf_env)
        calls = Calls(fslab, tmp_path, calls=80, rate=10)
        time.sleep(2.0)
        assert _reason_packets("DEADMAN") == 0            # heartbeat alive: classifying
        before = _reason_packets("DEADMAN")
        wd.kill(signal.SIGKILL)
        t_kill = time.monotonic()
        assert _wait(lambda: _reason_packets("DEADMAN") > before, 2 * timeout_ms / 1000 + 1.0), \
            "dead-man switch did not engage"
        engaged_s = time.monotonic() - t_kill
        st = calls.finish()
    finally:
        wd.stop()
    _report(test="kill_agent", deadman_timeout_ms=timeout_ms, engaged_after_s=round(engaged_s, 3),
            calls=st)
    assert engaged_s <= 2 * timeout_ms / 1000, engaged_s
    assert st["FailedCall(C)"] == 0 and st["SuccessfulCall(C)"] == 80, st
    assert _reason_packets("DEADMAN") > 0


def test_detach_from_outside_detected(fslab, fs_attached, etsf_env, tmp_path):
    """Someone detaches our XDP program: detected within the rule window and audited; the
    configured actions follow (bypass at once, detach after the grace period); `failsafe ack`
    re-attaches and re-engages."""
    window, grace = 0.3, 1.0
    cfg = _cfg(detached={"window_s": window})
    cfg["actions"]["detach_after_s"] = grace
    wd = Watchdog(fslab, etsf_env, cfg, tmp_path / "fs.yml", iterations=600)
    try:
        assert _wait(lambda: any(a["event"] == "start" for a in _audit(etsf_env)), 10)
        time.sleep(0.5)
        assert not any(a["event"] == "trip" for a in _audit(etsf_env))
        subprocess.run(["ip", "-n", fslab.srv_ns, "link", "set", "dev", fslab.srv_if, "xdp", "off"],
                       check=True, timeout=10)
        t0 = time.monotonic()
        trip = _wait(lambda: next((a for a in _audit(etsf_env) if a["event"] == "trip"), None), window + 5)
        detected_s = time.monotonic() - t0
        from etsf import datapath
        bypass_after_trip = datapath.read_ctl().bypass
        det = _wait(lambda: next((a for a in _audit(etsf_env) if a["event"] == "detach"), None), grace + 5)
        detached_s = time.monotonic() - t0
        st_det = _iface(fslab, etsf_env) if fslab.srv_if in json.loads(etsfctl(
            "status", "--json", env=etsf_env, netns=fslab.srv_ns).stdout)["interfaces"] else None
        ack = json.loads(etsfctl("failsafe", "ack", "--json", env=dict(etsf_env, ETSF_ACTOR="noc (carol)"),
                                 netns=fslab.srv_ns).stdout)
        st_ack = _iface(fslab, etsf_env)
        bypass_after_ack = datapath.read_ctl().bypass
    finally:
        log = wd.stop()
    _report(test="detach_from_outside", window_s=window, detected_after_s=round(detected_s, 3),
            grace_s=grace, detached_after_s=round(detached_s, 3))
    assert trip, log
    assert trip["rule"] == "detached" and fslab.srv_if in trip["numbers"]["interfaces"], trip
    assert trip["counters"]["ctl"] is not None
    assert detected_s <= window + 2.0, detected_s
    assert "etsf-failsafe: trip rule=detached" in log
    assert bypass_after_trip == 1
    assert det and det["interfaces"] == {fslab.srv_if: True} and not det.get("errors"), det
    assert grace <= detached_s - detected_s + 2 * TICK and detached_s <= grace + window + 3.0, (detected_s, detached_s)
    assert st_det is None                              # no longer managed: programs detached
    assert ack["changed"] and ack["by"] == "watchdog" and ack["state"] == "engaged", ack
    assert st_ack["attached"] and st_ack["tc_prog_name"] == "tc_sip_egress", st_ack
    assert st_ack["tc_api"] == "tcx", st_ack                 # re-attached as it was
    assert bypass_after_ack == 0
    assert [a["event"] for a in _audit(etsf_env)][:4] == ["start", "trip", "detach", "ack"]
    assert _audit(etsf_env)[3]["actor"] == "noc (carol)"       # who asked, carried to the watchdog


MISTAKES = {
    "deny_uac": (f"deny: [{UAC_IP}/32]\n", "DROP/DENY"),
    "overload3_invite_low": ("priorities: {INVITE: low}\n", "DROP/OVERLOAD"),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_policy_mistake_auto_reverts(fslab, fs_attached, etsf_env, tmp_path, mistake):
    """A policy mistake that drops INVITE (deny the UAC's source; overload level 3 with INVITE at
    low priority): the drop-ratio rule reverts (bypass) within the rule window + 1 s; calls placed
    after the revert all succeed; `failsafe ack` re-engages."""
    extra, drop_key = MISTAKES[mistake]
    window, threshold = 2.0, 20.0
    cfg = _cfg(drop_ratio={"window_s": window, "threshold_pct": threshold, "min_packets": 10})
    wd = Watchdog(fslab, etsf_env, cfg, tmp_path / "fs.yml", iterations=900)
    try:
        assert _wait(lambda: any(a["event"] == "start" for a in _audit(etsf_env)), 10)
        calls = Calls(fslab, tmp_path, calls=60, rate=10, tag="a")
        time.sleep(2.5)
        assert not any(a["event"] == "trip" for a in _audit(etsf_env))
        bad = tmp_path / "bad.yml"
        text = GOOD_POLICY + extra
        if mistake.startswith("overload3"):
            text = text.replace("overload: {level: 0}", "overload: {level: 3}")
        bad.write_text(text)
        etsfctl("policy", "apply", str(bad), env=etsf_env)
        t_mistake = time.monotonic()
        trip = _wait(lambda: next((a for a in _audit(etsf_env) if a["event"] == "trip"), None), window + 5)
        revert_s = time.monotonic() - t_mistake
        first = calls.finish()
        after = Calls(fslab, tmp_path, calls=20, rate=10, tag="b").finish()   # placed after the revert
        r = etsfctl("failsafe", "ack", "--json", env=etsf_env, netns=fslab.srv_ns)
        ack = json.loads(r.stdout)
    finally:
        log = wd.stop()
    _report(test=f"policy_mistake_{mistake}", window_s=window, threshold_pct=threshold,
            revert_after_s=round(revert_s, 3),
            calls_during=first, calls_after=after, trip_numbers=(trip or {}).get("numbers"))
    assert trip, log
    assert trip["rule"] == "drop_ratio" and trip["numbers"]["value"] > threshold, trip
    assert trip["counters"]["xdp"].get(drop_key, 0) > 0, trip
    assert revert_s <= window + 1.0 + 2 * TICK + 0.5, revert_s
    assert after["FailedCall(C)"] == 0 and after["SuccessfulCall(C)"] == 20, after
    assert ack["changed"] and ack["by"] == "watchdog", ack
    events = [a["event"] for a in _audit(etsf_env)]
    assert events[:2] == ["start", "trip"] and "ack" in events, events


def test_ser_drop_with_live_failing_calls(fslab, fs_attached, etsf_env, tmp_path):
    """Live calls, then the service behind eTSF starts failing (UAS answers 503): the SER rule
    learns its baseline from the good calls, trips when SER falls more than `points` below it
    (bypass, audited with the numbers), and `failsafe ack` re-engages afterwards."""
    from etsf import datapath, failsafe
    window, points, min_attempts = 1.0, 20.0, 10
    cfg = _cfg(ser={"window_s": window, "points": points, "min_attempts": min_attempts,
                    "min_baseline_windows": 3, "baseline_alpha": 0.2})
    wd = Watchdog(fslab, etsf_env, cfg, tmp_path / "fs.yml", iterations=900)
    try:
        assert _wait(lambda: any(a["event"] == "start" for a in _audit(etsf_env)), 10)
        good = Calls(fslab, tmp_path, calls=100, rate=20, tag="good").finish()
        learned = failsafe.read_state() or {}
        assert not any(a["event"] == "trip" for a in _audit(etsf_env)), _audit(etsf_env)
        codes0 = failsafe.take_snapshot()["codes"]
        bad = Calls(fslab, tmp_path, calls=60, rate=20, tag="bad", uas_scenario="uas_503.xml")
        t_fail = time.monotonic()
        trip = _wait(lambda: next((a for a in _audit(etsf_env) if a["event"] == "trip"), None), window + 8)
        trip_s = time.monotonic() - t_fail
        bypass_after_trip = datapath.read_ctl().bypass
        codes1 = failsafe.take_snapshot()["codes"]
        failed = bad.finish()
        time.sleep(window + 0.5)                   # the failing window has passed: nothing to re-trip
        ack = json.loads(etsfctl("failsafe", "ack", "--json", env=etsf_env, netns=fslab.srv_ns).stdout)
        bypass_after_ack = datapath.read_ctl().bypass
    finally:
        log = wd.stop()
    _report(test="ser_live_503", window_s=window, points=points, calls_good=good, calls_503=failed,
            baseline_pct=learned.get("ser_baseline_pct"), trip_after_s=round(trip_s, 3),
            trip_numbers=(trip or {}).get("numbers"))
    assert good["FailedCall(C)"] == 0 and good["SuccessfulCall(C)"] == 100, good
    assert learned.get("ser_baseline_pct") is not None and learned["ser_baseline_pct"] >= 95.0, learned
    assert trip, log
    assert trip["rule"] == "ser", trip
    n = trip["numbers"]
    assert n["learned"] and n["attempts"] >= min_attempts and n["value"] < n["baseline"] - points, n
    # the failed INVITEs of the tripping window are the 503s eTSF counted (the window may still hold
    # the last 200 OKs of the good run: value = 200s / attempts)
    failed_in_window = round(n["attempts"] * (1 - n["value"] / 100))
    assert failed_in_window >= 1 and codes1.get(503, 0) - codes0.get(503, 0) >= failed_in_window, (n, codes0, codes1)
    assert trip_s <= window + 2.0, trip_s
    assert "etsf-failsafe: trip rule=ser" in log
    assert bypass_after_trip == 1
    assert failed["SuccessfulCall(C)"] == 0 and failed["FailedCall(C)"] > 0, failed
    assert ack["changed"] and ack["state"] == "engaged", ack
    assert bypass_after_ack == 0


def test_ack_is_refused_while_a_watched_heartbeat_is_stale(fslab, fs_attached, etsf_env, tmp_path):
    """A heartbeat file older than its limit trips the watchdog.  An ack while it is still stale
    would re-engage and trip again in the same tick (the host bypassed, then detached once
    more), so the watchdog refuses it: the host stays as it was, the audit records the refusal
    with the file's age, and the ack exits 1 with one line naming the file, its age, its limit
    and the unit that writes it.  Once the file is fresh, the ack re-engages."""
    from etsf import datapath
    hb = tmp_path / "run" / "etsf-overload" / "heartbeat"
    hb.parent.mkdir(parents=True)
    hb.write_text("{}")
    old = time.time() - 100
    os.utime(hb, (old, old))
    cfg = _cfg(heartbeat={"max_age_s": 5.0, "files": [{"path": str(hb), "max_age_s": 30}]})
    wd = Watchdog(fslab, etsf_env, cfg, tmp_path / "fs.yml", iterations=600)
    try:
        trip = _wait(lambda: next((a for a in _audit(etsf_env) if a["event"] == "trip"), None), 15)
        assert trip and trip["rule"] == "heartbeat", wd.logpath.read_text()
        refused = etsfctl("failsafe", "ack", env=dict(etsf_env, ETSF_ACTOR="noc (dave)"), netns=fslab.srv_ns,
                          check=False)
        bypass_after_refusal = datapath.read_ctl().bypass
        events_after_refusal = [a["event"] for a in _audit(etsf_env)]
        os.utime(hb)                                   # what writes it runs again
        ack = json.loads(etsfctl("failsafe", "ack", "--json", env=etsf_env, netns=fslab.srv_ns).stdout)
        bypass_after_ack = datapath.read_ctl().bypass
    finally:
        log = wd.stop()
    assert refused.returncode == 1, (refused.stdout, refused.stderr, log)
    err = refused.stderr.strip()
    assert "\n" not in err and err.startswith("etsfctl: error: ack refused, the host stays bypassed: the heartbeat "
                                              "rule would trip again at once: "), err
    assert f"{hb} (written by etsf-overload.service) is " in err and " s old, limit 30 s; start what writes it" in err, err
    assert bypass_after_refusal == 1
    assert events_after_refusal.count("trip") == 1 and "ack" not in events_after_refusal, events_after_refusal
    rec = [a for a in _audit(etsf_env) if a["event"] == "ack_refused"]
    assert len(rec) == 1 and rec[0]["actor"] == "noc (dave)" and rec[0]["state"] == "bypassed", rec
    assert rec[0]["numbers"]["stale"][str(hb)] >= 100 and rec[0]["numbers"]["max_age_s"] == {str(hb): 30.0}, rec
    assert ack["changed"] and ack["state"] == "engaged", (ack, log)
    assert bypass_after_ack == 0
    assert [a["event"] for a in _audit(etsf_env)].count("trip") == 1, _audit(etsf_env)


def test_ack_ends_an_operator_bypass_with_the_watchdog_running(fslab, fs_attached, etsf_env, tmp_path):
    """A bypass the watchdog did not set (`etsfctl revert`, as playbooks/revert.yml runs it) is
    ended by `failsafe ack` with the watchdog running too, as the health gate's message says;
    the watchdog stays engaged and audits the ack."""
    from etsf import datapath
    wd = Watchdog(fslab, etsf_env, _cfg(), tmp_path / "fs.yml", iterations=600)
    try:
        assert _wait(lambda: any(a["event"] == "start" for a in _audit(etsf_env)), 10)
        rev = json.loads(etsfctl("revert", "--mode", "bypass", "--json", env=etsf_env, netns=fslab.srv_ns).stdout)
        assert rev["changed"] and datapath.read_ctl().bypass
        ack = json.loads(etsfctl("failsafe", "ack", "--json", env=dict(etsf_env, ETSF_ACTOR="ansible (alice) CHG7"),
                                 netns=fslab.srv_ns).stdout)
        bypass_after_ack = datapath.read_ctl().bypass
        again = json.loads(etsfctl("failsafe", "ack", "--json", env=etsf_env, netns=fslab.srv_ns).stdout)
    finally:
        log = wd.stop()
    assert ack == {"changed": True, "by": "watchdog", "state": "engaged"}, (ack, log)
    assert not bypass_after_ack
    assert again == {"changed": False, "by": "watchdog", "state": "engaged"}, again
    acks = [a for a in _audit(etsf_env) if a["event"] == "ack"]
    assert len(acks) == 1 and acks[0]["numbers"]["bypass_cleared"] is True, _audit(etsf_env)
    assert acks[0]["actor"] == "ansible (alice) CHG7", acks
    assert not any(a["event"] == "trip" for a in _audit(etsf_env))

    # no watchdog running: the ack does the same itself, audited the same way
    etsfctl("revert", "--mode", "bypass", "--json", env=etsf_env, netns=fslab.srv_ns)
    alone = json.loads(etsfctl("failsafe", "ack", "--json", env=dict(etsf_env, ETSF_ACTOR="bob"),
                               netns=fslab.srv_ns).stdout)
    assert alone == {"changed": True, "by": "etsfctl", "state": "engaged"}, alone
    assert not datapath.read_ctl().bypass
    last = [a for a in _audit(etsf_env) if a["event"] == "ack"][-1]
    assert last["numbers"] == {"watchdog_running": False, "bypass_cleared": True} and last["actor"] == "bob", last


def test_a_reverted_watchdog_keeps_the_host_reverted_after_a_reboot(fslab, fs_attached, etsf_env, tmp_path):
    """The watchdog trips (a heartbeat file that never appears), then the host "reboots": the
    maps are made new by the restore's attach and policy, so the bypass flag is 0 again.  The
    watchdog that starts next resumes reverted from its state file and sets the bypass again
    before anything else; the host stays reverted until an ack."""
    from etsf import datapath
    missing = tmp_path / "never.heartbeat"
    cfg = _cfg(heartbeat={"max_age_s": 5.0, "files": [{"path": str(missing), "max_age_s": 0.5}]})
    wd = Watchdog(fslab, etsf_env, cfg, tmp_path / "fs.yml", iterations=600)
    try:
        assert _wait(lambda: any(a["event"] == "trip" for a in _audit(etsf_env)), 15), wd.logpath.read_text()
    finally:
        wd.stop()
    assert datapath.read_ctl().bypass
    # the reboot: nothing attached, bpffs empty; etsf-restore attaches and applies the policy
    etsfctl("detach", "--iface", fslab.srv_if, env=etsf_env, netns=fslab.srv_ns)
    shutil.rmtree(etsf_env["ETSF_PIN_ROOT"])
    etsfctl("attach", "--hook", "xdp", "--iface", fslab.srv_if, "--mode", "native", env=etsf_env, netns=fslab.srv_ns)
    etsfctl("policy", "apply", str(tmp_path / "policy.yml"), env=etsf_env)
    assert not datapath.read_ctl().bypass
    wd = Watchdog(fslab, etsf_env, _cfg(), tmp_path / "fs2.yml", iterations=5)
    try:
        assert wd.p.wait(timeout=60) == 0, wd.logpath.read_text()
    finally:
        wd.stop()
    assert datapath.read_ctl().bypass
    resumed = [a for a in _audit(etsf_env) if a["event"] == "resume_bypass"]
    assert len(resumed) == 1 and resumed[0]["state"] == "bypassed", _audit(etsf_env)
    ack = json.loads(etsfctl("failsafe", "ack", "--json", env=etsf_env, netns=fslab.srv_ns).stdout)
    assert ack["changed"] and not datapath.read_ctl().bypass


def test_exporter_stops_heartbeating(fslab, fs_attached, etsf_env, tmp_path):
    """The exporter rewrites its heartbeat file while it can read the maps; the watchdog's
    heartbeat rule watches the file.  Kill the exporter: the rule trips once the file is older
    than max_age_s (bypass, audited with the file's age) and calls keep succeeding."""
    max_age, interval = 1.5, 0.3
    hb = tmp_path / "exporter.heartbeat"
    cfg = _cfg(heartbeat={"max_age_s": 5.0, "files": [{"path": str(hb), "max_age_s": max_age}]})
    e = {**os.environ, **etsf_env, "PYTHONPATH": str(SRC)}
    exp_log = open(tmp_path / "exporter.log", "w")  # noqa: SIM115 - closed below
    exp = subprocess.Popen(["nsenter", f"--net=/run/netns/{fslab.srv_ns}", sys.executable, "-m", "etsf",
                            "exporter", "--listen", "127.0.0.1", "--port", "0", "--sample-interval", "600",
                            "--heartbeat-file", str(hb), "--heartbeat-interval", str(interval),
                            "--max-seconds", "120"],
                           env=e, stdout=exp_log, stderr=subprocess.STDOUT, start_new_session=True)
    wd = None
    try:
        assert _wait(hb.exists, 15), (tmp_path / "exporter.log").read_text()
        first = json.loads(hb.read_text())
        wd = Watchdog(fslab, etsf_env, cfg, tmp_path / "fs.yml", iterations=600)
        assert _wait(lambda: any(a["event"] == "start" for a in _audit(etsf_env)), 10)
        calls = Calls(fslab, tmp_path, calls=80, rate=10)
        time.sleep(2.0)
        assert not any(a["event"] == "trip" for a in _audit(etsf_env)), _audit(etsf_env)
        assert time.time() - hb.stat().st_mtime < max_age       # being rewritten
        os.killpg(exp.pid, signal.SIGKILL)
        exp.wait(timeout=10)
        t_kill = time.monotonic()
        trip = _wait(lambda: next((a for a in _audit(etsf_env) if a["event"] == "trip"), None), max_age + 5)
        trip_s = time.monotonic() - t_kill
        res = calls.finish()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(exp.pid, signal.SIGKILL)
        exp.wait(timeout=10)
        exp_log.close()
        log = wd.stop() if wd else ""
    _report(test="exporter_heartbeat", max_age_s=max_age, heartbeat_interval_s=interval,
            trip_after_kill_s=round(trip_s, 3), calls=res, trip_numbers=(trip or {}).get("numbers"))
    assert first["pid"] > 0
    assert trip, log
    assert trip["rule"] == "heartbeat" and str(hb) in trip["numbers"]["stale"], trip
    assert trip["numbers"]["stale"][str(hb)] > max_age
    # the file was fresh (<= interval) when the exporter died: trips between max_age - interval
    # and max_age plus a few ticks
    assert max_age - interval - 2 * TICK <= trip_s <= max_age + 1.0, trip_s
    assert res["FailedCall(C)"] == 0 and res["SuccessfulCall(C)"] == 80, res


def _bad_build_dir(tmp_path: Path, good: str) -> str:
    d = tmp_path / "bad-build"
    d.mkdir()
    (d / "bad_xdp.bpf.c").write_text(BAD_XDP_C)
    subprocess.run(["clang", "-target", "bpf", "-O2", "-g", "-I", f"/usr/include/{os.uname().machine}-linux-gnu",
                    "-c", str(d / "bad_xdp.bpf.c"),
                    "-o", str(d / "xdp_sip.bpf.o")], check=True, timeout=60, capture_output=True)
    shutil.copy(Path(good) / "tc_sip.bpf.o", d / "tc_sip.bpf.o")
    # the good build's manifest (this layout, this host): what refuses the object is the verifier
    shutil.copy(Path(good) / "build.json", d / "build.json")
    return str(d)


def _iface(lab, env) -> dict:
    st = json.loads(etsfctl("status", "--json", env=env, netns=lab.srv_ns).stdout)
    return st["interfaces"][lab.srv_if]


def test_unverifiable_upgrade_keeps_running(fslab, fs_attached, etsf_env, tmp_path, build_dir):
    """Upgrade to an object the verifier rejects: error names the verifier's reason, the running
    programs and maps stay exactly as they were, and no call fails."""
    from etsf import datapath
    bad = _bad_build_dir(tmp_path, build_dir)
    root = etsf_env["ETSF_PIN_ROOT"]
    pins_before = sorted(os.listdir(os.path.join(root, "maps"))), sorted(os.listdir(os.path.join(root, "progs")))
    ctl_before = bytes(datapath.read_ctl())
    calls = Calls(fslab, tmp_path, calls=40, rate=10)
    time.sleep(1.5)
    st0 = _iface(fslab, etsf_env)
    r = etsfctl("attach", "--hook", "xdp", "--iface", fslab.srv_if, "--build-dir", bad,
                env=etsf_env, netns=fslab.srv_ns,
                check=False)
    st1 = _iface(fslab, etsf_env)
    res = calls.finish()
    _report(test="unverifiable_upgrade", error=r.stderr.strip(), calls=res)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "running programs unchanged" in r.stderr and "verifier:" in r.stderr, r.stderr
    assert "invalid access" in r.stderr or "out of bounds" in r.stderr or "invalid" in r.stderr, r.stderr
    assert (st1["xdp_prog_id"], st1["tc_prog_id"]) == (st0["xdp_prog_id"], st0["tc_prog_id"]) \
        == (fs_attached["xdp_prog_id"], fs_attached["tc_prog_id"])
    assert (sorted(os.listdir(os.path.join(root, "maps"))), sorted(os.listdir(os.path.join(root, "progs")))) \
        == pins_before
    assert bytes(datapath.read_ctl()) == ctl_before
    assert datapath.load_state()["interfaces"][fslab.srv_if]["xdp_prog_id"] == fs_attached["xdp_prog_id"]
    assert res["FailedCall(C)"] == 0 and res["SuccessfulCall(C)"] == 40, res


def _udp_rcvbuf_errors(lab) -> int:
    """UDP datagrams dropped because a socket's receive buffer was full, in both namespaces
    (the load generator falling behind: the first sign of saturation)."""
    total = 0
    for ns in (lab.cli_ns, lab.srv_ns):
        out = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "cat", "/proc/net/snmp"],
                             capture_output=True, text=True, check=True, timeout=10).stdout
        rows = [ln.split() for ln in out.splitlines() if ln.startswith("Udp:")]
        total += int(dict(zip(rows[0][1:], rows[1][1:]))["RcvbufErrors"])
    return total


# the topology's capacity, measured once per module by the first test that needs it: both
# upgrade tests load the same namespaces with eTSF attached, so a second search would find the
# same rate and cost another ~45 s
_CAPACITY: dict[str, tuple[int, list[dict]]] = {}


def _capacity(lab, tmp_path: Path) -> tuple[int, list[dict]]:
    """Highest offered call rate this topology (sipp UAC -> eTSF-attached UAS, 2 cores shared)
    sustains for 5 s with 0 failed calls, >= 90% of the offered rate achieved and no UDP
    datagram dropped at a full socket buffer: doubling from 200 cps, then two bisection steps
    between the last good and the first bad rate.  Bounded: <= 9 runs of 5 s, once per lab."""
    if lab.srv_ns not in _CAPACITY:
        _CAPACITY[lab.srv_ns] = _search_capacity(lab, tmp_path)
    return _CAPACITY[lab.srv_ns]


def _search_capacity(lab, tmp_path: Path) -> tuple[int, list[dict]]:
    steps: list[dict] = []

    def ok(rate: int) -> bool:
        calls = rate * 5
        e0 = _udp_rcvbuf_errors(lab)
        t0 = time.monotonic()
        st = Calls(lab, tmp_path, calls=calls, rate=rate, tag=f"cap{len(steps)}").finish()
        took = time.monotonic() - t0 - 0.5              # the UAS head start
        drops = _udp_rcvbuf_errors(lab) - e0
        achieved = st["SuccessfulCall(C)"] / max(took, 1e-3)
        good = (not st["FailedCall(C)"] and st["SuccessfulCall(C)"] == calls and achieved >= 0.9 * rate
                and drops == 0)
        steps.append({"rate": rate, **st, "seconds": round(took, 2), "achieved_cps": round(achieved),
                      "udp_rcvbuf_drops": drops, "ok": good})
        return good

    best, bad = 0, None
    for rate in (200, 400, 800, 1600, 3200, 6400, 12800):
        if not ok(rate):
            bad = rate
            break
        best = rate
    if bad and best:
        for _step in range(2):
            mid = (best + bad) // 2
            if ok(mid):
                best = mid
            else:
                bad = mid
    return best, steps


def test_valid_upgrade_under_load(fslab, fs_attached, etsf_env, tmp_path, build_dir):
    """Measure the topology's capacity, then replace the programs with a new valid object three
    times while calls run at 50% of it: 0 failed calls, counters continue (no reset), every
    INVITE counted once."""
    from etsf import datapath
    new = tmp_path / "new-build"
    shutil.copytree(build_dir, new)
    capacity, steps = _capacity(fslab, tmp_path)
    assert capacity >= 200, steps
    rate = capacity // 2
    calls_n = rate * 8                                  # ~8 s of calls, 3 upgrades inside
    before = datapath.stats()
    inv0 = sum(r["packets"] for r in before["counters"] if r["hook"] == "XDP" and r["method"] == "INVITE")
    calls = Calls(fslab, tmp_path, calls=calls_n, rate=rate)
    ids = [fs_attached["xdp_prog_id"]]
    t_up = []
    for _round in range(3):
        time.sleep(1.5)
        t = time.monotonic()
        info = json.loads(etsfctl("attach", "--hook", "xdp", "--iface", fslab.srv_if, "--build-dir", str(new), "--json",
                                  env=etsf_env, netns=fslab.srv_ns).stdout)
        t_up.append(round(time.monotonic() - t, 3))
        assert info["replaced_prog_id"] == ids[-1], info
        ids.append(info["xdp_prog_id"])
    res = calls.finish()
    after = datapath.stats()
    inv1 = sum(r["packets"] for r in after["counters"] if r["hook"] == "XDP" and r["method"] == "INVITE")
    _report(test="valid_upgrade", capacity_cps=capacity, capacity_steps=steps, rate_cps=rate, calls=res,
            prog_ids=ids, attach_s=t_up, invites_counted=inv1 - inv0)
    assert len(set(ids)) == 4
    assert res["FailedCall(C)"] == 0 and res["SuccessfulCall(C)"] == calls_n, res
    # counters carried across the three replacements: every INVITE (retransmissions included)
    assert inv1 - inv0 >= calls_n


# the release before the TC ingress hook: xdp_sip on every interface, two counter hooks
PREV_RELEASE = "54d70071b88b2cf76bfef3184c0d2fd7f044dece"


@pytest.fixture(scope="module")
def prev_tree(tmp_path_factory):
    from test_upgrade_layout import _tree
    return _tree(tmp_path_factory, PREV_RELEASE)


def _hook_counts() -> dict[str, int]:
    """SIP packets counted per hook (every method, every verdict: what a dashboard sums),
    INVITEs per ingress hook, and the ingress hooks' INVITEs together."""
    from etsf import datapath
    out = {"XDP": 0, "TC_INGRESS": 0, "TC_EGRESS": 0, "XDP INVITE": 0, "TC_INGRESS INVITE": 0}
    for r in datapath.stats()["counters"]:
        if r["method"] == "UNKNOWN":
            continue
        out[r["hook"]] = out.get(r["hook"], 0) + r["packets"]
        if r["method"] == "INVITE" and r["hook"] in ("XDP", "TC_INGRESS"):
            out[f"{r['hook']} INVITE"] += r["packets"]
    out["ingress"] = out["XDP"] + out["TC_INGRESS"]
    out["INVITE"] = out["XDP INVITE"] + out["TC_INGRESS INVITE"]
    return out


def test_upgrade_across_hook_change_under_load(fslab, etsf_env, tmp_path, prev_tree):
    """A host of the previous release (xdp_sip natively on the veth, tc_sip_egress) upgraded by
    this release's attach with the default hook (auto: TC on a veth) while calls run at 50 % of
    the topology's capacity: no call fails, the XDP program is gone, no counter goes back
    (sampled through the switch), the XDP hook's counts stay as the old programs left them, and
    every INVITE is counted at an ingress hook."""
    from test_upgrade_layout import old_etsfctl
    pol = tmp_path / "policy.yml"
    pol.write_text(GOOD_POLICY)
    old_etsfctl(prev_tree, etsf_env, "attach", "--iface", fslab.srv_if, "--mode", "native", netns=fslab.srv_ns)
    old_etsfctl(prev_tree, etsf_env, "policy", "apply", str(pol))
    old_xdp = _xdp_id(fslab)
    assert old_xdp
    try:
        capacity, steps = _capacity(fslab, tmp_path)
        assert capacity >= 200, steps
        rate = capacity // 2
        calls_n = rate * 8
        c0 = _hook_counts()
        samples = [c0]
        calls = Calls(fslab, tmp_path, calls=calls_n, rate=rate, tag="hook")
        t_up = time.monotonic() + 3.0
        while time.monotonic() < t_up:
            samples.append(_hook_counts())
            time.sleep(0.2)
        before = _hook_counts()
        samples.append(before)
        t = time.monotonic()
        info = json.loads(etsfctl("attach", "--iface", fslab.srv_if, "--json", env=etsf_env,
                                  netns=fslab.srv_ns).stdout)
        attach_s = round(time.monotonic() - t, 3)
        after = _hook_counts()
        samples.append(after)
        while calls.uac.poll() is None and len(samples) < 600:
            samples.append(_hook_counts())
            time.sleep(0.2)
        res = calls.finish()
        end = _hook_counts()
        samples.append(end)
        xdp_now = _xdp_id(fslab)
    finally:
        etsfctl("detach", "--iface", fslab.srv_if, env=etsf_env, netns=fslab.srv_ns, check=False)
    _report(test="upgrade_across_hook_change", capacity_cps=capacity, rate_cps=rate, calls=res, attach_s=attach_s,
            hook=info.get("hook"), counts_start=c0, counts_before=before, counts_after=after, counts_end=end,
            samples=len(samples))
    assert info["hook"] == "tc", info
    assert xdp_now == 0, "the XDP program left the veth"
    assert res["FailedCall(C)"] == 0 and res["SuccessfulCall(C)"] == calls_n, res
    for a, b in zip(samples, samples[1:]):
        for k in ("XDP", "TC_EGRESS", "ingress", "INVITE"):
            assert b[k] >= a[k], (k, a, b)
    # the old programs' XDP counts carried over, and nothing runs at XDP any more
    assert after["XDP"] >= before["XDP"] > c0["XDP"]
    assert end["XDP"] == after["XDP"] and end["XDP INVITE"] == after["XDP INVITE"]
    assert end["TC_INGRESS INVITE"] > after["TC_INGRESS INVITE"] >= 0
    # every INVITE counted at an ingress hook across the switch (none lost between the hooks)
    assert end["INVITE"] - c0["INVITE"] >= calls_n, (c0, end, res)


def _xdp_id(lab) -> int:
    out = subprocess.run(["ip", "-n", lab.srv_ns, "-j", "-d", "link", "show", lab.srv_if],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return int((json.loads(out)[0].get("xdp") or {}).get("prog", {}).get("id", 0))
