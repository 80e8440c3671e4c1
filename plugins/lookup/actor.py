# -*- coding: utf-8 -*-
# Copyright: eTSF developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""etsf.sip.actor: who runs the playbook, as eTSF's policy history and revert records name it."""

from __future__ import annotations

DOCUMENTATION = r"""
name: actor
short_description: Name the operator running this playbook for eTSF's records
version_added: 0.2.0
description:
  - Returns C(ansible (USER)), or C(ansible WHAT (USER)) with a term, for the policy history
    (C(etsfctl policy history)), the fail-safe audit and a held revert (C(etsfctl status)).
  - USER is the controller's first non-empty of C(SUDO_USER), C(USER), C(LOGNAME), else the
    effective user's name (the uid where it has none), so a run from cron, CI or a container
    without a login environment still names someone.
  - When the play sets C(etsf_change_ref) (the change ticket the run belongs to, e.g. CHG0042),
    it is appended. It must be 1 to 32 characters, each a letter, a digit or one of C(._:/-); anything
    else fails with one line naming it.
options:
  _terms:
    description: What the run does (one word, e.g. C(rollback)); optional.
    type: list
    elements: str
    required: false
"""

EXAMPLES = r"""
- name: Apply a policy, recorded as "ansible (alice)", or "ansible (alice) CHG0042" with -e etsf_change_ref=CHG0042
  etsf.sip.policy:
    src: /etc/etsf/policy.yml
    actor: "{{ lookup('etsf.sip.actor') }}"

- name: Revert, the held revert naming who did it
  ansible.builtin.command: /usr/local/bin/etsfctl revert --mode bypass
  environment:
    ETSF_ACTOR: "{{ lookup('etsf.sip.actor') }}"
"""

RETURN = r"""
_raw:
  description: One string, the actor.
  type: list
  elements: str
"""

import os
import pwd
import re

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

_REF = re.compile(r"[A-Za-z0-9._:/-]{1,32}")
_WORD = re.compile(r"[a-z][a-z0-9-]{0,15}")


def controller_user() -> str:
    for var in ("SUDO_USER", "USER", "LOGNAME"):
        who = os.environ.get(var, "").strip()
        if who:
            return who
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        what = [str(t) for t in terms or []]
        if len(what) > 1 or (what and not _WORD.fullmatch(what[0])):
            raise AnsibleLookupError(f"etsf.sip.actor: one lower-case word expected for what the run does, got {what}")
        actor = " ".join(["ansible", *what, f"({controller_user()})"])
        ref = (variables or {}).get("etsf_change_ref")
        if ref is not None:
            ref = self._templar.template(ref) if self._templar else ref
        if ref not in (None, ""):
            if not isinstance(ref, str) or not _REF.fullmatch(ref):
                raise AnsibleLookupError("etsf_change_ref: 1 to 32 characters of letters, digits and . _ : / - "
                                         f"expected (got {ref!r:.40})")
            actor += f" {ref}"
        return [actor]
