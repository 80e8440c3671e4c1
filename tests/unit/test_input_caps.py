"""Size caps on every file the agent reads (checked before reading or parsing), the
acl_guard against policies that cover everything, scoped IPv6 addresses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from etsf import datapath, exporter, failsafe, firstboot, inputs
from etsf import policy as P
from etsf.telemetry import webconfig

SRC = Path(__file__).resolve().parents[2] / "src"


def _rchar() -> int:
    """Bytes this process has read through read(2) so far."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.write(b"version: 1\n")
        f.truncate(size)
    return path


def test_huge_policy_refused_before_reading(tmp_path):
    big = _sparse(tmp_path / "policy.yml", 50 * inputs.MIB)        # the 50 MB file
    before = _rchar()
    with pytest.raises(P.PolicyError) as ei:
        P.load_file(str(big))
    read = _rchar() - before
    assert str(ei.value) == (f"policy: {big}: policy larger than the 4 MiB cap "
                             f"({50 * inputs.MIB} bytes)")
    assert read < 64 * 1024, read          # fstat refused it: the file itself was not read


def test_endless_file_read_one_byte_past_the_cap():
    """/dev/zero reports size 0: the read stops one byte past the cap."""
    before = _rchar()
    with pytest.raises(inputs.InputTooLarge) as ei:
        inputs.read_bytes("/dev/zero", "datapath config")
    assert _rchar() - before <= inputs.CAPS["datapath config"] + 1 + 64 * 1024
    assert str(ei.value) == "/dev/zero: datapath config larger than the 64 KiB cap"


def test_file_at_the_cap_is_read(tmp_path):
    f = tmp_path / "exact"
    f.write_bytes(b"a" * inputs.CAPS["build stamp"])
    assert len(inputs.read_bytes(str(f), "build stamp")) == inputs.CAPS["build stamp"]
    f.write_bytes(b"a" * (inputs.CAPS["build stamp"] + 1))
    with pytest.raises(inputs.InputTooLarge, match=r"build stamp larger than the 4 KiB cap \(4097 bytes\)"):
        inputs.read_bytes(str(f), "build stamp")


@pytest.mark.parametrize(("load", "kind", "cap_text"), [
    (failsafe.load_config, "failsafe config", "256 KiB"),
    (datapath.read_restore_config, "datapath config", "64 KiB"),  # noqa: SLF001
    (exporter.load_users, "basic auth file", "256 KiB"),
    (webconfig.load, "web config", "256 KiB"),
])
def test_config_files_capped(tmp_path, load, kind, cap_text):
    big = _sparse(tmp_path / "f", inputs.CAPS[kind] + 1)
    with pytest.raises((ValueError, datapath.DatapathError)) as ei:
        load(str(big))
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.endswith(f"{big}: {kind} larger than the {cap_text} cap ({inputs.CAPS[kind] + 1} bytes)"), msg


def test_tls_files_capped(tmp_path):
    cert = _sparse(tmp_path / "cert.pem", inputs.CAPS["TLS file"] + 1)
    with pytest.raises(inputs.InputTooLarge, match="TLS file larger than the 1 MiB cap"):
        exporter.serve(port=0, tls_cert=str(cert), tls_key=str(cert), max_seconds=1)


def test_state_files_capped(tmp_path, monkeypatch):
    """A state file past its cap is treated like a missing one / refused in one line."""
    monkeypatch.setenv("ETSF_STATE_DIR", str(tmp_path))
    _sparse(tmp_path / "state.json", inputs.CAPS["state"] + 1)
    assert datapath.load_state() == {"interfaces": {}}
    _sparse(tmp_path / failsafe.STATE_FILE, inputs.CAPS["state"] + 1)
    assert failsafe.read_state() is None
    stamp = _sparse(tmp_path / "firstboot.json", inputs.CAPS["state"] + 1)
    with pytest.raises(inputs.InputTooLarge, match="state larger than the 4 MiB cap"):
        firstboot.run(str(tmp_path / "datapath.yml"), stamp=str(stamp))


