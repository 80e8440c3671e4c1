"""The controller's signal readers on real kernel sources: a real UDP socket's receive queue in
/proc/net/udp, /proc/stat, and the per-tick latency / 5xx deltas; the exporter metrics and the
pin in the state file."""
from __future__ import annotations

import socket

from etsf.overload import state
from etsf.overload.signals import cpu_jiffies, tick_latency_and_5xx, udp_sockets
from etsf.telemetry.collector import overload_auto_metrics


def test_udp_queue_of_an_unread_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert udp_sockets([port]) == {"queue": 0, "drops": 0, "sockets": 1}
        for _i in range(5):
            s.sendto(b"x" * 500, ("127.0.0.1", port))
        u = udp_sockets([port])
        assert u["sockets"] == 1 and u["queue"] >= 5 * 500
        for _i in range(5):
            s.recv(2048)
        assert udp_sockets([port])["queue"] == 0
    finally:
        s.close()
    assert udp_sockets([port])["sockets"] == 0


def test_cpu_jiffies_busy_within_total():
    busy, total = cpu_jiffies()
    assert 0 <= busy <= total and total > 0


def test_tick_latency_and_5xx_deltas():
    old = {"lat": {"trying": (10, 10 * 2_000_000)}, "codes": {200: 8, 503: 1}}
    new = {"lat": {"trying": (14, 10 * 2_000_000 + 4 * 50_000_000), "ringing": (3, 9)},
           "codes": {200: 11, 503: 4, 486: 1}}
    assert tick_latency_and_5xx(old, new) == (50.0, round(3 / 7, 4))
    assert tick_latency_and_5xx(new, new) == (None, None)       # nothing happened
    only180 = {"lat": {"ringing": (5, 5 * 3_000_000)}, "codes": {}}
    assert tick_latency_and_5xx({"lat": {}, "codes": {}}, only180) == (3.0, None)


def test_pin_resume_and_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("ETSF_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ETSF_RUN_DIR", str(tmp_path / "run"))
    assert state.read_state() is None and list(overload_auto_metrics(None)) == []
    state.update_state(lambda d: d.update(level=2, admit_rate=150, changes_total=4, pressure=2.5))
    state.pin(3, by="test")
    doc = state.read_state()
    assert doc["pinned"] and doc["pinned_level"] == 3 and doc["level"] == 2
    m = {f.name: f.samples[0].value for f in overload_auto_metrics(doc)}
    assert m == {"etsf_overload_auto_level": 2, "etsf_overload_auto_admit_rate": 150,
                 "etsf_overload_auto_pinned": 1, "etsf_overload_auto_pressure": 2.5,
                 "etsf_overload_auto_changes": 4}
    state.resume()
    doc = state.read_state()
    assert doc["pinned"] is False and "pinned_level" not in doc and doc["changes_total"] == 4


def test_served_per_cpu():
    """INVITE 2xx per second over the tick, per CPU that received INVITEs (etsf_stats; without
    it, per CPU admission decided on)."""
    from etsf.overload.signals import served_per_cpu
    old = {"codes": {100: 50, 180: 40, 200: 30, 503: 2}, "passed": [100, 0]}
    new = {"codes": {100: 350, 180: 340, 200: 330, 202: 10, 500: 9}, "passed": [400, 0]}
    assert served_per_cpu(old, new, 0.5) == 620.0                 # (300 + 10) / 0.5 s / 1 CPU
    assert served_per_cpu(old, dict(new, passed=[400, 7]), 0.5) == 310.0       # two CPUs received
    assert served_per_cpu(old, dict(new, passed=[100, 0]), 0.5) is None        # no INVITE came in
    assert served_per_cpu(old, new, 0.0) is None
    adm_old = dict(old, passed=None, decided=[100, 0], admitted=[90, 0])
    adm_new = dict(new, passed=None, decided=[400, 0], admitted=[300, 0])
    assert served_per_cpu(adm_old, adm_new, 0.5) == 620.0         # no etsf_stats: etsf_admit's CPUs
    assert served_per_cpu(dict(adm_old, decided=None), adm_new, 0.5) is None


def test_passed_per_cpu():
    """INVITEs let through per second per receiving CPU: etsf_stats whether admission is on or
    off (a tick that switched it still counts every INVITE), etsf_admit's admitted without it."""
    from etsf.overload.signals import passed_per_cpu
    old = {"passed": [1000, 50], "decided": [0, 0], "admitted": [0, 0]}
    new = {"passed": [1600, 50], "decided": [40, 0], "admitted": [40, 0]}   # admission off mid-tick
    assert passed_per_cpu(old, new, 0.5) == (1200.0, 1)
    assert passed_per_cpu(old, dict(new, passed=[1600, 650]), 0.5) == (1200.0, 2)
    assert passed_per_cpu(old, dict(new, passed=[1000, 50]), 0.5) == (0.0, 0)
    assert passed_per_cpu(dict(old, passed=None), dict(new, passed=None), 0.5) == (80.0, 1)
    assert passed_per_cpu({}, {}, 0.5) == (None, 0)
    assert passed_per_cpu(old, new, 0.0) == (None, 0)
