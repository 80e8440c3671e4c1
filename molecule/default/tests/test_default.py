"""Molecule `default` verify, on every host (one Debian 12, one Debian 13): the host runs its
platform's suite, eTSF is attached, pinned, policy maps equal the inventory, restore is enabled;
after a real reboot (systemd boots again in the lab host) all of it is back."""
import json
import os
import pathlib
import subprocess

import testinfra.utils.ansible_runner
import yaml
from etsf import policy

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("all")
REPO = pathlib.Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", pathlib.Path(__file__).parents[3]))
# each platform's Debian suite, as molecule.yml asks the lab to boot it
PLATFORMS = yaml.safe_load((pathlib.Path(__file__).parents[1] / "molecule.yml").read_text(encoding="utf-8"))["platforms"]
SUITES = {p["name"]: p.get("suite", "bookworm") for p in PLATFORMS}


def _json(host, cmd):
    out = host.run(cmd)
    assert out.rc == 0, f"{cmd}: {out.stderr}"
    return json.loads(out.stdout)


def _check_attached(host):
    st = _json(host, "etsfctl status --json")
    row = st["interfaces"]["sip0"]
    assert row["attached"] and row["xdp_prog_name"] == "xdp_sip"
    assert row["tc_prog_name"] == "tc_sip_egress"
    # attached as the kernel sees it, by name (not just our state file)
    link = _json(host, "ip -j -d link show dev sip0")[0]
    prog_id = link["xdp"]["prog"]["id"]
    assert _json(host, f"bpftool -j prog show id {prog_id}")["name"] == "xdp_sip"
    return st


def _check_pins(host):
    for name in ("etsf_ctl", "etsf_policy", "etsf_acl_v4", "etsf_acl_v6", "etsf_rl", "etsf_stats"):
        assert host.file(f"/sys/fs/bpf/etsf/maps/{name}").exists, name
    for name in ("xdp_sip", "tc_sip_egress"):
        assert host.file(f"/sys/fs/bpf/etsf/progs/{name}").exists, name


def _check_policy(host):
    want = policy.validate(host.ansible.get_variables()["etsf_policy_defaults"]).to_dict()
    live = _json(host, "etsfctl policy show --json")
    live.pop("active_slot", None)
    assert live.pop("generation") >= 1
    # the running overload level is kept when the policy does not set one
    want["overload"]["level"] = live["overload"]["level"]
    assert live == want


def test_scenario_covers_both_suites_and_host_runs_its_own(host):
    assert set(SUITES.values()) == {"bookworm", "trixie"}, SUITES
    assert sorted(testinfra_hosts) == sorted(SUITES)              # the verify runs on every platform
    release = dict(line.split("=", 1) for line in host.file("/etc/os-release").content_string.splitlines()
                   if "=" in line)
    assert release["VERSION_CODENAME"] == SUITES[host.backend.get_hostname()], release


def test_programs_attached_by_name(host):
    _check_attached(host)


def test_pins_under_sys_fs_bpf_etsf(host):
    _check_pins(host)


def test_policy_maps_equal_inventory(host):
    _check_policy(host)


def test_restore_unit_enabled_and_preflight_report(host):
    assert host.service("etsf-restore.service").is_enabled
    report = json.loads(host.file("/var/lib/etsf/preflight.json").content_string)
    assert report["ok"] and report["interfaces"]["sip0"]["xdp_mode"] == "native"


def test_everything_back_after_reboot(host):
    name = host.backend.get_hostname()
    before = host.file("/proc/sys/kernel/random/boot_id").content_string.strip()
    subprocess.run([str(REPO / ".venv/bin/python"), "-m", "lab", "reboot", name], cwd=REPO, check=True,
                   timeout=240)
    after = host.file("/proc/sys/kernel/random/boot_id").content_string.strip()
    assert after != before, "the host did not boot again"
    assert host.service("etsf-restore.service").is_running or \
        host.run("systemctl show -p ActiveState --value etsf-restore.service").stdout.strip() == "active"
    _check_attached(host)
    _check_pins(host)
    _check_policy(host)


SCRAPE = ("python3 -c \"import urllib.request,sys; "
          "r=urllib.request.urlopen('http://127.0.0.1:9761/metrics', timeout=10); "
          "sys.stdout.write(r.read().decode())\"")


def test_exporter_unprivileged_and_scrapes(host):
    svc = host.service("etsf-exporter.service")
    assert svc.is_running and svc.is_enabled
    pid = host.check_output("systemctl show -p MainPID --value etsf-exporter.service").strip()
    status = host.file(f"/proc/{pid}/status").content_string
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    uid = int(fields["Uid"].split()[0])
    assert uid != 0 and host.user("etsf").uid == uid           # the unprivileged etsf user
    cap_eff = int(fields["CapEff"].strip(), 16)
    assert cap_eff & ~(1 << 39) == 0, hex(cap_eff)             # at most CAP_BPF (39), never CAP_SYS_ADMIN
    assert cap_eff & (1 << 21) == 0
    body = host.check_output(SCRAPE)
    assert 'etsf_up 1.0' in body
    assert 'etsf_bpf_program_info{' in body and 'program="xdp_sip"' in body
    assert "etsf_policy_generation" in body
    assert "etsf_sip_packets_total" in body


def test_failsafe_watchdog_engaged(host):
    svc = host.service("etsf-failsafe.service")
    assert svc.is_running and svc.is_enabled
    st = json.loads(host.check_output("etsfctl failsafe status --json"))["state"]
    assert st["state"] == "engaged" and st["trips_total"] == 0, st
    # the watchdog is the agent that heartbeats: the heartbeat is fresh
    status = json.loads(host.check_output("etsfctl status --json"))
    assert status["heartbeat_age_ms"] is not None and status["heartbeat_age_ms"] < 5000
    assert host.file("/var/lib/etsf/failsafe-audit.jsonl").contains('"event": "start"')


def test_exporter_heartbeat_watched_by_failsafe(host):
    """The exporter rewrites its heartbeat file; the watchdog's heartbeat rule lists it."""
    hb = host.file("/run/etsf-exporter/heartbeat")
    assert hb.exists and hb.user == "etsf"
    age = float(host.check_output("echo $(( $(date +%s) - $(stat -c %Y /run/etsf-exporter/heartbeat) ))"))
    assert age <= 15, age                                       # rewritten every 5 s
    cfg = host.file("/etc/etsf/failsafe.yml").content_string
    assert "/run/etsf-exporter/heartbeat" in cfg, cfg
    st = json.loads(host.check_output("etsfctl failsafe status --json"))["state"]
    assert st["state"] == "engaged", st
