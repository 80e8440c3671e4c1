#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: eTSF developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: health
short_description: Health gate for an eTSF host (programs attached, counters moving, no unexpected drops)
version_added: 0.1.0
description:
  - Checks that C(xdp_sip) and C(tc_sip_egress) are attached to every interface, that the eTSF
    counters move during O(window) seconds, and that no packets were dropped for reasons other than
    the policy ones (O(allowed_drop_reasons)).
  - Optionally sends a bounded SIP OPTIONS probe (at most 5 per interface) to O(probe) so a quiet
    signalling segment still shows traffic.
  - Read-only; fails with one message listing every problem.
author:
  - eTSF developers (@etsf)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  interfaces:
    description: Interfaces that must carry eTSF.
    type: list
    elements: str
    required: true
  window:
    description: Observation window in seconds (at most 60).
    type: float
    default: 2.0
  probe:
    description: C(ADDRESS[:PORT]) to send SIP OPTIONS probes to from the host.
    type: str
  require_traffic:
    description: Fail when the counters do not move during the window.
    type: bool
    default: true
  allowed_drop_reasons:
    description: Drop reasons that are expected (policy at work).
    type: list
    elements: str
    default: [DENY, RATE_LIMIT, OVERLOAD]
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
requirements:
  - etsf-agent on the host
"""

EXAMPLES = r"""
- name: Gate the canary
  etsf.sip.health:
    interfaces: [sip0]
    window: 3
    probe: 198.18.1.202:5060
"""

RETURN = r"""
health:
  description: The health report (C(ok), C(problems), C(counters_moved), C(drops), C(interfaces)).
  returned: always
  type: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.etsf.sip.plugins.module_utils.agent import agent_module, require_agent

etsf_health = agent_module("etsf.health")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            interfaces=dict(type="list", elements="str", required=True),
            window=dict(type="float", default=2.0),
            probe=dict(type="str"),
            require_traffic=dict(type="bool", default=True),
            allowed_drop_reasons=dict(type="list", elements="str", default=["DENY", "RATE_LIMIT", "OVERLOAD"]),
        ),
        supports_check_mode=True,
    )
    require_agent(module)
    p = module.params
    try:
        report = etsf_health.check(p["interfaces"], p["window"], p["probe"],
                                   tuple(r.upper() for r in p["allowed_drop_reasons"]), p["require_traffic"])
    except etsf_health.HealthError as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg=f"health: {exc}", exception=traceback.format_exc())
    if not report["ok"]:
        module.fail_json(msg=report["message"], health=report)
    module.exit_json(changed=False, health=report)


if __name__ == "__main__":
    main()
