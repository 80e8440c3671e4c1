"""A real Prometheus scrapes a lab fleet: two hosts booted under their own prefix
(ETSF_PROM_LAB_PREFIX, default `prm-`) get eTSF from playbooks/site.yml with the exporter on
their management address; playbooks/prometheus.yml generates the file_sd targets, scrape job
and alert rules from the same inventory; Prometheus 2.x (Debian) runs in the lab switch netns
with that configuration.  Asserted through its HTTP API: up{job="etsf"} == 1 for every host,
with the inventory's labels; eTSF series are stored for every host, among them every series
the alert rules need that a healthy fleet always exports; the three rule groups are loaded and
healthy; setting the bypass on one host makes EtsfBypassEngaged go pending for that host only.
Only this prefix's hosts are brought up and taken down (`lab down --prefix`).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from labhelpers import REPO, ansible_bin, lab, on_host, playbook_failures, preconditions

sys.path.insert(0, str(REPO))

from lab.common import STATE_DIR  # noqa: E402
from lab.prometheus import Prometheus, generate  # noqa: E402

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1500)]

PREFIX = os.environ.get("ETSF_PROM_LAB_PREFIX", "prm-")
HOSTS = [f"{PREFIX}sbc1", f"{PREFIX}sbc2"]
INVENTORY = STATE_DIR / f"inventory-{PREFIX.rstrip('-')}.yml"
# series the rules read that every healthy host exports (etsf_sip_responses_total appears with
# the first INVITE/REGISTER response; tests/unit/test_alert_rules.py checks it by name)
ALWAYS = {"etsf_up", "etsf_failsafe_bypass", "etsf_failsafe_deadman_tripped", "etsf_overload_level",
          "etsf_sip_packets_total"}


# the lab inventory leaves the exporter on loopback (the role default): put it on the
# management address, which the switch netns reaches
LISTEN = ("-e", '{"telemetry_listen_address": "{{ etsf_mgmt_address }}"}')


def _site(inventory) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_HOST_KEY_CHECKING="False",
               ANSIBLE_NOCOLOR="1", PYTHONPATH=str(REPO / "src"))
    return subprocess.run([ansible_bin("ansible-playbook"), "-i", str(inventory), "playbooks/site.yml", *LISTEN],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1400, check=False)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    preconditions()
    lab("up", "--prefix", PREFIX, "--hosts", str(len(HOSTS)))
    prom = None
    try:
        cp = _site(INVENTORY)
        assert cp.returncode == 0, f"site.yml failed: {playbook_failures(cp.stdout)}\n{cp.stdout[-3000:]}"
        work = tmp_path_factory.mktemp("prometheus")
        cp = generate(INVENTORY, work, *LISTEN)
        assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-2000:]
        prom = Prometheus(work)
        prom.start()
        yield prom
    finally:
        if prom:
            prom.stop()
        lab("down", "--prefix", PREFIX, timeout=300, check=False)


def _all_hosts(res):
    return res if len(res) == len(HOSTS) else None


def _up(prom):
    res = prom.query('up{job="etsf"}')
    return res if len(res) == len(HOSTS) and all(r["value"][1] == "1" for r in res) else None


def test_every_host_is_scraped_with_its_labels(prometheus):
    res = prometheus.wait(lambda: _up(prometheus))
    assert res, f"up{{job=\"etsf\"}}: {prometheus.query('up')}"
    got = {r["metric"]["host"]: r["metric"] for r in res}
    assert sorted(got) == HOSTS
    addresses = dict(re.findall(r"^\s+(\S+):\n\s+ansible_host: (\S+)", INVENTORY.read_text(), re.M))
    for host, labels in got.items():
        assert labels["instance"] == f"{addresses[host]}:9761" and labels["group"] == "sbc", labels
    print("PROMETHEUS up", json.dumps([[r["metric"]["host"], r["metric"]["instance"], r["value"][1]]
                                       for r in res]))
    targets = prometheus.api("targets")["data"]["activeTargets"]
    assert sorted(t["labels"]["host"] for t in targets if t["health"] == "up") == HOSTS


def test_etsf_series_are_stored_for_every_host(prometheus):
    assert prometheus.wait(lambda: _up(prometheus))
    res = prometheus.wait(lambda: _all_hosts(prometheus.query('etsf_up{job="etsf"} == 1')))
    assert sorted(r["metric"]["host"] for r in res) == HOSTS
    packets = prometheus.query('count by (host) (etsf_sip_packets_total{job="etsf"})')
    assert sorted(r["metric"]["host"] for r in packets) == HOSTS
    names = set(prometheus.api("label/__name__/values")["data"])
    assert ALWAYS <= names, ALWAYS - names
    print("PROMETHEUS etsf_up", json.dumps([[r["metric"]["host"], r["value"][1]] for r in res]))


def _rules(prom):
    """The rule groups once every rule has been evaluated without error ("unknown" before)."""
    groups = prom.api("rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    return groups if rules and all(r["health"] == "ok" for r in rules) else None


def _alerts(prom, name):
    return [a for a in prom.api("alerts")["data"]["alerts"] if a["labels"]["alertname"] == name]


def test_alert_rules_are_loaded_and_healthy(prometheus):
    groups = prometheus.wait(lambda: _rules(prometheus))
    assert groups, prometheus.api("rules")
    assert sorted(g["name"] for g in groups) == ["etsf-availability", "etsf-failsafe", "etsf-sip"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == 7 and {r["type"] for r in rules} == {"alerting"}
    print("PROMETHEUS rules", json.dumps({r["name"]: r["health"] for r in rules}))


def test_bypass_on_one_host_raises_its_alert(prometheus):
    assert prometheus.wait(lambda: _up(prometheus))
    host = HOSTS[0]
    on_host(host, "/usr/local/bin/etsfctl bypass on")
    try:
        alerts = prometheus.wait(lambda: _alerts(prometheus, "EtsfBypassEngaged"))
    finally:
        on_host(host, "/usr/local/bin/etsfctl bypass off")
    assert [a["labels"]["host"] for a in alerts] == [host], alerts
    assert alerts[0]["state"] in ("pending", "firing") and alerts[0]["labels"]["severity"] == "critical"
    print("PROMETHEUS alert", json.dumps({k: alerts[0][k] for k in ("labels", "state")}))
    # and it clears with the bypass
    assert prometheus.wait(lambda: not _alerts(prometheus, "EtsfBypassEngaged"))
