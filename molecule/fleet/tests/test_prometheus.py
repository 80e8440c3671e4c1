"""Molecule `fleet` verify: a real Prometheus (Debian's 2.x, in the lab switch netns) scrapes the
fleet with the file_sd targets, scrape job and alert rules playbooks/prometheus.yml generates
from the scenario's inventory.  Every host whose exporter runs (the canary) is up{job="etsf"}
== 1 with eTSF series stored; every other host (failed preflight, later batch: no exporter) is
up == 0 with EtsfExporterDown pending for it alone; the eTSF rule groups are loaded and healthy.

Runs also outside Molecule against any lab inventory:
MOLECULE_INVENTORY_FILE=/var/lib/etsf-lab/inventory-<prefix>.yml pytest molecule/fleet/tests/test_prometheus.py
"""
import json
import os
import sys
import tempfile
from pathlib import Path

import testinfra
import testinfra.utils.ansible_runner
import yaml

REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(REPO))

from lab.prometheus import Prometheus, generate  # noqa: E402  pylint: disable=wrong-import-position

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
HOSTS = sorted(testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("all"))
# the exporter's address: the management address Prometheus reaches from the switch netns
LISTEN = ("-e", '{"telemetry_listen_address": "{{ ansible_host }}"}')


def test_prometheus_scrapes_the_fleet():
    running = {h for h in HOSTS if testinfra.get_host(f"ansible://{h}", ansible_inventory=INVENTORY)
               .service("etsf-exporter").is_running}
    assert running, "no host runs etsf-exporter"
    with tempfile.TemporaryDirectory(prefix="etsf-prometheus-") as work:
        cp = generate(INVENTORY, Path(work), *LISTEN)
        assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-2000:]
        prom = Prometheus(Path(work))
        prom.start()
        try:
            def scraped():
                res = prom.query('up{job="etsf"}')
                return res if len(res) == len(HOSTS) else None

            def down_pending():
                got = {a["labels"]["host"] for a in prom.api("alerts")["data"]["alerts"]
                       if a["labels"]["alertname"] == "EtsfExporterDown"}
                return got if got == set(HOSTS) - running else None

            def rules_ok():
                rules = [r for g in prom.api("rules")["data"]["groups"] for r in g["rules"]]
                return rules if rules and all(r["health"] == "ok" for r in rules) else None

            res = prom.wait(scraped)
            assert res, prom.query("up")
            up = {r["metric"]["host"]: r["value"][1] for r in res}
            assert up == {h: "1" if h in running else "0" for h in HOSTS}, up
            print("PROMETHEUS up", json.dumps(up, sort_keys=True))
            stored = prom.wait(lambda: {r["metric"]["host"] for r in prom.query('etsf_up{job="etsf"} == 1')}
                               == running or None)
            assert stored, prom.query('etsf_up{job="etsf"}')
            if set(HOSTS) - running:
                down = prom.wait(down_pending)
                assert down, prom.api("alerts")
                print("PROMETHEUS EtsfExporterDown pending for", sorted(down))
            rules = prom.wait(rules_ok)
            shipped = yaml.safe_load((REPO / "roles/monitoring/files/prometheus/etsf-alerts.yml").read_text())
            assert rules and sorted(r["name"] for r in rules) == sorted(
                r["alert"] for g in shipped["groups"] for r in g["rules"]), prom.api("rules")
            print("PROMETHEUS rules", json.dumps({r["name"]: r["health"] for r in rules}))
        finally:
            prom.stop()
