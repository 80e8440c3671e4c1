"""Keep-alive answers with real peers: Kamailio as the node's proxy, eTSF attached (native XDP) on
the node's veth with `keepalive:` enabled, the agent's prober (`etsfctl keepalive probe`) run in
the node's namespace, sipp and sipsak as the devices that ping the node.

Topology (namespaces prefixed ``<ETSF_IT_NS_PREFIX>ka``, 198.18.0.0/15 only)::

    client ns: sipp / sipsak 198.18.2.1  --veth (XDP_PASS counter: NAPI for XDP_TX)--
    node ns:   eTSF XDP on the veth, Kamailio 198.18.2.2:5060, the prober

* the kernel answers the devices' OPTIONS while the prober's last probe got a 200: sipp's checks
  of the 200 pass, sipsak gets a 200 whose Server line is the policy's (not Kamailio's), eTSF's
  answered counter equals what was sent (minus the sampled share, which Kamailio answers itself)
  and Kamailio's own log shows it never saw the answered ones;
* the prober's own OPTIONS reach Kamailio over the node's local route and never pass the XDP hook;
* Kamailio stopped: the next probe round is refused (ICMP port unreachable) and shuts the gate;
  OPTIONS reach the proxy path again and fail as they must (no proxy: ICMP); Kamailio restarted:
  the next probe round that gets a 200 opens the gate, answers resume;
* fail-safe bypass: OPTIONS go to the proxy, whatever the gate says.

Every load is bounded (sipp -m / -timeout, sipsak one request, probe rounds counted)."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import NS_PREFIX, SCENARIOS, UAC_IP, UAS_IP, etsfctl, lab_fixture, read_pinned_ctl
from test_sipp_traffic import SIP_PORT, _counts, _delta, _sipp, _snapshot, _stat

HERE = Path(__file__).resolve().parent
KAM_CFG = HERE / "keepalive" / "kamailio.cfg.in"
SERVER = "etsf-it-keepalive"


ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"
LONG_ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK, SUBSCRIBE, NOTIFY, REFER, MESSAGE"


def _policy(sample_every: int = 0, allow: str = ALLOW) -> str:
    # alive_ms is long: the gate must not run out by itself while a bounded sipp run lasts; the
    # tests shut it only through what the prober sees.  The Server line tells the kernel's 200
    # from Kamailio's
    return json.dumps({
        "version": 1, "sip_ports": [SIP_PORT],
        "keepalive": {"enabled": True, "identities": [UAS_IP], "sample_every": sample_every,
                      "server": SERVER, "allow": allow,
                      "probe": {"address": UAS_IP, "port": SIP_PORT, "interval_ms": 200, "timeout_ms": 300,
                                "alive_ms": 600_000}},
    })


@pytest.fixture(scope="module")
def lab():
    for tool in ("sipp", "sipsak", "kamailio"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not installed (run `make setup`)")
    yield from lab_fixture(ns_prefix=f"{NS_PREFIX}ka", if_prefix="etsfka")


class Proxy:
    """Kamailio in the node namespace; every run logs to its own file."""

    def __init__(self, lab, work: Path):
        self.lab, self.work, self.proc, self.runs = lab, work, None, 0
        work.mkdir(parents=True, exist_ok=True)
        (work / "kamailio.cfg").write_text(KAM_CFG.read_text().replace("@ADDR@", UAS_IP)
                                           .replace("@PORT@", str(SIP_PORT)))

    def start(self):
        self.runs += 1
        self.proc = self.lab.popen(self.lab.srv_ns, ["kamailio", "-f", str(self.work / "kamailio.cfg"), "-DD", "-E",
                                                     "-m", "16", "-M", "4", "-n", "1", "-Y", str(self.work)],
                                   cwd=self.work, log=self.work / f"kamailio-{self.runs}.log")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.lab.stop(self.proc, timeout=20, sig=signal.SIGTERM)
        self.proc = None

    def requests(self) -> list[tuple[str, str, str]]:
        """(method, Call-ID, User-Agent) of every request Kamailio logged, all runs."""
        out = []
        for log in sorted(self.work.glob("kamailio-*.log")):
            out += re.findall(r"ETSF-KA-PROXY .*?REQ (\S+) (\S+) ua=\[([^\]]*)\]", log.read_text(errors="replace"))
        return out

    def device_options(self) -> list[str]:
        """Call-IDs of the devices' OPTIONS that reached Kamailio (the prober's excluded)."""
        return [ci for m, ci, ua in self.requests() if m == "OPTIONS" and not ua.startswith("etsf-keepalive/")]


@pytest.fixture(scope="module")
def peer_napi(lab, build_dir):
    """A veth delivers XDP_TX frames only to a peer running NAPI, i.e. with an XDP program:
    the count-only baseline program (XDP_PASS) on the client side."""
    obj = os.path.join(build_dir, "xdp_count.bpf.o")
    subprocess.run(["ip", "-n", lab.cli_ns, "link", "set", "dev", lab.cli_if, "xdp", "obj", obj, "sec", "xdp"],
                   check=True, capture_output=True)
    yield
    subprocess.run(["ip", "-n", lab.cli_ns, "link", "set", "dev", lab.cli_if, "xdp", "off"],
                   check=False, capture_output=True)


@pytest.fixture
def node(lab, peer_napi, etsf_env, etsf_bpf, tmp_path):
    """eTSF attached on the node's veth with keep-alive answers on, Kamailio running and the
    gate opened by probe rounds (counted); yields a small handle."""
    if not lab.alive():
        pytest.fail("lab namespaces disappeared (another process deleted them)")
    r = etsfctl("attach", "--hook", "xdp", "--iface", lab.srv_if, "--mode", "native", "--json",
                env=etsf_env, netns=lab.srv_ns)
    assert json.loads(r.stdout)["mode"] == "native"
    pol = tmp_path / "policy.yml"
    pol.write_text(_policy())
    etsfctl("policy", "apply", str(pol), env=etsf_env)
    proxy = Proxy(lab, tmp_path / "kamailio")
    proxy.start()

    class Node:
        policy = pol

        @staticmethod
        def probe(count: int = 1) -> list[dict]:
            out = etsfctl("keepalive", "probe", "--policy", str(pol), "--count", str(count), "--json",
                          env=etsf_env, netns=lab.srv_ns)
            return json.loads(out.stdout)["history"]

        @staticmethod
        def probe_until_ok(rounds: int = 40) -> int:
            """Probe rounds until one gets a 200 (Kamailio starting up); the rounds it took."""
            for n in range(1, rounds + 1):
                if Node.probe()[-1]["probe"]["outcome"] == "ok":
                    return n
            pytest.fail(f"Kamailio did not answer {rounds} probe rounds: "
                        + (proxy.work / f"kamailio-{proxy.runs}.log").read_text()[-2000:])
            return 0

        @staticmethod
        def gate() -> tuple[int, int]:
            c = read_pinned_ctl(etsf_bpf, etsf_env["ETSF_PIN_ROOT"])
            return int(c.proxy_alive_until_ns), int(c.ka_sample_every)

        @staticmethod
        def ka() -> dict[str, int]:
            from etsf.keepalive.commands import counters
            return counters()

    Node.proxy = proxy
    Node.probe_until_ok()
    yield Node
    proxy.stop()
    etsfctl("detach", "--iface", lab.srv_if, env=etsf_env, netns=lab.srv_ns, check=False)


def _audit(env) -> list[dict]:
    """The keep-alive entries of the audit trail."""
    with open(os.path.join(env["ETSF_STATE_DIR"], "failsafe-audit.jsonl"), encoding="utf-8") as f:
        return [json.loads(ln) for ln in f if "keepalive" in ln]


def _ka_delta(before, after):
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def _sipsak(lab, tmp_path, name):
    """One OPTIONS from sipsak to the node: (return code, what sipsak printed)."""
    log = tmp_path / f"sipsak-{name}.log"
    p = lab.popen(lab.cli_ns, ["sipsak", "-vv", "-H", UAC_IP, "-s", f"sip:{UAS_IP}"], cwd=tmp_path, log=log)
    rc = lab.stop(p, timeout=60)
    return rc, log.read_text(errors="replace")


def _sipp_options(lab, work: Path, n: int, rate: int = 20, scenario: str = "uac_options"):
    work.mkdir(parents=True)
    shutil.copy(SCENARIOS / f"{scenario}.xml", work / f"{scenario}.xml")
    uac = lab.popen(lab.cli_ns, _sipp("-sf", f"{scenario}.xml", f"{UAS_IP}:{SIP_PORT}", "-i", UAC_IP,
                                      "-p", "5070", "-m", str(n), "-r", str(rate), "-max_retrans", "3",
                                      "-timeout", "30s", "-stf", "uac_stat.csv"),
                    cwd=work, log=work / "sipp.log")
    rc = lab.stop(uac, timeout=60)
    assert rc == 0, (work / "sipp.log").read_text()[-2000:]
    st = _stat(work, "uac_stat.csv")
    assert st["SuccessfulCall(C)"] == n and st["FailedCall(C)"] == 0, st
    c = _counts(work, scenario)
    assert c.get(("OPTIONS", "Sent")) == n and c.get(("OPTIONS", "Retrans"), 0) == 0, c
    assert c.get(("200", "Recv")) == n, c


def test_sipp_and_sipsak_answered_in_the_kernel(lab, node, tmp_path):
    n = 40
    until, every = node.gate()
    assert until > 0 and every == 0
    seen0, ka0, st0 = len(node.proxy.device_options()), node.ka(), _snapshot()
    _sipp_options(lab, tmp_path / "sipp", n)
    rc, out = _sipsak(lab, tmp_path, "alive")
    assert rc == 0, out
    assert "SIP/2.0 200 OK" in out and f"Server: {SERVER}" in out and re.search(r"\nTo: .*;tag=\w+", out), out
    ka, st = node.ka(), _snapshot()
    assert _ka_delta(ka0, ka) == {"answered": n + 1}
    xdp = _delta(st0, st, "XDP")
    assert xdp["OPTIONS"] == {"REDIRECT/KA_ANSWERED": n + 1, "total": n + 1}, xdp
    assert len(node.proxy.device_options()) == seen0          # Kamailio saw none of them


def test_sampled_share_reaches_the_proxy(lab, node, tmp_path, etsf_env):
    n, every = 40, 5
    node.policy.write_text(_policy(sample_every=every))
    etsfctl("policy", "apply", str(node.policy), env=etsf_env)
    assert node.gate()[1] == every                            # written with the policy slot swap
    assert node.probe()[-1]["probe"]["outcome"] == "ok"
    seen0, ka0 = set(node.proxy.device_options()), node.ka()
    _sipp_options(lab, tmp_path / "sipp", n)
    d = _ka_delta(ka0, node.ka())
    sampled = d.get("passed_sampled", 0)
    assert d.get("answered", 0) + sampled == n and set(d) <= {"answered", "passed_sampled"}, d
    # 1 in `every` per CPU: whatever the split over the CPUs, at least n // (every * CPUs)
    assert sampled >= n // (every * os.cpu_count()), d
    reached = [ci for ci in node.proxy.device_options() if ci not in seen0]
    assert len(reached) == sampled and len(set(reached)) == sampled
    print("sampled 1 in", every, ":", d)


def test_bare_options_all_answered_in_the_kernel(lab, node, tmp_path, etsf_env):
    """A 200 longer than its request (bare pings, a long Allow line) needs a larger frame: on a
    veth, whose frame has only its alignment slack as tailroom, it grows into the headroom."""
    n = 40
    node.policy.write_text(_policy(allow=LONG_ALLOW))
    etsfctl("policy", "apply", str(node.policy), env=etsf_env)
    seen0, ka0, st0 = len(node.proxy.device_options()), node.ka(), _snapshot()
    _sipp_options(lab, tmp_path / "sipp", n, scenario="uac_options_bare")
    assert _ka_delta(ka0, node.ka()) == {"answered": n}
    xdp = _delta(st0, _snapshot(), "XDP")
    assert xdp["OPTIONS"] == {"REDIRECT/KA_ANSWERED": n, "total": n}, xdp
    assert len(node.proxy.device_options()) == seen0          # Kamailio saw none of them


def test_probes_never_pass_the_xdp_hook(node):
    st0, reqs0 = _snapshot(), len(node.proxy.requests())
    hist = node.probe(3)
    assert [h["probe"]["outcome"] for h in hist] == ["ok"] * 3
    assert _delta(st0, _snapshot(), "XDP").get("OPTIONS") is None
    new = node.proxy.requests()[reqs0:]
    assert [(m, ua.split("/")[0]) for m, _ci, ua in new] == [("OPTIONS", "etsf-keepalive")] * 3


def test_dead_proxy_is_never_hidden(lab, node, tmp_path, etsf_env):
    rc, out = _sipsak(lab, tmp_path, "before")
    assert rc == 0 and f"Server: {SERVER}" in out, out

    node.proxy.stop()
    hist = node.probe()                                        # one probe round notices
    assert hist[-1]["probe"]["outcome"] == "refused" and not hist[-1]["alive"]
    assert node.gate()[0] == 0
    ka0, st0 = node.ka(), _snapshot()
    rc, out = _sipsak(lab, tmp_path, "dead")
    assert rc == 3, out                                        # remote error: ICMP, no answer
    assert "200 OK" not in out, out
    d, xdp = _ka_delta(ka0, node.ka()), _delta(st0, _snapshot(), "XDP")
    assert set(d) == {"passed_proxy_stale"} and d["passed_proxy_stale"] >= 1, d
    assert xdp["OPTIONS"] == {"PASS/OK": d["passed_proxy_stale"], "total": d["passed_proxy_stale"]}, xdp
    st = json.loads(etsfctl("keepalive", "status", "--json", env=etsf_env).stdout)
    assert not st["gate"]["proxy_alive"] and st["prober"]["last_probe"]["outcome"] == "refused"
    assert st["enabled"] and st["identities"] == [UAS_IP] and st["prober_running"]
    text = etsfctl("keepalive", "status", env=etsf_env).stdout.splitlines()
    assert text[:2] == [f"keep-alive answers on in the live policy for {UAS_IP}",
                        "proxy not alive: the kernel passes every OPTIONS to the proxy"], text

    node.proxy.start()
    rounds = node.probe_until_ok()
    assert rounds >= 1 and node.gate()[0] > 0
    ka0 = node.ka()
    rc, out = _sipsak(lab, tmp_path, "again")
    assert rc == 0 and f"Server: {SERVER}" in out, out
    assert _ka_delta(ka0, node.ka()) == {"answered": 1}
    audit = _audit(etsf_env)
    assert [(a["event"], a["rule"]) for a in audit][-2:] == [("keepalive_proxy_dead", "refused"),
                                                             ("keepalive_proxy_alive", "ok")]


def test_bypass_passes_options_to_the_proxy(lab, node, tmp_path, etsf_env):
    assert node.gate()[0] > 0
    etsfctl("bypass", "on", env=etsf_env)
    try:
        ka0, seen0 = node.ka(), len(node.proxy.device_options())
        rc, out = _sipsak(lab, tmp_path, "bypass")
        assert rc == 0 and "SIP/2.0 200 OK" in out and f"Server: {SERVER}" not in out, out
        assert _ka_delta(ka0, node.ka()) == {}
        assert len(node.proxy.device_options()) == seen0 + 1    # Kamailio answered it
    finally:
        etsfctl("bypass", "off", env=etsf_env)
    ka0 = node.ka()
    rc, out = _sipsak(lab, tmp_path, "after")
    assert rc == 0 and f"Server: {SERVER}" in out, out
    assert _ka_delta(ka0, node.ka()) == {"answered": 1}


def _state(env) -> dict:
    try:
        with open(os.path.join(env["ETSF_STATE_DIR"], "keepalive.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _wait_probes(env, proc, done, polls: int = 300) -> dict:
    """Read the running prober's state file until done(state) (at most `polls` reads, 0.1 s apart)."""
    for _poll in range(polls):
        st = _state(env)
        if st and done(st):
            return st
        assert proc.poll() is None, "the prober exited"
        time.sleep(0.1)
    pytest.fail(f"prober state never reached the condition: {st}")
    return {}


