"""etsf.failsafe without a kernel: config validation, rules, state machine (fake clock/datapath)."""

from __future__ import annotations

import json
import os
import time

import pytest

from etsf import datapath
from etsf import failsafe as fs
from etsf.failsafe import watchdog


# ---------------------------------------------------------------- config

def test_defaults_validate():
    cfg = fs.validate({"version": 1})
    assert cfg["actions"]["recovery"] == "manual" and cfg["rules"]["drop_ratio"]["threshold_pct"] == 20.0


@pytest.mark.parametrize("doc, path", [
    ({"version": 2}, "failsafe.version"),
    ({"interval_s": 0}, "failsafe.interval_s"),
    ({"interval_s": "fast"}, "failsafe.interval_s"),
    ({"bogus": 1}, "failsafe.bogus"),
    ({"actions": {"recovery": "sometimes"}}, "failsafe.actions.recovery"),
    ({"actions": {"detach_after_s": -1}}, "failsafe.actions.detach_after_s"),
    ({"rules": {"drop_ratio": {"threshold_pct": 150}}}, "failsafe.rules.drop_ratio.threshold_pct"),
    ({"rules": {"drop_ratio": {"windows": 1}}}, "failsafe.rules.drop_ratio.windows"),
    ({"rules": {"nope": {}}}, "failsafe.rules.nope"),
    ({"rules": {"ser": {"enabled": "yes"}}}, "failsafe.rules.ser.enabled"),
    ({"rules": {"heartbeat": {"files": [{"path": "/x", "max_age_s": "old"}]}}},
     "failsafe.rules.heartbeat.files[0].max_age_s"),
    ({"interfaces": "sip0"}, "failsafe.interfaces"),
])
def test_config_errors_name_the_field(doc, path):
    with pytest.raises(fs.FailsafeError) as e:
        fs.validate(doc)
    msg = str(e.value)
    assert msg.startswith(path + ":") and "\n" not in msg, msg


def test_config_file(tmp_path):
    p = tmp_path / "f.yml"
    p.write_text("version: 1\nactions: {recovery: auto, detach_after_s: null}\n")
    cfg = fs.load_config(str(p))
    assert cfg["actions"]["recovery"] == "auto" and cfg["actions"]["detach_after_s"] is None
    p.write_text("version: 1\nactions: [\n")
    with pytest.raises(fs.FailsafeError, match="not valid YAML"):
        fs.load_config(str(p))


# ---------------------------------------------------------------- rules

def snap(t, ok=0, deny=0, rl=0, codes=None, maps=None, fp=None, ctl=None):
    stats = [("XDP", "INVITE", "PASS", "OK", ok), ("XDP", "INVITE", "DROP", "DENY", deny),
             ("XDP", "REGISTER", "DROP", "RATE_LIMIT", rl), ("XDP", "UNKNOWN", "PASS", "NOT_SIP_PORT", 10**6)]
    return {"t": t, "stats": stats, "codes": codes or {}, "have_codes": codes is not None,
            "maps": maps or {}, "fastpath": fp, "ctl": ctl or {"bypass": 0}}


DR = fs.validate({})["rules"]["drop_ratio"]


def test_drop_ratio_needs_full_window_and_min_packets():
    h = [snap(0.0)]
    assert fs.rule_drop_ratio(DR, h, snap(1.0, ok=100, deny=100))["detail"] == "window not full"
    assert fs.rule_drop_ratio(DR, h, snap(2.0, ok=5, deny=5))["detail"] == "too few packets"
    r = fs.rule_drop_ratio(DR, h, snap(2.0, ok=70, deny=30))
    assert r["breach"] and r["value"] == 30.0 and r["drops"] == 30


def test_rate_limiter_drops_are_excused():
    r = fs.rule_drop_ratio(DR, [snap(0.0)], snap(2.0, ok=50, rl=950))
    assert not r["breach"] and r["value"] == 0.0


