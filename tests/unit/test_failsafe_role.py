"""roles/failsafe: the config template renders to a file the agent accepts; the unit is hardened
and carries CAP_SYS_ADMIN only when the detach action is on."""
import json
import re
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

from etsf import failsafe

ROLE = Path(__file__).resolve().parents[2] / "roles" / "failsafe"


def render(name: str, **over) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True)
    env.filters["comment"] = lambda s: "# " + s
    env.filters["to_json"] = json.dumps
    env.tests["none"] = lambda v: v is None
    ctx = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    ctx.update(yaml.safe_load((ROLE / "vars/main.yml").read_text()))
    ctx.update(ansible_managed="Ansible managed", **over)
    return env.from_string((ROLE / "templates" / name).read_text()).render(**ctx)


def test_config_defaults_validate():
    cfg = failsafe.validate(yaml.safe_load(render("failsafe.yml.j2")))
    assert cfg["actions"]["detach_after_s"] == 10.0 and cfg["actions"]["recovery"] == "manual"
    assert cfg["interval_s"] == 0.2 and cfg["interfaces"] == []


def test_config_overrides_validate():
    cfg = failsafe.validate(yaml.safe_load(render(
        "failsafe.yml.j2", failsafe_detach_after_s=None, failsafe_recovery="auto", failsafe_interfaces=["sip0"],
        failsafe_rules={"drop_ratio": {"threshold_pct": 10, "window_s": 2}, "ser": {"enabled": False}})))
    assert cfg["actions"]["detach_after_s"] is None and cfg["actions"]["recovery"] == "auto"
    assert cfg["rules"]["drop_ratio"]["threshold_pct"] == 10 and not cfg["rules"]["ser"]["enabled"]


def test_config_exporter_heartbeat_file_validates():
    """configure.yml merges the exporter's heartbeat file into rules.heartbeat.files."""
    rules = {"ser": {"enabled": False},
             "heartbeat": {"files": [{"path": "/run/etsf-exporter/heartbeat", "max_age_s": 60}]}}
    cfg = failsafe.validate(yaml.safe_load(render("failsafe.yml.j2", __failsafe_rules=rules)))
    assert cfg["rules"]["heartbeat"]["files"] == [{"path": "/run/etsf-exporter/heartbeat", "max_age_s": 60}]
    assert cfg["rules"]["heartbeat"]["enabled"] and not cfg["rules"]["ser"]["enabled"]


def test_config_mistake_rejected():
    with pytest.raises(failsafe.FailsafeError,
                       match=r"^failsafe\.rules\.drop_ratio\.treshold_pct: one of the keys enabled, "
                             r"threshold_pct, .* \(got 'treshold_pct'\)$"):
        failsafe.validate(yaml.safe_load(render("failsafe.yml.j2", failsafe_rules={"drop_ratio": {"treshold_pct": 1}})))


@pytest.mark.parametrize("detach, sys_admin", [(10, True), (None, False)])
def test_unit(detach, sys_admin):
    u = render("etsf-failsafe.service.j2", failsafe_detach_after_s=detach)
    assert u.startswith("# Ansible managed\n")
    assert "ExecStart=/usr/local/bin/etsfctl failsafe --config /etc/etsf/failsafe.yml\n" in u
    caps = re.search(r"^CapabilityBoundingSet=(.*)$", u, re.M).group(1).split()
    assert set(caps) == {"CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"} | ({"CAP_SYS_ADMIN"} if sys_admin else set())
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes"):
        assert line in u


def test_unit_security_score(tmp_path):
    p = tmp_path / "etsf-failsafe.service"
    p.write_text(render("etsf-failsafe.service.j2", failsafe_detach_after_s=None))
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(p)], capture_output=True,
                       text=True, timeout=60, check=False)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    if not m:
        pytest.fail(f"systemd-analyze security --offline unsupported: {r.stderr.strip()[:200]}")
    print("failsafe unit exposure", m.group(1))
    assert float(m.group(1)) <= 5.0, r.stdout[-2000:]
