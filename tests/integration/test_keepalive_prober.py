"""The keep-alive prober against the REAL pinned etsf_ctl and a REAL UDP peer on loopback that
answers the probe's OPTIONS as told (200, 100 then 200, 503, an answer of another transaction,
nothing) or is not there at all (ICMP port unreachable).  Every outcome's write of the answer
gate is checked in the map: a 2xx opens it for alive_ms, a non-2xx answer or a closed port
shuts it at once, silence leaves it to run out; transitions are audited, the state file and the
heartbeat written.  Probes are counted; the only clock reads bound the gate's value."""
from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from conftest import read_pinned_ctl

from etsf.keepalive import sip

CFG = {"address": "127.0.0.1", "port": 0, "interval_ms": 100, "timeout_ms": 300, "alive_ms": 600_000}


class Peer:
    """A UDP socket on 127.0.0.1 answering every OPTIONS per `mode` (in a thread)."""

    def __init__(self, address: str = "127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 0))
        self.port = self.sock.getsockname()[1]
        self.mode = "200"
        self.seen: list[bytes] = []
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _answer(self, req: bytes, code: str, reason: str, branch: str | None = None) -> bytes:
        head = req.decode().split("\r\n\r\n")[0].split("\r\n")
        hdr = {ln.split(":", 1)[0].lower(): ln for ln in head[1:]}
        via = hdr["via"]
        if branch:
            via = via.split(";branch=")[0] + f";branch={branch};rport"
        lines = [f"SIP/2.0 {code} {reason}", via, hdr["from"], hdr["to"] + ";tag=peer", hdr["call-id"],
                 hdr["cseq"], "Content-Length: 0"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _serve(self):
        self.sock.settimeout(0.05)
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            self.seen.append(data)
            if self.mode == "silent":
                continue
            if self.mode == "stray":
                self.sock.sendto(self._answer(data, "200", "OK", branch="z9hG4bK-other"), addr)
                continue
            if self.mode == "100+200":
                self.sock.sendto(self._answer(data, "100", "Trying"), addr)
                self.sock.sendto(self._answer(data, "200", "OK"), addr)
                continue
            code, _sp, reason = self.mode.partition(" ")
            self.sock.sendto(self._answer(data, code, reason or "Whatever"), addr)

    def close(self):
        self._stop = True
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def loaded(etsf_env, etsf_bpf, build_dir):
    progs = etsf_bpf.load_object(os.path.join(build_dir, "xdp_sip.bpf.o"), etsf_env["ETSF_PIN_ROOT"])
    yield progs
    for p in progs.values():
        p.close()


@pytest.fixture
def peer():
    p = Peer()
    yield p
    p.close()


def _gate(etsf_bpf, env):
    c = read_pinned_ctl(etsf_bpf, env["ETSF_PIN_ROOT"])
    return int(c.proxy_alive_until_ns), int(c.ka_sample_every)


def _audit(env):
    path = os.path.join(env["ETSF_STATE_DIR"], "failsafe-audit.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(ln) for ln in f if ln.strip() and "keepalive" in ln]


def _prober(port, tmp_path, **over):
    from etsf.keepalive.prober import Prober
    return Prober(dict(CFG, port=port, **over), heartbeat_file=str(tmp_path / "run" / "ka.heartbeat"))


def test_200_opens_the_gate_for_alive_ms(tmp_path, etsf_env, etsf_bpf, loaded, peer):
    pr = _prober(peer.port, tmp_path)
    t0 = time.monotonic_ns()
    r = pr.tick()
    t1 = time.monotonic_ns()
    until, every = _gate(etsf_bpf, etsf_env)
    assert r["probe"]["outcome"] == "ok" and r["probe"]["status"] == 200 and r["alive"] and r["transition"]
    assert t0 + 600_000 * 10**6 <= until <= t1 + 600_000 * 10**6 and until == r["alive_until_ns"]
    assert every == 0                 # the sampling rate is the policy's: the prober leaves it
    # the probe is a well-formed OPTIONS to the proxy itself
    req = sip.parse(b"SIP/2.0 200 X\r\n" + peer.seen[0].split(b"\r\n", 1)[1])
    assert peer.seen[0].startswith(b"OPTIONS sip:127.0.0.1:%d SIP/2.0\r\n" % peer.port)
    assert req.first("max-forwards") == "70" and req.first("cseq") == "1 OPTIONS"
    assert ";rport" in req.first("via") and req.first("content-length") == "0"
    ev = _audit(etsf_env)
    assert [(a["event"], a["rule"], a["state"]) for a in ev] == [("keepalive_proxy_alive", "ok", "alive")]
    st = json.loads((tmp_path / "state" / "keepalive.json").read_text())
    assert st["alive"] and st["outcomes"] == {"ok": 1} and st["probes_total"] == 1
    assert st["last_probe"]["status"] == 200 and st["transitions_total"] == 1
    assert (tmp_path / "run" / "ka.heartbeat").exists()
    # a second 200 extends the gate and is no transition
    r2 = pr.tick()
    assert r2["alive"] and not r2["transition"] and _gate(etsf_bpf, etsf_env)[0] >= until
    assert len(_audit(etsf_env)) == 1 and r2["probe"]["sent"] == 1


def test_ipv6_proxy(tmp_path, etsf_env, etsf_bpf, loaded):
    p6 = Peer("::1")
    try:
        pr = _prober(p6.port, tmp_path, address="::1")
        r = pr.tick()
        assert r["probe"]["outcome"] == "ok" and r["alive"] and _gate(etsf_bpf, etsf_env)[0] == r["alive_until_ns"]
        assert p6.seen[0].startswith(b"OPTIONS sip:[::1]:%d SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:" % p6.port)
        p6.close()
        r = pr.tick()
        assert (r["probe"]["outcome"], r["alive"]) == ("refused", False) and _gate(etsf_bpf, etsf_env)[0] == 0
    finally:
        p6.close()


def test_probes_before_the_programs_are_loaded(tmp_path, etsf_env, peer):
    """At boot the prober may start before etsf-restore pinned the maps: it probes, writes no
    gate, keeps its heartbeat, and a stop is clean."""
    pr = _prober(peer.port, tmp_path)
    r = pr.tick()
    assert (r["probe"]["outcome"], r["maps"], r["alive"], r["transition"]) == ("ok", False, False, False)
    assert (tmp_path / "run" / "ka.heartbeat").exists() and _audit(etsf_env) == []
    pr.stop()
    assert json.loads((tmp_path / "state" / "keepalive.json").read_text())["stopped"]


def test_provisional_then_200_is_alive(tmp_path, etsf_env, etsf_bpf, loaded, peer):
    peer.mode = "100+200"
    r = _prober(peer.port, tmp_path).tick()
    assert r["probe"]["outcome"] == "ok" and r["alive"]


@pytest.mark.parametrize("mode, outcome, status", [("503 Service Unavailable", "rejected", 503),
                                                   ("486 Busy Here", "rejected", 486),
                                                   ("404 Not Found", "rejected", 404)])
def test_non_2xx_final_answer_shuts_the_gate_at_once(tmp_path, etsf_env, etsf_bpf, loaded, peer, mode,
                                                     outcome, status):
    pr = _prober(peer.port, tmp_path)
    assert pr.tick()["alive"]
    peer.mode = mode
    r = pr.tick()
    got = (r["probe"]["outcome"], r["probe"]["status"], r["alive"], r["alive_until_ns"])
    assert got == (outcome, status, False, 0)
    assert _gate(etsf_bpf, etsf_env) == (0, 0)
    assert [(a["event"], a["rule"]) for a in _audit(etsf_env)][-1] == ("keepalive_proxy_dead", outcome)


def test_closed_port_shuts_the_gate_at_once(tmp_path, etsf_env, etsf_bpf, loaded, peer):
    pr = _prober(peer.port, tmp_path)
    assert pr.tick()["alive"]
    port = peer.port
    peer.close()                                   # nothing listens: ICMP port unreachable
    r = pr.tick()
    assert (r["probe"]["outcome"], r["alive"], r["probe"]["sent"]) == ("refused", False, 1)
    assert _gate(etsf_bpf, etsf_env) == (0, 0)
    ev = _audit(etsf_env)
    assert ev[-1]["event"] == "keepalive_proxy_dead" and ev[-1]["rule"] == "refused"
    assert ev[-1]["numbers"]["target"] == f"127.0.0.1:{port}"


@pytest.mark.parametrize("mode", ["silent", "stray"])
def test_no_answer_leaves_the_gate_to_run_out(tmp_path, etsf_env, etsf_bpf, loaded, peer, mode):
    pr = _prober(peer.port, tmp_path)
    assert pr.tick()["alive"]
    until = _gate(etsf_bpf, etsf_env)[0]
    peer.mode = mode
    r = pr.tick()
    assert r["probe"]["outcome"] == "timeout" and r["alive"] and not r["transition"]
    assert _gate(etsf_bpf, etsf_env) == (until, 0)            # neither extended nor shut
    assert len(_audit(etsf_env)) == 1
    # T1 = 500 ms > the 300 ms timeout: one datagram, no retransmission
    assert r["probe"]["sent"] == 1 and len(peer.seen) == 2


def test_expiry_without_answers_is_audited(tmp_path, etsf_env, etsf_bpf, loaded, peer):
    from etsf import datapath
    from etsf.keepalive.prober import Prober
    peer.mode = "silent"
    t = time.monotonic_ns()
    datapath.set_keepalive_gate(t + 10**9)
    # the prober's clock: the gate open when the round starts, run out when the silent probe ends
    clock = iter([t, t + 2 * 10**9])
    r = Prober(dict(CFG, port=peer.port), clock_ns=lambda: next(clock)).tick()
    assert (r["probe"]["outcome"], r["alive"], r["transition"]) == ("timeout", False, True)
    assert _gate(etsf_bpf, etsf_env)[0] == t + 10**9           # a timeout writes nothing
    ev = _audit(etsf_env)
    assert [(a["event"], a["rule"]) for a in ev] == [("keepalive_proxy_dead", "expired")]


def test_stop_shuts_the_gate(tmp_path, etsf_env, etsf_bpf, loaded, peer):
    pr = _prober(peer.port, tmp_path)
    assert pr.tick()["alive"]
    pr.stop()
    assert _gate(etsf_bpf, etsf_env) == (0, 0)
    assert _audit(etsf_env)[-1]["rule"] == "prober_stopped"
    st = json.loads((tmp_path / "state" / "keepalive.json").read_text())
    assert st["alive"] is False and st["stopped"]


def test_retransmits_as_a_non_invite_transaction(tmp_path, etsf_env, etsf_bpf, loaded, peer):
    peer.mode = "silent"
    r = _prober(peer.port, tmp_path, timeout_ms=2000).tick()
    # sent at 0 and again from T1 = 0.5 s on (RFC 3261 Timer E), the same transaction each time
    assert r["probe"]["outcome"] == "timeout" and r["probe"]["sent"] >= 2 and len(peer.seen) == r["probe"]["sent"]
    assert len({sip.parse(b"SIP/2.0 200 X\r\n" + d.split(b"\r\n", 1)[1]).first("via") for d in peer.seen}) == 1


def _families(root):
    from etsf.telemetry.collector import EtsfCollector
    return {f.name: f for f in EtsfCollector(root).collect()}


def _sample(fams, name, **labels):
    fam = fams[name]
    vals = [s.value for s in fam.samples if s.name in (name, name + "_total") and s.labels == labels]
    assert len(vals) == 1, (name, labels, fam.samples)
    return vals[0]


def test_status_and_metrics_follow_the_prober(tmp_path, etsf_env, etsf_bpf, loaded, peer):
    from etsf.keepalive.commands import _status_text, status
    root = etsf_env["ETSF_PIN_ROOT"]
    fams = _families(root)
    assert _sample(fams, "etsf_keepalive_proxy_alive") == 0 and "etsf_keepalive_probes" not in fams
    assert _sample(fams, "etsf_keepalive_answered") == 0
    assert _sample(fams, "etsf_keepalive_passed", reason="proxy_stale") == 0
    assert _sample(fams, "etsf_nat_keepalives", action="dropped") == 0

    from etsf import datapath
    datapath.set_keepalive_gate(0, 7)            # as a policy with keepalive.sample_every: 7 does
    pr = _prober(peer.port, tmp_path)
    pr.tick()
    fams = _families(root)
    assert _sample(fams, "etsf_keepalive_proxy_alive") == 1 and _sample(fams, "etsf_keepalive_sample_every") == 7
    assert 0 < _sample(fams, "etsf_keepalive_proxy_alive_remaining_seconds") <= 600
    assert _sample(fams, "etsf_keepalive_probes", outcome="ok") == 1
    assert _sample(fams, "etsf_keepalive_prober_running") == 1 and _sample(fams, "etsf_keepalive_transitions") == 1
    st = status()
    assert st["prober_running"] and st["gate"]["proxy_alive"] and st["gate"]["sample_every"] == 7
    assert not st["enabled"] and st["identities"] == []          # no policy applied here
    assert st["prober"]["last_probe"]["outcome"] == "ok" and st["counters"]["answered"] == 0
    text = _status_text(st).splitlines()[1:]
    assert _status_text(st).startswith("keep-alive answers off in the live policy\n")
    assert text[0].startswith("proxy ALIVE: the kernel answers keep-alive OPTIONS for ")
    assert text[0].endswith("; 1 in 7 still goes to the proxy")
    assert text[1].startswith(f"prober running: 127.0.0.1:{peer.port} every 100 ms; "
                              "last probe ok (200 Whatever); 1 probes")
    assert text[2].startswith("kernel: answered 0, passed_proxy_stale 0")

    peer.mode = "503 Service Unavailable"
    pr.tick()
    pr.stop()
    fams = _families(root)
    assert _sample(fams, "etsf_keepalive_proxy_alive") == 0
    assert _sample(fams, "etsf_keepalive_probes", outcome="rejected") == 1
    assert _sample(fams, "etsf_keepalive_prober_running") == 0 and _sample(fams, "etsf_keepalive_transitions") == 2
    st = status()
    assert not st["prober_running"] and not st["gate"]["proxy_alive"] and st["gate"]["proxy_alive_until_ns"] == 0
    text = _status_text(st).splitlines()[1:]
    assert text[0] == "proxy not alive: the kernel passes every OPTIONS to the proxy; 1 in 7 still goes to the proxy"
    assert text[1].startswith("prober stopped:") and "last probe rejected (503 Service Unavailable)" in text[1]


def test_ready_once_after_the_first_probe_whatever_the_answer(tmp_path, etsf_env, etsf_bpf, loaded, peer):
    """etsf-keepalive.service is Type=notify: ready is told once, after the first probe wrote the
    state file and the heartbeat, also when the proxy does not answer (a dead proxy is what the
    prober reports, not a prober that failed to start)."""
    peer.mode = "silent"
    pr = _prober(peer.port, tmp_path, timeout_ms=100)
    hb = tmp_path / "run" / "ka.heartbeat"
    state = tmp_path / "state" / "keepalive.json"
    seen = []
    last = pr.run(count=3, ready=lambda: seen.append((pr.ticks, hb.exists(), state.exists())))
    assert [r["probe"]["outcome"] for r in last] == ["timeout"] * 3
    assert seen == [(1, True, True)]
