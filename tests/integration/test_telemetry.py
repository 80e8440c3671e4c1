"""Telemetry end to end: sipp calls through a Kamailio stateful proxy with eTSF
attached on the proxy's UAC-facing interface, the exporter running as an
unprivileged user with only CAP_BPF, scraped and checked with promtool.

Topology (namespaces created here, prefix ``etsf-tm-``; 198.18.0.0/15 only)::

    etsf-tm-c<T>  UAC 198.18.60.2 --veth-- 198.18.60.1  etsf-tm-p<T>  Kamailio (tm)
                                           198.18.61.1  (eTSF on the 60.1 side)
    etsf-tm-s<T>  UAS 198.18.61.2:5060 (200 OK), :5080 (486) --veth-- 61.1

eTSF (direction TOWARD, the default) sees INVITEs entering the proxy (XDP)
and the proxy's responses leaving toward the UAC (TC egress), so the
histograms measure the proxy's answer times as the UAC sees them.

Every load is bounded (sipp -m/-r/-timeout, kamailio and the exporter under
`timeout`), every process and namespace is removed at teardown.

The unprivileged exporter runs from the agent wheel installed in a venv every user can
read (fixture ``agent_venv``), never from the checkout, which may be under a directory
only root can enter.
"""

from __future__ import annotations

import glob
import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import REPO, build_agent_wheel, etsfctl, install_agent, world_tmpdir
from lab.netns import Topology, exec_in, ifindex, run

HERE = Path(__file__).resolve().parent / "telemetry"
UAC_IP, PROXY_UAC_IP = "198.18.60.2", "198.18.60.1"
UAS_IP, PROXY_UAS_IP = "198.18.61.2", "198.18.61.1"
OK_PORT, BUSY_PORT = 5060, 5080
CALLS, RATE = 20, 5                    # well under capacity; 4 of 20 calls are busy
CAP_BPF = 39
KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"


def _need(tool):
    if not shutil.which(tool):
        pytest.fail(f"{tool} not installed (run `make setup`)")


def _csv_last(path) -> dict[str, str]:
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
    head = lines[0].rstrip(";").split(";")
    return dict(zip(head, lines[-1].rstrip(";").split(";")))


def _sipp_counts(workdir: Path) -> list[tuple[int, str, str, int]]:
    files = glob.glob(str(workdir / "*_counts.csv"))
    assert len(files) == 1, files
    out = []
    for k, v in _csv_last(files[0]).items():
        parts = k.split("_")
        if len(parts) == 3 and parts[0].isdigit():
            out.append((int(parts[0]), parts[1], parts[2], int(v or 0)))
    return sorted(out)


