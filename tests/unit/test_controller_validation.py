"""The policy and failsafe roles validate their documents on the CONTROLLER first, with the agent's
validator from the agent source the collection ships (src/): real ansible-playbook in check mode
against a throwaway host (local connection) that has no agent.  A bad document fails with the
agent's one line before any task touches the host; a good one passes; no bytecode is written
into the collection (a copy laid out like an installed collection)."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NO_AGENT = "/nonexistent/etsfctl"
FLEET = {"version": 1, "sip_ports": [5060]}


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    base = tmp_path_factory.mktemp("coll")
    dest = base / "ansible_collections" / "etsf" / "sip"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("roles", "plugins", "src", "meta"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    shutil.copy(ROOT / "galaxy.yml", dest / "galaxy.yml")
    return base


def _play(tmp_path, collection, role, variables, *args):
    inv = tmp_path / "hosts.yml"
    inv.write_text(json.dumps({"all": {"children": {"sbc": {"hosts": {"fresh": {
        "ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
        "policy_etsfctl": NO_AGENT}}}}}}))
    (tmp_path / "play.yml").write_text(
        f"- hosts: sbc\n  gather_facts: true\n  roles: [etsf.sip.{role}]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHON"))}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collection), ANSIBLE_NOCOLOR="1", HOME=str(tmp_path),
               ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_STDOUT_CALLBACK="default",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"))
    return subprocess.run([str(ROOT / ".venv/bin/ansible-playbook"), "-i", str(inv), "--check",
                           "-e", json.dumps({"__failsafe_etsfctl": NO_AGENT, **variables}),
                           *args, str(tmp_path / "play.yml")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)


def _failed_task(out: str) -> str:
    task = ""
    for line in out.splitlines():
        if line.startswith("TASK ["):
            task = line
        elif line.startswith("fatal: ["):
            return task
    return ""


def _bytecode(collection) -> list:
    """Bytecode of the agent's modules in the collection.  layers.py is left out: the
    policy_merge filter loads it inside ansible-playbook itself (as Ansible loads its plugins),
    not in the validator's process."""
    return sorted(str(p) for p in collection.rglob("src/**/*.pyc") if not p.name.startswith("layers."))


def test_bad_policy_fails_on_the_controller_in_check_mode(tmp_path, collection):
    cp = _play(tmp_path, collection, "policy", {"etsf_policy_defaults": FLEET, "etsf_policy": {"deny": ["bogus"]}})
    assert cp.returncode == 2, cp.stdout[-3000:]
    assert "Stop on an invalid policy document" in _failed_task(cp.stdout), cp.stdout[-3000:]
    assert '"msg": "etsfctl: error: policy.deny[0]: an IPv4/IPv6 network expected (got \'bogus\')"' \
        in cp.stdout, cp.stdout[-3000:]
    # nothing after the preflight ran: the host was not touched
    assert "Create the eTSF configuration directory" not in cp.stdout
    assert _bytecode(collection) == []


def test_good_policy_passes_the_controller_check(tmp_path, collection):
    good = {"etsf_policy_defaults": FLEET, "etsf_policy": {"deny": ["198.18.1.250/32"]}}
    cp = _play(tmp_path, collection, "policy", good, "--tags", "policy_preflight")
    assert cp.returncode == 0, cp.stdout[-3000:]
    assert re.search(r"Validate the policy document on the controller with the agent's validator\] \*+\n"
                     r"ok: \[fresh -> localhost\]", cp.stdout), cp.stdout[-3000:]
    assert re.search(r"Stop on an invalid policy document\] \*+\nskipping: \[fresh\]", cp.stdout), cp.stdout[-3000:]
    assert _bytecode(collection) == []


def test_bad_failsafe_config_fails_on_the_controller_in_check_mode(tmp_path, collection):
    cp = _play(tmp_path, collection, "failsafe", {"failsafe_rules": {"drop_ratio": {"treshold_pct": 1}}})
    assert cp.returncode == 2, cp.stdout[-3000:]
    assert "Stop on an invalid watchdog configuration" in _failed_task(cp.stdout), cp.stdout[-3000:]
    assert ('"msg": "etsfctl: error: -: failsafe.rules.drop_ratio.treshold_pct: one of the keys enabled, '
            'threshold_pct, ') in cp.stdout, cp.stdout[-3000:]
    assert "(got 'treshold_pct')\"" in cp.stdout
    assert _bytecode(collection) == []


def test_good_failsafe_config_passes_the_controller_check(tmp_path, collection):
    cp = _play(tmp_path, collection, "failsafe", {}, "--tags", "failsafe_preflight")
    assert cp.returncode == 0, cp.stdout[-3000:]
    assert re.search(r"Validate the watchdog configuration on the controller with the agent's validator\] \*+\n"
                     r"ok: \[fresh -> localhost\]", cp.stdout), cp.stdout[-3000:]
    assert re.search(r"Stop on an invalid watchdog configuration\] \*+\nskipping: \[fresh\]", cp.stdout)
    assert _bytecode(collection) == []
