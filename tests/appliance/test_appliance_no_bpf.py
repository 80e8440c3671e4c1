"""The appliance on a machine eTSF cannot run on: the same root filesystem booted under
systemd-nspawn's default system call filter, which refuses bpf(2).

First boot must fail preflight and say why (stamp, /var/lib/etsf/disabled, one console line),
attach nothing, leave the eTSF units skipped by their condition, and the box must still boot
and serve SIP on the standard path: a sipp call UAC -> box (Kamailio) -> UAS succeeds.
"""
from __future__ import annotations

import subprocess
import time

import pytest

from conftest import booted_box, sipp_calls_through_box, wait_active
from lab import appliance as apl

CALLS = 5


@pytest.fixture(scope="module")
def box_no_bpf(appliance):
    with booted_box(appliance, allow_bpf=False) as booted:
        yield booted


def test_firstboot_fails_preflight_and_says_why(box_no_bpf):
    fb = box_no_bpf.firstboot
    assert fb["result"] == "failed", fb
    assert not fb["preflight"]["ok"]
    assert fb["reason"].startswith("preflight failed: ") and "bpf(2) refused: Operation not permitted" in fb["reason"], \
        fb["reason"]
    assert "program type" not in fb["reason"]          # one cause, not every feature the probe cannot see
    disabled = (box_no_bpf.root / "var/lib/etsf/disabled").read_text()
    assert disabled.strip() == fb["reason"]
    line = f"etsf-firstboot: {fb['reason']}; serving SIP on the standard path"
    assert fb["line"] == line
    deadline = time.monotonic() + 10
    while "serving SIP on the standard path" not in box_no_bpf.console_log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "first-boot line not on the console"
        time.sleep(0.5)


def test_etsf_units_skipped_nothing_attached(box_no_bpf):
    for unit in ("etsf-restore.service", "etsf-exporter.service", "etsf-failsafe.service", "etsf-overload.service",
                 "etsf-keepalive.service"):
        res = box_no_bpf.sh(["systemctl", "show", "-p", "ConditionResult", "-p", "ActiveState", unit]).stdout
        assert "ConditionResult=no" in res and "ActiveState=inactive" in res, (unit, res)
    assert box_no_bpf.system_state == "running", box_no_bpf.system_state      # nothing failed
    link = subprocess.run(["ip", "-n", apl.BOX, "-d", "link", "show", "dev", "sip0"], capture_output=True,
                          text=True, check=True).stdout
    assert "prog/xdp" not in link, link


def test_box_still_serves_sip_on_the_standard_path(box_no_bpf, tmp_path):
    st = wait_active(box_no_bpf, ["kamailio.service"])
    assert st == {"kamailio.service": "active"}, st
    row, rc, log = sipp_calls_through_box(tmp_path, CALLS)
    assert rc == 0 and row["SuccessfulCall(C)"] == CALLS and row["FailedCall(C)"] == 0, (rc, row, log[-1500:])
