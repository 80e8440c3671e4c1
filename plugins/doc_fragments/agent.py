# -*- coding: utf-8 -*-
# Copyright: eTSF developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The modules that change what the kernel runs (datapath, policy): full check and diff mode,
    # on hosts where the datapath role installed the agent.
    DOCUMENTATION = r"""
options: {}
author:
  - eTSF developers (@etsf)
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
requirements:
  - etsf-agent (installed on the host by the C(etsf.sip.datapath) role)
"""
