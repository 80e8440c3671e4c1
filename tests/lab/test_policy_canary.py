"""Policy canary rollout on 2 booted lab hosts (prefix $ETSF_POLICY_CANARY_PREFIX, default pcan-):
playbooks/policy.yml in batches with the health gate; a host whose new policy fails the gate is
rolled back to the policy it had before (maps, boot-time file, history, audit) and the rollout
stops at that batch.

While the playbook runs, the lab's UAC peer (198.18.1.201, netns etsf-uac) sends SIP OPTIONS to
both hosts (bounded: at most 10/s each for at most 300 s).  The "bad" policy denies that peer, and this
fleet's gate accepts only RATE_LIMIT/OVERLOAD drops, so the DENY drops of a live peer's SIP fail
it -- the real gate on real traffic, not a forced failure.  Wall times are printed as
``POLICY_CANARY {json}`` (pytest -s).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from labhelpers import PY, REPO, ansible_bin, lab, on_host, playbook_failures, preconditions

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

PREFIX = os.environ.get("ETSF_POLICY_CANARY_PREFIX", "pcan-")
H1, H2 = f"{PREFIX}sbc1", f"{PREFIX}sbc2"
PEER = "198.18.1.201"
PEER_NETNS = "etsf-uac"
SENDER = r"""
import socket, sys, time
targets = sys.argv[1:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.18.1.201", 0))
for i in range(3000):
    for t in targets:
        msg = ("OPTIONS sip:%s:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.201:5070;branch=z9hG4bK-pc%d\r\n"
               "Max-Forwards: 70\r\nFrom: <sip:canary@198.18.1.201>;tag=%d\r\nTo: <sip:%s>\r\n"
               "Call-ID: canary-%d@198.18.1.201\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n") % (t, i, i, t, i)
        s.sendto(msg.encode(), (t, 5060))
    time.sleep(0.1)
"""

FLEET = {
    "etsf_health_window": 2.0,
    "etsf_policy_health_drop_reasons": ["RATE_LIMIT", "OVERLOAD"],
    "etsf_failsafe_enabled": False,
    "etsf_policy_defaults": {
        "version": 1, "sip_ports": [5060], "deny": ["198.18.1.250/32"],
        "rate_limits": {"register": {"rate": 20, "burst": 40}, "options": {"rate": 50, "burst": 100},
                        "invite": {"rate": 50, "burst": 100}, "other": {"rate": 200, "burst": 400}},
        "aggregation": {"ipv4_prefix": 32, "ipv6_prefix": 64},
        "marking": {"enabled": True, "dscp": "CS3", "skb_priority": 6},
    },
}
BAD_HOST_LAYER = {"etsf_policy": {"deny": [f"{PEER}/32"]}}


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    """Two fresh hosts under our own prefix (never anyone else's), and an inventory dir for them."""
    preconditions()
    lab("down", "--prefix", PREFIX, timeout=300, check=False)
    lab("up", "--prefix", PREFIX, "--hosts", "2", timeout=900)
    d = tmp_path_factory.mktemp("canary-inv")
    lab("inventory", "--prefix", PREFIX, "--output", str(d / "hosts.yml"))
    (d / "group_vars").mkdir()
    (d / "group_vars" / "all.yml").write_text(yaml.safe_dump(FLEET))
    (d / "host_vars").mkdir()
    try:
        yield d
    finally:
        lab("down", "--prefix", PREFIX, timeout=300, check=False)


def _playbook(inv: Path, playbook: str, *args: str, timeout: float = 1500):
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_HOST_KEY_CHECKING="False",
               ANSIBLE_NOCOLOR="1", PYTHONPATH=str(REPO / "src"))
    t0 = time.monotonic()
    cp = subprocess.run([ansible_bin("ansible-playbook"), "-i", str(inv), playbook, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout, check=False)
    return cp, time.monotonic() - t0


def _recap(out: str) -> dict[str, dict[str, int]]:
    return {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "failed": int(m.group(4))}
            for m in re.finditer(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)", out, re.M)}


def _json(host: str, cmd: str):
    # ssh exits 255 when the connection itself fails (a loaded lab host can miss the banner
    # exchange): try the connection again, a bounded number of times; any other exit is a failure
    for _attempt in range(3):
        cp = on_host(host, f"/usr/local/bin/etsfctl {cmd} --json", check=False)
        if cp.returncode != 255:
            break
    assert cp.returncode == 0, cp.stdout
    return json.loads(cp.stdout)


def _cat(host: str, path: str) -> str:
    for _attempt in range(3):
        cp = on_host(host, f"cat {path}", check=False)
        if cp.returncode != 255:
            break
    assert cp.returncode == 0, cp.stdout
    return cp.stdout


def _live(host: str):
    doc = _json(host, "policy show")
    return {k: v for k, v in doc.items() if k not in ("generation", "active_slot")}, doc["generation"]


def _policy_run(inv: Path):
    """playbooks/policy.yml in two batches while the peer sends SIP to both hosts."""
    addrs = [yaml.safe_load((inv / "hosts.yml").read_text())["all"]["children"]["sbc"]["hosts"][h]["etsf_sip_address"]
             for h in (H1, H2)]
    sender = subprocess.Popen(["nsenter", f"--net=/run/netns/{PEER_NETNS}", PY, "-c", SENDER, *addrs],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return _playbook(inv, "playbooks/policy.yml", "-e", '{"etsf_policy_batches": [1, "100%"]}', timeout=600)
    finally:
        sender.kill()
        sender.wait(timeout=30)


def _set_layers(inv: Path, bad: str | None, register_rate: int):
    for h in (H1, H2):
        f = inv / "host_vars" / f"{h}.yml"
        if h == bad:
            f.write_text(yaml.safe_dump(BAD_HOST_LAYER))
        elif f.exists():
            f.unlink()
    (inv / "group_vars" / "sbc.yml").write_text(yaml.safe_dump(
        {"etsf_policy_group": {"rate_limits": {"register": {"rate": register_rate}}}}))


def test_failed_canary_batch_rolls_back_and_stops(inventory):
    inv = inventory
    _set_layers(inv, None, 20)
    cp, wall_site = _playbook(inv, "playbooks/site.yml")
    assert cp.returncode == 0, f"site.yml failed: {playbook_failures(cp.stdout)}\n{cp.stdout[-3000:]}"
    base = {h: _live(h) for h in (H1, H2)}
    for h in (H1, H2):
        assert base[h][0]["rate_limits"]["register"] == {"rate": 20, "burst": 40}
        assert base[h][0]["deny"] == ["198.18.1.250/32"]

    # run 1: the second batch's host gets a policy that denies the probed peer
    _set_layers(inv, H2, 10)
    cp, wall_run1 = _policy_run(inv)
    out = cp.stdout
    assert cp.returncode != 0, out[-3000:]
    recap = _recap(out)
    print("POLICY_CANARY run 1:\n" + playbook_failures(out) + "\n" + out[max(out.find("PLAY RECAP"), 0):])
    assert recap[H1]["failed"] == 0 and recap[H2]["failed"] == 1, recap
    assert f"{H2}: policy rollout failed (rolled back to generation {base[H2][1]}" in out, out[-3000:]
    assert "unexpected reason DENY" in out, playbook_failures(out)
    # the canary host passed its gate and keeps the new policy
    live1, gen1 = _live(H1)
    assert live1["rate_limits"]["register"] == {"rate": 10, "burst": 40} and gen1 == base[H1][1] + 1
    # the failed host runs the policy it had before, in a new generation; the boot-time file too
    live2, gen2 = _live(H2)
    assert live2 == base[H2][0] and gen2 == base[H2][1] + 2
    hist2 = _json(H2, "policy history")
    assert [(h["generation"], h["action"]) for h in hist2[-2:]] == [(gen2 - 1, "apply"), (gen2, "rollback")]
    assert hist2[-1]["rollback_to"] == base[H2][1] and hist2[-1]["live"] is True
    assert hist2[-1]["sha256"] == next(h for h in hist2 if h["generation"] == base[H2][1])["sha256"]
    boot = yaml.safe_load(_cat(H2, "/etc/etsf/policy.yml"))
    assert boot["deny"] == ["198.18.1.250/32"] and boot["rate_limits"]["register"]["rate"] == 20
    audit = [json.loads(x) for x in _cat(H2, "/var/lib/etsf/policy-audit.jsonl").splitlines()]
    assert audit[-1]["event"] == "rollback" and audit[-1]["generation"] == gen2

    # run 2: the FIRST batch fails -> rolled back, and the second batch is never touched
    _set_layers(inv, H1, 7)
    hist_h2 = _json(H2, "policy history")
    cp, wall_run2 = _policy_run(inv)
    assert cp.returncode != 0
    print("POLICY_CANARY run 2:\n" + cp.stdout[max(cp.stdout.find("PLAY RECAP"), 0):])
    assert _recap(cp.stdout)[H1]["failed"] == 1
    live1b, gen1b = _live(H1)
    assert live1b == live1 and gen1b == gen1 + 2
    assert _json(H1, "policy history")[-1]["rollback_to"] == gen1
    assert _live(H2) == (live2, gen2) and _json(H2, "policy history") == hist_h2
    print("POLICY_CANARY", json.dumps({"hosts": 2, "site_wall_s": round(wall_site, 1),
                                       "policy_run1_wall_s": round(wall_run1, 1),
                                       "policy_run2_wall_s": round(wall_run2, 1)}))
