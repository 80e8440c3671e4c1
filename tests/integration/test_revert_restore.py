"""etsfctl revert (bypass, detach), restore (boot-time re-attach + policy) and the health gate,
on a real veth with the real objects."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

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

    # the operator's detach is held: a restore (a reboot) attaches nothing ...
    out = json.loads(etsfctl("restore", "--config", str(config), "--json", env=etsf_env, netns=lab.srv_ns).stdout)
    assert out["attached"] == {} and out["revert_held"]["mode"] == "detach"
    # ... until an explicit attach ends it (here undone again by a plain detach, which is not held)
    etsfctl("attach", "--iface", lab.srv_if, "--hook", "xdp", env=etsf_env, netns=lab.srv_ns)
    etsfctl("detach", "--iface", lab.srv_if, env=etsf_env, netns=lab.srv_ns)
    # restore brings programs back (new ids) and re-applies the policy (new generation)
    etsfctl("bypass", "off", env=etsf_env, netns=lab.srv_ns)
    out = json.loads(etsfctl("restore", "--config", str(config), "--json", env=etsf_env, netns=lab.srv_ns).stdout)
    st = _status(etsf_env, lab)
    assert st["interfaces"][lab.srv_if]["attached"]
    assert st["policy_generation"] == out["policy_generation"] == 2
    live = json.loads(etsfctl("policy", "show", "--json", env=etsf_env, netns=lab.srv_ns).stdout)
    assert live["rate_limits"]["register"] == {"rate": 5, "burst": 5}
    assert live["deny"] == ["198.18.250.0/24"]


def _boot_config(lab, env, policy) -> Path:
    """The datapath config etsf-restore reads (at $ETSF_DATAPATH_CONFIG), naming *policy*, and a
    runner of etsfctl in the lab's server netns."""
    config = Path(env["ETSF_DATAPATH_CONFIG"])
    config.parent.mkdir(exist_ok=True)
    config.write_text(f"version: 1\nhook: tc\ninterfaces: [{lab.srv_if}]\n"
                      f"build_dir: {env['ETSF_BUILD_DIR']}\npolicy: {policy}\n")
    return config


def _runner(lab, env):
    def run(*args, check=True):
        return etsfctl(*args, env=env, netns=lab.srv_ns, check=check)
    return run


ROLLED_OUT = """version: 1
rate_limits:
  register: {rate: 50, burst: 50}
deny: [198.18.251.0/24]
"""


def test_rollback_on_the_host_survives_a_reboot(lab, etsf_env, tmp_path):
    """`etsfctl policy rollback` rewrites the boot-time policy file etsf-restore.service re-applies,
    so a restore after it (what a reboot runs) brings back the rolled-back policy, not the bad one."""
    boot = tmp_path / "boot-policy.yml"
    boot.write_text(POLICY)
    _boot_config(lab, etsf_env, boot)
    run = _runner(lab, etsf_env)

    def live():
        doc = json.loads(run("policy", "show", "--json").stdout)
        return doc["rate_limits"]["register"], doc["deny"], doc["generation"]

    assert json.loads(run("restore", "--json").stdout)["policy_generation"] == 1
    # the rollout that goes wrong: a new boot-time file, applied
    boot.write_text(ROLLED_OUT)
    out = run("policy", "apply", str(boot)).stdout
    assert "generation 2 live" in out and "note:" not in out, out
    assert live() == ({"rate": 50, "burst": 50}, ["198.18.251.0/24"], 2)

    # check mode: says what it would write, writes nothing
    out = run("policy", "rollback", "--check").stdout
    assert f"boot-time policy {boot}: would be rewritten" in out, out
    assert boot.read_text() == ROLLED_OUT and live()[2] == 2

    res = json.loads(run("policy", "rollback", "--json").stdout)
    assert res["rollback_to"] == 1 and res["boot_file"] == {"path": str(boot), "changed": True}
    assert live() == ({"rate": 5, "burst": 5}, ["198.18.250.0/24"], 3)
    assert "rolled back to kept generation 1" in boot.read_text()
    # the same rollback again finds the file already right
    assert json.loads(run("policy", "rollback", "1", "--json").stdout)["boot_file"]["changed"] is False

    before = json.loads(run("policy", "history", "--json").stdout)
    # a reboot: programs detached, bpffs empty, the state directory kept; then etsf-restore's command
    run("detach", "--iface", lab.srv_if)
    shutil.rmtree(etsf_env["ETSF_PIN_ROOT"])
    out = json.loads(run("restore", "--json").stdout)
    assert live() == ({"rate": 5, "burst": 5}, ["198.18.250.0/24"], 4)
    # new maps count on from the history: no earlier record overwritten, the newest is live
    assert out["policy_generation"] == 4
    hist = json.loads(run("policy", "history", "--json").stdout)
    assert [(h["generation"], h["action"]) for h in hist] == [
        (1, "apply"), (2, "apply"), (3, "rollback"), (4, "apply")]
    assert [h["generation"] for h in sorted(hist, key=lambda h: h["time"])] == [1, 2, 3, 4]
    assert hist[-1]["live"] and hist[-1]["source"] == str(boot) and hist[-1]["actor"] == "etsf-restore (boot)"
    assert hist[:3] == [dict(h, live=False) for h in before]
    # so the operator's next rollback goes where the history says: to the one before
    assert json.loads(run("policy", "rollback", "--json").stdout)["rollback_to"] == 3