class Topo(Topology):
    def __init__(self, tag: str):
        super().__init__()
        self.ns = {r: f"etsf-tm-{r}{tag}" for r in ("c", "p", "s")}
        self.ifs = {"c": f"tmc{tag}", "pc": f"tmpc{tag}", "ps": f"tmps{tag}", "s": f"tms{tag}"}

    def up(self):
        for role, ns in self.ns.items():
            self.netns(ns, forward=role == "p")
        self.veth(self.ns["c"], self.ifs["c"], self.ns["p"], self.ifs["pc"],
                  addrs=[f"{UAC_IP}/24"], peer_addrs=[f"{PROXY_UAC_IP}/24"])
        self.veth(self.ns["s"], self.ifs["s"], self.ns["p"], self.ifs["ps"],
                  addrs=[f"{UAS_IP}/24"], peer_addrs=[f"{PROXY_UAS_IP}/24"])
        self.route(self.ns["c"], "198.18.61.0/24", via=PROXY_UAC_IP)
        self.route(self.ns["s"], "198.18.60.0/24", via=PROXY_UAS_IP)

    def popen(self, role, cmd, cwd, log, env=None):
        return self.procs.start(self.ns[role], cmd, log, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def topo():
    if os.geteuid() != 0:
        pytest.fail("needs root")
    for t in ("sipp", "kamailio", "promtool", "setpriv"):
        _need(t)
    with Topo(uuid.uuid4().hex[:5]) as t:
        t.up()
        yield t


def _needs_cap_bpf() -> bool:
    """Since Linux 6.5 kernel.unprivileged_bpf_disabled only gates BPF_MAP_CREATE /
    BPF_PROG_LOAD: reading pinned maps needs file permission on the pin and no
    capability.  Before 6.5 (with the sysctl set) every bpf() command needs CAP_BPF."""
    import platform
    rel = tuple(int(x) for x in platform.release().split("-")[0].split(".")[:2])
    disabled = int(Path("/proc/sys/kernel/unprivileged_bpf_disabled").read_text())
    return bool(disabled) and rel < (6, 5)


EXPORTER_CAPS = ("bpf",) if _needs_cap_bpf() else ()


def _wait_udp(ns: str, ip: str, port: int, proc: subprocess.Popen, log: Path,
              limit: float = 15.0) -> None:
    """Bounded wait until something listens on ip:port/udp inside ns."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        r = exec_in(ns, ["ss", "-Hunl", "src", f"{ip}:{port}"], check=False, timeout=30)
        if r.stdout.strip():
            return
        assert proc.poll() is None, log.read_text()[-2000:]
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {ip}:{port}/udp in {ns}: {log.read_text()[-2000:]}")


def _unpriv_ids():
    """The exporter's user: `etsf` when it exists (role-installed), else nobody:nogroup."""
    try:
        pw = pwd.getpwnam("etsf")
        return pw.pw_uid, pw.pw_gid, "etsf"
    except KeyError:
        return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid, "nogroup"


def _setpriv(uid, gid, caps=("bpf",)):
    cmd = ["setpriv", "--reuid", str(uid), "--regid", str(gid), "--clear-groups"]
    if caps:
        c = ",".join(f"+{x}" for x in caps)
        cmd += [f"--inh-caps=-all,{c}", f"--ambient-caps={c}", f"--bounding-set=-all,{c}"]
    else:
        cmd += ["--inh-caps=-all", "--bounding-set=-all"]
    return cmd + ["--no-new-privs"]


def _get(url, auth=None, timeout=10):
    req = urllib.request.Request(url)
    if auth:
        import base64
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read().decode()


def _parse(text):
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _val(m, name, **labels):
    return m.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))), 0)


@pytest.fixture
def bpf_stats_on():
    """kernel.bpf_stats_enabled = 1 for the test (program run count / time), restored after."""
    path = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = path.read_text().strip()
    path.write_text("1\n")
    yield
    path.write_text(old + "\n")


@pytest.fixture
def unpriv_dir():
    """A directory the unprivileged user can reach (pytest's tmp_path is root-only)."""
    d = world_tmpdir("etsf-tm-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def exporter_proc(etsf_env, unpriv_dir, agent_venv):
    """Start the installed exporter (``agent_venv``'s etsfctl, or ``venv``'s) as the
    unprivileged user with only CAP_BPF (after granting its group read access to the pins)."""
    uid, gid, group = _unpriv_ids()
    procs = []

    def start(window=3600, extra=(), caps=EXPORTER_CAPS, venv=None):
        d = unpriv_dir / f"exp{len(procs)}"
        d.mkdir()
        os.chown(d, uid, gid)
        ready = d / "port"
        env = {"PATH": "/usr/bin:/bin", "ETSF_PIN_ROOT": etsf_env["ETSF_PIN_ROOT"],
               "HOME": str(d)}
        etsfctl_bin = (venv or agent_venv) / "bin" / "etsfctl"
        cmd = ["timeout", "300", *_setpriv(uid, gid, caps), str(etsfctl_bin),
               "exporter", "--listen", "127.0.0.1", "--port", "0", "--window", str(window),
               "--sample-interval", "600", "--ready-file", str(ready), "--max-seconds", "280",
               *extra]
        log = open(d / "log", "wb")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=d,
                             start_new_session=True)
        log.close()
        procs.append(p)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not ready.exists() and p.poll() is None:
            time.sleep(0.1)
        assert ready.exists(), (d / "log").read_text()
        return p, int(ready.read_text()), d

    start.group = group
    yield start
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