def test_overload_level_drops_count():
    """Shedding by overload level stays counted: a policy that ranks INVITE low sheds calls at
    level 3, the mistake this rule reverts (tests/integration/test_failsafe_faults.py)."""
    cur = snap(2.0, ok=50)
    cur["stats"].append(("XDP", "INVITE", "DROP", "OVERLOAD", 950))
    r = fs.rule_drop_ratio(DR, [snap(0.0)], cur)
    assert r["breach"] and r["drops"] == 950


@pytest.mark.parametrize("method,reason", [("INVITE", "ADMISSION"), ("INVITE", "ADMIT_503"),
                                           ("UNKNOWN", "NAT_KEEPALIVE"),
                                           ("ACK", "ADMIT_ACK")])
def test_admission_and_nat_keepalive_drops_are_excused(method, reason):
    """The admission control refusing 2 of 3 INVITEs in a surge is doing its job: a fail-safe that
    counted it would switch the node to bypass exactly when the proxy needs protecting."""
    cur = snap(2.0, ok=50)
    cur["stats"].append(("XDP", method, "DROP", reason, 950))
    r = fs.rule_drop_ratio(DR, [snap(0.0)], cur)
    assert not r["breach"] and r["value"] == 0.0
    counted = dict(DR, excused_reasons=["RATE_LIMIT"])
    r = fs.rule_drop_ratio(counted, [snap(0.0)], cur)
    assert r["breach"] and r["drops"] == 950


def test_ser_learns_baseline_then_trips():
    cfg = {**fs.validate({})["rules"]["ser"], "window_s": 1.0, "min_attempts": 10, "min_baseline_windows": 2}
    learn: dict = {}
    hist = [snap(0.0, codes={})]
    t, total200 = 0.0, 0
    for _tick in range(3):                       # healthy: 100 % SER
        t += 1.0
        total200 += 20
        cur = snap(t, codes={200: total200})
        r = fs.rule_ser(cfg, hist, cur, learn)
        fs.learn_ser(cfg, learn, r, t)
        hist = [cur]
        assert not r["breach"]
    assert learn["windows"] == 3 and learn["baseline"] == pytest.approx(100.0)
    cur = snap(t + 1.0, codes={200: total200 + 10, 503: 10})      # 50 %: 50 points below
    r = fs.rule_ser(cfg, hist, cur, learn)
    assert r["breach"] and r["value"] == 50.0 and r["baseline"] == 100.0


def test_map_pressure_and_fastpath_fallback():
    mp = fs.rule_map_pressure(fs.validate({})["rules"]["map_pressure"], [],
                              snap(0, maps={"etsf_rl": {"entries": 990, "max_entries": 1000},
                                            "etsf_tm_txn": {"entries": 1, "max_entries": 1000}}))
    assert mp["breach_now"] and mp["map"] == "etsf_rl" and mp["value"] == 99.0
    fcfg = fs.validate({})["rules"]["fastpath_fallback"]
    h = [snap(0.0, fp={"FWD": 0, "RET": 0, "NO_BACKEND": 0, "BYPASS": 0})]
    r = fs.rule_fastpath_fallback(fcfg, h, snap(2.0, fp={"FWD": 40, "RET": 0, "NO_BACKEND": 60, "BYPASS": 500}))
    assert r["breach"] and r["value"] == 60.0 and r["fallback"] == {"NO_BACKEND": 60}


def test_heartbeat_rule(tmp_path):
    cfg = {**fs.validate({})["rules"]["heartbeat"], "files": [{"path": str(tmp_path / "missing"), "max_age_s": 5}]}
    r = fs.rule_heartbeat(cfg, snap(0, ctl={"heartbeat_age_s": 60.0}), own_heartbeat=False)
    assert r["breach"] and r["stale"] == {"agent": 60.0, str(tmp_path / "missing"): "missing"}
    # a file that does not exist yet gets max_age_s from the watchdog's start (boot order)
    r = fs.rule_heartbeat(cfg, snap(0), own_heartbeat=True, running_s=4.0)
    assert not r["breach"], r
    r = fs.rule_heartbeat(cfg, snap(0), own_heartbeat=True, running_s=6.0)
    assert r["breach"] and r["stale"] == {str(tmp_path / "missing"): "missing"}, r
    (tmp_path / "missing").write_text("x")
    assert not fs.rule_heartbeat(cfg, snap(0, ctl={"heartbeat_age_s": 60.0}), own_heartbeat=True)["breach"]
    old = time.time() - 9
    os.utime(tmp_path / "missing", (old, old))
    r = fs.rule_heartbeat(cfg, snap(0), own_heartbeat=True, running_s=100.0)
    assert r["breach"] and 8.5 < r["stale"][str(tmp_path / "missing")] < 60, r


