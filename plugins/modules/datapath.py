#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: eTSF developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: datapath
short_description: Build, attach, replace or detach the eTSF SIP eBPF programs on a host
version_added: 0.1.0
description:
  - Compiles the eTSF objects against the host's own BTF (skipped when sources and BTF are
    unchanged), then attaches the classifier on the hook O(hook) names (XDP, or TC ingress) and the
    TC egress marker to each of O(interfaces). Programs already attached from an older build are
    replaced atomically; pinned maps and their state (counters, rate-limit buckets, policy) are kept.
  - A hook change switches in place (action C(switch)); the new hook is attached before the old one
    is removed, so no packet passes unclassified.
  - With O(state=attached), interfaces that eTSF manages but that are no longer listed are detached.
  - Check mode reports what would be built, attached, replaced and detached; diff mode shows the
    per-interface programs before and after.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - etsf.sip.agent
options:
  interfaces:
    description: Interfaces to attach to (or detach from, with O(state=detached)).
    type: list
    elements: str
    required: true
  hook:
    description:
      - Where SIP is classified. V(auto) decides per interface by driver, as C(etsfctl preflight)
        reports it; V(xdp) on a NIC whose driver runs XDP natively (drops before an skb exists),
        V(tc) (TC ingress) on veth, bridges and other virtual interfaces, where native XDP copies
        every skb. V(xdp) and V(tc) force the hook.
    type: str
    choices: [auto, xdp, tc]
    default: auto
  mode:
    description: XDP attach mode, when the hook is xdp.
    type: str
    choices: [native, generic]
    default: native
  tc_api:
    description:
      - How the TC programs (TC ingress on the tc hook, TC egress on both) are attached. V(clsact)
        puts them into clsact filters; V(tcx) runs them on tcx links (kernel 6.6 or later), without
        the qdisc and classifier layers around them, pinned under the pin root. A change switches
        in place (action C(switch)), the new attachment before the old one goes.
      - V(auto) takes V(tcx) per interface where the kernel has tcx links and no other BPF program
        sits in a clsact filter on the interface (it would stop running behind a tcx link), else
        V(clsact).
    type: str
    choices: [auto, clsact, tcx]
    default: auto
  state:
    description: Whether the programs should be attached or detached.
    type: str
    choices: [attached, detached]
    default: attached
  fastpath_interfaces:
    description:
      - Interfaces that get the fast-path program (TC ingress, C(tc_fastpath)) which steers SIP for the
        policy's C(services) straight to proxy backends; normally the uplink and the host side of each
        backend's veth. Empty = no fast path.
    type: list
    elements: str
    default: []
  src_dir:
    description: eBPF sources on the host.
    type: path
    default: /usr/share/etsf/bpf
  build_dir:
    description: Where the objects are built.
    type: path
    default: /var/lib/etsf/build
  btf:
    description: Kernel BTF to build against.
    type: path
    default: /sys/kernel/btf/vmlinux
  prebuilt:
    description:
      - The objects in O(build_dir) were built elsewhere (on the controller, C(datapath_build=controller))
        and pushed; the host compiles nothing and needs no compiler.
      - Objects whose manifest (C(build.json)) names another map layout or architecture, or that need
        kernel BTF the host lacks, are refused with one line before anything changes.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Attach eTSF to the signalling interface
  etsf.sip.datapath:
    interfaces: [sip0]
    mode: native

- name: Classify at TC ingress on a bridge port whatever its driver
  etsf.sip.datapath:
    interfaces: [br-sip]
    hook: tc

- name: Run the TC programs on tcx links (kernel 6.6 or later)
  etsf.sip.datapath:
    interfaces: [sip0]
    tc_api: tcx

- name: Take eTSF off an interface
  etsf.sip.datapath:
    interfaces: [sip0]
    state: detached
"""

RETURN = r"""
actions:
  description: Per interface, what was (or in check mode would be) done.
  returned: success
  type: dict
  sample: {"sip0": "attach", "sip1": "unchanged", "eth1": "switch"}
