"""etsf.sip.actor names the operator of a playbook run in eTSF's records (policy history, held
revert, audit): the controller's SUDO_USER, USER, LOGNAME or effective user, what the run does,
and the change ticket (etsf_change_ref), which is checked.  Called directly and through a real
ansible-playbook with the collection installed, with no USER in the environment (cron, CI)."""
import importlib.util
import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest
from ansible.errors import AnsibleLookupError

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("etsf_actor_lookup", ROOT / "plugins/lookup/actor.py")
actor = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(actor)


def _run(terms=(), **variables):
    return actor.LookupModule().run(list(terms), variables=variables)[0]


def test_who_what_and_ticket(monkeypatch):
    for var in ("SUDO_USER", "USER", "LOGNAME"):
        monkeypatch.delenv(var, raising=False)
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert _run() == f"ansible ({me})"
    monkeypatch.setenv("LOGNAME", "carol")
    assert _run() == "ansible (carol)"
    monkeypatch.setenv("USER", "bob")
    monkeypatch.setenv("SUDO_USER", "alice")         # the operator behind sudo, not root
    assert _run() == "ansible (alice)"
    assert _run(["rollback"]) == "ansible rollback (alice)"
    assert _run(["rollback"], etsf_change_ref="CHG0042") == "ansible rollback (alice) CHG0042"
    assert _run(etsf_change_ref="") == "ansible (alice)"


@pytest.mark.parametrize("ref", ["CHG 42", "x" * 33, "a;rm -rf", 42, "tab\there"])
def test_a_bad_change_ref_is_one_line(ref):
    with pytest.raises(AnsibleLookupError, match=r"^etsf_change_ref: 1 to 32 characters") as exc:
        _run(etsf_change_ref=ref)
    assert "\n" not in str(exc.value)


def test_a_bad_term_is_refused():
    with pytest.raises(AnsibleLookupError, match="one lower-case word"):
        _run(["roll back"])
    with pytest.raises(AnsibleLookupError, match="one lower-case word"):
        _run(["a", "b"])


def test_through_ansible_playbook_without_user(tmp_path):
    coll = tmp_path / "ansible_collections" / "etsf" / "sip"
    shutil.copytree(ROOT / "plugins", coll / "plugins", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "galaxy.yml", coll / "galaxy.yml")
    (tmp_path / "play.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - debug: {msg: \"ACTOR={{ lookup('etsf.sip.actor', 'rollback') }}\"}\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANSIBLE_", "PYTHON")) and k not in ("SUDO_USER", "USER", "LOGNAME")}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(tmp_path), ANSIBLE_NOCOLOR="1", HOME=str(tmp_path),
               ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"))

    def play(*extra):
        return subprocess.run([str(ROOT / ".venv/bin/ansible-playbook"), "-i", "localhost,", *extra,
                               str(tmp_path / "play.yml")], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120, check=False)

    me = pwd.getpwuid(os.geteuid()).pw_name
    cp = play("-e", json.dumps({"etsf_change_ref": "CHG0042"}))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert f"ACTOR=ansible rollback ({me}) CHG0042" in cp.stdout, cp.stdout
    cp = play("-e", json.dumps({"etsf_change_ref": "CHG 42"}))
    assert cp.returncode != 0 and "etsf_change_ref: 1 to 32 characters" in cp.stdout, cp.stdout
