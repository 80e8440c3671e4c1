"""etsf.sip.common run by real Ansible on the controller (local connection): it loads the calling
role's vars/<distribution>-<version>.yml, sets the offline fact, and refuses a distribution outside
the supported list with one line.  The supported list is passed with -e and names the
controller's own distribution, so the test does not depend on which Debian the controller runs."""
import json
import os
import pathlib
import subprocess

import etsf.preflight as pf

ROOT = pathlib.Path(__file__).resolve().parents[2]
OS = pf.read_os_release()
DIST = {"debian": "Debian", "ubuntu": "Ubuntu"}.get(OS.get("ID", ""), OS.get("ID", "").capitalize())
MAJOR = OS.get("VERSION_ID", "0").split(".")[0]


def _play(tmp_path, platforms, extra=None):
    role = tmp_path / "roles" / "probe"
    (role / "tasks").mkdir(parents=True, exist_ok=True)
    (role / "vars").mkdir(exist_ok=True)
    (role / "tasks/main.yml").write_text(
        "- name: Common\n  ansible.builtin.import_role:\n    name: etsf.sip.common\n  tags: [always]\n"
        "- name: Show\n  ansible.builtin.debug:\n"
        "    msg: \"RESULT {{ {'value': __probe_value | default('unset'), 'offline': __etsf_offline,"
        " 'platforms': __etsf_platforms} | to_json }}\"\n")
    (role / f"vars/{DIST}-{MAJOR}.yml").write_text(f"__probe_value: loaded-{DIST}-{MAJOR}\n")
    (role / "vars/Other-1.yml").write_text("__probe_value: wrong-file\n")
    (tmp_path / "play.yml").write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  roles: [probe]\n")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
               ANSIBLE_ROLES_PATH=str(tmp_path / "roles"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
               ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               # Debian's interpreter, as on the hosts, whatever python3 is first on PATH
               ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3")
    extra_vars = {"__common_platforms": platforms, **(extra or {})}
    return subprocess.run([str(ROOT / ".venv/bin/ansible-playbook"), "-i", "localhost,",
                           "-e", json.dumps(extra_vars), str(tmp_path / "play.yml")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_supported_distribution_loads_the_roles_vars_file(tmp_path):
    platforms = [{"distribution": DIST, "version": MAJOR, "release": "this"}]
    cp = _play(tmp_path, platforms)
    assert cp.returncode == 0, cp.stdout[-2000:]
    assert f'"value": "loaded-{DIST}-{MAJOR}"' in cp.stdout.replace('\\"', '"')
    assert '"offline": false' in cp.stdout.replace('\\"', '"')
    cp = _play(tmp_path, platforms, {"etsf_offline": True})
    assert cp.returncode == 0, cp.stdout[-2000:]
    assert '"offline": true' in cp.stdout.replace('\\"', '"')


def test_unsupported_distribution_fails_with_one_line(tmp_path):
    cp = _play(tmp_path, [{"distribution": "Other", "version": "1", "release": "one"}])
    assert cp.returncode != 0
    assert f"probe: {DIST} {MAJOR} (" in cp.stdout
    assert "is not supported (supported: Other 1 (one))" in cp.stdout
    assert "wrong-file" not in cp.stdout and "RESULT" not in cp.stdout
