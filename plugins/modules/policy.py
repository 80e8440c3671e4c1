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
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - etsf.sip.agent
options:
  src:
    description: Policy file on the managed host (used when O(content) is not given).
    type: path
    default: /etc/etsf/policy.yml
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


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path", default="/etc/etsf/policy.yml"),
            content=dict(type="str"),
            pin_root=dict(type="path", default="/sys/fs/bpf/etsf"),
        ),
        supports_check_mode=True,
    )
    require_agent(module)
    src, pin_root = module.params["src"], module.params["pin_root"]
    try:
        if module.params["content"] is not None:
            text = module.params["content"]
            new = etsf_policy.load_text(text)
        else:
            new, text = etsf_policy.load_file(src)
        before = etsf_policy.read_live(pin_root) if etsf_policy.maps_present(pin_root) else None
        result = etsf_policy.apply(new, pin_root=pin_root, check=module.check_mode, source_text=text)
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
    if module._diff:
        out["diff"] = dict(before=_text(before), after=_text(_after(new, before)),
                           before_header="live policy (maps)",
                           after_header="new policy" if module.params["content"] is not None else src)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
