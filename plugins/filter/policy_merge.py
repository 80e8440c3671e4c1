# -*- coding: utf-8 -*-
# Copyright: eTSF developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""etsf.sip.policy_merge: deep-merge policy layers on the controller with the agent's own rules."""

from __future__ import annotations

DOCUMENTATION = r"""
name: policy_merge
short_description: Deep-merge eTSF policy layers (fleet defaults, group, host)
version_added: 0.2.0
description:
  - Merges a list of policy documents, lowest layer first, with the agent's merge rules
    (C(etsfctl policy apply --defaults F --group F FILE) uses the same code).
  - Mappings merge key by key; C(trust) and C(deny) are unions (entries of every layer kept, each
    once, in layer order); every other value, lists included, is replaced by the higher layer.
  - An empty or undefined layer is skipped; a layer that is not a mapping fails with one line
    naming it.
positional: names
options:
  _input:
    description: The layers, lowest first.
    type: list
    elements: raw
    required: true
  names:
    description: A name per layer, used in error messages.
    type: list
    elements: str
"""

EXAMPLES = r"""
policy_document: >-
  {{ [etsf_policy_defaults | default({}), etsf_policy_group | default({}), etsf_policy | default({})]
     | etsf.sip.policy_merge(['etsf_policy_defaults', 'etsf_policy_group', 'etsf_policy']) }}
"""

RETURN = r"""
_value:
  description: The merged policy document (validated later by the agent, not here).
  type: dict
"""

import importlib.util
import os

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.collections import is_sequence

# The agent's layers.py ships in the collection (src/ is the agent's source tree); it imports
# only the standard library, so it is loaded by path rather than copied.
_LAYERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "etsf", "policy", "layers.py")
_MOD = None


def _layers():
    global _MOD  # pylint: disable=global-statement
    if _MOD is None:
        spec = importlib.util.spec_from_file_location("etsf_sip_policy_layers", _LAYERS)
        if spec is None or spec.loader is None:
            raise AnsibleFilterError(f"policy_merge: cannot load {_LAYERS}")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _MOD = mod
    return _MOD


def _plain(v):
    """Ansible's lazy/tagged containers as plain dicts and lists."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if is_sequence(v):
        return [_plain(x) for x in v]
    return v


def policy_merge(layers, names=None):
    if not is_sequence(layers):
        raise AnsibleFilterError("policy_merge: expects a list of policy layers")
    layers = [_plain(x) for x in layers]
    names = list(names or [])
    names += [f"layer {i + 1}" for i in range(len(names), len(layers))]
    mod = _layers()
    try:
        return mod.merge_layers(zip(names, layers))
    except mod.PolicyError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    """eTSF policy filters."""

    def filters(self):
        return {"policy_merge": policy_merge}
