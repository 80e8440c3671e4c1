"""Fleet revert: eTSF rolled out to 3 booted lab hosts with playbooks/site.yml, then
reverted in one run of playbooks/revert.yml -- bypass, then detach -- with the wall time of each
run reported (``FLEET_REVERT {json}`` lines, pytest -s) and the result checked on every host.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from labhelpers import REPO, ansible_bin, on_host, playbook_failures

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1200)]

HOSTS = ["sbc1", "sbc2", "sbc3"]


def _playbook(*args: str, timeout: float = 900) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_HOST_KEY_CHECKING="False",
               ANSIBLE_NOCOLOR="1", PYTHONPATH=str(REPO / "src"))
    t0 = time.monotonic()
    cp = subprocess.run([ansible_bin("ansible-playbook"), "-i", "inventory/lab/hosts.yml", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=timeout, check=False)
    return cp, time.monotonic() - t0


def _recap(out: str) -> dict[str, dict[str, int]]:
    rows = {}
    for m in re.finditer(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", out, re.M):
        rows[m.group(1)] = {"ok": int(m.group(2)), "changed": int(m.group(3)),
                            "unreachable": int(m.group(4)), "failed": int(m.group(5))}
    return rows


def _status(host: str) -> dict:
    return json.loads(on_host(host, "/usr/local/bin/etsfctl status --json").stdout)


def _classifiers_on_sip0(host: str) -> set[str]:
    """The datapath hooks that carry an eTSF classifier on sip0, as the kernel shows them."""
    on = set()
    if "prog/xdp" in on_host(host, "ip -d link show dev sip0").stdout:
        on.add("xdp")
    if " name tc_fastpath " in on_host(host, "tc filter show dev sip0 ingress").stdout:
        on.add("tc")
    return on


@pytest.fixture(scope="module")
def fleet(lab_up):
    # The rollout is this test's set-up, not its subject (the canary batches and the on-host
    # build have their own tests): one batch, the objects compiled once on the controller.
    cp, wall = _playbook("playbooks/site.yml", "-e", '{"etsf_rollout_batches": ["100%"]}',
                         "-e", "datapath_build=controller", "-e", f"datapath_build_arch={os.uname().machine}",
                         timeout=1500)
    assert cp.returncode == 0, (f"site.yml failed: {playbook_failures(cp.stdout)}\n--- tail ---\n"
                                + cp.stdout[-3000:] + cp.stderr[-2000:])
    recap = _recap(cp.stdout)
    assert set(HOSTS) <= set(recap) and all(recap[h]["failed"] == 0 for h in HOSTS), recap
    print("FLEET_REVERT", json.dumps({"step": "rollout", "hosts": 3, "wall_s": round(wall, 1)}))
    return recap


def test_fleet_revert_bypass_then_detach(fleet):
    hooks = {}
    for h in HOSTS:
        st = _status(h)
        assert not st["ctl"]["bypass"], (h, st["ctl"])
        # the hook each host has (the lab inventory keeps the default: auto, tc on the veth sip0)
        hooks[h] = st["interfaces"]["sip0"]["hook"]
        assert _classifiers_on_sip0(h) == {hooks[h]}, (h, hooks[h])

    cp, wall_bypass = _playbook("playbooks/revert.yml")
    assert cp.returncode == 0, cp.stdout[-3000:]
    recap = _recap(cp.stdout)
    assert all(recap[h]["changed"] == 1 and recap[h]["failed"] == 0 for h in HOSTS), recap
    for h in HOSTS:
        st = _status(h)
        assert st["ctl"]["bypass"], (h, st["ctl"])          # every program passes everything ...
        assert _classifiers_on_sip0(h) == {hooks[h]}, h      # ... and stays attached

    again, wall_again = _playbook("playbooks/revert.yml")
    assert again.returncode == 0 and all(r["changed"] == 0 for h, r in _recap(again.stdout).items()
                                         if h in HOSTS), again.stdout[-2000:]

    cp, wall_detach = _playbook("playbooks/revert.yml", "-e", "etsf_revert_mode=detach")
    assert cp.returncode == 0, cp.stdout[-3000:]
    recap = _recap(cp.stdout)
    assert all(recap[h]["changed"] == 1 and recap[h]["failed"] == 0 for h in HOSTS), recap
    for h in HOSTS:
        assert _classifiers_on_sip0(h) == set(), h
        assert "tc_sip_egress" not in on_host(h, "tc filter show dev sip0 egress").stdout, h
        assert _status(h)["interfaces"] == {}, h

    bad = _playbook("playbooks/revert.yml", "-e", "etsf_revert_mode=unplug")[0]
    assert bad.returncode != 0 and "etsf_revert_mode must be bypass or detach (got unplug)" in bad.stdout

    print("FLEET_REVERT", json.dumps({"step": "revert", "hosts": 3, "bypass_wall_s": round(wall_bypass, 2),
                                      "bypass_again_wall_s": round(wall_again, 2),
                                      "detach_wall_s": round(wall_detach, 2)}))
