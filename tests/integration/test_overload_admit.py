"""`etsfctl overload admit` against the REAL pinned etsf_ctl: rate/burst/Retry-After/reply
written where the kernel reads them, the To-tag secret drawn once, `--off`, and bad input
refused with one line and nothing changed."""
from __future__ import annotations

import json
import os

import pytest

from conftest import etsfctl, read_pinned_ctl


@pytest.fixture
def loaded(etsf_env, etsf_bpf, build_dir):
    progs = etsf_bpf.load_object(os.path.join(build_dir, "xdp_sip.bpf.o"), etsf_env["ETSF_PIN_ROOT"])
    yield progs
    for p in progs.values():
        p.close()


def test_admit_set_and_off(etsf_env, etsf_bpf, loaded):
    from etsf import layout
    root = etsf_env["ETSF_PIN_ROOT"]
    out = json.loads(etsfctl("overload", "admit", "--rate", "200", "--burst", "20",
                             "--retry-after", "7", "--json", env=etsf_env).stdout)
    assert out["admission"] == {"rate": 200, "burst": 20, "retry_after_s": 7, "reply_503": True}
    c = read_pinned_ctl(etsf_bpf, root)
    assert (c.invite_admit_rate, c.invite_admit_burst, c.retry_after_s) == (200, 20, 7)
    secret = c.node_secret
    assert secret != 0 and not c.flags & layout.CTL_F_ADMIT_SILENT
    etsfctl("overload", "admit", "--rate", "50", "--silent", env=etsf_env)
    c = read_pinned_ctl(etsf_bpf, root)
    assert (c.invite_admit_rate, c.invite_admit_burst, c.retry_after_s) == (50, 50, 7)
    assert c.node_secret == secret and c.flags & layout.CTL_F_ADMIT_SILENT
    r = etsfctl("overload", "admit", "--off", env=etsf_env)
    assert "admission of new INVITEs off" in r.stdout
    c = read_pinned_ctl(etsf_bpf, root)
    assert (c.invite_admit_rate, c.invite_admit_burst, c.node_secret) == (0, 0, secret)
    st = json.loads(etsfctl("status", "--json", env=etsf_env).stdout)
    assert st["ctl"]["admission"] == {"rate": 0, "burst": 0, "retry_after_s": 7, "reply_503": False}


def test_admit_off_with_burst_refused(etsf_env, etsf_bpf, loaded):
    root = etsf_env["ETSF_PIN_ROOT"]
    before = bytes(read_pinned_ctl(etsf_bpf, root))
    r = etsfctl("overload", "admit", "--off", "--burst", "3", env=etsf_env, check=False)
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "--burst" in r.stderr
    assert bytes(read_pinned_ctl(etsf_bpf, root)) == before


@pytest.mark.parametrize("args", [["--rate", "0"], ["--rate", "x"], ["--burst", "3"],
                                  ["--rate", "5", "--off"], ["--rate", "5", "--burst", "-1"],
                                  ["--rate", "5", "--retry-after", "86401"],
                                  ["--rate", "5", "--reply", "--silent"]])
def test_admit_bad_input_changes_nothing(etsf_env, etsf_bpf, loaded, args):
    root = etsf_env["ETSF_PIN_ROOT"]
    before = bytes(read_pinned_ctl(etsf_bpf, root))
    r = etsfctl("overload", "admit", *args, env=etsf_env, check=False)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert bytes(read_pinned_ctl(etsf_bpf, root)) == before
