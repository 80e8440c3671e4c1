#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: eTSF developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: preflight
short_description: Check that a host can run the eTSF SIP eBPF programs
version_added: 0.1.0
description:
  - Read-only checks of everything eTSF needs on an SBC host, returned as facts.
  - Distribution (when O(distributions) is given), kernel version, BTF at C(/sys/kernel/btf/vmlinux), bpffs mounted, BPF JIT enabled,
    required kernel config options (C(/proc/config.gz) or C(/boot/config-*)),
    C(bpftool feature probe) results for the program types, map types and helpers eTSF uses,
    per-interface XDP support (native or generic), foreign XDP/TC programs already attached to
    the target interfaces, and the memlock limit.
  - The module never fails because a requirement is unmet; it returns O(ignore:ok=false) and one
    C(message) that lists every unmet requirement, so the caller decides (the role asserts).
author:
  - eTSF developers (@etsf)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.facts
options:
  interfaces:
    description: Interfaces eTSF will attach to; each is checked for XDP mode and foreign programs, and
      reported with the hook C(auto) picks for it and why.
    type: list
    elements: str
    default: []
  min_kernel:
    description: Minimum kernel version.
    type: str
    default: "5.18"
  bpffs_path:
    description: Where bpffs must be mounted.
    type: path
    default: /sys/fs/bpf
  distributions:
    description:
      - Supported distributions, each C(distribution) (os-release C(ID), any case), C(version)
        (the major part of C(VERSION_ID)) and optionally C(release) (shown in the message).
      - When given, a host on any other distribution fails the C(distribution) check.
    type: list
    elements: dict
    default: []
  bpffs_mounted_first:
    description:
      - The caller mounts bpffs at O(bpffs_path) before it uses the host, so a missing mount is
        reported as a warning, not as an unmet requirement.
      - The role P(etsf.sip.preflight#role) sets it in check mode, where its configure step does
        not mount bpffs but a real run would, before these checks.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  facts:
    support: full
  platform:
    platforms: posix
notes:
  - Needs only the Python standard library on the host; C(bpftool) is used when present.
"""

EXAMPLES = r"""
- name: Check the SBC hosts
  etsf.sip.preflight:
    interfaces: [sip0]
    min_kernel: "5.18"
    distributions:
      - {distribution: Debian, version: "12", release: bookworm}
      - {distribution: Debian, version: "13", release: trixie}
  register: etsf_preflight

- name: Stop on any unmet requirement, listing all of them
  ansible.builtin.assert:
    that: etsf_preflight.ansible_facts.etsf_preflight.ok
    fail_msg: "{{ etsf_preflight.ansible_facts.etsf_preflight.message }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts set by this module.
  returned: always
  type: dict
  contains:
    etsf_preflight:
      description: The preflight report.
      type: dict
      returned: always
      contains:
        ok:
          description: Whether every blocking requirement is met.
          type: bool
          sample: true
        message:
          description: One line listing every unmet requirement, or C(all requirements met).
          type: str
          sample: "2 unmet requirement(s): bpffs not mounted at /sys/fs/bpf; interface sip1 does not exist"
        failed:
          description: Names of the failed blocking checks.
          type: list
          elements: str
        kernel:
          description: Running kernel release.
          type: str
        interfaces:
          description: Per interface, the XDP mode eTSF will use, the driver, foreign programs, the hook
            C(auto) picks (C(hook), xdp or tc) and why (C(reason)).
          type: dict
        checks:
          description: Every check with C(name), C(ok), C(severity) and C(detail).
          type: list
          elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.etsf.sip.plugins.module_utils.preflight import run


def main():
    module = AnsibleModule(
        argument_spec=dict(
            interfaces=dict(type="list", elements="str", default=[]),
            min_kernel=dict(type="str", default="5.18"),
            bpffs_path=dict(type="path", default="/sys/fs/bpf"),
            distributions=dict(type="list", elements="dict", default=[]),
            bpffs_mounted_first=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    for index, entry in enumerate(module.params["distributions"]):
        if not entry.get("distribution") or not entry.get("version"):
            module.fail_json(msg=f"distributions[{index}]: expected distribution and version (got {entry!r})")
    try:
        report = run(module.params["interfaces"], module.params["min_kernel"], module.params["bpffs_path"],
                     module.params["distributions"], bpffs_mounted_first=module.params["bpffs_mounted_first"])
    except ValueError as exc:
        module.fail_json(msg=f"min_kernel: {exc}")
    module.exit_json(changed=False, ansible_facts={"etsf_preflight": report})


if __name__ == "__main__":
    main()
