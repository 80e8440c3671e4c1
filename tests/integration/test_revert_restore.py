"""etsfctl revert (bypass, detach), restore (boot-time re-attach + policy) and the health gate,
on a real veth with the real objects."""

from __future__ import annotations

import json
import subprocess

from conftest import UAC_IP, UAS_IP, etsfctl

from test_datapath_lifecycle import _send_sip, _xdp_count

POLICY = """version: 1
rate_limits:
  register: {rate: 5, burst: 5}
deny: [198.18.250.0/24]
"""


def _status(env, lab):
    return json.loads(etsfctl("status", "--json", env=env, netns=lab.srv_ns).stdout)


def test_revert_bypass_then_detach_then_restore(lab, etsf_env, tmp_path):
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    config = tmp_path / "datapath.yml"
    config.write_text(f"version: 1\nhook: xdp\nmode: native\ninterfaces: [{lab.srv_if}]\n"
                      f"build_dir: {etsf_env['ETSF_BUILD_DIR']}\npolicy: {policy}\n")

    # restore from nothing attaches and applies the policy
    out = json.loads(etsfctl("restore", "--config", str(config), "--json", env=etsf_env, netns=lab.srv_ns).stdout)
    assert list(out["attached"]) == [lab.srv_if] and out["policy_generation"] == 1
    st = _status(etsf_env, lab)
    assert st["interfaces"][lab.srv_if]["attached"] and st["policy_generation"] == 1 and not st["bypass"]

    # revert --mode bypass: programs stay, everything passes with reason BYPASS
    r = json.loads(etsfctl("revert", "--mode", "bypass", "--json", env=etsf_env, netns=lab.srv_ns).stdout)
    assert r["changed"] and r["bypass"]
    before = _xdp_count("UNKNOWN", "PASS", "BYPASS")
    _send_sip(lab, 4)
    assert _xdp_count("UNKNOWN", "PASS", "BYPASS") - before >= 4
    assert _status(etsf_env, lab)["interfaces"][lab.srv_if]["attached"]
    # idempotent
    assert not json.loads(etsfctl("revert", "--json", env=etsf_env, netns=lab.srv_ns).stdout)["changed"]

    # revert --mode detach: nothing of ours on the interface any more
    r = json.loads(etsfctl("revert", "--mode", "detach", "--json", env=etsf_env, netns=lab.srv_ns).stdout)
    assert r["changed"] and r["interfaces"] == {lab.srv_if: True}
    ip = json.loads(etsfctl("status", "--json", env=etsf_env, netns=lab.srv_ns).stdout)
    assert ip["interfaces"] == {}

    # restore brings programs back (new ids) and re-applies the policy (new generation)
    etsfctl("bypass", "off", env=etsf_env, netns=lab.srv_ns)
    out = json.loads(etsfctl("restore", "--config", str(config), "--json", env=etsf_env, netns=lab.srv_ns).stdout)
    st = _status(etsf_env, lab)
    assert st["interfaces"][lab.srv_if]["attached"]
    assert st["policy_generation"] == out["policy_generation"] == 2
    live = json.loads(etsfctl("policy", "show", "--json", env=etsf_env, netns=lab.srv_ns).stdout)
    assert live["rate_limits"]["register"] == {"rate": 5, "burst": 5}
    assert live["deny"] == ["198.18.250.0/24"]


def test_restore_config_errors_are_one_line(etsf_env, tmp_path):
    bad = tmp_path / "bad.yml"
    for text, field in (("version: 2\ninterfaces: [x]\n", "version"),
                        ("version: 1\ninterfaces: []\n", "interfaces"),
                        ("version: 1\ninterfaces: [x]\nmode: turbo\n", "mode"),
                        ("version: 1\ninterfaces: [x]\nhook: ebpf\n", "hook"),
                        ("version: 1\ninterfaces: [x\n", "not valid YAML")):
        bad.write_text(text)
        r = etsfctl("restore", "--config", str(bad), env=etsf_env, check=False)
        assert r.returncode == 1
        assert r.stderr.count("\n") == 1 and field in r.stderr, r.stderr


def test_health_gate(lab, etsf_env):
    # start from a bare interface (earlier tests of this module attached to it)
    subprocess.run(["ip", "-n", lab.srv_ns, "link", "set", "dev", lab.srv_if, "xdp", "off"], check=True)
    subprocess.run(["tc", "-n", lab.srv_ns, "qdisc", "del", "dev", lab.srv_if, "clsact"], check=False)
    # not attached yet: unhealthy, names the interface
    r = etsfctl("health", "--iface", lab.srv_if, "--window", "0.5", "--no-traffic", "--json",
                env=etsf_env, netns=lab.srv_ns, check=False)
    assert r.returncode == 1
    assert f"{lab.srv_if}: xdp_sip not attached" in json.loads(r.stdout)["message"]

    etsfctl("attach", "--hook", "xdp", "--iface", lab.srv_if, env=etsf_env, netns=lab.srv_ns)
    # attached, and a bounded OPTIONS probe from the host makes the counters move
    r = etsfctl("health", "--iface", lab.srv_if, "--window", "1", "--probe", f"{lab_peer(lab)}:5060", "--json",
                env=etsf_env, netns=lab.srv_ns, check=False)
    rep = json.loads(r.stdout)
    assert r.returncode == 0, rep["message"]
    assert rep["ok"] and rep["probes_sent"] >= 1 and rep["tc_egress_packets"] >= 1

    # bypass on (a revert, or the fail-safe tripped): not healthy until someone clears it
    etsfctl("bypass", "on", env=etsf_env, netns=lab.srv_ns)
    r = etsfctl("health", "--iface", lab.srv_if, "--window", "0.5", "--no-traffic", "--json",
                env=etsf_env, netns=lab.srv_ns, check=False)
    assert r.returncode == 1 and "bypass is ON" in json.loads(r.stdout)["message"]
    etsfctl("bypass", "off", env=etsf_env, netns=lab.srv_ns)

    # a policy that drops by deny is an expected (policy) drop: still healthy
    _send_sip(lab, 2)
    assert _xdp_count("OPTIONS") >= 2


def lab_peer(lab) -> str:
    """The client side's address as seen from the server namespace (the probe target)."""
    assert UAC_IP != UAS_IP and lab.cli_ns
    return UAC_IP


def test_reattach_keeps_pin_permissions(lab, etsf_env):
    """The exporter reads pins through group permissions granted once: a re-attach (upgrade)
    must not reset them to root-only."""
    import os
    etsfctl("attach", "--hook", "xdp", "--iface", lab.srv_if, env=etsf_env, netns=lab.srv_ns)
    pin = os.path.join(etsf_env["ETSF_PIN_ROOT"], "progs", "xdp_sip")
    os.chown(pin, 0, 65534)
    os.chmod(pin, 0o660)
    first = os.stat(pin)
    etsfctl("attach", "--hook", "xdp", "--iface", lab.srv_if, env=etsf_env, netns=lab.srv_ns)   # atomic replace
    again = os.stat(pin)
    assert again.st_ino != first.st_ino            # a new pin (new program) ...
    assert (again.st_gid, again.st_mode & 0o777) == (65534, 0o660)   # ... with the same access
