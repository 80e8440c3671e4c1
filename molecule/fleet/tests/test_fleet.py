"""Molecule `fleet` verify: the canary batch got eTSF, the failing host is unchanged, and the
later batch was never touched (serial + max_fail_percentage 0)."""
import json
import os

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts("all")


def _xdp_attached(host):
    link = json.loads(host.check_output("ip -j -d link show dev sip0"))[0]
    return bool(link.get("xdp"))


def test_outcome_per_batch(host):
    name = host.backend.get_hostname()
    preflight = json.loads(host.file("/var/lib/etsf/preflight.json").content_string)
    if name == "flt-sbc1":
        # the canary: rolled out, attached, policy applied
        assert preflight["ok"]
        status = json.loads(host.check_output("etsfctl status --json"))
        assert status["interfaces"]["sip0"]["attached"]
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
        assert not _xdp_attached(host)