# ---------------------------------------------------------------- state machine

class FakeDP:
    def __init__(self):
        self.bypass = False
        self.calls = []

    def set_bypass(self, on):
        self.calls.append(("bypass", on))
        self.bypass = on
        return {"changed": True}

    def heartbeat(self):
        return {"heartbeat_ns": 1}


@pytest.fixture
def machine(monkeypatch, tmp_path):
    monkeypatch.setenv("ETSF_STATE_DIR", str(tmp_path))
    dp = FakeDP()
    monkeypatch.setattr(datapath, "set_bypass", dp.set_bypass)
    monkeypatch.setattr(datapath, "heartbeat", dp.heartbeat)
    monkeypatch.setattr(datapath, "load_state", lambda: {"interfaces": {}})
    feed = {"t": 0.0, "deny": 0, "ok": 0}

    def take():
        feed["t"] += 0.5
        feed["ok"] += 50
        return snap(feed["t"], ok=feed["ok"], deny=feed["deny"], ctl={"bypass": int(dp.bypass)})
    monkeypatch.setattr(watchdog, "take_snapshot", take)
    return dp, feed, tmp_path


def _cfg(**actions):
    rules = {n: {"enabled": False} for n in fs.RULES}
    rules["drop_ratio"] = {"enabled": True, "window_s": 1.0}
    return fs.validate({"actions": {"detach_after_s": None, **actions}, "rules": rules})


def test_trip_bypass_and_manual_ack(machine):
    dp, feed, d = machine
    wd = fs.Watchdog(_cfg(recovery="manual"))
    for _tick in range(4):
        assert wd.tick()["state"] == "engaged"
    feed["deny"] = 10**4                               # the mistake: lots of DENY drops
    for _tick in range(6):
        wd.tick()
        feed["deny"] += 100
    assert wd.state == "bypassed" and dp.bypass and wd.trips_total == 1
    feed["deny"] = feed["deny"]                        # drops stop under bypass
    for _tick in range(20):
        wd.tick()
    assert wd.state == "bypassed"                      # manual: stays reverted
    (d / fs.ACK_FILE).write_text("now")
    assert wd.tick()["state"] == "engaged" and not dp.bypass
    audit = [json.loads(x) for x in (d / fs.AUDIT_FILE).read_text().splitlines()]
    trip = next(a for a in audit if a["event"] == "trip")
    assert trip["rule"] == "drop_ratio" and trip["numbers"]["value"] > 20 and "xdp" in trip["counters"]
    assert [a["event"] for a in audit] == ["trip", "ack"]
    st = json.loads((d / fs.STATE_FILE).read_text())
    assert st["state"] == "engaged" and st["trips_total"] == 1


def test_auto_reengage_after_cooldown_with_backoff(machine):
    dp, feed = machine[:2]
    wd = fs.Watchdog(_cfg(recovery="auto", cooldown_s=2.0, clear_s=1.0, backoff=2.0, max_auto_reengage=1))
    for _tick in range(3):
        wd.tick()
    feed["deny"] += 10**4
    wd.tick()
    wd.tick()
    assert wd.state == "bypassed"
    t_trip = wd.trip_t
    while wd.state == "bypassed" and feed["t"] < t_trip + 10:
        wd.tick()
    assert wd.state == "engaged" and feed["t"] - t_trip >= 2.0 and not dp.bypass
    for _tick in range(3):                                 # the fault is still there: re-trip
        feed["deny"] += 10**4
        wd.tick()
    assert wd.state == "bypassed" and wd.consecutive == 2 and wd.cooldown_s == 4.0
    for _tick in range(40):                                # over max_auto_reengage: waits for ack
        wd.tick()
    assert wd.state == "bypassed"


