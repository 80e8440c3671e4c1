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
