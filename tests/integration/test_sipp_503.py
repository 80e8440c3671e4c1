"""Admission control with real peers: eTSF attached on the UAS veth, `etsfctl overload admit`
admitting no new INVITE.  sipp UACs get the in-kernel 503 (sipp's parser accepts it, the
scenario checks Retry-After and the top Via's received), ACK it and stop retransmitting; the
sipp UAS behind eTSF never sees an INVITE; eTSF's counters agree with sipp's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import SCENARIOS, UAC_IP, UAS_IP, etsfctl
from test_sipp_traffic import POLICY, SIP_PORT, _counts, _delta, _sipp, _snapshot, _stat, attached  # noqa: F401  pylint: disable=unused-import


def _admit(etsf_env, lab, *args):
    return json.loads(etsfctl("overload", "admit", *args, "--json", env=etsf_env, netns=lab.srv_ns).stdout)


@pytest.fixture
def peer_napi(lab, build_dir):
    """A veth delivers XDP_TX frames only to a peer running NAPI, i.e. with an XDP program:
    the count-only baseline program (XDP_PASS) on the UAC side."""
    obj = os.path.join(build_dir, "xdp_count.bpf.o")
    subprocess.run(["ip", "-n", lab.cli_ns, "link", "set", "dev", lab.cli_if, "xdp", "obj", obj, "sec", "xdp"],
                   check=True, capture_output=True)
    yield
    subprocess.run(["ip", "-n", lab.cli_ns, "link", "set", "dev", lab.cli_if, "xdp", "off"],
                   check=False, capture_output=True)


def test_refused_invites_answered_503(lab, attached, peer_napi, etsf_env, tmp_path):  # noqa: F811
    _refuse_all(lab, etsf_env, tmp_path, "XDP")


@pytest.fixture
def attached_tc(lab, etsf_env, tmp_path):
    """The classifier on the UAS veth's TC ingress (the default hook on a veth)."""
    r = json.loads(etsfctl("attach", "--iface", lab.srv_if, "--json", env=etsf_env, netns=lab.srv_ns).stdout)
    assert r["hook"] == "tc", r
    pol = tmp_path / "policy.yml"
    pol.write_text(POLICY)
    etsfctl("policy", "apply", str(pol), env=etsf_env)
    yield r
    etsfctl("detach", "--iface", lab.srv_if, env=etsf_env, netns=lab.srv_ns, check=False)


def test_refused_invites_answered_503_at_tc_ingress(lab, attached_tc, etsf_env, tmp_path):
    """The same with the TC hook: the 503 leaves through the interface's egress, where
    tc_sip_egress lets eTSF's own answer go uncounted (its 503s must not feed the overload
    controller's 5xx signal)."""
    before = _snapshot()
    _refuse_all(lab, etsf_env, tmp_path, "TC_INGRESS")
    egress = _delta(before, _snapshot(), "TC_EGRESS")
    assert "RESPONSE" not in egress, egress


def _refuse_all(lab, etsf_env, tmp_path, hook):
    from etsf import datapath
    calls, rate = 20, 10
    out = _admit(etsf_env, lab, "--rate", "1", "--burst", "0", "--retry-after", "5")
    assert out["admission"] == {"rate": 1, "burst": 0, "retry_after_s": 5, "reply_503": True}
    adm0 = datapath.admission_counters()
    before = _snapshot()
    uas_dir, uac_dir = tmp_path / "uas", tmp_path / "uac"
    uas_dir.mkdir()
    uac_dir.mkdir()
    shutil.copy(SCENARIOS / "uac_invite_503.xml", uac_dir / "uac_invite_503.xml")
    uas = lab.popen(lab.srv_ns, _sipp("-sn", "uas", "-i", UAS_IP, "-p", str(SIP_PORT),
                                      "-stf", "uas_stat.csv", "-timeout", "20s"),
                    cwd=uas_dir, log=uas_dir / "sipp.log")
    time.sleep(0.5)
    uac = lab.popen(lab.cli_ns, _sipp("-sf", "uac_invite_503.xml", f"{UAS_IP}:{SIP_PORT}", "-i", UAC_IP,
                                      "-p", "5070", "-m", str(calls), "-r", str(rate),
                                      "-max_retrans", "3", "-timeout", "30s", "-stf", "uac_stat.csv"),
                    cwd=uac_dir, log=uac_dir / "sipp.log")
    rc_uac = lab.stop(uac, timeout=60)
    # every transaction has ended: stop the UAS (it writes its counts on the way out) rather
    # than wait out its -timeout
    lab.stop(uas, timeout=30, sig=signal.SIGTERM)
    after = _snapshot()
    adm = {k: v - adm0[k] for k, v in datapath.admission_counters().items()}
    _admit(etsf_env, lab, "--off")

    assert rc_uac == 0, (uac_dir / "sipp.log").read_text()[-2000:]
    st = _stat(uac_dir, "uac_stat.csv")
    assert st["SuccessfulCall(C)"] == calls and st["FailedCall(C)"] == 0, st
    uacc = _counts(uac_dir, "uac_invite_503")
    assert uacc.get(("INVITE", "Sent")) == calls and uacc.get(("INVITE", "Retrans"), 0) == 0, uacc
    assert uacc.get(("503", "Recv")) == calls and uacc.get(("ACK", "Sent")) == calls, uacc
    uasc = _counts(uas_dir, "uas")
    assert uasc.get(("INVITE", "Recv"), 0) == 0, uasc            # nothing refused got through
    xdp = _delta(before, after, hook)
    assert xdp["INVITE"] == {"DROP/ADMIT_503": calls, "total": calls}, xdp
    # the ACK of each in-kernel 503 stops at eTSF: the UAS never saw the transaction
    assert xdp["ACK"] == {"DROP/ADMIT_ACK": calls, "total": calls}, xdp
    assert uasc.get(("ACK", "Recv"), 0) == 0, uasc
    assert (adm["rejected"], adm["replied"], adm["admitted"], adm["reply_unfit"]) == (calls, calls, 0, 0), adm