def test_auth_file_absurd_iterations_refused(tmp_path):
    f = tmp_path / "users"
    f.write_text("alice:pbkdf2_sha256$99999999999$c2FsdA==$aGFzaA==\n")
    with pytest.raises(exporter.ExporterError, match=r":1: expected .* ITERATIONS in 1\.\.2000000"):
        exporter.load_users(str(f))


def test_datapath_config_paths_typed(tmp_path):
    f = tmp_path / "datapath.yml"
    f.write_text("version: 1\ninterfaces: [eth0]\npolicy: 3\n")   # 3 would be taken as an fd
    with pytest.raises(datapath.DatapathError, match=r"datapath.yml: policy: expected a path$"):
        datapath.read_restore_config(str(f))  # noqa: SLF001


def test_etsfctl_huge_policy_one_line(tmp_path):
    big = _sparse(tmp_path / "policy.yml", 50 * inputs.MIB)
    r = subprocess.run([sys.executable, "-m", "etsf", "policy", "apply", "--check", str(big)],
                       capture_output=True, text=True, timeout=60, check=False,
                       env=dict(os.environ, PYTHONPATH=str(SRC)))
    assert r.returncode == 1
    assert r.stderr == f"etsfctl: error: policy: {big}: policy larger than the 4 MiB cap ({50 * inputs.MIB} bytes)\n"


# ---- acl_guard and scopes ---------------------------------------------------------


def test_broad_prefixes_need_the_explicit_flag():
    text = "version: 1\ndeny: [0.0.0.0/0, '::/0']\ntrust: [198.0.0.0/7]\nacl_guard: {allow_broad: true}\n"
    p = P.load_text(text)
    assert p.deny == ["0.0.0.0/0", "::/0"] and p.trust == ["198.0.0.0/7"]
    d = p.to_dict()
    assert d["acl_guard"] == {"ipv4_min_prefix": 8, "ipv6_min_prefix": 16, "allow_broad": True}
    # the flag steers validation only: it is no change against a live policy without it
    live = dict(d)
    del live["acl_guard"]
    assert P.diff(live, d) == []
    # written back (policy.applied.yml without source text) it validates again
    import yaml
    assert P.validate(yaml.safe_load(yaml.safe_dump(d))).to_dict() == d


def test_minimums_at_the_boundary_and_configurable():
    assert P.load_text("version: 1\ndeny: [198.0.0.0/8, '2001::/16']\n").to_dict().get("acl_guard") is None
    p = P.load_text("version: 1\nacl_guard: {ipv4_min_prefix: 0, ipv6_min_prefix: 0}\ndeny: [0.0.0.0/0]\n")
    assert p.deny == ["0.0.0.0/0"]
    with pytest.raises(P.PolicyError, match=r"^policy.trust\[0\]: a prefix of /16 or longer .* \(got '198.18.0.0/15'\)$"):
        P.load_text("version: 1\nacl_guard: {ipv4_min_prefix: 16}\ntrust: [198.18.0.0/15]\n")


def test_scoped_addresses_refused_in_services():
    text = ("version: 1\nservices:\n  - name: s\n    vip: 'fe80::1%eth0'\n    port: 5060\n"
            "    backends: [{address: 'fe80::2'}]\n")
    with pytest.raises(P.PolicyError, match=r"^policy.services\[0\].vip: an unscoped IPv4/IPv6 address .* \(got 'fe80::1%eth0'\)$"):
        P.load_text(text)


