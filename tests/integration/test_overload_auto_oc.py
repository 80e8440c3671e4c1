"""`etsfctl overload auto` with overload.auto.rfc7339 against the REAL pinned etsf_ctl and a
REAL unread proxy socket (the fixtures of test_overload_auto): the controller sets
ETSF_CTL_F_OC and writes oc_reduction_pct = 100 x (1 - rate / max_rate), oc_validity_ms
(0 when nothing is shed) and an oc_seq that grows with every change and only then; with
rfc7339 disabled, or when the service is stopped (SIGTERM), the flag is cleared.  Ticks are
counted; nothing is timed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import SRC, etsfctl, read_pinned_ctl
# loaded, proxy_ns: fixtures
from test_overload_auto import AUTO, _audit, _auto, _policy, loaded, proxy_ns  # noqa: F401  pylint: disable=unused-import

from etsf import layout as L

VALIDITY = 2500


def _oc(c):
    return (bool(c.flags & L.CTL_F_OC), int(c.oc_reduction_pct), int(c.oc_validity_ms))


def test_controller_writes_the_advertisement(tmp_path, etsf_env, etsf_bpf, loaded, proxy_ns):
    root = etsf_env["ETSF_PIN_ROOT"]
    ns, cmd = proxy_ns
    policy = _policy(tmp_path, rfc7339={"enabled": True, "validity_ms": VALIDITY})
    t0 = int(time.time() * 1000)

    idle = _auto(etsf_env, ns, policy, "--once")["last"]
    assert (idle["level"], idle["rate"]) == (0, 0)
    c = read_pinned_ctl(etsf_bpf, root)
    assert _oc(c) == (True, 0, 0)                      # on, nothing shed: oc=0, oc-validity=0
    seq0 = int(c.oc_seq)
    assert seq0 >= t0                                  # wall-clock milliseconds
    assert idle["rfc7339"] == {"enabled": True, "reduction_pct": 0, "validity_ms": 0, "seq": seq0}

    assert cmd("fill 60") == "filled"
    hist = _auto(etsf_env, ns, policy, "--count", "3")["history"]
    rate = hist[-1]["rate"]
    assert 0 < rate < AUTO["max_rate"]
    want = round(100 * (1 - rate / AUTO["max_rate"]))
    c = read_pinned_ctl(etsf_bpf, root)
    assert _oc(c) == (True, want, VALIDITY) and want > 0
    seqs = [h["rfc7339"]["seq"] for h in hist]
    # engaging at max_rate is reduction 0 again (no change); the two cuts bump the sequence
    assert seqs[0] == seq0 and seq0 < seqs[1] < seqs[2] == int(c.oc_seq)
    audit = [a for a in _audit(etsf_env) if a["event"].startswith("overload")]
    assert [a["numbers"]["oc_reduction_pct"] for a in audit] == [h["rfc7339"]["reduction_pct"] for h in hist]
    st = json.loads(etsfctl("status", "--json", env=etsf_env).stdout)
    assert st["ctl"]["rfc7339"] == {"enabled": True, "reduction_pct": want, "validity_ms": VALIDITY,
                                    "seq": int(c.oc_seq)}
    text = etsfctl("status", env=etsf_env).stdout
    assert f"RFC 7339 to oc clients: oc={want} oc-validity={VALIDITY} ms oc-seq={int(c.oc_seq) // 1000}." in text

    assert cmd("drain").startswith("drained")
    hist = _auto(etsf_env, ns, policy, "--count", "12")["history"]
    assert hist[-1]["rate"] == 0
    c = read_pinned_ctl(etsf_bpf, root)
    assert _oc(c) == (True, 0, 0) and int(c.oc_seq) > seqs[2]
    seq_end = int(c.oc_seq)
    _auto(etsf_env, ns, policy, "--count", "2")         # nothing changes: the sequence holds
    assert (_oc(read_pinned_ctl(etsf_bpf, root)), int(read_pinned_ctl(etsf_bpf, root).oc_seq)) == \
        ((True, 0, 0), seq_end)

    off = _policy(tmp_path, "off.yml", rfc7339={"enabled": False, "validity_ms": VALIDITY})
    last = _auto(etsf_env, ns, off, "--once")["last"]
    assert "rfc7339" not in last
    c = read_pinned_ctl(etsf_bpf, root)
    assert _oc(c) == (False, 0, 0) and int(c.oc_seq) == seq_end
    assert "RFC 7339" not in etsfctl("status", env=etsf_env).stdout


def test_stopped_service_clears_the_flag(tmp_path, etsf_env, etsf_bpf, loaded, proxy_ns):
    root = etsf_env["ETSF_PIN_ROOT"]
    ns, cmd = proxy_ns
    policy = _policy(tmp_path, rfc7339={"enabled": True, "validity_ms": VALIDITY}, interval_ms=50)
    assert cmd("fill 60") == "filled"
    hb = tmp_path / "hb"
    env = dict(os.environ, PYTHONPATH=str(SRC), **etsf_env)
    proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-m", "etsf", "overload",
                             "auto", "--policy", policy, "--heartbeat-file", str(hb)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _unused in range(600):                      # bounded: until the first cut is written
            if read_pinned_ctl(etsf_bpf, root).oc_reduction_pct > 0:
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        assert _oc(read_pinned_ctl(etsf_bpf, root))[:1] == (True,)
        assert read_pinned_ctl(etsf_bpf, root).oc_reduction_pct > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    c = read_pinned_ctl(etsf_bpf, root)
    assert not c.flags & L.CTL_F_OC and c.overload_level > 0     # the level stays, the advert goes
    # stopped on purpose: the fail-safe's heartbeat rule does not call the controller stale
    assert json.loads(hb.read_text())["stopped"] is True