def test_boot_file_choices_and_errors(lab, etsf_env, tmp_path):
    """--no-boot-file leaves the file; --boot-file names another; an unreadable datapath config
    stops the rollback before any map changes; an apply of another file says a reboot drops it."""
    boot = tmp_path / "boot.yml"
    boot.write_text(POLICY)
    other = tmp_path / "hotfix.yml"
    other.write_text(ROLLED_OUT)
    config = _boot_config(lab, etsf_env, boot)
    run = _runner(lab, etsf_env)

    run("restore")
    out = run("policy", "apply", str(other)).stdout
    assert f"note: after a reboot etsf-restore.service re-applies {boot}, not this policy" in out, out
    res = json.loads(run("policy", "apply", str(other), "--json").stdout)
    assert res["boot_file"] == {"path": str(boot), "holds_live": False}

    # the config cannot be read: one line naming it, generation and file unchanged
    config.write_text("version: 1\ninterfaces: [\n")
    r = run("policy", "rollback", check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("etsfctl: error: boot file:") and "--no-boot-file" in r.stderr, r.stderr
    assert json.loads(run("policy", "show", "--json").stdout)["generation"] == 2
    assert boot.read_text() == POLICY

    out = run("policy", "rollback", "--no-boot-file").stdout
    assert "boot-time policy: not written (--no-boot-file)" in out, out
    assert boot.read_text() == POLICY

    elsewhere = tmp_path / "kept.yml"
    res = json.loads(run("policy", "rollback", "2", "--boot-file", str(elsewhere), "--json").stdout)
    assert res["boot_file"] == {"path": str(elsewhere), "changed": True}
    assert boot.read_text() == POLICY
    pol = json.loads(run("policy", "show", "--json").stdout)
    assert pol["rate_limits"]["register"] == {"rate": 50, "burst": 50}
    # the file written validates as a policy and holds what is live
    assert run("policy", "apply", str(elsewhere), "--check").returncode == 0
    assert "no changes" in run("policy", "apply", str(elsewhere), "--check").stdout

    # the history names who did it in full, however long the name
    actor = "ansible rollback (noc-oncall-frankfurt)"
    etsfctl("policy", "rollback", "--no-boot-file", env={**etsf_env, "ETSF_ACTOR": actor}, netns=lab.srv_ns)
    rows = run("policy", "history").stdout.splitlines()
    assert rows[0].split() == ["GEN", "TIME", "(UTC)", "ACTION", "ACTOR", "SHA256", "SOURCE"]
    assert f"rollback  {actor}  " in rows[-1] and rows[-1].startswith("*"), rows


def test_an_operator_revert_outlives_a_reboot(lab, etsf_env, tmp_path):
    """A bypass or detach made by `etsfctl revert` is held in the state directory: the boot-time
    restore attaches with the bypass on (before the policy) or attaches nothing, until the
    revert is ended on purpose (`bypass off` / `failsafe ack`, or an explicit attach)."""
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    _boot_config(lab, etsf_env, policy)
    held = Path(etsf_env["ETSF_STATE_DIR"]) / "revert.json"
    run = _runner(lab, etsf_env)

    def reboot():
        """What a reboot leaves: nothing attached, bpffs empty, the state directory; then etsf-restore."""
        st = _status(etsf_env, lab)
        if st["interfaces"]:
            run("detach", "--iface", lab.srv_if)
        shutil.rmtree(etsf_env["ETSF_PIN_ROOT"])
        return run("restore").stdout

    run("restore")
    assert not held.exists() and _status(etsf_env, lab)["revert_held"] is None

    # bypass: held, and the restore after a reboot attaches with the bypass on
    r = json.loads(run("revert", "--mode", "bypass", "--json").stdout)
    assert r["changed"] and json.loads(held.read_text())["mode"] == "bypass"
    assert not json.loads(run("revert", "--mode", "bypass", "--json").stdout)["changed"]
    assert "operator revert: bypass held since" in run("status").stdout
    out = reboot()
    assert "bypass ON (operator revert: bypass held)" in out, out
    st = _status(etsf_env, lab)
    assert st["bypass"] and st["interfaces"][lab.srv_if]["attached"] and st["policy_applied"], st
    # ended on purpose: the next reboot enforces again
    assert json.loads(run("bypass", "off", "--json").stdout)["changed"] and not held.exists()
    reboot()
    st = _status(etsf_env, lab)
    assert not st["bypass"] and st["interfaces"][lab.srv_if]["attached"] and st["revert_held"] is None

    # `bypass on` by hand is held too; `failsafe ack` (no watchdog running) ends it
    run("bypass", "on")
    assert json.loads(held.read_text())["mode"] == "bypass"
    assert json.loads(run("failsafe", "ack", "--json").stdout)["changed"] and not held.exists()
    assert not _status(etsf_env, lab)["bypass"]

    # detach: held, and the restore after a reboot attaches nothing
    r = json.loads(run("revert", "--mode", "detach", "--json").stdout)
    assert r["changed"] and json.loads(held.read_text())["mode"] == "detach"
    run("bypass", "on")                       # a bypass does not replace a held detach
    assert json.loads(held.read_text())["mode"] == "detach"
    out = reboot()
    assert out.startswith("not restored: operator revert (detach held since"), out
    assert _status(etsf_env, lab)["interfaces"] == {}
    res = json.loads(run("restore", "--json").stdout)
    assert res["attached"] == {} and res["revert_held"]["mode"] == "detach"
    # an explicit attach ends it: the next reboot attaches again
    r = json.loads(run("attach", "--iface", lab.srv_if, "--hook", "tc", "--json").stdout)
    assert r["revert_released"] and not held.exists()
    reboot()
    st = _status(etsf_env, lab)
    assert st["interfaces"][lab.srv_if]["attached"] and not st["bypass"], st

    # a plain detach of an interface the boot config lists is not held, and says so
    out = run("detach", "--iface", lab.srv_if).stdout
    assert "lists " + lab.srv_if + ": the next boot attaches it again" in out and "revert --mode detach" in out, out
    assert not held.exists()
    reboot()
    assert _status(etsf_env, lab)["interfaces"][lab.srv_if]["attached"]
    # without a boot config nothing would attach it again: no note
    r = etsfctl("detach", "--iface", lab.srv_if, "--json", netns=lab.srv_ns,
                env=dict(etsf_env, ETSF_DATAPATH_CONFIG=str(tmp_path / "absent.yml")))
    assert json.loads(r.stdout)["changed"] and json.loads(r.stdout)["reattached_at_boot"] is False


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