def test_role_checks_the_guard_through_the_one_validator(tmp_path):
    """roles/policy validates the templated file with `etsfctl policy apply --check` (and the
    module calls etsf.policy.load_text): the guard is not re-implemented in the role."""
    repo = SRC.parent
    configure = (repo / "roles/policy/tasks/configure.yml").read_text()
    assert 'validate: "{{ policy_etsfctl }} policy apply --check %s"' in configure
    module = (repo / "plugins/modules/policy.py").read_text()
    assert "etsf_policy.load_text(text)" in module and "etsf_policy.load_file(src)" in module
    for f in sorted((repo / "roles/policy").rglob("*")):
        if f.is_file() and f.name != "argument_specs.yml":
            assert "min_prefix" not in f.read_text() and "0.0.0.0/0" not in f.read_text(), f
    pol = tmp_path / "policy.yml"
    pol.write_text("version: 1\ntrust: ['::/0']\n")
    r = subprocess.run([sys.executable, "-m", "etsf", "policy", "apply", "--check", str(pol)],
                       capture_output=True, text=True, timeout=60, check=False,
                       env=dict(os.environ, PYTHONPATH=str(SRC)))
    assert r.returncode == 1
    assert r.stderr.startswith("etsfctl: error: policy.trust[0]: a prefix of /16 or longer (the IPv6 minimum")
    assert r.stderr.endswith("expected (got '::/0')\n")
    assert r.stderr.count("\n") == 1


@pytest.mark.parametrize(("text", "want"), [
    ("198.18.0.1", ("198.18.0.1", 5060)),
    ("198.18.0.1:5080", ("198.18.0.1", 5080)),
    ("[2001:db8::1]:5070", ("2001:db8::1", 5070)),
    ("[2001:db8::1]", ("2001:db8::1", 5060)),
    ("2001:db8::1", ("2001:db8::1", 5060)),      # a bare IPv6 address is not ADDR:PORT
])
def test_health_probe_forms(text, want):
    from etsf import health
    assert health.parse_probe(text) == want


@pytest.mark.parametrize("text", ["fe80::1%eth0", "[fe80::1%eth0]:5060", "198.18.0.1:0", "198.18.0.1:70000",
                                  "[2001:db8::1]x", "host.example:5060", ""])
def test_health_probe_refused(text):
    from etsf import health
    with pytest.raises(health.HealthError, match=r"^probe: "):
        health.parse_probe(text)


def test_audit_log_only_its_tail_is_read(tmp_path, monkeypatch):
    """failsafe-audit.jsonl only grows: `failsafe status` reads its last MiB, whatever its size."""
    monkeypatch.setenv("ETSF_STATE_DIR", str(tmp_path))
    log = tmp_path / failsafe.AUDIT_FILE
    with open(log, "wb") as f:
        f.truncate(40 * inputs.MIB)              # 40 MiB of NULs, then real entries
        f.seek(0, os.SEEK_END)
        for i in range(60):
            f.write(b'{"event": "tick", "n": %d}\n' % i)
    before = _rchar()
    rows = failsafe.read_audit(limit=50)
    assert _rchar() - before <= inputs.CAPS["audit log tail"] + 64 * 1024
    assert [r["n"] for r in rows] == list(range(10, 60))


def test_build_stamp_oversized_means_rebuild(tmp_path):
    from etsf import build
    stamp = tmp_path / build.STAMP_FILE
    _sparse(stamp, inputs.CAPS["build stamp"] + 1)
    assert build._read_stamp(stamp) is None  # noqa: SLF001
    stamp.write_text("abc\n")
    assert build._read_stamp(stamp) == "abc"  # noqa: SLF001


def test_hash_password_stdin_bounded():
    env = dict(os.environ, PYTHONPATH=str(SRC))
    r = subprocess.run([sys.executable, "-m", "etsf", "exporter", "--hash-password"], input="a" * 5_000_000,
                       capture_output=True, text=True, timeout=60, check=False, env=env)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == "etsfctl: error: password on stdin longer than 1024 characters\n"
    r = subprocess.run([sys.executable, "-m", "etsf", "exporter", "--hash-password"], input="x" * 1024 + "\n",
                       capture_output=True, text=True, timeout=60, check=False, env=env)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == "etsfctl: error: password on stdin longer than 72 bytes (bcrypt reads no further)\n"
    r = subprocess.run([sys.executable, "-m", "etsf", "exporter", "--hash-password", "--bcrypt-cost", "4"],
                       input="x" * 72 + "\n", capture_output=True, text=True, timeout=60, check=False, env=env)
    assert r.returncode == 0 and r.stdout.startswith("$2b$04$") and len(r.stdout) == 61
