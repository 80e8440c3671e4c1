"""Fixtures for the lab tests: the real lab (systemd-nspawn hosts in netns), no mocks.

The module fixture first takes any lab down (a demo fleet, or hosts left over from an earlier
run, carry eTSF and installed packages: the tests need fresh hosts), brings sbc1..sbc3 up and
takes everything down at the end.  Hosts that were running before the tests are booted again
afterwards (fresh).
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
    lab("down", "--all", timeout=180, check=False)
    first = lab("up", "--hosts", "3")
    try:
        yield first.stdout
    finally:
        lab("down", "--all", timeout=180, check=False)
        for prefix, count in sorted(before.items()):
            args = ["up", "--hosts", str(count)]
            lab(*args, *(["--prefix", prefix] if prefix else []), check=False)
