"""CLI contract tests that need no kernel: one-line errors, JSON output, exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from etsf import cli

SRC = str(Path(__file__).resolve().parents[2] / "src")


def run(*args, env=None):
    e = dict(os.environ)
    e["PYTHONPATH"] = SRC
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "etsf", *args], capture_output=True, text=True,
                          env=e, timeout=60, check=False)


@pytest.fixture
def isolated(tmp_path):
    return {"ETSF_STATE_DIR": str(tmp_path / "state"), "ETSF_RUN_DIR": str(tmp_path / "run"),
            "ETSF_PIN_ROOT": str(tmp_path / "no-such-pins")}


def test_invalid_policy_check_one_line_stderr(tmp_path, isolated):
    f = tmp_path / "p.yml"
    f.write_text("version: 1\nrate_limits: {register: {rate: -5}}\n")
    r = run("policy", "apply", str(f), "--check", env=isolated)
    assert r.returncode != 0
    assert r.stderr.strip() == ("etsfctl: error: policy.rate_limits.register.rate: "
                                "an integer 0..4294967295 expected (got -5)")
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


def test_missing_file_one_line(tmp_path, isolated):
    r = run("policy", "apply", str(tmp_path / "nope.yml"), env=isolated)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1
    assert "cannot read" in r.stderr


def test_check_without_datapath_json(tmp_path, isolated):
    f = tmp_path / "p.yml"
    f.write_text("version: 1\ndeny: [198.18.9.0/24]\n")
    r = run("policy", "apply", str(f), "--check", "--json", env=isolated)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["check"] is True and out["live_exists"] is False
    assert {"path": "deny", "op": "add", "value": "198.18.9.0/24"} in out["diff"]
    assert not (tmp_path / "state" / "policy.applied.yml").exists()


def test_usage_error_one_line():
    r = run("attach")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert "--iface" in r.stderr


def test_unknown_interface_one_line(isolated):
    r = run("attach", "--iface", "etsf-nonexist0", env=isolated)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_overload_range_rejected():
    with pytest.raises(SystemExit) as ei:
        cli.main(["overload", "set", "7"])
    assert ei.value.code == 2


def test_parser_has_all_commands():
    p = cli.build_parser()
    for argv in (["build", "--out", "/tmp/x", "--force"], ["attach", "--iface", "lo", "--mode", "generic"],
                 ["detach", "--iface", "lo"], ["policy", "apply", "f", "--check", "--diff"],
                 ["policy", "show", "--json"], ["stats", "--json"], ["status", "--json"],
                 ["overload", "set", "2"], ["bypass", "on"], ["heartbeat", "--once"],
                 ["heartbeat", "--interval", "1", "--count", "3"]):
        assert p.parse_args(argv).func


def test_apply_without_datapath_one_line(tmp_path, isolated):
    f = tmp_path / "p.yml"
    f.write_text("version: 1\n")
    r = run("policy", "apply", str(f), env=isolated)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1
    assert "datapath maps not found" in r.stderr and "etsfctl attach" in r.stderr
    assert not (tmp_path / "state" / "policy.applied.yml").exists()


def test_duplicate_key_error_names_line(tmp_path, isolated):
    f = tmp_path / "p.yml"
    f.write_text("version: 1\nsip_ports: [5060]\nsip_ports: [5062]\n")
    r = run("policy", "apply", str(f), "--check", env=isolated)
    assert r.returncode == 1
    assert r.stderr.strip() == "etsfctl: error: policy: invalid YAML at line 3, column 1: duplicate key 'sip_ports'"


def _stdin(args, text, env):
    e = dict(os.environ, PYTHONPATH=SRC, **env)
    return subprocess.run([sys.executable, "-m", "etsf", *args], input=text, capture_output=True, text=True,
                          env=e, timeout=60, check=False)


def test_documents_checked_from_standard_input(isolated):
    """'-' reads the document from stdin: what the roles pipe to the validator in preflight."""
    r = _stdin(["policy", "apply", "--check", "-"], "version: 1\nsip_ports: [5080]\n", isolated)
    assert r.returncode == 0 and "policy valid" in r.stdout, r.stderr
    r = _stdin(["policy", "apply", "--check", "-"], "version: 1\nsip_ports: [0]\n", isolated)
    assert (r.returncode, r.stderr) == (1, "etsfctl: error: policy.sip_ports[0]: an integer 1..65535 expected "
                                           "(got 0)\n")
    r = _stdin(["failsafe", "--check", "--config", "-"], "actions: {recovery: auto}\n", isolated)
    assert r.returncode == 0 and r.stdout == "failsafe config valid: -\n", r.stderr
    r = _stdin(["failsafe", "--check", "--config", "-"], "actions: {recovery: later}\n", isolated)
    assert (r.returncode, r.stderr) == (1, "etsfctl: error: -: failsafe.actions.recovery: one of manual, auto "
                                           "expected (got 'later')\n")
    assert not (Path(isolated["ETSF_STATE_DIR"]) / "policy.applied.yml").exists()


def test_standard_input_has_the_size_cap(isolated):
    from etsf import inputs
    big = "version: 1\n" + "#" * inputs.CAPS["failsafe config"]
    r = _stdin(["failsafe", "--check", "--config", "-"], big, isolated)
    assert (r.returncode, r.stderr) == (1, "etsfctl: error: standard input: failsafe config larger than the "
                                           "256 KiB cap\n")