def _python_pid(p: subprocess.Popen) -> int:
    """The exporter's own pid (timeout -> setpriv exec's the etsfctl script: python)."""
    kids = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
    assert len(kids) == 1, kids
    return int(kids[0])


def _caps(pid):
    st = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _sep, v = line.partition(":")
        st[k] = v.strip()
    return st


def test_sipp_calls_histograms_kpis_unprivileged_exporter(topo, etsf_env, exporter_proc,
                                                          bpf_stats_on, tmp_path):
    # --- eTSF on the proxy's UAC-facing interface
    r = etsfctl("attach", "--hook", "xdp", "--iface", topo.ifs["pc"], "--mode", "native", "--json",
                env=etsf_env, netns=topo.ns["p"])
    assert json.loads(r.stdout)["xdp_prog_id"]
    etsfctl("telemetry", "grant", "--group", exporter_proc.group, env=etsf_env)

    # --- the exporter: unprivileged, CAP_BPF only; its KPI baseline is now
    p, port = exporter_proc()[:2]
    st = _caps(_python_pid(p))
    uid = _unpriv_ids()[0]
    assert st["Uid"].split()[:2] == [str(uid)] * 2
    want = (1 << CAP_BPF) if EXPORTER_CAPS else 0       # 6.18 here: no capability at all
    assert int(st["CapEff"], 16) == want
    assert int(st["CapPrm"], 16) == want
    assert int(st["CapBnd"], 16) == want
    assert st["NoNewPrivs"] == "1"
    code = _get(f"http://127.0.0.1:{port}/healthz")[0]
    assert code == 200

    # --- Kamailio (stateful) + sipp UAS x2 + sipp UAC, all bounded
    work = tmp_path / "sip"
    work.mkdir()
    cfg = (HERE / "kamailio.cfg.in").read_text()
    for k, v in {"@PROXY_UAC_IP@": PROXY_UAC_IP, "@PROXY_UAS_IP@": PROXY_UAS_IP,
                 "@UAS_IP@": UAS_IP, "@OK_PORT@": str(OK_PORT), "@BUSY_PORT@": str(BUSY_PORT),
                 "@MPATH@": KAMAILIO_MODULES}.items():
        cfg = cfg.replace(k, v)
    (work / "kamailio.cfg").write_text(cfg)
    exec_in(topo.ns["p"], ["kamailio", "-c", "-f", str(work / "kamailio.cfg")], timeout=30)
    kam = topo.popen("p", ["timeout", "120", "kamailio", "-DD", "-E", "-m", "32", "-M", "8",
                           "-f", str(work / "kamailio.cfg"), "-w", str(work),
                           "-P", str(work / "kamailio.pid")], work, work / "kamailio.log")
    for sub in ("uas", "busy", "uac"):
        (work / sub).mkdir()
    common = ["-nostdin", "-trace_counts", "-trace_stat", "-fd", "1", "-max_retrans", "3"]
    uas = topo.popen("s", ["sipp", "-sn", "uas", "-i", UAS_IP, "-p", str(OK_PORT),
                           "-timeout", "90s", *common], work / "uas", work / "uas" / "log")
    busy = topo.popen("s", ["sipp", "-sf", str(HERE / "uas_busy.xml"), "-i", UAS_IP, "-p",
                            str(BUSY_PORT), "-timeout", "90s", *common],
                      work / "busy", work / "busy" / "log")
    _wait_udp(topo.ns["p"], PROXY_UAC_IP, 5060, kam, work / "kamailio.log")
    _wait_udp(topo.ns["p"], PROXY_UAS_IP, 5060, kam, work / "kamailio.log")
    _wait_udp(topo.ns["s"], UAS_IP, OK_PORT, uas, work / "uas" / "log")
    _wait_udp(topo.ns["s"], UAS_IP, BUSY_PORT, busy, work / "busy" / "log")
    uac = topo.popen("c", ["sipp", "-sn", "uac", f"{PROXY_UAC_IP}:5060", "-s", "callee",
                           "-i", UAC_IP, "-p", "5070", "-m", str(CALLS), "-r", str(RATE),
                           "-timeout", "60s", "-stf", "uac_stat.csv", *common],
                     work / "uac", work / "uac" / "log")
    uac.wait(timeout=90)
    time.sleep(0.5)                         # last responses leave the proxy

    # --- sipp's own view
    stat = _csv_last(work / "uac" / "uac_stat.csv")
    ok, failed = int(stat["SuccessfulCall(C)"]), int(stat["FailedCall(C)"])
    total = int(stat["TotalCallCreated"])
    assert total == CALLS and ok + failed == CALLS and 0 < failed < CALLS, stat
    counts = _sipp_counts(work / "uac")
    recv = {}
    for idx, msg, kind, n in counts:
        if kind in ("Recv", "Unexp"):
            recv.setdefault((msg, kind), []).append((idx, n))
    # default uac: 100, 180, 183 optional, then 200 (INVITE), ...; the BYE's 200 is a later step
    sipp_100 = sum(x[1] for x in recv.get(("100", "Recv"), []))
    sipp_180 = sum(x[1] for x in recv.get(("180", "Recv"), []))
    sipp_invite_200 = sorted(recv[("200", "Recv")])[0][1]
    sipp_bye_200 = sorted(recv[("200", "Recv")])[-1][1]
    sipp_unexp = sum(x[1] for key, v in recv.items() if key[1] == "Unexp" for x in v)
    retrans = sum(c[3] for c in counts if c[2] == "Retrans")
    assert retrans == 0, counts                # under capacity: nothing retransmitted

    # --- the scrape (unprivileged exporter)
    code, text = _get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200
    (tmp_path / "metrics.txt").write_text(text)
    pc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                        text=True, timeout=30, check=False)
    assert pc.returncode == 0, pc.stdout + pc.stderr
    m = _parse(text)

    # INVITE -> 180 histogram count == number of calls; 100 / final counts match
    hc = "etsf_sip_transaction_latency_seconds_count"
    assert _val(m, hc, method="INVITE", stage="ringing") == CALLS
    assert _val(m, hc, method="INVITE", stage="trying") == CALLS
    assert _val(m, hc, method="INVITE", stage="final_2xx") == ok
    assert _val(m, hc, method="INVITE", stage="final_4xx") == failed
    assert _val(m, hc, method="BYE", stage="final_2xx") == sipp_bye_200 == ok
    assert _val(m, "etsf_sip_transaction_latency_seconds_bucket", method="INVITE",
                stage="ringing", le="+Inf") == CALLS
    # response counters == sipp's counts
    rc = "etsf_sip_responses_total"
    assert _val(m, rc, method="INVITE", code=100) == sipp_100 == CALLS
    assert _val(m, rc, method="INVITE", code=180) == sipp_180 == CALLS
    assert _val(m, rc, method="INVITE", code=200) == sipp_invite_200 == ok
    assert _val(m, rc, method="INVITE", code=486) == sipp_unexp == failed
    # SER (RFC 6076) == sipp's success ratio; no 3xx: ASR == SER, SEER counts 486 as effective
    assert _val(m, "etsf_sip_ser_ratio") == ok / total
    assert _val(m, "etsf_sip_asr_ratio") == ok / total
    assert _val(m, "etsf_sip_seer_ratio") == 1.0
    assert _val(m, "etsf_sip_ner_ratio") == 1.0
    assert _val(m, "etsf_sip_kpi_attempts") == CALLS
    # transactions: INVITE + BYE started, no retransmissions, no unmatched responses
    ev = "etsf_sip_transaction_events_total"
    assert _val(m, ev, event="txn_start") == CALLS + ok
    assert _val(m, ev, event="req_retrans") == 0
    assert _val(m, ev, event="resp_retrans") == 0
    assert _val(m, ev, event="resp_nomatch") == 0
    # per-method packets at XDP: INVITEs entering the proxy == calls
    assert _val(m, "etsf_sip_packets_total", hook="xdp", method="INVITE", verdict="pass",
                reason="no_policy") == CALLS
    # program info / run counts readable without CAP_SYS_ADMIN (through the pins)
    progs = {dict(k[1])["program"] for k in m if k[0] == "etsf_bpf_program_info"}
    assert {"xdp_sip", "tc_sip_egress"} <= progs
    # kernel.bpf_stats_enabled was on before the attach: every XDP run is one packet counted
    # (the exporter runs in the root netns: the proxy's interface is found by its ifindex)
    idx = ifindex(topo.ns["p"], topo.ifs["pc"])
    rx = sum(v for (n, lb), v in m.items() if n == "etsf_interface_rx_packets_total"
             and dict(lb)["ifindex"] == str(idx))
    assert rx > 0 and _val(m, "etsf_bpf_program_runs_total", program="xdp_sip") == rx
    assert _val(m, "etsf_bpf_program_run_seconds_total", program="xdp_sip") > 0
    assert _val(m, "etsf_bpf_stats_enabled") == 1
    assert _val(m, "etsf_up") == 1
    assert _val(m, "etsf_failsafe_bypass") == 0
    assert _val(m, "etsf_bpf_map_entries", map="etsf_tm_txn") == CALLS + ok

    # `etsfctl top --once --json` renders a frame (root, bounded)
    r = etsfctl("top", "--once", "--interval", "0.2", "--json", env=etsf_env)
    frame = json.loads(r.stdout.splitlines()[-1])
    assert set(frame) >= {"rates_pps", "drops_pps", "latency", "kpi", "state"}

    for proc in (uas, busy, kam):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    etsfctl("detach", "--iface", topo.ifs["pc"], env=etsf_env, netns=topo.ns["p"], check=False)


