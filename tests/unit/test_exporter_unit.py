"""etsf.exporter pieces that need no kernel: password hashes, quantiles, bucket bounds."""
import pytest

from etsf import exporter
from etsf import layout as L


def test_password_hash_roundtrip(tmp_path):
    h = exporter.hash_password("s3cret", iterations=1000)
    assert h.startswith("pbkdf2_sha256$1000$")
    assert exporter.check_password("s3cret", h)
    assert not exporter.check_password("s3cret ", h)
    assert not exporter.check_password("x", "garbage")
    f = tmp_path / "users"
    f.write_text(f"# comment\n\nprom:{h}\n")
    assert exporter.load_users(str(f)) == {"prom": h}
    f.write_text("prom:plaintext\n")
    with pytest.raises(exporter.ExporterError):
        exporter.load_users(str(f))


def test_bucket_bounds_are_powers_of_two_microseconds():
    assert len(exporter.BUCKET_BOUNDS) == L.TM_BUCKETS - 1
    assert exporter.BUCKET_BOUNDS[0] == 1e-6
    assert exporter.BUCKET_BOUNDS[13] == 8192e-6


def test_quantile_interpolates_within_a_bucket():
    slots = [0] * L.TM_BUCKETS
    slots[11] = 10                        # [1.024, 2.048) ms
    q = exporter.quantile(0.5, slots)
    assert 1.024e-3 < q < 2.048e-3
    assert exporter.quantile(0.5, [0] * L.TM_BUCKETS) is None
    slots = [0] * L.TM_BUCKETS
    slots[-1] = 1                          # open last bucket: its lower bound
    assert exporter.quantile(0.99, slots) == (1 << 30) / 1e6


def test_cli_parses_telemetry_commands():
    from etsf.cli import build_parser
    p = build_parser()
    a = p.parse_args(["exporter", "--port", "0", "--window", "60"])
    assert a.port == 0 and a.window == 60
    a = p.parse_args(["top", "--iterations", "3", "--interval", "0.5"])
    assert a.iterations == 3
    a = p.parse_args(["telemetry", "direction", "--iface", "sip0", "from"])
    assert a.direction == "from" and a.iface == "sip0"
    with pytest.raises(SystemExit):
        p.parse_args(["top", "--once", "--iterations", "2"])


def test_dashboard_uses_only_exported_metrics():
    import json
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    dash = json.loads((root / "roles/telemetry/files/grafana/etsf-sip.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = set(re.findall(r"\betsf_[a-z0-9_]+", " ".join(exprs)))
    src = (root / "src/etsf/telemetry/collector.py").read_text()
    families = set(re.findall(r'"(etsf_[a-z0-9_]+)"', src))
    exported = set()
    for f in families:
        exported |= {f, f + "_total", f + "_bucket", f + "_count", f + "_sum"}
    assert used and used <= exported, used - exported
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for want in ("method", "drops", "heatmap", "kpi", "fail-safe"):
        assert want in titles
