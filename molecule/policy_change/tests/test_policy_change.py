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
    for field in ("rate_limits", "generation", "active_slot"):
        live_before.pop(field)
        live_after.pop(field)
    assert live_after == live_before, "only the register rate may change"
    # map-only change: the same programs are attached
    for iface, row in before["interfaces"].items():
        assert after["interfaces"][iface]["xdp_prog_id"] == row["xdp_prog_id"]
        assert after["interfaces"][iface]["tc_prog_id"] == row["tc_prog_id"]

    # and re-applying is a no-op
    out = _policy_playbook()
    assert re.search(r"changed=0", out)