def test_exporter_privileges_are_minimal(topo, etsf_env, build_dir, agent_venv):
    """Smallest privilege set, verified: without the group grant the pins are not
    readable even with CAP_BPF; with the grant, no capability at all is needed on
    Linux >= 6.5 (CAP_BPF before 6.5 when kernel.unprivileged_bpf_disabled is set);
    the read-only map fd cannot write."""
    from etsf import bpf
    progs = {}
    progs.update(bpf.load_object(os.path.join(build_dir, "xdp_sip.bpf.o"),
                                 etsf_env["ETSF_PIN_ROOT"]))
    for p in progs.values():
        p.close()
    uid, gid, group = _unpriv_ids()
    probe = ("import sys; from etsf import exporter; s = exporter.snapshot(programs=False); "
             "sys.exit(0 if 'etsf_stats' not in s['missing'] else 3)")
    env = {"PATH": "/usr/bin:/bin", "ETSF_PIN_ROOT": etsf_env["ETSF_PIN_ROOT"]}
    python = agent_venv / "bin" / "python"
    unpriv_disabled = int(Path("/proc/sys/kernel/unprivileged_bpf_disabled").read_text())

    def run(caps):
        return subprocess.run([*_setpriv(uid, gid, caps), python, "-c", probe], env=env,
                              cwd="/", capture_output=True, text=True, timeout=60,
                              check=False).returncode

    assert run(("bpf",)) == 3                 # pins are root:root 0600 / dirs 0700
    assert run(()) == 3
    etsfctl("telemetry", "grant", "--group", group, env=etsf_env)
    if _needs_cap_bpf():
        assert unpriv_disabled and run(()) == 3   # before 6.5: bpf() refused without CAP_BPF
    else:
        assert run(()) == 0                   # 6.5+: file permission on the pins suffices
    assert run(("bpf",)) == 0
    # the read-only fd cannot change anything
    probe_w = ("from etsf import bpf; m = bpf.open_map('etsf_ctl', read_only=True)\n"
               "try:\n    m.update(bytes(4), bytes(m.value_size))\nexcept bpf.BpfError as e:\n"
               "    raise SystemExit(0 if e.errno == 1 else 4)\nraise SystemExit(5)")
    r = subprocess.run([*_setpriv(uid, gid, EXPORTER_CAPS), python, "-c", probe_w],
                       env=env, cwd="/", capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr


def _pinned_and_granted(etsf_env, build_dir, d):
    """Pin the maps (load xdp_sip once), grant them to the unprivileged group and make `d` for
    the TLS files; (d, uid, gid) of the unprivileged user."""
    _need("openssl")
    from etsf import bpf
    for p in bpf.load_object(os.path.join(build_dir, "xdp_sip.bpf.o"),
                             etsf_env["ETSF_PIN_ROOT"]).values():
        p.close()
    uid, gid, group = _unpriv_ids()
    etsfctl("telemetry", "grant", "--group", group, env=etsf_env)
    d.mkdir()
    return d, uid, gid


def test_exporter_tls_and_basic_auth(topo, etsf_env, build_dir, exporter_proc, unpriv_dir):
    from etsf import exporter
    d, uid, gid = _pinned_and_granted(etsf_env, build_dir, unpriv_dir / "tls")
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")], timeout=30)
    # the web configuration Prometheus exporters share: TLS and a bcrypt hash
    (d / "web.yml").write_text(f"tls_server_config:\n  cert_file: {d / 'cert.pem'}\n"
                               f"  key_file: {d / 'key.pem'}\n  min_version: TLS12\n"
                               f"basic_auth_users:\n  prom: '{exporter.bcrypt_hash('s3cret', 4)}'\n")
    for f in d.iterdir():
        os.chown(f, uid, gid)
        os.chmod(f, 0o600)
    os.chmod(d, 0o755)
    port = exporter_proc(extra=("--web.config.file", str(d / "web.yml")))[1]
    import ssl
    import urllib.error
    ctx = ssl.create_default_context(cafile=str(d / "cert.pem"))

    def get(auth=None):
        req = urllib.request.Request(f"https://127.0.0.1:{port}/metrics")
        if auth:
            import base64
            req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""

    # a silent client (no TLS handshake) does not block other scrapes
    import socket
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert get()[0] == 401
    assert get("prom:wrong")[0] == 401
    code, text = get("prom:s3cret")
    assert code == 200 and "etsf_up 1.0" in text
    # one hash for the wrong password, one for the first good login; the second is cached
    assert get("prom:s3cret")[0] == 200
    text = get("prom:s3cret")[1]
    assert "etsf_exporter_auth_hashes_total 2.0" in text
    assert "etsf_exporter_auth_cache_hits_total 2.0" in text
    # run count / run time only while kernel.bpf_stats_enabled is on (consistent per scrape)
    stats_on = "etsf_bpf_stats_enabled 1.0" in text
    assert stats_on == ("# TYPE etsf_bpf_program_runs_total counter" in text)
    assert stats_on == ("# TYPE etsf_bpf_program_run_seconds_total counter" in text)
    assert "# TYPE etsf_bpf_program_verified_insns gauge" in text
    with pytest.raises(OSError):                   # plain HTTP on the TLS port fails
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    idle.close()


def test_exporter_requires_verified_client_certificates(etsf_env, build_dir, exporter_proc, unpriv_dir):
    """tls_server_config with client_auth_type RequireAndVerifyClientCert: a client without a
    certificate, or with one its CA did not sign, gets no HTTP answer; one signed by
    client_ca_file scrapes."""
    import ssl
    d, uid, gid = _pinned_and_granted(etsf_env, build_dir, unpriv_dir / "mtls")

    def x509(name, *extra):
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
             "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"), *extra], timeout=30)

    x509("server", "-addext", "subjectAltName=IP:127.0.0.1")
    for ca in ("ca", "otherca"):
        x509(ca, "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign")
    for client, ca in (("client", "ca"), ("stranger", "otherca")):
        run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={client}",
             "-keyout", str(d / f"{client}.key"), "-out", str(d / f"{client}.csr")], timeout=30)
        run(["openssl", "x509", "-req", "-in", str(d / f"{client}.csr"), "-CA", str(d / f"{ca}.pem"),
             "-CAkey", str(d / f"{ca}.key"), "-CAcreateserial", "-days", "1", "-out", str(d / f"{client}.pem")],
            timeout=30)
    (d / "web.yml").write_text(f"tls_server_config:\n  cert_file: {d / 'server.pem'}\n"
                               f"  key_file: {d / 'server.key'}\n"
                               "  client_auth_type: RequireAndVerifyClientCert\n"
                               f"  client_ca_file: {d / 'ca.pem'}\n  min_version: TLS13\n")
    for f in d.iterdir():
        os.chown(f, uid, gid)
        os.chmod(f, 0o600)
    os.chmod(d, 0o755)
    port = exporter_proc(extra=("--web.config.file", str(d / "web.yml")))[1]

    def scrape(client=None):
        ctx = ssl.create_default_context(cafile=str(d / "server.pem"))
        if client:
            ctx.load_cert_chain(str(d / f"{client}.pem"), str(d / f"{client}.key"))
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", timeout=10, context=ctx) as r:
                return r.status, r.read().decode()
        except (OSError, ssl.SSLError) as e:        # TLS 1.3: the refusal arrives on the first read
            return type(e).__name__, ""

    code, text = scrape("client")
    assert code == 200 and "etsf_up 1.0" in text
    assert scrape()[0] != 200
    assert scrape("stranger")[0] != 200
    assert scrape("client")[0] == 200                       # still serving


