"""The Prometheus alerting rules shipped in roles/monitoring: promtool accepts them, every alert
is unit tested by `promtool test rules` (fires on one host, stays quiet on another), carries
severity / summary / description / runbook, and uses only metrics the exporter exports (read
from src/etsf/telemetry/collector.py, typed by the metric family that builds them)."""
import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "roles/monitoring/files/prometheus/etsf-alerts.yml"
TESTS = sorted((ROOT / "tests/prometheus").glob("*.test.yml"))
COLLECTOR = ROOT / "src/etsf/telemetry/collector.py"
# series Prometheus itself writes for every scrape target
SCRAPE_SERIES = {"up"}
SUFFIXES = {"CounterMetricFamily": ("_total",),
            "GaugeMetricFamily": ("",),
            "HistogramMetricFamily": ("_bucket", "_sum", "_count")}
ALERTS = {"EtsfExporterDown", "EtsfMapsUnreadable", "EtsfBypassEngaged", "EtsfRevertHeld", "EtsfDeadmanTripped",
          "EtsfWatchdogDown",
          "EtsfSheddingActive", "EtsfSessionEstablishmentRatioLow", "EtsfKeepaliveResponderStale",
          "EtsfKeepaliveProxyNotAnswering"}


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.fail("promtool not installed (Debian package prometheus; scripts/setup.sh)")
    return path


def rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_promtool_check_rules():
    cp = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True,
                        timeout=60, check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in cp.stdout, cp.stdout


def test_promtool_test_rules():
    assert TESTS, "no tests/prometheus/*.test.yml"
    cp = subprocess.run([promtool(), "test", "rules", *map(str, TESTS)], capture_output=True,
                        text=True, timeout=120, cwd=ROOT, check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "FAILED" not in cp.stdout and cp.stdout.count("SUCCESS") == len(TESTS), cp.stdout


def test_every_alert_is_complete():
    got = {r["alert"]: r for r in rules()}
    assert set(got) == ALERTS
    for name, r in got.items():
        assert r["labels"]["severity"] in ("critical", "warning"), name
        for key in ("summary", "description", "runbook"):
            assert len(r["annotations"].get(key, "").strip()) > 20, (name, key)


def test_every_alert_fires_and_stays_quiet_in_a_unit_test():
    fired, quiet = set(), set()
    for path in TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for t in case.get("alert_rule_test", []):
                (fired if t.get("exp_alerts") else quiet).add(t["alertname"])
                hosts = {a["exp_labels"].get("host") for a in t.get("exp_alerts") or []}
                series = " ".join(s["series"] for s in case["input_series"])
                # every case feeds at least one host the alert must not fire for
                if t.get("exp_alerts"):
                    others = set(re.findall(r'host="([^"]+)"', series)) - hosts
                    assert others, (case["name"], "no quiet host")
    assert fired == ALERTS, ALERTS - fired
    assert quiet == ALERTS, ALERTS - quiet


def _etsf_names(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and re.fullmatch(r"etsf_[a-z0-9_]+", n.value)}


def exported_series() -> set[str]:
    """Series names the collector can expose: each *MetricFamily(name, ...) call with its
    exposition suffixes.  A name given through a variable is resolved from the loop (or the
    dict the loop walks) that binds it."""
    tree = ast.parse(COLLECTOR.read_text())
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    assigns = {t.id: n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
               for t in n.targets if isinstance(t, ast.Name)}
    out: set[str] = set()
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                and call.func.id in SUFFIXES and call.args):
            continue
        first = call.args[0]
        if isinstance(first, ast.Constant):
            names = {first.value}
        else:
            node, names = call, set()
            while node in parents and not names:
                node = parents[node]
                loops = [node] if isinstance(node, ast.For) else getattr(node, "generators", [])
                for loop in loops:
                    names |= _etsf_names(loop.iter)
                    for ref in ast.walk(loop.iter):
                        if isinstance(ref, ast.Name) and ref.id in assigns:
                            names |= _etsf_names(assigns[ref.id])
        assert names, f"collector.py line {call.lineno}: metric name not resolved"
        out |= {n + s for n in names for s in SUFFIXES[call.func.id]}
    return out


def rule_series() -> set[str]:
    names = set()
    for r in rules():
        expr = re.sub(r'"[^"]*"', '""', r["expr"])          # label values are not names
        expr = re.sub(r"\[[^\]]*\]", "", expr)              # nor range durations
        for tok in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*(?=\s*(?:\{|\)|$|\s|==|>|<))", expr):
            if tok.startswith("etsf_") or tok in SCRAPE_SERIES:
                names.add(tok)
    return names


def test_exported_series_parser_sees_every_family():
    series = exported_series()
    # one of each kind of definition in collector.py: constant name, dict-driven loop,
    # tuple-driven loop, histogram
    for name in ("etsf_sip_packets_total", "etsf_interface_dropped_packets_total",
                 "etsf_failsafe_bypass", "etsf_sip_ser_ratio",
                 "etsf_sip_transaction_latency_seconds_bucket"):
        assert name in series, name
    assert "etsf_sip_packets" not in series       # a counter is only exposed as *_total


def test_rules_use_only_exported_metrics():
    used = rule_series()
    assert {"up", "etsf_failsafe_bypass", "etsf_sip_responses_total"} <= used, used
    unknown = used - exported_series() - SCRAPE_SERIES
    assert not unknown, f"rules use series the exporter does not export: {sorted(unknown)}"
