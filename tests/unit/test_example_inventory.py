"""The example carrier inventory resolves and every host's etsf_policy is a valid policy."""
import json
import pathlib
import subprocess

from etsf import policy

ROOT = pathlib.Path(__file__).resolve().parents[2]
ANSIBLE_INVENTORY = ROOT / ".venv/bin/ansible-inventory"


def test_every_example_host_has_a_valid_policy():
    out = subprocess.run([str(ANSIBLE_INVENTORY), "-i", str(ROOT / "inventory/example"), "--list"],
                         capture_output=True, text=True, check=True).stdout
    inv = json.loads(out)
    hostvars = inv["_meta"]["hostvars"]
    assert len(hostvars) == 7
    for group in ("sbc_access", "sbc_core", "ims_pcscf"):
        assert inv[group]["hosts"], group
    seen = set()
    for host, hv in hostvars.items():
        p = policy.validate(hv["etsf_policy"])
        seen.add(p.rate_limits["register"]["rate"])
        assert hv["etsf_interfaces"] == ["sip0"], host
    # group_vars of the child groups override the fleet default
    assert seen == {1, 50, 100}
