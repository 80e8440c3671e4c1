"""Molecule `policy_change` verify, on every host (one Debian 12, one Debian 13): an inventory change
shows up first as exactly that change under --check --diff (nothing written), then applies as a
map-only change (program ids unchanged).  The policy playbook runs on the host under test alone
(--limit), so each host's tests see only their own change, in whatever order the hosts come."""
import json
import os
import pathlib
import re
import subprocess

import testinfra.utils.ansible_runner
import yaml

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("all")
REPO = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
OVERRIDE = pathlib.Path(__file__).with_name("override.yml")
# each platform's Debian suite, as molecule.yml asks the lab to boot it
PLATFORMS = yaml.safe_load((pathlib.Path(__file__).parents[1] / "molecule.yml").read_text(encoding="utf-8"))["platforms"]
SUITES = {p["name"]: p.get("suite", "bookworm") for p in PLATFORMS}


def _policy_playbook(name, *extra):
    cmd = [str(REPO / ".venv/bin/ansible-playbook"), "-i", INVENTORY, str(REPO / "playbooks/policy.yml"),
           "-e", f"@{OVERRIDE}", "--limit", name, *extra]
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    return res.stdout


def _diff_lines(text):
    """+/- lines of Ansible's --diff output (file and module diffs), headers excluded."""
    out = set()
    for line in text.splitlines():
        if re.match(r"^[+-](?![+-]{2})", line):
            out.add(re.sub(r"\s+", " ", line.strip()))
    return out


def _status(host):
    return json.loads(host.check_output("etsfctl status --json"))


def _recap(out, name):
    """The PLAY RECAP counters of host `name` ({'ok': 9, 'changed': 1, ...}); the run was --limit name."""
    found = re.search(rf"(?m)^{re.escape(name)} +:((?: +\w+=\d+)+)", out)
    assert found, out[-3000:]
    counters = dict(item.split("=") for item in found.group(1).split())
    assert set(re.findall(r"(?m)^(\S+) +: ok=", out)) == {name}, out[-3000:]   # no other host ran
    return {key: int(value) for key, value in counters.items()}


def test_scenario_covers_both_suites_and_host_runs_its_own(host):
    assert set(SUITES.values()) == {"bookworm", "trixie"}, SUITES
    assert sorted(testinfra_hosts) == sorted(SUITES)              # the verify runs on every platform
    release = dict(line.split("=", 1) for line in host.file("/etc/os-release").content_string.splitlines()
                   if "=" in line)
    assert release["VERSION_CODENAME"] == SUITES[host.backend.get_hostname()], release


def test_layers_reach_the_maps(host):
    """Fleet defaults (group all), the sbc group's layer and nothing from the host: merged, applied."""
    live = json.loads(host.check_output("etsfctl policy show --json"))
    assert live["deny"] == ["198.18.1.250/32", "198.19.7.0/24"]          # union of both layers
    assert live["trust"] == ["198.18.1.202/32"]
    assert live["rate_limits"]["register"] == {"rate": 20, "burst": 40}  # group rate, fleet burst
    assert live["rate_limits"]["invite"] == {"rate": 50, "burst": 100}
    assert live["marking"] == {"enabled": True, "dscp": 24, "skb_priority": 6}
    history = json.loads(host.check_output("etsfctl policy history --json"))
    assert history[-1]["generation"] == live["generation"] and history[-1]["live"] is True


def test_check_diff_shows_exactly_the_change_then_apply_changes_only_maps(host):
    name = host.backend.get_hostname()
    before = _status(host)
    live_before = json.loads(host.check_output("etsfctl policy show --json"))
    assert live_before["rate_limits"]["register"]["rate"] == 20

    out = _policy_playbook(name, "--check", "--diff")
    lines = _diff_lines(out)
    # the file diff and the maps diff both show exactly the one changed field
    assert lines == {"- rate: 20", "+ rate: 10"}, out[-3000:]
    recap = _recap(out, name)
    assert recap["changed"] >= 1 and recap["failed"] == 0, recap
    # check mode wrote nothing
    assert json.loads(host.check_output("etsfctl policy show --json")) == live_before
    assert "rate: 20" in host.file("/etc/etsf/policy.yml").content_string

    recap = _recap(_policy_playbook(name), name)
    assert recap["changed"] >= 1 and recap["failed"] == 0, recap
    after = _status(host)
    live_after = json.loads(host.check_output("etsfctl policy show --json"))
    assert live_after["rate_limits"]["register"]["rate"] == 10
    assert live_after["generation"] == live_before["generation"] + 1
    live_after_gen = live_after["generation"]
    for field in ("rate_limits", "generation", "active_slot"):
        live_before.pop(field)
        live_after.pop(field)
    assert live_after == live_before, "only the register rate may change"
    # map-only change: the same programs are attached
    for iface, row in before["interfaces"].items():
        assert row["hook"] in ("xdp", "tc") and after["interfaces"][iface]["hook"] == row["hook"], row
        for prog in ("xdp_prog_id", "tc_ingress_prog_id", "tc_prog_id"):   # whichever hook it has
            assert after["interfaces"][iface][prog] == row[prog], prog

    # the change is kept: the history's newest entry is the live generation, the one before it
    # is the policy it replaced
    history = json.loads(host.check_output("etsfctl policy history --json"))
    assert [h["generation"] for h in history[-2:]] == [live_after_gen - 1, live_after_gen]
    assert history[-1]["action"] == "apply" and history[-1]["previous_generation"] == history[-2]["generation"]

    # and re-applying is a no-op
    recap = _recap(_policy_playbook(name), name)
    assert recap["changed"] == 0 and recap["failed"] == 0, recap
