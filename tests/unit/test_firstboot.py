"""etsfctl firstboot: one line and a stamp; a failed preflight disables eTSF and says why."""
import json

import pytest

from etsf import datapath, firstboot, preflight


@pytest.fixture
def fb_env(tmp_path, monkeypatch):
    cfg = tmp_path / "datapath.yml"
    cfg.write_text("version: 1\nmode: native\ninterfaces: [sip0]\npolicy: %s\n" % (tmp_path / "policy.yml"))
    monkeypatch.setattr(firstboot, "DISABLED", str(tmp_path / "disabled"))
    monkeypatch.setattr(firstboot, "ATTACHED_MARK", str(tmp_path / "run" / "firstboot-attached"))
    monkeypatch.setattr(firstboot, "_wait_for_interfaces", lambda ifaces, timeout: 0.0)
    return tmp_path, cfg


def test_preflight_failure_disables_and_explains(fb_env, monkeypatch):
    tmp, cfg = fb_env
    monkeypatch.setattr(preflight, "run", lambda ifaces, min_kernel: {
        "ok": False, "message": "1 unmet requirement(s): btf: /sys/kernel/btf/vmlinux missing", "checks": []})
    called = []

    def restore(config):
        called.append(config)
    monkeypatch.setattr(datapath, "restore", restore)
    res = firstboot.run(str(cfg), seed_label="", stamp=str(tmp / "fb.json"), start_units=False)
    assert not called, "no attach after a failed preflight"
    assert res["result"] == "failed"
    assert res["line"] == ("etsf-firstboot: preflight failed: 1 unmet requirement(s): btf: "
                           "/sys/kernel/btf/vmlinux missing; serving SIP on the standard path")
    assert "btf" in (tmp / "disabled").read_text()
    assert json.loads((tmp / "fb.json").read_text())["result"] == "failed"
    again = firstboot.run(str(cfg), seed_label="", stamp=str(tmp / "fb.json"), start_units=False)
    assert again["skipped"] and "already done (failed)" in again["line"]


def test_success_attaches_and_clears_disabled(fb_env, monkeypatch):
    tmp, cfg = fb_env
    (tmp / "disabled").write_text("old reason\n")
    monkeypatch.setattr(preflight, "run", lambda ifaces, min_kernel: {"ok": True, "message": "ok", "checks": []})
    monkeypatch.setattr(datapath, "restore", lambda config: {
        "changed": True, "built": True, "attached": {"sip0": 42}, "fastpath": [], "policy_generation": 1})
    res = firstboot.run(str(cfg), seed_label="", stamp=str(tmp / "fb.json"), start_units=False, force=True)
    assert res["result"] == "ok"
    assert res["line"].startswith("etsf-firstboot: OK attached xdp_sip to sip0 (native)")
    assert "policy generation 1" in res["line"]
    assert not (tmp / "disabled").exists()
    assert (tmp / "run" / "firstboot-attached").exists()


def test_attach_error_keeps_the_box_up(fb_env, monkeypatch):
    tmp, cfg = fb_env
    monkeypatch.setattr(preflight, "run", lambda ifaces, min_kernel: {"ok": True, "message": "ok", "checks": []})

    def boom(config):
        raise datapath.DatapathError("sip0: XDP native mode not supported by driver")
    monkeypatch.setattr(datapath, "restore", boom)
    res = firstboot.run(str(cfg), seed_label="", stamp=str(tmp / "fb.json"), start_units=False)
    assert res["result"] == "failed"
    assert res["line"] == ("etsf-firstboot: attach failed: sip0: XDP native mode not supported by driver; "
                           "serving SIP on the standard path")


@pytest.mark.parametrize("seed, note", [
    ({"found": False, "policy": None}, ""),
    ({"found": True, "device": "/dev/vda3", "policy": None}, ""),
    ({"found": True, "device": "/dev/vda3", "policy": "/etc/etsf/policy.yml"}, " from seed ETSFSEED"),
    ({"found": True, "device": "/dev/vda3", "policy": None,
      "error": "seed policy.yml rejected, keeping /etc/etsf/policy.yml: rate_limits.register.rate: must be > 0"},
     " (built-in; seed policy.yml rejected, keeping /etc/etsf/policy.yml: rate_limits.register.rate: must be > 0)"),
])
def test_ok_line_says_where_the_policy_came_from(fb_env, monkeypatch, seed, note):
    tmp, cfg = fb_env
    monkeypatch.setattr(firstboot, "apply_seed", lambda label, policy_path: seed)
    monkeypatch.setattr(preflight, "run", lambda ifaces, min_kernel: {"ok": True, "message": "ok", "checks": []})
    monkeypatch.setattr(datapath, "restore", lambda config: {
        "changed": True, "built": True, "attached": {"sip0": 42}, "fastpath": [], "policy_generation": 1})
    res = firstboot.run(str(cfg), stamp=str(tmp / "fb.json"), start_units=False, force=True)
    assert res["line"] == ("etsf-firstboot: OK attached xdp_sip to sip0 (native), built against "
                           f"{firstboot.os.uname().release} BTF, policy generation 1{note}; "
                           "exporter and fail-safe started")
