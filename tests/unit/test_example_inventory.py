"""The example carrier inventory resolves, and every host's policy -- the fleet defaults, its
group's and its own layer merged -- is a valid policy that really carries the fleet defaults.

The merge is checked with the agent's merge_layers on ``ansible-inventory --list``, and through
Ansible itself, rendering the policy role's own ``policy_document`` default and the appliance
role's ``appliance_policy`` default (the ``etsf.sip.policy_merge`` filter) for every host; all
must agree.
"""
import json
import os
import pathlib
import subprocess

import pytest

from etsf import policy

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv/bin"
INV = ROOT / "inventory/example"
FLEET_DENY = "198.18.250.0/24"
FLEET_TRUST = ["198.19.0.0/24", "198.19.1.0/24", "2001:2:0:1::/64"]

PLAY = """\
- hosts: all
  gather_facts: false
  vars_files: [{defaults}]
  tasks:
    - name: Write the rendered policy_document on the controller
      ansible.builtin.copy:
        content: "{{{{ {var} | to_json }}}}"
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        mode: "0600"
      delegate_to: localhost
"""


def _inventory():
    out = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(INV), "--list"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def _merged(hv):
    return policy.merge_layers([("etsf_policy_defaults", hv.get("etsf_policy_defaults")),
                                ("etsf_policy_group", hv.get("etsf_policy_group")),
                                ("etsf_policy", hv.get("etsf_policy"))])


def test_every_example_host_gets_the_fleet_defaults():
    inv = _inventory()
    hostvars = inv["_meta"]["hostvars"]
    assert len(hostvars) == 7
    for group in ("sbc_access", "sbc_core", "ims_pcscf"):
        assert inv[group]["hosts"], group
    fleet = policy.validate(hostvars["sbc-core-fra1"]["etsf_policy_defaults"]).to_dict()
    register = {}
    for host, hv in hostvars.items():
        assert hv["etsf_interfaces"] == ["sip0"], host
        p = policy.validate(_merged(hv)).to_dict()
        # the fleet layer reaches every host: scanner deny list, trust list, priorities, marking,
        # dead-man, ports
        assert FLEET_DENY in p["deny"], host
        assert set(FLEET_TRUST) <= set(p["trust"]), host
        assert p["marking"] == {"enabled": True, "dscp": 24, "skb_priority": 6}, host
        assert p["deadman"] == fleet["deadman"] and p["sip_ports"] == [5060] and p["tls_ports"] == [5061], host
        assert p["priorities"]["INVITE"] == "high" and p["priorities"]["SUBSCRIBE"] == "low", host
        assert p["overload"]["shed_below"] == fleet["overload"]["shed_below"], host
        register[host] = p["rate_limits"]["register"]["rate"]
        groups = [g for g in ("sbc_access", "sbc_core", "ims_pcscf") if host in inv[g]["hosts"]]
        assert len(groups) == 1, host
        if groups[0] == "sbc_access":
            assert p["aggregation"] == {"ipv4_prefix": 24, "ipv6_prefix": 56}, host
        else:
            assert p["aggregation"] == fleet["aggregation"], host
        # a nested mapping merges key by key: the P-CSCF group changes REGISTER only
        assert p["priorities"]["REGISTER"] == ("normal" if groups[0] == "ims_pcscf" else "low"), host
    # each group's layer overrides the fleet's rate limits
    assert register == {"sbc-acc-fra1": 50, "sbc-acc-fra2": 50, "sbc-acc-ber1": 50, "sbc-core-fra1": 1,
                        "sbc-core-ber1": 1, "pcscf-fra1": 100, "pcscf-fra2": 100}
    # the host layer adds to the fleet's trust/deny lists instead of replacing them
    ber1 = policy.validate(_merged(hostvars["sbc-acc-ber1"])).to_dict()
    assert ber1["deny"] == [FLEET_DENY, "198.18.251.0/24"]
    assert ber1["trust"] == ["198.19.0.0/24", "198.19.1.0/24", "198.19.2.10/32", "2001:2:0:1::/64"]
    # keep-alive answers are the host's own: its identity, nowhere else
    assert ber1["keepalive"]["enabled"] and ber1["keepalive"]["identities"] == ["198.18.11.11"]
    assert ber1["keepalive"]["probe"]["address"] == "127.0.0.1" and ber1["keepalive"]["sample_every"] == 100
    fra1 = policy.validate(_merged(hostvars["sbc-acc-fra1"])).to_dict()
    assert fra1["deny"] == [FLEET_DENY] and "keepalive" not in fra1


@pytest.mark.parametrize("role,var", [("policy", "policy_document"), ("appliance", "appliance_policy")])
def test_role_default_renders_the_same_merge(tmp_path, role, var):
    """What the role templates is what the agent's merge computes, for every example host: the
    policy role for a fleet host, and the appliance builder for an image built from the same
    inventory (it seeds the same merged policy, not the host layer alone)."""
    play = tmp_path / "render.yml"
    out = tmp_path / "out"
    out.mkdir()
    play.write_text(PLAY.format(defaults=ROOT / f"roles/{role}/defaults/main.yml", out=out, var=var))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"), ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"))
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(INV), str(play)], capture_output=True,
                       text=True, env=env, cwd=ROOT, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    results = {p.stem: json.loads(p.read_text()) for p in out.iterdir()}
    hostvars = _inventory()["_meta"]["hostvars"]
    assert set(results) == set(hostvars)
    for host, rendered in results.items():
        assert rendered == _merged(hostvars[host]), host
