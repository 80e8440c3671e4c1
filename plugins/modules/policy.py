#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: eTSF developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: policy
short_description: Apply an eTSF SIP policy file to the pinned BPF maps, atomically
version_added: 0.1.0
description:
  - "Validates a versioned eTSF policy file (YAML, C(version: 1)), compares it with the policy the
    kernel programs use now (decoded from the pinned maps) and, when they differ, applies it as an
    atomic slot swap so no packet sees half a policy."
  - A policy-only change never reloads or re-attaches programs; program ids stay the same.
  - A rejected policy fails with one line naming the field path and changes nothing.
  - "The agent keeps the last O(history_keep) applied policies on the host; O(state=rolled_back)
    re-applies one of them (default: the one live before the current one) exactly like an apply:
    same lock, same slot swap, a new generation, kept in the history and audited."
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - etsf.sip.agent
options:
  state:
    description:
      - V(applied) applies the policy from O(layers), O(content) or O(src).
      - V(rolled_back) re-applies the kept policy of O(generation) (default the one before the live
        one); O(src), O(content) and O(layers) are ignored.
    type: str
    choices: [applied, rolled_back]
    default: applied
  generation:
    description: With O(state=rolled_back), the kept generation to go back to (C(etsfctl policy history)).
    type: int
  dest:
    description:
      - With O(state=rolled_back), also write the re-applied policy to this file (normally the
        policy file C(etsf-restore.service) re-applies at boot), so a reboot keeps the rollback.
      - A file that already holds the same policy (compared after validation) is left as it is.
    type: path
  src:
    description: Policy file on the managed host (used when O(content) and O(layers) are not given).
    type: path
    default: /etc/etsf/policy.yml
  layers:
    description:
      - Policy layers deep-merged on the host by the agent, lowest first (instead of O(src) or
        O(content)); C(trust) and C(deny) are unions, every other value is replaced by the higher
        layer. An omitted layer is skipped.
    type: dict
    suboptions:
      defaults:
        description: Fleet-wide layer.
        type: dict
      group:
        description: Group layer.
        type: dict
      host:
        description: Host layer.
        type: dict
  history_keep:
    description: Applied policies the agent keeps for rollback (1..1000).
    type: int
    default: 10
  actor:
    description: Who made the change, recorded in the history and the audit log (default the remote user).
    type: str
  content:
    description:
      - The policy document as YAML text, instead of reading O(src). The role passes the rendered
        template here so that check mode compares the new policy, not the file still on the host.
    type: str
  pin_root:
    description: bpffs directory of the eTSF pins (maps under C(maps/)).
    type: path
    default: /sys/fs/bpf/etsf
"""

EXAMPLES = r"""
- name: Apply the SBC policy
  etsf.sip.policy:
    src: /etc/etsf/policy.yml
  register: etsf_policy_result

- name: Fleet defaults, group and host layers merged on the host
  etsf.sip.policy:
    layers:
      defaults: "{{ etsf_policy_defaults }}"
      group: "{{ etsf_policy_group | default({}) }}"
      host: "{{ etsf_policy | default({}) }}"

- name: Go back to the policy that was live before the current one (also in the boot-time file)
  etsf.sip.policy:
    state: rolled_back
    dest: /etc/etsf/policy.yml

- name: What would change (no write)
  etsf.sip.policy:
    src: /etc/etsf/policy.yml
  check_mode: true
  diff: true
"""

RETURN = r"""
generation:
  description: Policy generation live after the call (unchanged in check mode).
  returned: success
  type: int
  sample: 4
slot:
  description: Policy slot live after the call.
  returned: success
  type: int
  sample: 1
rollback_to:
  description: With O(state=rolled_back), the kept generation that was re-applied.
  returned: state is rolled_back
  type: int
  sample: 3
changes:
  description: Changed fields, each with C(path), C(old) and C(new).
  returned: success
  type: list
  elements: dict
  sample: [{"path": "rate_limits.register.rate", "old": 20, "new": 10}]
"""

import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.etsf.sip.plugins.module_utils.agent import agent_module, require_agent

yaml = agent_module("yaml")
etsf_policy = agent_module("etsf.policy")


def _text(doc):
    if doc is None:
        return ""
    doc = {k: v for k, v in doc.items() if k not in ("active_slot", "generation")}
    return yaml.safe_dump(doc, sort_keys=True, default_flow_style=False)


def _after(new, before):
    """The policy as it will be live: a policy without overload.level keeps the running level."""
    doc = new.to_dict()
    if doc["overload"]["level"] is None and before is not None:
        doc["overload"]["level"] = before["overload"]["level"]
    return doc


def _write_dest(module, dest, result):
    """Make dest hold the rolled-back document (atomically, the agent's own rule); True when it changes."""
    try:
        return etsf_policy.write_boot_file(dest, result["document"], result["rollback_to"], check=module.check_mode)
    except etsf_policy.PolicyError as exc:
        module.fail_json(msg=f"dest: {exc.message}")
    return False


def _load(module):
    """(Policy, YAML text, header) from layers, content or src."""
    params = module.params
    if params["layers"]:
        named = [(f"layers.{k}", params["layers"].get(k)) for k in ("defaults", "group", "host")]
        merged = etsf_policy.merge_layers(named)
        return (etsf_policy.validate(merged), yaml.safe_dump(merged, sort_keys=False),
                "merged layers (defaults < group < host)")
    if params["content"] is not None:
        text = params["content"]
        return etsf_policy.load_text(text), text, "new policy"
    src = params["src"]
    new, text = etsf_policy.load_file(src)
    return new, text, src


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["applied", "rolled_back"], default="applied"),
            generation=dict(type="int"),
            dest=dict(type="path"),
            src=dict(type="path", default="/etc/etsf/policy.yml"),
            content=dict(type="str"),
            layers=dict(type="dict", options=dict(defaults=dict(type="dict"), group=dict(type="dict"),
                                                  host=dict(type="dict"))),
            history_keep=dict(type="int", default=10),
            actor=dict(type="str"),
            pin_root=dict(type="path", default="/sys/fs/bpf/etsf"),
        ),
        mutually_exclusive=[("content", "layers")],
        supports_check_mode=True,
    )
    require_agent(module)
    params = module.params
    src, pin_root = params["src"], params["pin_root"]
    for opt in ("generation", "dest"):
        if params[opt] is not None and params["state"] != "rolled_back":
            module.fail_json(msg=f"{opt}: only with state=rolled_back")
    common = dict(pin_root=pin_root, check=module.check_mode, actor=params["actor"],
                  history_keep=params["history_keep"])
    try:
        before = etsf_policy.read_live(pin_root) if etsf_policy.maps_present(pin_root) else None
        if params["state"] == "rolled_back":
            result = etsf_policy.rollback(params["generation"], **common)
            new = etsf_policy.validate(result["document"])
            header = f"kept generation {result['rollback_to']}"
        else:
            new, text, header = _load(module)
            result = etsf_policy.apply(new, source_text=text, source=header, **common)
    except etsf_policy.PolicyError as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg=f"applying {src} failed: {exc}", exception=traceback.format_exc())
    out = dict(
        changed=bool(result["changed"]),
        generation=result.get("generation"),
        slot=result.get("slot"),
        changes=result.get("diff", []),
    )
    if "rollback_to" in result:
        out["rollback_to"] = result["rollback_to"]
        if params["dest"] and _write_dest(module, params["dest"], result):
            out["changed"] = True
    if module._diff:
        out["diff"] = dict(before=_text(before), after=_text(_after(new, before)), before_header="live policy (maps)",
                           after_header=header)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