def test_prober_as_a_service_follows_the_proxy(lab, node, tmp_path, etsf_env):
    """The prober's loop as etsf-keepalive.service runs it: every interval, until SIGTERM, which
    shuts the gate on its way out."""
    hb = tmp_path / "run" / "keepalive.heartbeat"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)     # systemd's end of Type=notify
    notify.bind(str(tmp_path / "notify"))
    env = dict(os.environ, PYTHONPATH=str(HERE.parents[1] / "src"), NOTIFY_SOCKET=str(tmp_path / "notify"),
               **etsf_env)
    log = (tmp_path / "prober.log").open("w")
    proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{lab.srv_ns}", sys.executable, "-m", "etsf",
                             "keepalive", "probe", "--policy", str(node.policy), "--interval", "0.1",
                             "--heartbeat-file", str(hb), "--json"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        n0 = _state(etsf_env).get("probes_total", 0)
        st = _wait_probes(etsf_env, proc, lambda s: s["probes_total"] >= n0 + 2)
        assert st["alive"] and st["last_probe"]["outcome"] == "ok" and hb.exists()
        notify.settimeout(5)
        assert notify.recv(64) == b"READY=1"
        notify.setblocking(False)

        node.proxy.stop()
        st = _wait_probes(etsf_env, proc, lambda s: s["last_probe"]["outcome"] == "refused")
        assert not st["alive"] and node.gate()[0] == 0
        ka0 = node.ka()
        rc, out = _sipsak(lab, tmp_path, "service-dead")
        assert rc == 3 and "200 OK" not in out, out
        assert set(_ka_delta(ka0, node.ka())) == {"passed_proxy_stale"}

        node.proxy.start()
        st = _wait_probes(etsf_env, proc, lambda s: s["last_probe"]["outcome"] == "ok")
        assert st["alive"] and node.gate()[0] > 0
        rc, out = _sipsak(lab, tmp_path, "service-back")
        assert rc == 0 and f"Server: {SERVER}" in out, out
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        log.close()
        extra = []
        with contextlib.suppress(BlockingIOError):
            extra.append(notify.recv(64))
        notify.close()
    assert rc == 0, (tmp_path / "prober.log").read_text()[-2000:]
    assert extra == [], extra                                   # ready is told once
    assert node.gate()[0] == 0                                  # a stopped prober vouches for nothing
    assert json.loads(hb.read_text())["stopped"] is True        # on purpose: not stale to the fail-safe
    st = _state(etsf_env)
    assert st["stopped"] and not st["alive"]
    audit = _audit(etsf_env)
    assert [(a["event"], a["rule"]) for a in audit][-3:] == [("keepalive_proxy_dead", "refused"),
                                                             ("keepalive_proxy_alive", "ok"),
                                                             ("keepalive_proxy_dead", "prober_stopped")]
