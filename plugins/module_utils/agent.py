# -*- coding: utf-8 -*-
# Copyright: eTSF developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Import the eTSF agent (the etsf-agent wheel on the managed host) for a module, so that a host
without it gets Ansible's usual "missing required library" failure instead of a traceback."""

from __future__ import annotations

import importlib
import traceback

from ansible.module_utils.basic import missing_required_lib


def agent_imports(*names):
    """The modules `names` (e.g. "etsf.policy") and None, or one None per name and the
    traceback of the failed import."""
    try:
        return [importlib.import_module(name) for name in names], None
    except ImportError:
        return [None] * len(names), traceback.format_exc()


def require_agent(module, import_error):
    """Fail the module run when agent_imports() could not import the agent."""
    if import_error is not None:
        module.fail_json(msg=missing_required_lib("etsf-agent"), exception=import_error)
