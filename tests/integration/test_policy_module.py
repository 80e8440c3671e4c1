"""The etsf.sip.policy module against the REAL maps (unique pin root), run by ansible-playbook
on localhost: layers merged on the host, state=rolled_back in check mode (diff, nothing written)
and for real (maps back to the first policy, boot-time file rewritten), a generation not kept
fails with one line and changes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO, SRC, etsfctl
from test_policy_maps import dump_maps, loaded  # noqa: F401  pylint: disable=unused-import

PLAY = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: step
      etsf.sip.policy: {args}
      register: out
      check_mode: {check}
      diff: true
      ignore_errors: true
    - name: result
      ansible.builtin.copy:
        content: "{{{{ out | to_json }}}}"
        dest: "{dest}"
        mode: "0600"
      check_mode: false
"""


def run_module(tmp_path, env, args: dict, check: bool = False) -> dict:
    dest = tmp_path / "result.json"
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(args=json.dumps(args), check="true" if check else "false", dest=dest))
    e = dict(os.environ, **env, PYTHONPATH=str(SRC), ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
             ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"), ANSIBLE_LOCAL_TEMP=str(tmp_path / "atmp"))
    r = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
                        "-e", f"ansible_python_interpreter={sys.executable}", str(play)],
                       capture_output=True, text=True, env=e, cwd=REPO, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    return json.loads(dest.read_text())


def _live(env):
    doc = json.loads(etsfctl("policy", "show", "--json", env=env).stdout)
    return {k: v for k, v in doc.items() if k not in ("generation", "active_slot")}, doc["generation"]


FLEET = {"version": 1, "deny": ["198.18.250.0/24"], "rate_limits": {"register": {"rate": 20, "burst": 40}}}


def test_module_layers_rollback_check_and_bad_generation(tmp_path, etsf_env, etsf_bpf, loaded):
    root = etsf_env["ETSF_PIN_ROOT"]
    common = {"pin_root": root, "actor": "it-test"}
    a = run_module(tmp_path, etsf_env, {**common, "layers": {"defaults": FLEET,
                                                             "group": {"rate_limits": {"register": {"rate": 50}}}}})
    assert a["changed"] is True and a["generation"] == 1, a
    live_a, _gen = _live(etsf_env)
    assert live_a["rate_limits"]["register"] == {"rate": 50, "burst": 40}
    b = run_module(tmp_path, etsf_env, {**common, "layers": {"defaults": FLEET,
                                                             "host": {"deny": ["198.18.251.0/24"]}}})
    assert b["changed"] is True and b["generation"] == 2
    assert _live(etsf_env)[0]["deny"] == ["198.18.250.0/24", "198.18.251.0/24"]

    # check mode: the diff shows the way back, nothing is written
    boot = tmp_path / "policy.yml"
    before = dump_maps(etsf_bpf, root)
    c = run_module(tmp_path, etsf_env, {**common, "state": "rolled_back", "dest": str(boot)}, check=True)
    assert c["changed"] is True and c["rollback_to"] == 1
    assert "rate: 20" in c["diff"]["before"] and "rate: 50" in c["diff"]["after"]
    assert "198.18.251.0/24" in c["diff"]["before"] and "198.18.251.0/24" not in c["diff"]["after"]
    assert dump_maps(etsf_bpf, root) == before and not boot.exists()

    # for real: the maps hold the first policy again, the boot-time file too
    r = run_module(tmp_path, etsf_env, {**common, "state": "rolled_back", "dest": str(boot)})
    assert r["changed"] is True and r["rollback_to"] == 1 and r["generation"] == 3
    assert _live(etsf_env) == (live_a, 3)
    assert yaml.safe_load(boot.read_text())["rate_limits"]["register"] == {"rate": 50, "burst": 40}
    hist = json.loads(etsfctl("policy", "history", "--json", env=etsf_env).stdout)
    assert [(h["generation"], h["action"], h["actor"]) for h in hist] == [
        (1, "apply", "it-test"), (2, "apply", "it-test"), (3, "rollback", "it-test")]

    # a generation that is not kept: one line, nothing changed
    before = dump_maps(etsf_bpf, root)
    bad = run_module(tmp_path, etsf_env, {**common, "state": "rolled_back", "generation": 9})
    assert bad["failed"] is True
    assert bad["msg"] == "rollback.generation: generation 9 is not in the policy history (kept: 1, 2, 3)"
    assert dump_maps(etsf_bpf, root) == before
    # a layer of the wrong shape: one line naming it, nothing changed
    bad = run_module(tmp_path, etsf_env, {**common, "layers": {"defaults": FLEET, "group": {"deny": "x"}}})
    assert bad["failed"] is True and bad["msg"] == "layers.group.deny: must be a list of CIDR prefixes (got str)"
    assert dump_maps(etsf_bpf, root) == before