def _copy_checkout(dest: Path) -> None:
    """The checkout's files as a fresh clone has them (no venv, VCS data or build output)."""
    shutil.copytree(REPO, dest, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "__pycache__", "*.egg-info", ".pytest_cache", "output"))


INVITE = (b"INVITE sip:callee@198.18.62.2 SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 198.18.62.1:5060;branch=z9hG4bK-etsf-inst\r\n"
          b"From: <sip:caller@198.18.62.1>;tag=1\r\nTo: <sip:callee@198.18.62.2>\r\n"
          b"Call-ID: inst-1@198.18.62.1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
          b"Content-Length: 0\r\n\r\n")


def test_exporter_from_checkout_under_root_only_directory(etsf_env, build_dir, exporter_proc,
                                                          unpriv_dir, tmp_path):
    """A checkout under a 0700 directory (as /root is on Debian): the unprivileged user
    cannot import the agent from it, yet the wheel built from that checkout, installed the
    way the hosts install it, serves /metrics as that user with what the kernel counted."""
    from scapy.all import IP, UDP, Ether, Raw
    from etsf import bpf
    private = tmp_path / "private"
    private.mkdir()
    os.chmod(private, 0o700)
    checkout = private / "etsf"
    _copy_checkout(checkout)
    uid, gid, group = _unpriv_ids()
    probe = "import etsf; print(etsf.__file__)"
    base = os.path.realpath(sys.executable)

    def as_user(python, extra_env=()):
        return subprocess.run([*_setpriv(uid, gid, ()), str(python), "-c", probe],
                              env={"PATH": "/usr/bin:/bin", **dict(extra_env)}, cwd="/",
                              capture_output=True, text=True, timeout=60, check=False)

    # the copy is a working source tree for root and out of the user's reach
    src = {"PYTHONPATH": str(checkout / "src")}
    r = subprocess.run([base, "-c", probe], env={"PATH": "/usr/bin:/bin", **src}, cwd="/",
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and r.stdout.startswith(str(checkout / "src")), r.stderr
    r = as_user(base, src)
    assert r.returncode == 1 and "No module named 'etsf'" in r.stderr, (r.stdout, r.stderr)

    # built from that copy and installed where every user can read it
    venv = install_agent(build_agent_wheel(checkout, unpriv_dir / "build"), unpriv_dir / "venv")
    r = as_user(venv / "bin" / "python")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(venv / "lib" / f"python{sys.version_info.major}."
                                   f"{sys.version_info.minor}" / "site-packages" / "etsf"
                                   / "__init__.py")

    # three INVITEs through the loaded classifier (BPF_PROG_TEST_RUN), then the scrape
    progs = bpf.load_object(os.path.join(build_dir, "xdp_sip.bpf.o"), etsf_env["ETSF_PIN_ROOT"])
    try:
        pkt = bytes(Ether() / IP(src="198.18.62.1", dst="198.18.62.2")
                    / UDP(sport=5060, dport=5060) / Raw(INVITE))
        for _n in range(3):
            assert bpf.test_run(progs["xdp_sip"].fd, pkt)[0] == bpf.XDP_PASS
    finally:
        for prog in progs.values():
            prog.close()
    etsfctl("telemetry", "grant", "--group", group, env=etsf_env)
    p, port = exporter_proc(venv=venv)[:2]
    st = _caps(_python_pid(p))
    assert st["Uid"].split()[:2] == [str(uid)] * 2
    assert str(venv / "bin" / "etsfctl") in Path(f"/proc/{_python_pid(p)}/cmdline").read_text()
    code, text = _get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200
    m = _parse(text)
    assert _val(m, "etsf_up") == 1
    assert _val(m, "etsf_sip_packets_total", hook="xdp", method="INVITE", verdict="pass",
                reason="no_policy") == 3
    # one transaction (same branch three times: two request retransmissions)
    assert _val(m, "etsf_sip_transaction_events_total", event="txn_start") == 1
    assert _val(m, "etsf_sip_transaction_events_total", event="req_retrans") == 2
    assert _val(m, "etsf_bpf_map_entries", map="etsf_tm_txn") == 1


def test_scrape_cost_with_10000_rate_limit_entries(etsf_env, build_dir):
    """Bounded scrape: a 10 000-entry etsf_rl is read with at most ceil(10000/4096)+1 = 4
    batch calls, not 10 000 lookups.  Prints the measured cost (no timing assertion)."""
    from etsf import bpf, exporter
    from etsf import layout as L
    root = etsf_env["ETSF_PIN_ROOT"]
    for p in bpf.load_object(os.path.join(build_dir, "xdp_sip.bpf.o"), root).values():
        p.close()
    n = 10_000
    with bpf.open_map("etsf_rl", root) as m:
        for i in range(n):
            k = L.RlKey(family=4, rl_class=i % 4, prefix=32)
            k.addr[:4] = list((0xC6120000 + i // 4).to_bytes(4, "big"))   # 198.18.x.y
            m.update(bytes(k), bytes(L.RlState(tat_ns=1, passed=1)))
    exporter.snapshot(root)                                  # warm-up (imports, caches)
    snaps = [exporter.snapshot(root) for _run_no in range(5)]
    s = snaps[-1]
    assert s["maps"]["etsf_rl"] == {"entries": n, "max_entries": L.RL_MAX}
    with bpf.open_map("etsf_rl", root, read_only=True) as m:
        m.items()
        rl_calls = m.last_batch_calls
    assert rl_calls <= -(-n // 4096) + 1 == 4      # ENOENT may come with the last chunk
    # whole scrape: a fixed number of bpf() calls, independent of traffic
    assert s["cost"]["lookups"] == 2                # etsf_ctl, etsf_ka_stats (one per-CPU lookup)
    calls = s["cost"]["batch_calls"] + s["cost"]["lookups"] + s["cost"]["maps_opened"]
    t0 = time.perf_counter()
    with bpf.open_map("etsf_rl", root, read_only=True) as m:
        keys = m.keys()
        for k in keys:
            m.lookup(k)
    per_entry = time.perf_counter() - t0
    secs = sorted(x["cost"]["seconds"] for x in snaps)
    report = {"rl_entries": n, "scrape_bpf_calls": calls, "rl_batch_calls": rl_calls,
              "scrape_seconds_median": secs[len(secs) // 2], "scrape_seconds_max": secs[-1],
              "per_entry_walk_syscalls": 2 * len(keys) + 1, "per_entry_walk_seconds": per_entry,
              "entries_read": s["cost"]["entries_read"]}
    print("SCRAPE-COST", json.dumps(report))
