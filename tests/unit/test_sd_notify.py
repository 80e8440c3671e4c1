"""The exporter's readiness reaches systemd (Type=notify) through $NOTIFY_SOCKET, path or abstract;
outside systemd nothing is sent; a socket that is gone is one line on stderr, not a crash."""
import os
import socket

from etsf.sdnotify import sd_notify


def test_ready_reaches_the_socket(tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False
    path = str(tmp_path / "notify")
    abstract = f"etsf-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as by_path, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as by_name:
        by_path.bind(path)
        by_name.bind("\0" + abstract)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert sd_notify("READY=1") and by_path.recv(64) == b"READY=1"
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + abstract)
        assert sd_notify("READY=1") and by_name.recv(64) == b"READY=1"
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sd_notify("READY=1") is False
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "cannot notify systemd" in err, err


def test_exporter_says_ready_and_leaves_a_stopped_heartbeat(tmp_path, monkeypatch):
    """The exporter tells systemd READY=1 once it listens; a clean shutdown (SIGTERM,
    --max-seconds) leaves its heartbeat saying it was stopped on purpose, which the fail-safe's
    heartbeat rule does not call stale."""
    import json

    from etsf.telemetry.server import serve
    hb = tmp_path / "etsf-exporter" / "heartbeat"
    hb.parent.mkdir()                          # systemd's RuntimeDirectory=
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        serve(port=0, max_seconds=0.5, root=str(tmp_path / "no-maps"), heartbeat_file=str(hb),
              heartbeat_interval=0.1, sample_interval=60)
        notify.settimeout(5)
        assert notify.recv(64) == b"READY=1"
    assert json.loads(hb.read_text())["stopped"] is True