fastpath_actions:
  description: Per fast-path interface, what was (or would be) done.
  returned: success
  type: dict
  sample: {"uplink0": "attach"}
built:
  description: Whether the objects were (or would be) rebuilt.
  returned: success
  type: bool
interfaces:
  description: Per interface after the call, the hook, XDP and TC program names and mode.
  returned: success
  type: dict
"""

import os
import socket
import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.etsf.sip.plugins.module_utils.agent import agent_module, require_agent

etsf_build = agent_module("etsf.build")
etsf_datapath = agent_module("etsf.datapath")
etsf_held = agent_module("etsf.datapath.held")
etsf_fastpath = agent_module("etsf.fastpath")


def _built_stamp(build_dir):
    try:
        with open(os.path.join(build_dir, etsf_build.STAMP_FILE), encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _view(rows):
    """The part of status() a diff shows, per interface."""
    return {
        name: {
            "attached": bool(row.get("attached")),
            "hook": row.get("hook"),
            "xdp_prog": row.get("xdp_prog_name"),
            "xdp_mode": row.get("xdp_mode"),
            "tc_egress_prog": row.get("tc_prog_name"),
            "tc_api": row.get("tc_api"),
            "build": (row.get("stamp") or "")[:12] or None,
        }
        for name, row in sorted(rows.items())
    }


def plan(params, current, managed, new_stamp, hooks, apis):
    """What to do per interface: attach, switch (hook or TC API), replace, reattach, detach or
    unchanged.  hooks: {interface: the hook it gets (xdp|tc)}; apis: {interface: the TC API it
    gets (clsact|tcx)}."""
    actions = {}
    wanted = params["interfaces"]
    if params["state"] == "attached":
        for iface in wanted:
            row = current.get(iface, {})
            if not row.get("attached"):
                actions[iface] = "attach"
            elif row.get("hook") != hooks[iface] or \
                    (row.get("tc_api") or "clsact") != apis[iface]:
                actions[iface] = "switch"
            elif hooks[iface] == "xdp" and row.get("xdp_mode") != params["mode"]:
                actions[iface] = "reattach"
            elif managed.get(iface, {}).get("stamp") != new_stamp:
                actions[iface] = "replace"
            else:
                actions[iface] = "unchanged"
        for iface in managed:
            if iface not in wanted:
                actions[iface] = "detach" if current.get(iface, {}).get("attached") else "forget"
    else:
        for iface in wanted:
            actions[iface] = "detach" if current.get(iface, {}).get("attached") else "unchanged"
    return actions


def main():
    module = AnsibleModule(
        argument_spec=dict(
            interfaces=dict(type="list", elements="str", required=True),
            hook=dict(type="str", choices=["auto", "xdp", "tc"], default="auto"),
            mode=dict(type="str", choices=["native", "generic"], default="native"),
            tc_api=dict(type="str", choices=["auto", "clsact", "tcx"], default="auto"),
            state=dict(type="str", choices=["attached", "detached"], default="attached"),
            fastpath_interfaces=dict(type="list", elements="str", default=[]),
            src_dir=dict(type="path", default="/usr/share/etsf/bpf"),
            build_dir=dict(type="path", default="/var/lib/etsf/build"),
            btf=dict(type="path", default="/sys/kernel/btf/vmlinux"),
            prebuilt=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    require_agent(module)
    p = module.params
    for iface in p["interfaces"] + p["fastpath_interfaces"]:
        try:
            socket.if_nametoindex(iface)     # this network namespace's, which /sys may not show
        except OSError:
            module.fail_json(msg=f"interfaces: {iface} does not exist on this host")
    try:
        if p["prebuilt"]:
            need_build = False
            new_stamp = _built_stamp(p["build_dir"])
            if p["state"] == "attached":
                # refuse objects of another layout/arch before anything is detached or replaced
                etsf_build.check_manifest(p["build_dir"], btf=p["btf"])
        else:
            new_stamp = etsf_build.compute_stamp(etsf_build.Path(p["src_dir"]), p["btf"])
            need_build = p["state"] == "attached" and not etsf_build.is_current(p["build_dir"], new_stamp)
        managed = etsf_datapath.load_state().get("interfaces", {})
        current = {name: dict(row, stamp=managed.get(name, {}).get("stamp"))
                   for name, row in etsf_datapath.interface_status(list(p["interfaces"]) + list(managed)).items()}
        hooks = ({iface: etsf_datapath.hooks.resolve(iface, p["hook"])[0] for iface in p["interfaces"]}
                 if p["state"] == "attached" else {})
        apis = ({iface: etsf_datapath.hooks.resolve_tc_api(iface, p["tc_api"])[0] for iface in p["interfaces"]}
                if p["state"] == "attached" else {})
        actions = plan(p, current, managed, new_stamp, hooks, apis)
        fp_rows = etsf_fastpath.status()["interfaces"]
        fp_actions = {}
        for iface in p["fastpath_interfaces"]:
            attached = fp_rows.get(iface, {}).get("attached")
            if p["state"] == "detached":
                fp_actions[iface] = "detach" if attached else "unchanged"
            else:
                fp_actions[iface] = "attach" if not attached or need_build else "unchanged"
        # attaching ends an operator's held detach (etsfctl revert --mode detach): a reboot attaches again
        held_detach = p["state"] == "attached" and (etsf_held.read() or {}).get("mode") == "detach"
        changed = need_build or held_detach or any(a != "unchanged"
                                                   for a in list(actions.values()) + list(fp_actions.values()))
        if changed and not module.check_mode:
            if need_build:
                etsf_datapath.build(out_dir=p["build_dir"], src_dir=p["src_dir"])
            for iface, action in actions.items():
                if action in ("detach", "reattach"):
                    etsf_datapath.detach(iface)
                if action in ("attach", "switch", "reattach", "replace"):
                    # the requested hook (auto decides again, the same way): the state then
                    # records what was asked for and the driver's reason, as `etsfctl attach` does
                    etsf_datapath.attach(iface, mode=p["mode"] if hooks[iface] == "xdp" else None,
                                         build_dir=p["build_dir"], hook=p["hook"], tc_api=p["tc_api"])
                if action == "forget":
                    etsf_datapath.forget(iface)
            to_attach = [i for i, a in fp_actions.items() if a == "attach"]
            to_detach = [i for i, a in fp_actions.items() if a == "detach"]
            if to_attach:
                etsf_fastpath.attach(to_attach, build_dir=p["build_dir"])
            if to_detach:
                etsf_fastpath.detach(to_detach)
            if held_detach:
                etsf_held.release("detach")
        after_rows = etsf_datapath.interface_status(list(actions)) if not module.check_mode else None
    except (etsf_datapath.DatapathError, etsf_build.BuildError, etsf_fastpath.FastpathError) as exc:
        module.fail_json(msg=str(exc).splitlines()[0])
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg=f"datapath: {exc}", exception=traceback.format_exc())

    before = _view({k: v for k, v in current.items() if k in actions})
    if after_rows is None:
        after = {}
        for iface, action in actions.items():
            if action in ("detach", "forget"):
                after[iface] = dict(attached=False, hook=None, xdp_prog=None, xdp_mode=None, tc_egress_prog=None,
                                    tc_api=None, build=None)
            elif action == "unchanged":
                after[iface] = before[iface]
            else:
                xdp = hooks[iface] == "xdp"
                after[iface] = dict(attached=True, hook=hooks[iface], xdp_prog=etsf_datapath.XDP_PROG if xdp else None,
                                    xdp_mode=p["mode"] if xdp else None, tc_egress_prog=etsf_datapath.TC_PROG,
                                    tc_api=apis[iface], build=(new_stamp or "")[:12] or None)
    else:
        state = etsf_datapath.load_state().get("interfaces", {})
        after = _view({k: dict(v, stamp=state.get(k, {}).get("stamp")) for k, v in after_rows.items()})
    result = dict(changed=changed, actions=actions, fastpath_actions=fp_actions, built=need_build, interfaces=after)
    if module._diff:
        result["diff"] = dict(before=before, after=after)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
