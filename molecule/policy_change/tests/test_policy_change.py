"""Molecule `policy_change` verify: an inventory change shows up first as exactly that change under
--check --diff (nothing written), then applies as a map-only change (program ids unchanged)."""
import json
import os
import pathlib
import re
import subprocess

import testinfra.utils.ansible_runner

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("all")
REPO = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
OVERRIDE = pathlib.Path(__file__).with_name("override.yml")


def _policy_playbook(*extra):
    cmd = [str(REPO / ".venv/bin/ansible-playbook"), "-i", INVENTORY, str(REPO / "playbooks/policy.yml"),
           "-e", f"@{OVERRIDE}", *extra]
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
    before = _status(host)
    live_before = json.loads(host.check_output("etsfctl policy show --json"))
    assert live_before["rate_limits"]["register"]["rate"] == 20

    out = _policy_playbook("--check", "--diff")
    lines = _diff_lines(out)
    # the file diff and the maps diff both show exactly the one changed field
    assert lines == {"- rate: 20", "+ rate: 10"}, out[-3000:]
    assert re.search(r"changed=[1-9]", out)
    # check mode wrote nothing
    assert json.loads(host.check_output("etsfctl policy show --json")) == live_before
    assert "rate: 20" in host.file("/etc/etsf/policy.yml").content_string

    _policy_playbook()
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
        assert after["interfaces"][iface]["xdp_prog_id"] == row["xdp_prog_id"]
        assert after["interfaces"][iface]["tc_prog_id"] == row["tc_prog_id"]

    # the change is kept: the history's newest entry is the live generation, the one before it
    # is the policy it replaced
    history = json.loads(host.check_output("etsfctl policy history --json"))
    assert [h["generation"] for h in history[-2:]] == [live_after_gen - 1, live_after_gen]
    assert history[-1]["action"] == "apply" and history[-1]["previous_generation"] == history[-2]["generation"]

    # and re-applying is a no-op
    out = _policy_playbook()
    assert re.search(r"changed=0", out)
