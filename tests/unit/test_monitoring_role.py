"""playbooks/prometheus.yml (role etsf.sip.monitoring) against inventory/example on the
controller: check mode shows the diff and writes nothing, a run writes the file_sd targets
(address:port and site/group/host labels of every host), the scrape job, the rules, a
prometheus.yml that promtool accepts and the provisioned Grafana dashboard (role
etsf.sip.telemetry, tasks/dashboard.yml), a second run changes nothing, and a loopback exporter
stops the role with one line before anything is written."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / ".venv/bin/ansible-playbook"
RULES = ROOT / "roles/monitoring/files/prometheus/etsf-alerts.yml"

EXPECTED_SD = [
    {"targets": ["198.18.10.11:9761"], "labels": {"site": "fra", "group": "sbc_access", "host": "sbc-acc-fra1"}},
    {"targets": ["198.18.10.12:9761"], "labels": {"site": "fra", "group": "sbc_access", "host": "sbc-acc-fra2"}},
    {"targets": ["198.18.11.11:9761"], "labels": {"site": "ber", "group": "sbc_access", "host": "sbc-acc-ber1"}},
    {"targets": ["198.18.20.11:9761"], "labels": {"site": "fra", "group": "sbc_core", "host": "sbc-core-fra1"}},
    {"targets": ["198.18.21.11:9761"], "labels": {"site": "ber", "group": "sbc_core", "host": "sbc-core-ber1"}},
    {"targets": ["198.18.30.11:9761"], "labels": {"site": "fra", "group": "ims_pcscf", "host": "pcscf-fra1"}},
    {"targets": ["198.18.30.12:9761"], "labels": {"site": "fra", "group": "ims_pcscf", "host": "pcscf-fra2"}},
]


def run(tmp: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"))
    cp = subprocess.run([str(PLAYBOOK), "-i", "inventory/example", "playbooks/prometheus.yml",
                         "-e", "etsf_prometheus_target=localhost", "-e", "ansible_connection=local",
                         "-e", f"monitoring_dir={tmp}/etsf",
                         "-e", f"monitoring_prometheus_config={tmp}/prometheus.yml",
                         "-e", f"telemetry_grafana_provisioning_dir={tmp}/grafana",
                         "-e", f"telemetry_grafana_dashboards_dir={tmp}/dashboards", *extra],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    m = re.search(r"^localhost\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                  cp.stdout, re.M)
    recap = dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups()))) if m else {}
    return cp, recap


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    if not shutil.which("promtool"):
        pytest.fail("promtool not installed (Debian package prometheus; scripts/setup.sh)")
    tmp = tmp_path_factory.mktemp("prometheus")
    check, check_recap = run(tmp, "--check", "--diff")
    written = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*")
                     if "ansible-tmp" not in p.parts)
    first, first_recap = run(tmp)
    again, again_recap = run(tmp, "--check", "--diff")
    return {"tmp": tmp, "check": check, "check_recap": check_recap, "written_by_check": written,
            "first": first, "first_recap": first_recap, "again": again, "again_recap": again_recap}


def test_check_mode_shows_the_diff_and_writes_nothing(rendered):
    cp = rendered["check"]
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-2000:]
    assert rendered["check_recap"]["failed"] == 0 and rendered["check_recap"]["changed"] >= 5
    assert rendered["written_by_check"] == []
    assert '+      "198.18.21.11:9761"' in cp.stdout       # the file_sd diff
    assert "+- job_name: etsf" in cp.stdout                 # the scrape job diff
    assert "+      - alert: EtsfBypassEngaged" in cp.stdout  # the rules diff


def test_file_sd_targets_and_labels_from_the_inventory(rendered):
    assert rendered["first"].returncode == 0, rendered["first"].stdout[-3000:]
    sd = json.loads((rendered["tmp"] / "etsf/file_sd/etsf.json").read_text())
    assert sd == EXPECTED_SD


def test_scrape_job_rules_and_prometheus_config(rendered):
    tmp = rendered["tmp"]
    snippet = yaml.safe_load((tmp / "etsf/etsf-scrape.yml").read_text())
    job = {"job_name": "etsf", "scrape_interval": "15s", "scrape_timeout": "10s", "scheme": "http",
           "metrics_path": "/metrics",
           "file_sd_configs": [{"files": [f"{tmp}/etsf/file_sd/etsf.json"], "refresh_interval": "1m"}]}
    assert snippet == {"scrape_configs": [job]}
    assert (tmp / "etsf/rules/etsf-alerts.yml").read_bytes() == RULES.read_bytes()
    full = yaml.safe_load((tmp / "prometheus.yml").read_text())
    assert full["rule_files"] == [f"{tmp}/etsf/rules/etsf-alerts.yml"]
    assert full["scrape_configs"] == [job]
    cp = subprocess.run(["promtool", "check", "config", str(tmp / "prometheus.yml")],
                        capture_output=True, text=True, timeout=60, check=False)
    n = sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])
    assert cp.returncode == 0 and f"SUCCESS: {n} rules found" in cp.stdout, cp.stdout + cp.stderr


def test_grafana_dashboard_provisioned(rendered):
    tmp = rendered["tmp"]
    provider = yaml.safe_load((tmp / "grafana/dashboards/etsf.yaml").read_text())
    assert provider == {"apiVersion": 1, "providers": [{
        "name": "etsf", "orgId": 1, "folder": "eTSF", "type": "file", "disableDeletion": False,
        "allowUiUpdates": False, "updateIntervalSeconds": 60, "options": {"path": f"{tmp}/dashboards"}}]}
    assert not (tmp / "grafana/datasources/etsf.yaml").exists()   # no URL: the data source exists
    src = json.loads((ROOT / "roles/telemetry/files/grafana/etsf-sip.json").read_text())
    dash = json.loads((tmp / "dashboards/etsf-sip.json").read_text())
    # the same dashboard with the input resolved to the data source's UID (provisioning does
    # not resolve __inputs)
    assert "${DS_PROMETHEUS}" not in json.dumps(dash)
    assert dash == json.loads(json.dumps(src).replace("${DS_PROMETHEUS}", "prometheus"))
    assert all(p["datasource"] == {"type": "prometheus", "uid": "prometheus"} for p in dash["panels"])


def test_grafana_data_source_provisioned_with_a_url(tmp_path):
    cp, recap = run(tmp_path, "--tags", "monitoring_preflight,telemetry_dashboard",
                    "-e", "telemetry_grafana_datasource_url=http://198.18.0.1:9090",
                    "-e", "telemetry_grafana_datasource_uid=etsf-prom")
    assert cp.returncode == 0 and recap["failed"] == 0, cp.stdout[-3000:]
    ds = yaml.safe_load((tmp_path / "grafana/datasources/etsf.yaml").read_text())
    assert ds["datasources"] == [{"name": "Prometheus (eTSF)", "type": "prometheus", "uid": "etsf-prom",
                                  "access": "proxy", "url": "http://198.18.0.1:9090", "editable": False}]
    dash = json.loads((tmp_path / "dashboards/etsf-sip.json").read_text())
    assert {p["datasource"]["uid"] for p in dash["panels"]} == {"etsf-prom"}
    # --tags: only the preflight and the dashboard ran
    assert not (tmp_path / "etsf").exists()


def test_second_run_is_clean(rendered):
    assert rendered["again"].returncode == 0
    assert rendered["again_recap"]["changed"] == 0 and rendered["again_recap"]["failed"] == 0


def test_https_and_basic_auth_options(tmp_path):
    cp, recap = run(tmp_path, "-e", "monitoring_scheme=https",
                    "-e", "monitoring_tls_ca_file=/etc/prometheus/etsf-ca.pem",
                    "-e", "monitoring_basic_auth_username=prometheus",
                    "-e", "monitoring_basic_auth_password_file=/etc/prometheus/etsf-password",
                    "-e", "monitoring_validate=false")
    assert cp.returncode == 0 and recap["failed"] == 0, cp.stdout[-3000:]
    job = yaml.safe_load((tmp_path / "etsf/etsf-scrape.yml").read_text())["scrape_configs"][0]
    assert job["scheme"] == "https"
    assert job["tls_config"] == {"ca_file": "/etc/prometheus/etsf-ca.pem"}
    assert job["basic_auth"] == {"username": "prometheus",
                                 "password_file": "/etc/prometheus/etsf-password"}


def test_loopback_exporter_is_one_line_error_and_nothing_written(tmp_path):
    cp, recap = run(tmp_path, "-e", "telemetry_listen_address=127.0.0.1")
    assert cp.returncode != 0 and recap["failed"] == 1
    assert ("monitoring: telemetry_listen_address is loopback (the role default 127.0.0.1) on "
            "sbc-acc-fra1, sbc-acc-fra2, sbc-acc-ber1, sbc-core-fra1, sbc-core-ber1, pcscf-fra1, "
            "pcscf-fra2: Prometheus cannot scrape it") in cp.stdout + cp.stderr
    assert not (tmp_path / "etsf").exists() and not (tmp_path / "prometheus.yml").exists()


def test_bad_input_is_one_line_error(tmp_path):
    cp, recap = run(tmp_path, "-e", "monitoring_basic_auth_username=prometheus")
    assert cp.returncode != 0 and recap["failed"] == 1
    assert "monitoring_basic_auth_username and monitoring_basic_auth_password_file (both or neither)" \
        in cp.stdout + cp.stderr
    assert not (tmp_path / "etsf").exists()
