"""Fixtures for the lab tests: the real lab (systemd-nspawn hosts in netns), no mocks.

The module fixture brings sbc1..sbc3 up (idempotent: a fleet already running is reused) and
takes everything down at the end.  Hosts that were running before the tests (for instance a
demo fleet) are booted again afterwards (fresh), so a run leaves the lab as it found it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labhelpers import lab, preconditions, running_prefixes  # noqa: E402


@pytest.fixture(scope="module")
def lab_up():
    """Three SBC hosts (sbc1..sbc3) up; everything torn down at the end of the module."""
    preconditions()
    before = running_prefixes()
    first = lab("up", "--hosts", "3")
    try:
        yield first.stdout
    finally:
        lab("down", "--all", timeout=180, check=False)
        for prefix, count in sorted(before.items()):
            args = ["up", "--hosts", str(count)]
            lab(*args, *(["--prefix", prefix] if prefix else []), check=False)
