"""A certificate renewed in place reaches the exporter's clients without a restart: the listening
exporter (real sockets, real TLS handshakes) serves the files on disk, looked at no more than once
per check interval (0 here, so every connection looks; no timing in the test).  Files that do not
load together keep the loaded certificate, are counted and logged, and are tried again at their
next change."""
import shutil
import socket
import ssl
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest

from etsf.telemetry import webconfig
from etsf.telemetry.collector import EtsfCollector
from etsf.telemetry.server import ExporterServer


def _cert(d: Path, name: str) -> tuple[Path, Path]:
    if not shutil.which("openssl"):
        pytest.fail("openssl not installed (Debian package openssl)")
    cert, key = d / f"{name}.pem", d / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def _served(port: int) -> str:
    """The CN of the certificate a fresh connection is handed."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as s:
        der = s.getpeercert(binary_form=True)
    pem = ssl.DER_cert_to_PEM_cert(der)
    out = subprocess.run(["openssl", "x509", "-noout", "-subject"], input=pem, text=True,
                         capture_output=True, check=True).stdout
    return out.strip().rsplit("=", 1)[-1].strip()


def _metrics(port: int) -> dict[str, float]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    text = urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=ctx, timeout=10).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith("etsf_exporter_tls_reloads_total")}


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path, capfd):
    live = tmp_path / "live"
    live.mkdir()
    # names of different lengths: each certificate file has its own size, so a change shows even
    # where two writes fall within one tick of the filesystem clock
    for name in ("old", "renewed", "another-one"):
        _cert(tmp_path, name)
    shutil.copy(tmp_path / "old.pem", live / "cert.pem")
    shutil.copy(tmp_path / "old.key", live / "key.pem")
    tls = webconfig.ReloadingTls({"cert_file": str(live / "cert.pem"), "key_file": str(live / "key.pem"),
                                  "client_auth_type": "NoClientCert", "client_ca_file": "",
                                  "min_version": "TLS12", "max_version": "TLS13"}, check_every=0)
    srv = ExporterServer(("127.0.0.1", 0), EtsfCollector(root=str(tmp_path / "no-pins")), None, tls)
    port = srv.server_address[1]
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        assert _served(port) == "old"
        assert _metrics(port) == {'etsf_exporter_tls_reloads_total{result="error"}': 0,
                                  'etsf_exporter_tls_reloads_total{result="ok"}': 0}

        # renewed in place, as a PKI agent rewrites the files: the next connection gets it
        shutil.copy(tmp_path / "renewed.pem", live / "cert.pem")
        shutil.copy(tmp_path / "renewed.key", live / "key.pem")
        assert _served(port) == "renewed"

        # half way through the next renewal (certificate written, key not yet): the loaded
        # certificate stays, once counted and logged, however many clients connect meanwhile
        shutil.copy(tmp_path / "another-one.pem", live / "cert.pem")
        assert [_served(port) for _i in range(3)] == ["renewed"] * 3
        got = _metrics(port)
        assert got['etsf_exporter_tls_reloads_total{result="error"}'] == 1, got
        # the key arrives (a rename, as certbot's symlinks do it): loaded at the next connection
        (live / "key.tmp").write_bytes((tmp_path / "another-one.key").read_bytes())
        (live / "key.tmp").rename(live / "key.pem")
        assert _served(port) == "another-one"
        assert _metrics(port) == {'etsf_exporter_tls_reloads_total{result="error"}': 1,
                                  'etsf_exporter_tls_reloads_total{result="ok"}': 2}
    finally:
        srv.shutdown()
        srv.server_close()
    err = capfd.readouterr().err
    assert err.count("TLS files changed, not reloaded") == 1, err
    assert err.count("TLS files changed: reloaded") == 2, err


def test_the_files_are_looked_at_once_per_interval(tmp_path):
    """With a 1 s interval (the exporter's), connections within it cost no stat and no reload."""
    for name in ("a", "bbb"):
        _cert(tmp_path, name)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(tmp_path / "a.pem", cert)
    shutil.copy(tmp_path / "a.key", key)
    now = [100.0]
    tls = webconfig.ReloadingTls({"cert_file": str(cert), "key_file": str(key), "client_auth_type": "NoClientCert",
                                  "client_ca_file": "", "min_version": "TLS12", "max_version": "TLS13"},
                                 check_every=1.0, clock=lambda: now[0])
    first = tls.current()
    shutil.copy(tmp_path / "bbb.pem", cert)          # renewed at the same paths
    shutil.copy(tmp_path / "bbb.key", key)
    now[0] += 0.5
    assert tls.current() is first and tls.reloads == {"ok": 0, "error": 0}
    now[0] += 0.6
    assert tls.current() is not first and tls.reloads == {"ok": 1, "error": 0}
