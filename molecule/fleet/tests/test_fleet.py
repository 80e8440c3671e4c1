"""Molecule `fleet` verify: the canary batch got eTSF, the failing host is unchanged, and the
later batch was never touched (serial + max_fail_percentage 0)."""
import json
import os
import pathlib

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts("all")


#: the programs at an interface's TC hooks as the kernel lists them: tcx links and clsact filters
TCVIEW = (pathlib.Path(__file__).resolve().parents[3] / "lab" / "tcview.py").read_text()


def _programs_on_sip0(host):
    """Every BPF program on sip0, on either datapath hook: XDP, and TC ingress/egress through
    tcx links or clsact filters."""
    link = json.loads(host.check_output("ip -j -d link show dev sip0"))[0]
    progs = [("xdp", link["xdp"]["prog"]["name"])] if link.get("xdp") else []
    view = json.loads(host.check_output("python3 -c %s sip0", TCVIEW))
    for direction in ("ingress", "egress"):
        progs += [(direction, p["name"]) for p in view["tcx"][direction] + view["clsact"][direction]]
    return progs


def test_outcome_per_batch(host):
    name = host.backend.get_hostname()
    preflight = json.loads(host.file("/var/lib/etsf/preflight.json").content_string)
    if name == "flt-sbc1":
        # the canary: rolled out, attached, policy applied
        assert preflight["ok"]
        status = json.loads(host.check_output("etsfctl status --json"))
        # the role's default hook (auto) on the lab's veth sip0: TC ingress, no XDP
        assert status["interfaces"]["sip0"]["attached"] and status["interfaces"]["sip0"]["hook"] == "tc"
        assert sorted(_programs_on_sip0(host)) == [("egress", "tc_sip_egress"), ("ingress", "tc_fastpath")]
        assert status["policy_generation"] >= 1
        assert host.service("etsf-restore.service").is_enabled
    else:
        # flt-sbc2 failed preflight (nothing changed), flt-sbc3 is in a later batch (never touched):
        # preflight ran on both (read-only report), the rollout did not
        assert preflight["ok"] == (name == "flt-sbc3")
        if name == "flt-sbc2":
            assert "kernel" in preflight["message"] and "minimum 99.0" in preflight["message"]
        assert not host.exists("etsfctl")
        assert not host.file("/etc/etsf/policy.yml").exists
        assert not host.file("/etc/systemd/system/etsf-restore.service").exists
        assert not host.file("/usr/share/etsf/bpf").exists
        assert _programs_on_sip0(host) == []