def test_restart_resumes_reverted_state(machine):
    dp, feed, d = machine
    wd = fs.Watchdog(_cfg(recovery="manual"))
    for _tick in range(3):
        wd.tick()
    feed["deny"] += 10**4
    wd.tick()
    assert wd.state == "bypassed"
    wd2 = fs.Watchdog(_cfg(recovery="manual"))          # crash + restart
    wd2.resume(fs.read_state())
    assert wd2.state == "bypassed" and wd2.trips_total == 1 and wd2.trip["rule"] == "drop_ratio"
    for _tick in range(10):
        wd2.tick()
    assert wd2.state == "bypassed" and dp.bypass


def _raise_oserror():
    raise OSError("map vanished")


def test_run_loop_survives_errors(machine, monkeypatch):
    dp, feed, d = machine
    monkeypatch.setattr(watchdog, "take_snapshot", _raise_oserror)
    fs.run(_cfg(), iterations=3)
    events = [json.loads(x) for x in (d / fs.AUDIT_FILE).read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", "error"] and "map vanished" in events[1]["error"]


def test_docs_annotated_defaults_are_the_schema_defaults():
    """docs/failsafe.md shows the defaults with comments; they must stay the schema's."""
    import pathlib
    import re

    import yaml
    text = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "failsafe.md").read_text()
    block = re.search(r"The defaults, annotated.*?```yaml\n(.*?)```", text, re.S).group(1)
    assert yaml.safe_load(block) == fs.DEFAULTS


def test_heartbeat_of_a_service_stopped_on_purpose_is_not_stale(tmp_path):
    """A service stopped on purpose (SIGTERM: `systemctl stop`, a role turning it off) writes a
    last heartbeat that says so: the rule lists it under "stopped" and does not trip.  A service
    that dies writes nothing, so its last live heartbeat goes stale.  The next start makes a
    "stopped" heartbeat current once; a start that crashes before its first tick ages from there."""
    from etsf import paths
    hb = str(tmp_path / "etsf-overload" / "heartbeat")
    cfg = {**fs.validate({})["rules"]["heartbeat"], "files": [{"path": hb, "max_age_s": 5}]}

    def age(path, seconds):
        t = time.time() - seconds
        os.utime(path, (t, t))

    paths.write_heartbeat(hb)
    age(hb, 60)
    r = fs.rule_heartbeat(cfg, snap(0), own_heartbeat=True)
    assert r["breach"] and list(r["stale"]) == [hb] and "stopped" not in r, r
    paths.write_heartbeat(hb, stopped=True)
    age(hb, 600)
    r = fs.rule_heartbeat(cfg, snap(0), own_heartbeat=True)
    assert not r["breach"] and r["stale"] == {} and r["stopped"] == [hb], r
    assert paths.heartbeat_stopped(hb)
    paths.resume_heartbeat(hb)                      # the service starts again
    assert not paths.heartbeat_stopped(hb) and time.time() - os.stat(hb).st_mtime < 5
    age(hb, 60)                                     # ... and died before its first tick
    paths.resume_heartbeat(hb)                      # restarted: a live heartbeat is not renewed
    assert os.stat(hb).st_mtime < time.time() - 50
    assert fs.rule_heartbeat(cfg, snap(0), own_heartbeat=True)["breach"]
    paths.resume_heartbeat(None)
    paths.resume_heartbeat(str(tmp_path / "none"))  # never written: stays missing
    assert not os.path.exists(tmp_path / "none")
    (tmp_path / "garbage").write_bytes(b"\xff" * 8192)
    assert not paths.heartbeat_stopped(str(tmp_path / "garbage"))
