"""The Grafana dashboard roles/telemetry/files/grafana/etsf-sip.json: it loads, the data source
input it declares (DS_PROMETHEUS) is the one every panel, query and template variable uses,
every ${...} it references is declared, and every series it queries is one the exporter
exports."""
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_alert_rules import exported_series  # noqa: E402

DASHBOARD = Path(__file__).resolve().parents[2] / "roles/telemetry/files/grafana/etsf-sip.json"
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# Grafana's own variables
BUILTIN = {"__rate_interval", "__interval", "__range"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_declares_the_prometheus_input():
    d = dashboard()
    assert [(i["name"], i["type"], i["pluginId"]) for i in d["__inputs"]] == \
        [("DS_PROMETHEUS", "datasource", "prometheus")]
    assert {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"} \
        in d["__requires"]
    panel_types = {p["type"] for p in d["panels"]}
    assert panel_types == {r["id"] for r in d["__requires"] if r["type"] == "panel"}


def test_every_panel_query_and_variable_uses_the_input():
    d = dashboard()
    assert d["panels"]
    for p in d["panels"]:
        assert p["datasource"] == DS, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS, (p["title"], t["refId"])
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == DS, v["name"]
    # no other data source reference anywhere (e.g. a ${datasource} variable)
    uids = re.findall(r'"uid":\s*"(\$\{[^}]*\})"', DASHBOARD.read_text())
    assert uids and set(uids) == {"${DS_PROMETHEUS}"}


def test_every_reference_is_declared():
    d = dashboard()
    text = DASHBOARD.read_text()
    used = set(re.findall(r"\$\{(\w+)\}", text)) | set(re.findall(r"\$(\w+)", text))
    declared = {i["name"] for i in d["__inputs"]} | {v["name"] for v in d["templating"]["list"]}
    assert used - BUILTIN == declared, (used, declared)


def test_queries_use_exported_series():
    exported = exported_series()
    for p in dashboard()["panels"]:
        for t in p["targets"]:
            expr = re.sub(r'"[^"]*"', '""', t["expr"])
            for name in re.findall(r"\betsf_[a-z0-9_]+", expr):
                assert name in exported, (p["title"], name)
