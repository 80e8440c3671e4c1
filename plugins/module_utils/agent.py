# -*- coding: utf-8 -*-
# Copyright: eTSF developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Import the eTSF agent (the etsf-agent wheel on the managed host) for a module, so that a host
without it gets Ansible's usual "missing required library" failure instead of a traceback."""

from __future__ import annotations

import importlib
import traceback

from ansible.module_utils.basic import missing_required_lib

# tracebacks of the imports that failed in this module run
_IMPORT_ERRORS = []


def agent_module(name):
    """The module `name` (e.g. "etsf.policy"), or None when it cannot be imported."""
    try:
        return importlib.import_module(name)
    except ImportError:
        _IMPORT_ERRORS.append(traceback.format_exc())
        return None


def require_agent(module):
    """Fail the module run when an agent_module() import failed."""
    if _IMPORT_ERRORS:
        module.fail_json(msg=missing_required_lib("etsf-agent"), exception=_IMPORT_ERRORS[0])
