"""Role tags work from the playbooks: ``--tags X --list-tasks`` lists every task of role X and no
task of another role (the roles are imported, not included, so Ansible can list them).

Ansible adds an ``always``-tagged "Validating arguments against arg spec" task per role; it only
checks variables and is left out of the comparison (``--skip-tags always`` drops it).  So is the
internal role ``etsf.sip.common`` (distribution check, per-distribution vars) that every role
imports first: its tasks must be tagged ``always`` so that any role tag still runs them.  A check
a role imports from common for itself (the agent check) carries that role's tags instead and is
counted as that role's task.
"""
import os
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / ".venv/bin/ansible-playbook"
ROLES = ("preflight", "datapath", "policy", "telemetry", "failsafe")
TASK = re.compile(r"^ {6}(?:etsf\.sip\.(?P<role>\w+) : )?(?P<name>.+?)\tTAGS: \[(?P<tags>[^\]]*)\]$")


def list_tasks(playbook, *args):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    r = subprocess.run([str(PLAYBOOK), "-i", str(ROOT / "inventory/example"), str(ROOT / playbook),
                        "--list-tasks", *args], capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    assert r.returncode == 0, r.stderr
    out = []
    for line in r.stdout.splitlines():
        m = TASK.match(line)
        if m and m["role"] == "common":
            tags = {t.strip() for t in m["tags"].split(",") if t.strip()}
            if "always" not in tags:
                # a check one role imports from common for itself (the agent check): that role's
                # task, carrying only that role's tags
                owners = {t.split("_")[0] for t in tags}
                assert len(owners) == 1 and owners <= set(ROLES), line
                out.append((owners.pop(), m["name"], tags))
        elif m and not m["name"].startswith("Validating arguments against arg spec"):
            out.append((m["role"], m["name"], {t.strip() for t in m["tags"].split(",") if t.strip()}))
    return out


def by_role(tasks):
    out = {}
    for role, name, _tags in tasks:
        if role:
            out.setdefault(role, []).append(name)
    return out


@pytest.fixture(scope="module")
def site_all():
    every = by_role(list_tasks("playbooks/site.yml"))
    assert set(every) == set(ROLES)
    return every


@pytest.mark.parametrize("tag", ROLES)
def test_site_tag_lists_exactly_its_role(site_all, tag):
    tasks = list_tasks("playbooks/site.yml", "--tags", tag)
    assert by_role(tasks) == {tag: site_all[tag]}
    # play-level tasks listed with it are the gates and reports tagged for it, never another role's
    for role, name, tags in tasks:
        assert role or tag in tags, name


def test_policy_tag_in_site_lists_the_apply():
    names = by_role(list_tasks("playbooks/site.yml", "--tags", "policy"))["policy"]
    assert "Apply the policy to the pinned maps (atomic slot swap)" in names
    assert "Write the policy file (validated before it replaces the old one)" in names


def test_policy_playbook_tag_lists_the_policy_role_and_its_gate():
    tasks = list_tasks("playbooks/policy.yml", "--tags", "policy")
    assert by_role(tasks) == by_role(list_tasks("playbooks/policy.yml"))
    assert set(by_role(tasks)) == {"policy"}
    assert "Health gate (the policy must not break SIP on this host)" in [n for r, n, _t in tasks if not r]
