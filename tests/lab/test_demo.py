"""`make demo`'s scenario part (scripts/demo_scenario.py) and the fleet revert, against one real
lab fleet: sbc1..sbc3 booted by the lab (sbc1 with Kamailio, the appliance's template) and eTSF
rolled out to all three in one site.yml run.

* The demo: sipp UAC, UAS and attacker peers in the lab namespaces against sbc1.  Each run
  (bypass, then enforcing) is bracketed by this test's own reads of the host's counters --
  `etsfctl stats`, Kamailio's `kamcmd` statistics, the exporter -- and the numbers of the demo's
  table must equal those deltas.  Counts only.  eTSF's counters are read at the hook that
  classifies on the host (`etsfctl status`): the lab inventory keeps the role's default hook,
  auto, which is tc (TC ingress) on the veth sip0; the other classification hook must count
  nothing.
* Then the fleet revert: playbooks/revert.yml in one run -- bypass, off, then detach -- with the wall
  time of each run reported (``FLEET_REVERT {json}`` lines, pytest -s) and the result checked on
  every host.  It takes eTSF off the fleet, so only the failed-rollout test comes after it: a
  detached host whose rollout fails after attaching is reverted, a converged host whose rollout
  fails without changing its programs or policy keeps them, a bad input changes nothing.  Last,
  playbooks/remove.yml takes eTSF off that host for good and site.yml puts it back; then a rollout
  whose exporter cannot start (a TLS key it cannot read, its port taken) fails on that host.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from labhelpers import PY, REPO, ansible_bin, lab, on_host, playbook_env, playbook_failures, recap

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1500)]

HOST = "sbc1"
FLEET = ["sbc1", "sbc2", "sbc3"]
# datapath hook (etsfctl status) -> the hook its classification counts under (etsfctl stats)
COUNTER_HOOK = {"xdp": "XDP", "tc": "TC_INGRESS"}
FLOOD = ("REGISTER", "OPTIONS")
#: the kernel's own view of the TC hooks, run on a lab host from stdin
TCVIEW = (REPO / "lab" / "tcview.py").read_bytes()
SCRAPE = ("python3 -c 'import urllib.request,sys;sys.stdout.write(urllib.request.urlopen("
          "\"http://127.0.0.1:9761/metrics\", timeout=5).read().decode())'")

sys.path.insert(0, str(REPO / "src"))
from etsf import kpi  # noqa: E402


def _playbook(*args: str, timeout: float = 900) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    cp = subprocess.run([ansible_bin("ansible-playbook"), "-i", "inventory/lab/hosts.yml", *args], cwd=REPO,
                        env=playbook_env(), capture_output=True, text=True, timeout=timeout, check=False)
    return cp, time.monotonic() - t0


@pytest.fixture(scope="module")
def rolled_out(lab_up):
    """eTSF rolled out to sbc1..sbc3 (Kamailio is already on sbc1: the lab's host setup).  The
    rollout is the set-up, not the subject (the canary batches and the on-host build have their
    own tests): one batch, the objects compiled once on the controller."""
    assert "kamailio: running on sbc1" in lab_up, lab_up[-2000:]
    cp, wall = _playbook("playbooks/site.yml", "-e", '{"etsf_rollout_batches": ["100%"]}',
                         "-e", "datapath_build=controller", "-e", f"datapath_build_arch={os.uname().machine}",
                         timeout=1500)
    assert cp.returncode == 0, (f"site.yml failed: {playbook_failures(cp.stdout)}\n--- tail ---\n"
                                + cp.stdout[-3000:] + cp.stderr[-2000:])
    rows = recap(cp.stdout)
    assert set(FLEET) <= set(rows) and all(rows[h]["failed"] == 0 for h in FLEET), rows
    print("FLEET_REVERT", json.dumps({"step": "rollout", "hosts": len(FLEET), "wall_s": round(wall, 1)}))
    return HOST


@pytest.fixture(scope="module")
def hook(rolled_out) -> str:
    """The stats hook eTSF classifies at on the host: the default (auto) is tc on the veth sip0."""
    row = json.loads(on_host(HOST, "/usr/local/bin/etsfctl status --json").stdout)["interfaces"]["sip0"]
    assert row["attached"] and row["hook_requested"] == "auto" and row["hook"] == "tc", row
    assert row["tc_ingress_prog_name"] == "tc_fastpath" and row["xdp_prog_id"] is None, row
    return COUNTER_HOOK[row["hook"]]


def _counters() -> dict:
    stats = json.loads(on_host(HOST, "/usr/local/bin/etsfctl stats --json").stdout)
    kam = {}
    for line in on_host(HOST, "kamcmd stats.get_statistics all").stdout.splitlines():
        name, sep, val = line.partition(" = ")
        if sep:
            kam[name.strip()] = int(val)
    codes = {}
    for line in on_host(HOST, SCRAPE).stdout.splitlines():
        if line.startswith("etsf_sip_responses_total{") and 'method="INVITE"' in line:
            code = int(line.split('code="', 1)[1].split('"', 1)[0])
            codes[code] = int(float(line.rsplit(" ", 1)[1]))
    fs = json.loads(on_host(HOST, "/usr/local/bin/etsfctl failsafe status --json").stdout)["state"]
    return {"etsf": {h: [(r["method"], r["verdict"].upper(), r["reason"].upper(), r["packets"])
                         for r in stats["counters"] if r["hook"].upper() == h]
                     for h in COUNTER_HOOK.values()},
            "kam": kam, "codes": codes, "failsafe": (fs["state"], fs["trips_total"])}


def _etsf(c: dict, hook: str, methods=None, verdict=None, reason=None) -> int:
    return sum(n for m, v, r, n in c["etsf"][hook] if (methods is None or m in methods)
               and (verdict is None or v == verdict) and (reason is None or r == reason))


def _delta(before: dict, after: dict, hook: str, **sel) -> int:
    return _etsf(after, hook, **sel) - _etsf(before, hook, **sel)


def _others_idle(before: dict, after: dict, hook: str) -> None:
    """The classification hook the host does not use counted nothing over the run."""
    for other in set(COUNTER_HOOK.values()) - {hook}:
        assert _delta(before, after, other) == 0, (other, after["etsf"][other])


def _kam(before: dict, after: dict, name: str) -> int:
    return after["kam"].get(name, 0) - before["kam"].get(name, 0)


def _run(mode: str, out) -> tuple[dict, dict, dict, str]:
    before = _counters()
    cp = subprocess.run([PY, "scripts/demo_scenario.py", "--host", HOST, "--modes", mode,
                         "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300,
                        check=False, env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    after = _counters()
    summary = json.loads((out / "summary.json").read_text())
    return before, after, summary["runs"][mode], cp.stdout


def test_demo_table_matches_host_counters(rolled_out, hook, tmp_path):
    # ---- bypass: the programs pass everything unparsed; the flood reaches Kamailio
    b0, b1, run, stdout = _run("bypass", tmp_path / "bypass")
    assert run["hook"] == hook, run
    _others_idle(b0, b1, hook)
    assert run["calls_attempted"] == run["calls_completed"] + run["calls_failed"] > 0, run
    assert run["flood_sent"] > 0
    assert run["shed_flood"] == 0 == _delta(b0, b1, hook, methods=FLOOD, verdict="DROP")
    # every packet on sip0 passed as BYPASS; this test's window is a little wider than the run's
    # (the bypass flag is set before and cleared after it), so it may hold a few more packets
    assert 0 < run["bypass_seen"] <= _delta(b0, b1, hook, reason="BYPASS"), run
    assert run["bypass_seen"] >= run["kam_requests"], run   # all that reached Kamailio crossed the hook
    assert run["kam_register"] == _kam(b0, b1, "core:rcv_requests_register") > 0
    assert run["kam_options"] == _kam(b0, b1, "core:rcv_requests_options") > 0
    assert run["kam_requests"] == _kam(b0, b1, "core:rcv_requests")
    assert run["kam_register"] + run["kam_options"] <= run["flood_sent"]
    assert run["ser"] is None and run["ner"] is None       # nothing parsed, no INVITE outcome
    table = stdout.split("\n\n", 1)[1]
    assert f"{run['kam_register']:>14}" in table and "calls completed" in table

    # ---- enforcing: the flood is shed in the kernel, the calls all reach Kamailio
    e0, e1, run, _stdout = _run("enforcing", tmp_path / "enforcing")
    assert run["hook"] == hook, run
    _others_idle(e0, e1, hook)
    assert run["calls_attempted"] == run["calls_completed"] + run["calls_failed"] > 0, run
    shed = _delta(e0, e1, hook, methods=FLOOD, verdict="DROP")
    assert run["shed_flood"] == shed > 0
    assert _delta(e0, e1, hook, methods=FLOOD, verdict="DROP", reason="RATE_LIMIT") == shed
    seen = _delta(e0, e1, hook, methods=FLOOD)
    passed = _delta(e0, e1, hook, methods=FLOOD, verdict="PASS")
    assert run["flood_seen"] == seen == shed + passed and seen <= run["flood_sent"]
    assert run["flood_passed"] == passed
    assert run["kam_register"] == _kam(e0, e1, "core:rcv_requests_register")
    assert run["kam_options"] == _kam(e0, e1, "core:rcv_requests_options")
    # what reached Kamailio is what eTSF let through (nothing else sends REGISTER/OPTIONS)
    assert run["kam_register"] + run["kam_options"] <= passed
    # every completed call's INVITE crossed the hook and reached Kamailio
    assert _kam(e0, e1, "core:rcv_requests_invite") >= run["calls_completed"]
    assert run["invite_seen"] == _delta(e0, e1, hook, methods=("INVITE",)) >= run["calls_completed"]
    # SER/NER: the exporter's INVITE outcome counters over the run
    codes = {c: n - e0["codes"].get(c, 0) for c, n in e1["codes"].items()}
    codes = {c: n for c, n in codes.items() if n > 0}
    assert codes.get(200, 0) >= run["calls_completed"]
    assert run["ser"] == kpi.ser(codes) and run["ner"] == kpi.ner(codes)
    assert run["invite_codes"] == {str(c): n for c, n in sorted(codes.items())}

    # the demo leaves eTSF enforcing and the fail-safe watchdog never tripped
    assert not json.loads(on_host(HOST, "/usr/local/bin/etsfctl status --json").stdout)["ctl"]["bypass"]
    assert b0["failsafe"] == e1["failsafe"] and e1["failsafe"][0] == "engaged", e1["failsafe"]
    assert (tmp_path / "enforcing" / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "flood packets shed in the kernel" in (tmp_path / "enforcing" / "summary.txt").read_text()


AGENT_SERVICES = ("etsf-failsafe", "etsf-exporter", "etsf-overload", "etsf-keepalive")


def _units(host: str) -> dict[str, tuple[str, str]]:
    """(ActiveState, InvocationID) of each of the agent's services on host."""
    out = on_host(host, "for u in " + " ".join(AGENT_SERVICES) + "; do "
                        "systemctl show -p ActiveState --value $u.service; "
                        "systemctl show -p InvocationID --value $u.service; done").stdout.splitlines()
    return {u: (out[2 * i], out[2 * i + 1]) for i, u in enumerate(AGENT_SERVICES)}


def test_new_agent_restarts_the_running_agent_services(rolled_out):
    """A rollout that installs a new agent wheel restarts the agent's services that run, so they
    run the new code at once; the stopped ones stay stopped.  The wheel's copy on the host is
    removed first: to the role that is a new wheel, as an upgrade is."""
    host = "sbc2"
    before = _units(host)
    running = {u for u, (state, _i) in before.items() if state == "active"}
    assert {"etsf-failsafe", "etsf-exporter"} <= running, before
    on_host(host, "rm -f /var/lib/etsf/dist/etsf_agent-*.whl")
    cp, _wall = _playbook("playbooks/site.yml", "-l", host, "-e", '{"etsf_rollout_batches": ["100%"]}',
                          "-e", "datapath_build=controller", "-e", f"datapath_build_arch={os.uname().machine}",
                          timeout=900)
    assert cp.returncode == 0, playbook_failures(cp.stdout) + cp.stdout[-3000:]
    handler = re.search(r"RUNNING HANDLER \[etsf\.sip\.datapath : Restart the agent's running services "
                        r"on the new agent\][^\n]*\n(changed|ok): \[" + host + r"\]", cp.stdout)
    assert handler and handler.group(1) == "changed", cp.stdout[-4000:]
    after = _units(host)
    for u, (state, inv) in after.items():
        if u in running:
            assert state == "active" and inv != before[u][1], (u, before[u], after[u])
        else:
            assert state == before[u][0] != "active", (u, before[u], after[u])


def _status(host: str) -> dict:
    return json.loads(on_host(host, "/usr/local/bin/etsfctl status --json").stdout)


def _tc_on_sip0(host: str) -> dict:
    """lab/tcview.py on host: the programs at sip0's TC hooks (tcx links and clsact filters)."""
    view = json.loads(on_host(host, "python3 - sip0", input=TCVIEW).stdout)
    return {d: [p["name"] for p in view["tcx"][d] + view["clsact"][d]] for d in ("ingress", "egress")}


def _classifiers_on_sip0(host: str) -> set[str]:
    """The datapath hooks that carry an eTSF classifier on sip0, as the kernel shows them."""
    on = set()
    if "prog/xdp" in on_host(host, "ip -d link show dev sip0").stdout:
        on.add("xdp")
    if "tc_fastpath" in _tc_on_sip0(host)["ingress"]:
        on.add("tc")
    return on


def test_fleet_revert_bypass_then_detach(rolled_out):
    hooks = {}
    for h in FLEET:
        st = _status(h)
        assert not st["ctl"]["bypass"], (h, st["ctl"])
        # the hook each host has (the lab inventory keeps the default: auto, tc on the veth sip0)
        hooks[h] = st["interfaces"]["sip0"]["hook"]
        assert _classifiers_on_sip0(h) == {hooks[h]}, (h, hooks[h])

    cp, wall_bypass = _playbook("playbooks/revert.yml")
    assert cp.returncode == 0, cp.stdout[-3000:]
    rows = recap(cp.stdout)
    assert all(rows[h]["changed"] == 1 and rows[h]["failed"] == 0 for h in FLEET), rows
    for h in FLEET:
        st = _status(h)
        assert st["ctl"]["bypass"], (h, st["ctl"])          # every program passes everything ...
        assert _classifiers_on_sip0(h) == {hooks[h]}, h      # ... and stays attached

    # the revert outlives a reboot: etsf-restore attaches the programs with the bypass on
    lab("reboot", "sbc2", timeout=240)
    st = _status("sbc2")
    assert st["ctl"]["bypass"] and st["revert_held"]["mode"] == "bypass", st
    assert _classifiers_on_sip0("sbc2") == {hooks["sbc2"]}

    again, wall_again = _playbook("playbooks/revert.yml")
    assert again.returncode == 0 and all(r["changed"] == 0 for h, r in recap(again.stdout).items()
                                         if h in FLEET), again.stdout[-2000:]

    # mode off ends the bypass on every host (each runs its watchdog: the ack goes through it)
    off, wall_off = _playbook("playbooks/revert.yml", "-e", "etsf_revert_mode=off")
    assert off.returncode == 0, off.stdout[-3000:]
    rows = recap(off.stdout)
    assert all(rows[h]["changed"] == 1 and rows[h]["failed"] == 0 for h in FLEET), rows
    for h in FLEET:
        st = _status(h)
        assert not st["ctl"]["bypass"] and _classifiers_on_sip0(h) == {hooks[h]}, (h, st["ctl"])
        acks = [json.loads(x) for x in on_host(h, "cat /var/lib/etsf/failsafe-audit.jsonl").stdout.splitlines()
                if '"ack"' in x]
        assert acks and acks[-1]["numbers"]["bypass_cleared"] is True, (h, acks)
        assert st["revert_held"] is None, (h, st)

    cp, wall_detach = _playbook("playbooks/revert.yml", "-e", "etsf_revert_mode=detach")
    assert cp.returncode == 0, cp.stdout[-3000:]
    rows = recap(cp.stdout)
    assert all(rows[h]["changed"] == 1 and rows[h]["failed"] == 0 for h in FLEET), rows
    for h in FLEET:
        assert _classifiers_on_sip0(h) == set(), h
        assert "tc_sip_egress" not in _tc_on_sip0(h)["egress"], h
        assert _status(h)["interfaces"] == {}, h
    # a reboot does not attach a detached host again
    lab("reboot", "sbc2", timeout=240)
    assert _classifiers_on_sip0("sbc2") == set() and _status("sbc2")["revert_held"]["mode"] == "detach"
    assert "not restored: operator revert (detach held" in on_host(
        "sbc2", "journalctl -b -u etsf-restore -o cat --no-pager").stdout

    bad = _playbook("playbooks/revert.yml", "-e", "etsf_revert_mode=unplug")[0]
    assert bad.returncode != 0 and "etsf_revert_mode must be bypass, detach or off (got unplug)" in bad.stdout

    print("FLEET_REVERT", json.dumps({"step": "revert", "hosts": len(FLEET), "bypass_wall_s": round(wall_bypass, 2),
                                      "bypass_again_wall_s": round(wall_again, 2), "off_wall_s": round(wall_off, 2),
                                      "detach_wall_s": round(wall_detach, 2)}))


def _traffic_path(host: str) -> tuple:
    """What carries the host's traffic: the policy generation and, per interface, the hook and the
    programs attached (their kernel ids change with every attach)."""
    st = _status(host)
    return st["policy_generation"], {i: (r["hook"], r["xdp_prog_id"], r["tc_ingress_prog_id"], r["tc_prog_id"])
                                     for i, r in st["interfaces"].items()}


def test_failed_rollout_reverts_only_what_it_changed(rolled_out):
    """site.yml's rescue detaches a failed host's programs only when the run changed them or the
    policy generation; a bad input stops the host before any role runs.  After the fleet revert
    (above), so sbc3 starts detached; the objects are built on the controller as in the set-up."""
    host = "sbc3"
    one = ("playbooks/site.yml", "-l", host, "-e", '{"etsf_rollout_batches": ["100%"]}',
           "-e", "datapath_build=controller", "-e", f"datapath_build_arch={os.uname().machine}")
    # the datapath role and the gates only: what the rescue decides on, at a third of a full run
    dp = (*one, "--tags", "preflight,datapath")
    attach_task = re.compile(r"TASK \[etsf\.sip\.datapath : Build the objects against this host's BTF and "
                             r"attach them\][^\n]*\n(changed|ok): \[" + host + r"\]")
    assert _status(host)["interfaces"] == {}
    assert not _status(host)["ctl"]["bypass"]              # the fleet revert ended its bypass

    # the last role's input is bad: the host stops before the first role starts
    cp = _playbook(*one, "-e", "failsafe_recovery=sometimes")[0]
    assert cp.returncode != 0
    assert (f"{host}: rollout failed before its programs or policy changed, both left as they were;\n"
            "rollout stopped: Validation of arguments failed:\n"
            "value of failsafe_recovery must be one of: manual, auto, got: sometimes") in cp.stdout, cp.stdout[-3000:]
    assert "TASK [etsf.sip.datapath" not in cp.stdout
    assert _status(host)["interfaces"] == {}

    # this run attaches the programs, then its health gate fails: reverted
    cp = _playbook(*dp, "-e", "etsf_health_window=100")[0]
    assert cp.returncode != 0
    hit = attach_task.search(cp.stdout)
    assert hit and hit.group(1) == "changed", cp.stdout[-4000:]
    assert f"{host}: rollout failed, host reverted to the normal path;" in cp.stdout, cp.stdout[-3000:]
    assert _status(host)["interfaces"] == {}

    cp = _playbook(*dp)[0]
    assert cp.returncode == 0, playbook_failures(cp.stdout) + cp.stdout[-3000:]
    before = _traffic_path(host)
    assert before[1]["sip0"][0] in COUNTER_HOOK and any(before[1]["sip0"][1:]), before

    # the same gate failure on a host this run did not change: its programs and policy stay
    cp = _playbook(*dp, "-e", "etsf_health_window=100")[0]
    assert cp.returncode != 0
    hit = attach_task.search(cp.stdout)
    assert hit and hit.group(1) == "ok", cp.stdout[-4000:]
    assert f"{host}: rollout failed before its programs or policy changed, both left as they were;" in cp.stdout
    assert _traffic_path(host) == before


def _sip_options(address: str) -> str:
    """The status line of the answer to one SIP OPTIONS from the UAC peer (sipsak, bounded)."""
    cp = subprocess.run(["ip", "netns", "exec", "etsf-uac", "timeout", "10", "sipsak", "-v", "-s", f"sip:{address}:5060"],
                        capture_output=True, text=True, timeout=30, check=False)
    return (cp.stdout.splitlines() or [cp.stderr.strip()])[0]


#: what site.yml leaves on a host, each as a shell test that holds while it is there
FOOTPRINT = {
    "units": "ls /etc/systemd/system/etsf-*.service",
    "pins": "test -e /sys/fs/bpf/etsf",
    "config": "test -e /etc/etsf",
    "sources": "test -e /usr/share/etsf",       # the eBPF sources, there when built on the host
    "etsfctl": "test -e /usr/local/bin/etsfctl",
    "agent": "python3 -c 'import etsf'",
    "user": "getent passwd etsf",
    "build": "test -e /var/lib/etsf/build",
}


def _footprint(host: str) -> set[str]:
    script = "; ".join(f"({cmd}) >/dev/null 2>&1 && echo {name}" for name, cmd in FOOTPRINT.items())
    return set(on_host(host, script + "; true").stdout.split())


def test_remove_takes_etsf_off_and_site_puts_it_back(rolled_out):
    """playbooks/remove.yml on sbc3 (converged by the test above): check mode changes nothing; the
    run detaches the programs, then removes the services, pins, agent, files and user, keeps the
    policy history and audit logs, and SIP still reaches the host's Kamailio; a second run changes
    nothing; etsf_remove_state=true takes /var/lib/etsf too; site.yml puts eTSF back."""
    host = "sbc3"
    address = json.loads(on_host(host, "ip -j -4 addr show dev sip0").stdout)[0]["addr_info"][0]["local"]
    rm = ("playbooks/remove.yml", "-e", f"etsf_target={host}")
    installed = set(FOOTPRINT) - {"sources"}           # the objects were built on the controller
    assert _footprint(host) == installed
    on_host(host, "mkdir -p /usr/share/etsf/bpf")      # as a host that built them before has
    before = _traffic_path(host)
    assert before[1]["sip0"][2], before

    bad = _playbook("playbooks/remove.yml")[0]
    assert bad.returncode != 0 and "etsf_target: name the hosts or group to remove eTSF from" in bad.stdout

    cp = _playbook(*rm, "--check", "--diff")[0]
    assert cp.returncode == 0, playbook_failures(cp.stdout) + cp.stdout[-3000:]
    assert recap(cp.stdout)[host]["changed"] > 0 and "would detach eTSF from sip0" in cp.stdout
    assert _footprint(host) == set(FOOTPRINT) and _traffic_path(host) == before

    cp = _playbook(*rm)[0]
    assert cp.returncode == 0, playbook_failures(cp.stdout) + cp.stdout[-3000:]
    assert f"{host}: eTSF is off this host: programs detached from sip0;" in cp.stdout, cp.stdout[-2000:]
    assert _footprint(host) == set()
    assert _classifiers_on_sip0(host) == set() and _tc_on_sip0(host)["egress"] == []
    assert {"policy-audit.jsonl", "policy-history"} <= set(on_host(host, "ls /var/lib/etsf").stdout.split())
    assert on_host(host, "systemctl is-system-running", check=False).stdout.strip() == "running"
    assert _sip_options(address) == "SIP/2.0 200 OK"

    cp = _playbook(*rm, "-e", "etsf_remove_state=true")[0]
    assert cp.returncode == 0 and recap(cp.stdout)[host]["changed"] == 1, cp.stdout[-3000:]
    assert on_host(host, "test -e /var/lib/etsf", check=False).returncode != 0
    cp = _playbook(*rm, "-e", "etsf_remove_state=true")[0]
    assert cp.returncode == 0 and recap(cp.stdout)[host]["changed"] == 0, cp.stdout[-3000:]

    cp = _playbook("playbooks/site.yml", "-l", host, "-e", '{"etsf_rollout_batches": ["100%"]}',
                   "-e", "datapath_build=controller", "-e", f"datapath_build_arch={os.uname().machine}")[0]
    assert cp.returncode == 0, playbook_failures(cp.stdout) + cp.stdout[-3000:]
    assert _footprint(host) == installed
    after = _traffic_path(host)
    assert after[0] == 1 and after[1]["sip0"][0] == before[1]["sip0"][0], (before, after)


def test_a_service_that_cannot_start_fails_the_rollout(rolled_out):
    """The exporter's unit is Type=notify: a rollout whose exporter cannot start fails on that host,
    naming the exporter's own error, instead of leaving a unit that restarts forever (and, a minute
    later, a heartbeat the fail-safe watchdog calls stale).  A TLS key only root can read is found
    before anything changes.  A watchdog that does not tick fails the rollout the same way.
    `--tags telemetry` (no preflight run) says what the host kept."""
    host = "sbc3"
    tel = ("playbooks/site.yml", "-l", host, "-e", '{"etsf_rollout_batches": ["100%"]}', "--tags", "telemetry")
    tls = ("-e", '{"telemetry_tls_cert_file": "/etc/etsf/tls/cert.pem", '
                 '"telemetry_tls_key_file": "/etc/etsf/tls/key.pem"}')
    kept = f"{host}: rollout failed before its programs or policy changed, both left as they were;"

    def exporter() -> dict:
        out = on_host(host, "systemctl show -p ActiveState,MainPID,Type etsf-exporter").stdout
        return dict(line.split("=", 1) for line in out.split())

    start = exporter()
    assert start["ActiveState"] == "active" and start["Type"] == "notify", start
    on_host(host, "mkdir -p /etc/etsf/tls && cd /etc/etsf/tls && openssl req -x509 -newkey ec -pkeyopt "
                  "ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=sbc3 -keyout key.pem -out cert.pem "
                  "2>/dev/null && chgrp etsf cert.pem key.pem && chmod 600 key.pem")
    try:
        cp = _playbook(*tel, *tls)[0]
        assert cp.returncode != 0
        assert (f"{kept}\nrollout stopped: telemetry: TLS files must be readable by the exporter's user etsf "
                "(group etsf), and their directories searchable (got unreadable /etc/etsf/tls/key.pem)") in cp.stdout, \
            playbook_failures(cp.stdout) + cp.stdout[-3000:]
        assert on_host(host, "test -e /etc/etsf/exporter-web.yml", check=False).returncode != 0
        assert exporter() == start                       # the running exporter was not touched

        # another process holds the exporter's port: the start fails and says so
        on_host(host, "systemctl stop etsf-exporter && (setsid timeout 120 python3 -m http.server 9761 "
                      "--bind 127.0.0.1 </dev/null >/dev/null 2>&1 &) && sleep 1 && ss -ltn | grep -q 127.0.0.1:9761")
        try:
            cp = _playbook(*tel)[0]
        finally:
            on_host(host, "pkill -f 'http.server 9761'", check=False)
        assert cp.returncode != 0
        assert (f"{kept}\nrollout stopped: telemetry: etsf-exporter.service did not start: cannot listen on "
                "127.0.0.1:9761: Address already in use") in cp.stdout, playbook_failures(cp.stdout) + cp.stdout[-3000:]
    finally:
        on_host(host, "rm -rf /etc/etsf/tls", check=False)
        cp = _playbook(*tel)[0]
    assert cp.returncode == 0, playbook_failures(cp.stdout) + cp.stdout[-3000:]
    assert exporter()["ActiveState"] == "active"
    assert "etsf_up 1.0" in on_host(host, SCRAPE).stdout

    # the watchdog's unit starts a command that exits at once (as a broken agent would)
    dropin = "/etc/systemd/system/etsf-failsafe.service.d"
    on_host(host, f"mkdir -p {dropin} && printf '[Service]\\nExecStart=\\nExecStart=/usr/local/bin/etsfctl "
                  f"failsafe status --config /nonexistent\\n' > {dropin}/zz-broken.conf && systemctl daemon-reload "
                  "&& systemctl restart etsf-failsafe")
    try:
        cp = _playbook(*tel[:-1], "failsafe")[0]
    finally:
        on_host(host, f"rm -rf {dropin} && systemctl daemon-reload")
    assert cp.returncode != 0
    assert (f"{kept}\nrollout stopped: failsafe: etsf-failsafe.service did not start: "
            "unrecognized arguments: --config /nonexistent") in cp.stdout, playbook_failures(cp.stdout) + cp.stdout[-3000:]
    cp = _playbook(*tel[:-1], "failsafe")[0]
    assert cp.returncode == 0, playbook_failures(cp.stdout) + cp.stdout[-3000:]
    assert "watchdog running" in on_host(host, "/usr/local/bin/etsfctl failsafe status").stdout


def test_a_controller_or_prober_that_cannot_start_fails_the_rollout(rolled_out):
    """The overload controller and the keep-alive prober are Type=notify too: ready once their
    first tick has written the heartbeat.  Turned on from inventory they run; one whose start
    fails stops the rollout with its own error line instead of restarting until the fail-safe
    calls its heartbeat stale; turned off again, both stop and are disabled."""
    host = "sbc3"
    on = {"etsf_rollout_batches": ["100%"],
          # the host layer, as docs/keepalive.md shows it: merged over the lab's fleet defaults
          "etsf_policy": {"overload": {"auto": {"enabled": True}},
                          "keepalive": {"enabled": True, "identities": ["198.18.1.13"],
                                        "probe": {"address": "198.18.1.13", "port": 5060}}}}
    pol = ("playbooks/site.yml", "-l", host, "--tags", "policy")
    units = ("etsf-overload", "etsf-keepalive")

    def state() -> dict:
        out = on_host(host, "systemctl show -p Id,Type,ActiveState,UnitFileState " + " ".join(units)).stdout
        return {d["Id"].removesuffix(".service"): (d["Type"], d["ActiveState"], d["UnitFileState"])
                for d in (dict(ln.split("=", 1) for ln in blk.splitlines()) for blk in out.strip().split("\n\n"))}

    # --check --diff first says all a real run does: start both, and watch both heartbeats (the
    # failsafe role takes what the policy role decided, not the units systemd has enabled so far)
    ages = {"failsafe_overload_heartbeat_max_age_s": 3, "failsafe_keepalive_heartbeat_max_age_s": 3}
    fs_before = on_host(host, "cat /etc/etsf/failsafe.yml").stdout
    cp = _playbook(*pol[:-1], "policy,failsafe", "--check", "--diff", "-e", json.dumps({**on, **ages}))[0]
    assert cp.returncode == 0, playbook_failures(cp.stdout) + cp.stdout[-3000:]
    for u in units:
        assert re.search(rf"(would enable and start {u}\.service|Start and enable {u}\.service\][^\n]*\nchanged)",
                         cp.stdout), cp.stdout[-4000:]
    assert re.search(r"^\+rules: .*/run/etsf-overload/heartbeat.*/run/etsf-keepalive/heartbeat", cp.stdout, re.M), \
        cp.stdout[-4000:]
    assert on_host(host, "cat /etc/etsf/failsafe.yml").stdout == fs_before
    assert all(s[1] != "active" for s in state().values()), state()

    cp = _playbook(*pol, "-e", json.dumps(on))[0]
    assert cp.returncode == 0, playbook_failures(cp.stdout) + cp.stdout[-3000:]
    assert state() == {u: ("notify", "active", "enabled") for u in units}, state()
    # the host layer was added to the lab's fleet layer, not put in its place
    assert on_host(host, "grep -q 198.18.1.202/32 /etc/etsf/policy.yml && grep -q 198.18.1.13 /etc/etsf/policy.yml",
                   check=False).returncode == 0, on_host(host, "cat /etc/etsf/policy.yml").stdout
    assert on_host(host, "test -s /run/etsf-overload/heartbeat && test -s /run/etsf-keepalive/heartbeat",
                   check=False).returncode == 0

    why = "policy: cannot read /nonexistent.yml: No such file or directory"
    for unit, sub in (("etsf-overload", "overload auto"), ("etsf-keepalive", "keepalive probe")):
        dropin = f"/etc/systemd/system/{unit}.service.d"
        on_host(host, f"mkdir -p {dropin} && printf '[Service]\\nExecStart=\\nExecStart=/usr/local/bin/etsfctl "
                      f"{sub} --policy /nonexistent.yml\\n' > {dropin}/zz-broken.conf && systemctl daemon-reload "
                      f"&& (systemctl restart {unit} || true)")
        try:
            assert state()[unit][1] != "active", state()
            cp = _playbook(*pol, "-e", json.dumps(on))[0]
        finally:
            on_host(host, f"rm -rf {dropin} && systemctl daemon-reload")
        assert cp.returncode != 0
        assert (f"{host}: rollout failed before its programs or policy changed, both left as they were;\n"
                f"rollout stopped: policy: {unit}.service did not start: {why}") in cp.stdout, \
            playbook_failures(cp.stdout) + cp.stdout[-3000:]

    # on again by the policy-change playbook alone: it reconfigures the watchdog to watch both
    # heartbeats (3 s here), because the set of running services changed
    pol_only = ("playbooks/policy.yml", "-l", host, "-e")
    cp = _playbook(*pol_only, json.dumps({"etsf_policy_batches": ["100%"], **on, **ages}))[0]
    assert cp.returncode == 0, playbook_failures(cp.stdout) + cp.stdout[-3000:]
    assert state() == {u: ("notify", "active", "enabled") for u in units}, state()
    watched = on_host(host, "grep -o '/run/etsf-[a-z]*/heartbeat' /etc/etsf/failsafe.yml").stdout.split()
    assert {f"/run/{u}/heartbeat" for u in units} <= set(watched), watched

    def ticks_after(fs0: dict, n: int) -> dict:
        """The watchdog's state once it has ticked n times more (0.2 s a tick) than in fs0."""
        fs1 = fs0
        for _poll in range(4 * n):
            fs1 = json.loads(on_host(host, "cat /var/lib/etsf/failsafe.json").stdout)
            if fs1["ticks"] >= fs0["ticks"] + n:
                break
            time.sleep(0.5)
        assert fs1["ticks"] >= fs0["ticks"] + n, fs1["ticks"]
        return fs1

    # stopped on purpose while still watched: no trip, also long after their 3 s (40 ticks, 8 s)
    fs0 = json.loads(on_host(host, "cat /var/lib/etsf/failsafe.json").stdout)
    on_host(host, "systemctl stop " + " ".join(units))
    fs1 = ticks_after(fs0, 40)
    assert (fs1["state"], fs1["trips_total"]) == ("engaged", fs0["trips_total"]), fs1
    assert set(fs1["rules"]["heartbeat"].get("stopped", [])) == {f"/run/{u}/heartbeat" for u in units}, fs1["rules"]

    # off by the policy-change playbook: stopped, disabled, no longer watched, and no trip
    cp = _playbook(*pol_only, '{"etsf_policy_batches": ["100%"]}')[0]
    assert cp.returncode == 0, playbook_failures(cp.stdout) + cp.stdout[-3000:]
    assert {u: s[1:] for u, s in state().items()} == {u: ("inactive", "disabled") for u in units}, state()
    watched = on_host(host, "grep -o '/run/etsf-[a-z]*/heartbeat' /etc/etsf/failsafe.yml").stdout.split()
    assert not {f"/run/{u}/heartbeat" for u in units} & set(watched), watched
    fs2 = ticks_after({"ticks": 0}, 20)          # the watchdog restarted on its new configuration
    assert (fs2["state"], fs2["trips_total"]) == ("engaged", fs0["trips_total"]), fs2
    cp = _playbook(*pol[:-1], "failsafe", "-e", '{"etsf_rollout_batches": ["100%"]}')[0]
    assert cp.returncode == 0, playbook_failures(cp.stdout) + cp.stdout[-3000:]


def test_a_role_run_alone_needs_the_collections_agent(rolled_out):
    """A role run with --tags after the collection was upgraded meets the host's older agent: the
    policy, telemetry and failsafe roles stop before they change anything, naming both agents;
    the datapath role installs this collection's agent again (also when only the installed files
    differ and the wheel on the host is the same), after which the role runs."""
    host = "sbc3"
    pol = ("playbooks/site.yml", "-l", host, "-e", '{"etsf_rollout_batches": ["100%"]}', "--tags")
    shipped = json.loads(on_host(host, "/usr/local/bin/etsfctl version --json").stdout)
    gen = _status(host)["ctl"]["generation"]
    on_host(host, "echo '# edited on the host' >> $(python3 -c 'import etsf.paths; print(etsf.paths.__file__)')")
    other = json.loads(on_host(host, "/usr/local/bin/etsfctl version --json").stdout)
    assert other["source"] != shipped["source"]
    cp = _playbook(*pol, "policy")[0]
    assert cp.returncode != 0
    assert (f"rollout stopped: policy: the agent on this host is not the one this collection ships (host: etsfctl "
            f"{other['version']}, source {other['source']}; collection: source {shipped['source']}): install it "
            "first with the datapath role") in cp.stdout, playbook_failures(cp.stdout) + cp.stdout[-3000:]
    assert _status(host)["ctl"]["generation"] == gen
    cp = _playbook(*pol, "datapath")[0]
    assert cp.returncode == 0, playbook_failures(cp.stdout) + cp.stdout[-3000:]
    assert re.search(r"TASK \[etsf\.sip\.datapath : Install the agent again \(the host runs another one\)\][^\n]*\n"
                     r"changed: \[" + host, cp.stdout), cp.stdout[-3000:]
    assert json.loads(on_host(host, "/usr/local/bin/etsfctl version --json").stdout) == shipped
    cp = _playbook(*pol, "policy")[0]
    assert cp.returncode == 0, playbook_failures(cp.stdout) + cp.stdout[-3000:]


@pytest.fixture(scope="module")
def sbc1_converged(rolled_out):
    """sbc1 rolled out again: test_fleet_revert_bypass_then_detach leaves it detached (a held
    revert, no reboot since), which site.yml ends."""
    cp = _playbook("playbooks/site.yml", "-l", "sbc1", "-e", '{"etsf_rollout_batches": ["100%"]}')[0]
    assert cp.returncode == 0, playbook_failures(cp.stdout) + cp.stdout[-3000:]
    assert _classifiers_on_sip0("sbc1") and _status("sbc1")["revert_held"] is None
    return "sbc1"


def test_a_service_that_fails_its_restart_on_a_new_agent_is_named(sbc1_converged):
    """The restart after a new agent is installed goes on past a service that does not come back
    (the others still run the new agent) and stops the host's run with that service's own error
    line, not systemctl's "Job ... failed"; the telemetry role starts it again once it can."""
    host = "sbc1"
    pol = ("playbooks/site.yml", "-l", host, "-e", '{"etsf_rollout_batches": ["100%"]}', "--tags")
    dropin = "/etc/systemd/system/etsf-exporter.service.d"
    before = _units(host)
    assert before["etsf-exporter"][0] == before["etsf-failsafe"][0] == "active", before
    # the running exporter keeps running; only its next start reads the broken command line
    on_host(host, f"mkdir -p {dropin} && printf '[Service]\\nExecStart=\\nExecStart=/usr/local/bin/etsfctl "
                  f"exporter --bogus\\n' > {dropin}/zz-broken.conf && systemctl daemon-reload")
    on_host(host, "echo '# edited on the host' >> $(python3 -c 'import etsf.paths; print(etsf.paths.__file__)')")
    try:
        assert _units(host)["etsf-exporter"] == before["etsf-exporter"]
        cp = _playbook(*pol, "datapath")[0]
        assert cp.returncode != 0
        assert ("rollout stopped: datapath: etsf-exporter.service did not start: unrecognized arguments: --bogus"
                in cp.stdout), playbook_failures(cp.stdout) + cp.stdout[-3000:]
        after = _units(host)
        assert after["etsf-failsafe"][0] == "active" and after["etsf-failsafe"][1] != before["etsf-failsafe"][1], after
        assert after["etsf-exporter"][0] != "active", after
    finally:
        on_host(host, f"rm -rf {dropin} && systemctl daemon-reload")
    cp = _playbook(*pol, "telemetry")[0]
    assert cp.returncode == 0, playbook_failures(cp.stdout) + cp.stdout[-3000:]
    assert _units(host)["etsf-exporter"][0] == "active"


def test_a_watchdog_that_crashes_for_a_while_comes_back_by_itself(sbc1_converged):
    """systemd's default start limit (5 starts in 10 s) would leave a watchdog that crashed for a
    few seconds "failed" for good, and the host without its fail-safe after the cause is gone: its
    unit has no start limit, so it is still being restarted after more crashes than that, and
    runs again by itself once it can."""
    host = "sbc1"
    dropin = "/etc/systemd/system/etsf-failsafe.service.d"

    def unit() -> dict:
        out = on_host(host, "systemctl show -p ActiveState,SubState,Result,NRestarts etsf-failsafe").stdout
        return dict(line.split("=", 1) for line in out.split())

    assert unit()["ActiveState"] == "active"
    on_host(host, f"mkdir -p {dropin} && printf '[Service]\\nExecStart=\\nExecStart=/bin/false\\n' > "
                  f"{dropin}/zz-crash.conf && systemctl daemon-reload && (systemctl restart etsf-failsafe || true)")
    try:
        u = unit()
        for _poll in range(120):            # ~1.2 s per crash and restart: 8 of them well inside this
            u = unit()
            if int(u["NRestarts"]) >= 8 or u["ActiveState"] == "failed":
                break
            time.sleep(0.5)
        assert int(u["NRestarts"]) >= 8 and u["ActiveState"] != "failed", u
    finally:
        on_host(host, f"rm -rf {dropin} && systemctl daemon-reload")
    for _poll in range(60):
        u = unit()
        if u["ActiveState"] == "active":
            break
        time.sleep(0.5)
    assert u["ActiveState"] == "active" and u["SubState"] == "running", u
    t0 = json.loads(on_host(host, "cat /var/lib/etsf/failsafe.json").stdout)["ticks"]
    for _poll in range(60):
        fs = json.loads(on_host(host, "cat /var/lib/etsf/failsafe.json").stdout)
        if fs["ticks"] > t0:
            break
        time.sleep(0.5)
    assert fs["ticks"] > t0 and fs["state"] == "engaged", fs


def test_turning_the_failsafe_off_in_the_inventory_stops_the_watchdog(sbc1_converged):
    """etsf_failsafe_enabled: false used to only skip the failsafe role, so a watchdog an earlier
    run started went on watching (and reverting) a host its operator believed ran without it.  Now
    site.yml stops and disables it; the watchdog marks the stop, so the exporter says stopped (and
    EtsfWatchdogDown does not page); turned on again, it runs."""
    host = "sbc1"
    run = ("playbooks/site.yml", "-l", host, "--tags", "failsafe", "-e")

    def unit() -> tuple[str, str]:
        out = on_host(host, "systemctl show -p ActiveState,UnitFileState etsf-failsafe").stdout
        d = dict(line.split("=", 1) for line in out.split())
        return d["ActiveState"], d["UnitFileState"]

    assert unit() == ("active", "enabled")
    cp = _playbook(*run, '{"etsf_rollout_batches": ["100%"], "etsf_failsafe_enabled": false}')[0]
    assert cp.returncode == 0, playbook_failures(cp.stdout) + cp.stdout[-3000:]
    try:
        assert unit() == ("inactive", "disabled")
        assert on_host(host, "/usr/local/bin/etsfctl failsafe status").stdout.rstrip().endswith("watchdog stopped")
        scrape = on_host(host, SCRAPE).stdout
        assert "etsf_failsafe_watchdog_up 0.0" in scrape and "etsf_failsafe_watchdog_stopped 1.0" in scrape, scrape
    finally:
        cp = _playbook(*run, '{"etsf_rollout_batches": ["100%"]}')[0]
    assert cp.returncode == 0, playbook_failures(cp.stdout) + cp.stdout[-3000:]
    assert unit() == ("active", "enabled")
    scrape = on_host(host, SCRAPE).stdout
    assert "etsf_failsafe_watchdog_up 1.0" in scrape and "etsf_failsafe_watchdog_stopped 0.0" in scrape, scrape
