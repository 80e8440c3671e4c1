"""The overload controller with real peers: a sipp UAC surge through Kamailio.

Topology (network namespaces of this test, 198.18.0.0/15 only)::

    UAC ns  sipp UACs 198.18.2.1  --veth-->  proxy ns  eTSF (XDP + TC) on the veth
                                                       Kamailio 198.18.2.2:5060 (tm, 1 worker)
                                                       sipp UAS 198.18.2.4:5090 (over lo)

Kamailio has one UDP worker and a fixed service time per new INVITE (``usleep``), so its
capacity is small and cheap in CPU; it is still *measured* here, because the host's load adds
to it: a short probe offers about twice the nominal rate without retransmissions and the
capacity is the rate at which Kamailio's own INVITE counter advances while its socket queue
stays non-empty.  Then, with ``etsfctl overload auto`` running in the proxy namespace (it reads
Kamailio's socket there), sipp offers INVITE calls at 3x that capacity for 30 s, then at 0.5x
until the controller is back at level 0 with admission off.

Asserted (nothing is timed; the controller is observed by its ticks):
* the controller engaged during the surge: it raised the level and cut the admission rate,
  and every audit entry names the signal that drove it with that signal's value;
* no BYE and no ACK of a call Kamailio handles was shed: eTSF passed every one sipp sent and
  Kamailio received them (its counters); the ACK of each in-kernel 503 stopped at eTSF
  (DROP/ADMIT_ACK, one per 503); every BYE got a final answer (200, or Kamailio's own 408 when its queue held
  the callee's answer past its timer);
* every refused INVITE got the in-kernel 503 (sipp accepted it: Retry-After, received=) and
  was never retransmitted; eTSF's admission counters equal sipp's 503 count;
* Kamailio never saw a refused INVITE: no refused Call-ID is in its log and its own INVITE
  counter equals the INVITEs eTSF let through (first copies and retransmissions), less what
  its socket dropped;
* after the surge, at 0.5x, the level returns to 0 and admission is switched off.
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import NS_PREFIX, PREFIX, SCENARIOS, SRC, UAC_IP, Lab, etsfctl, read_pinned_ctl
from lab.netns import set_link

HERE = Path(__file__).resolve().parent
PROXY_IP = "198.18.2.2"
PROXY_PORT = 5060
UAS_B_IP = "198.18.2.4"          # the UAS behind the proxy, in the proxy namespace (over lo)
UAS_B_PORT = 5090
SERVICE_US = 20000               # Kamailio's time per new INVITE: ~50 calls/s nominal
SURGE_X, SURGE_S = 3.0, 30       # offered load during the surge (x capacity) and its length
CALM_X, CALM_MAX_S = 0.5, 40     # afterwards: 0.5x, at most this long (bounded by call count)
TICK_S = 0.2
# every UAC on one CPU: a veth runs the receiving XDP program on the sender's CPU, so the
# admission rate (per CPU) is the node's
UAC_CPU = str(max(os.sched_getaffinity(0)))
POLL_S = 0.1                     # the state file is read twice a tick: every tick is seen
AUTO = {"enabled": True, "proxy_ports": [PROXY_PORT], "target_queue": 16384, "target_pdd_ms": 200,
        "target_5xx_ratio": 0.05, "min_rate": 1, "dwell_s": 1, "max_step": 0.25, "hysteresis": 0.2,
        "probe_hold_s": 2, "interval_ms": int(TICK_S * 1000)}
SIGNALS = ("queue", "drops", "pdd_ms", "ratio_5xx", "cpu")


# ------------------------------------------------------------------ sipp's files
def _rows(path: Path) -> list[dict[str, str]]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    head = lines[0].rstrip(";").split(";")
    return [dict(zip(head, ln.rstrip(";").split(";"))) for ln in lines[1:]]


def _counts(workdir: Path) -> dict[str, int]:
    """sipp -trace_counts, last row: {"<index>_<message>_<Sent|Recv|Retrans|...>": n}."""
    (path,) = glob.glob(str(workdir / "uac_surge_*_counts.csv"))
    return {k: int(v or 0) for k, v in _rows(Path(path))[-1].items() if re.match(r"\d+_", k)}


def _stat(workdir: Path) -> dict[str, int]:
    row = _rows(workdir / "stat.csv")[-1]
    return {k: int(row[k]) for k in ("TotalCallCreated", "SuccessfulCall(C)", "FailedCall(C)")}


def _refused_callids(workdir: Path) -> list[str]:
    out = []
    for path in glob.glob(str(workdir / "uac_surge_*_logs.log")):
        out += re.findall(r"REFUSED (\S+)", Path(path).read_text())
    return out


def _sipp(*args) -> list[str]:
    return ["sipp", *args, "-nostdin", "-trace_counts", "-trace_stat", "-fd", "1", "-trace_logs", "-trace_err"]


# ------------------------------------------------------------------ Kamailio and eTSF state
def _kam_stats(ctl: str) -> dict[str, int]:
    r = subprocess.run(["kamcmd", "-s", f"unix:{ctl}", "stats.get_statistics", "all"],
                       capture_output=True, text=True, timeout=30, check=True)
    out = {}
    for line in r.stdout.splitlines():
        name, sep, val = line.partition(" = ")
        if sep and val.strip().isdigit():
            out[name.strip()] = int(val)
    return out


def _proxy_socket(pid: int) -> dict[str, int]:
    from etsf.overload.signals import udp_sockets
    u = udp_sockets([PROXY_PORT], f"/proc/{pid}/net")
    assert u["sockets"] == 1, u
    return u


def _xdp_counts() -> dict[tuple[str, str], int]:
    from etsf import datapath
    out: dict[tuple[str, str], int] = {}
    for r in datapath.stats()["counters"]:
        if r["hook"] == "XDP":
            k = (r["method"], f"{r['verdict']}/{r['reason']}")
            out[k] = out.get(k, 0) + r["packets"]
    return out


def _admitted_per_cpu(bpf, root: str) -> list[int]:
    from etsf import layout
    m = bpf.Map.open_pinned(os.path.join(root, "maps", "etsf_admit"))
    try:
        return [int(layout.Admit.from_bytes(v).admitted) for v in m.lookup_percpu(bytes(4))]
    finally:
        m.close()


def _delta(new: dict, old: dict) -> dict:
    return {k: v - old.get(k, 0) for k, v in new.items() if v != old.get(k, 0)}


def _audit(env) -> list[dict]:
    path = os.path.join(env["ETSF_STATE_DIR"], "failsafe-audit.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def _wait_quiet(kam_pid: int, ctl: str, polls: int = 100) -> dict[str, int]:
    """Poll (bounded) until Kamailio's socket is empty and its request counters stood still
    between two polls (the UAS may still retransmit answers); returns its counters."""
    last = None
    for _poll in range(polls):
        st = _kam_stats(ctl)
        req = {k: v for k, v in st.items() if k.startswith("core:rcv_requests")}
        if _proxy_socket(kam_pid)["queue"] == 0 and req == last:
            return st
        last = req
        time.sleep(0.2)
    pytest.fail(f"Kamailio never went quiet in {polls} polls")
    return {}


# ------------------------------------------------------------------ the topology
@pytest.fixture
def surge(etsf_env, build_dir, tmp_path):
    """Namespaces, eTSF attached on the proxy's veth with a policy enabling the controller,
    the UAC-side veth in NAPI mode (so XDP_TX frames, the 503s, are delivered), Kamailio and
    the sipp UAS.  Yields the Lab (plus kam, kam_log, ctl, tmp); everything is removed
    afterwards."""
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (BPF, netns)")
    for tool in ("sipp", "kamailio", "kamcmd"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not installed (run `make setup`)")
    tag = f"{os.getpid() % 100000}g"
    with Lab(tag, ns_prefix=NS_PREFIX, if_prefix="etsfsg") as lab:
        lab.netns(lab.cli_ns)
        lab.netns(lab.srv_ns)
        lab.veth(lab.cli_ns, lab.cli_if, lab.srv_ns, lab.srv_if, addrs=[f"{UAC_IP}/{PREFIX}"],
                 peer_addrs=[f"{PROXY_IP}/{PREFIX}"])
        set_link(lab.srv_ns, "lo", addrs=[f"{UAS_B_IP}/32"])
        obj = os.path.join(build_dir, "xdp_count.bpf.o")
        subprocess.run(["ip", "-n", lab.cli_ns, "link", "set", "dev", lab.cli_if, "xdp", "obj", obj, "sec", "xdp"],
                       check=True, capture_output=True)
        info = json.loads(etsfctl("attach", "--hook", "xdp", "--iface", lab.srv_if, "--mode", "native", "--json",
                                  env=etsf_env, netns=lab.srv_ns).stdout)
        assert info["mode"] == "native" and info["xdp_prog_id"] and info["tc_prog_id"]
        try:
            kd = tmp_path / "kamailio"
            kd.mkdir()
            lab.ctl = str(kd / "ctl.sock")
            cfg = ((HERE / "surge" / "kamailio.cfg.in").read_text()
                   .replace("@ADDR@", PROXY_IP).replace("@UAS@", UAS_B_IP).replace("@UASPORT@", str(UAS_B_PORT))
                   .replace("@CTL@", lab.ctl).replace("@SERVICE_US@", str(SERVICE_US)))
            (kd / "kamailio.cfg").write_text(cfg)
            lab.kam_log = kd / "kamailio.log"
            lab.kam = lab.start(lab.srv_ns, ["kamailio", "-f", str(kd / "kamailio.cfg"), "-DD", "-E",
                                             "-m", "64", "-M", "8", "-Y", str(kd)], lab.kam_log, limit=600)
            ud = tmp_path / "uas"
            ud.mkdir()
            lab.uas = lab.start(lab.srv_ns, _sipp("-sn", "uas", "-i", UAS_B_IP, "-p", str(UAS_B_PORT),
                                                  "-timeout", "300s", "-stf", "stat.csv"),
                                ud / "sipp.log", cwd=ud)
            for _poll in range(100):                           # bounded: Kamailio up, ctl answering
                if lab.kam.poll() is not None:
                    pytest.fail(f"kamailio exited: {lab.kam_log.read_text()[-2000:]}")
                if os.path.exists(lab.ctl) and _proxy_socket_count(lab.kam.pid):
                    break
                time.sleep(0.1)
            else:
                pytest.fail(f"kamailio did not start: {lab.kam_log.read_text()[-2000:]}")
            lab.tmp = tmp_path
            yield lab
        finally:
            etsfctl("detach", "--iface", lab.srv_if, env=etsf_env, netns=lab.srv_ns, check=False)


def _proxy_socket_count(pid: int) -> int:
    from etsf.overload.signals import udp_sockets
    return udp_sockets([PROXY_PORT], f"/proc/{pid}/net")["sockets"]


def _uac(lab, name: str, port: int, rate: int, calls: int, *extra) -> tuple[subprocess.Popen, Path]:
    d = lab.tmp / name
    d.mkdir()
    shutil.copy(SCENARIOS / "uac_surge.xml", d / "uac_surge.xml")
    p = lab.start(lab.cli_ns, _sipp("-sf", "uac_surge.xml", f"{PROXY_IP}:{PROXY_PORT}", "-i", UAC_IP,
                                    "-p", str(port), "-r", str(rate),
                                    "-m", str(calls), "-d", "100", "-stf", "stat.csv", *extra),
                  d / "sipp.log", cwd=d, limit=150, cpu=UAC_CPU)
    return p, d


def _policy(tmp_path: Path, auto: dict) -> str:
    p = tmp_path / "policy.yml"
    # level 3 would shed INVITE (class high) silently; here calls are refused by admission
    # only, with the 503, so level 3 sheds what is below `high` like level 2
    p.write_text(json.dumps({"version": 1, "sip_ports": [PROXY_PORT],
                             "overload": {"shed_below": ["low", "normal", "high", "high"], "auto": auto}}))
    return str(p)


# ------------------------------------------------------------------ the test
def test_surge_through_kamailio(surge, etsf_env, etsf_bpf):  # pylint: disable=redefined-outer-name
    from etsf import datapath
    from etsf.overload.state import read_state
    lab = surge
    kam_pid = lab.kam.pid

    # 1. capacity: ~2x nominal without retransmissions; Kamailio's INVITE counter while saturated
    nominal = 1e6 / SERVICE_US
    probe, _probe_dir = _uac(lab, "probe", 5069, round(2 * nominal), round(2 * nominal * 5), "-nr",
                             "-recv_timeout", "2000")
    for _poll in range(100):
        if _proxy_socket(kam_pid)["queue"] > 0:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the probe never queued at Kamailio's socket")
    k1, t1 = _kam_stats(lab.ctl)["core:rcv_requests_invite"], time.monotonic()
    time.sleep(2.0)
    k2, t2 = _kam_stats(lab.ctl)["core:rcv_requests_invite"], time.monotonic()
    saturated = _proxy_socket(kam_pid)["queue"] > 0
    lab.stop(probe, timeout=60)
    assert saturated, "the probe did not keep Kamailio busy: capacity not measured"
    capacity = (k2 - k1) / (t2 - t1)
    assert capacity > 0, (k1, k2)
    _wait_quiet(kam_pid, lab.ctl)

    # 2. the controller, in the proxy namespace (Kamailio's socket), admission engaging at capacity
    auto = dict(AUTO, max_rate=max(2, math.ceil(capacity)))
    policy = _policy(lab.tmp, auto)
    etsfctl("policy", "apply", policy, env=etsf_env)
    # the controller writes rate and burst; Retry-After of the 503 is the operator's (kept)
    etsfctl("overload", "admit", "--off", "--retry-after", "5", env=etsf_env)
    xdp0, adm0, kam0 = _xdp_counts(), datapath.admission_counters(), _wait_quiet(kam_pid, lab.ctl)
    drops0 = _proxy_socket(kam_pid)["drops"]
    env = dict(os.environ, PYTHONPATH=str(SRC), **etsf_env)
    ctl_log = lab.tmp / "controller.log"
    max_ticks = int((SURGE_S + CALM_MAX_S + 60) / TICK_S)
    with open(ctl_log, "w", encoding="utf-8") as log:
        ctlp = subprocess.Popen(["nsenter", f"--net=/run/netns/{lab.srv_ns}", sys.executable, "-m", "etsf",
                                 "overload", "auto", "--policy", policy, "--count", str(max_ticks), "--json"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    timeline: list[dict] = []

    def poll():
        st = read_state() or {}
        if st.get("ticks") and (not timeline or st["ticks"] != timeline[-1]["tick"]):
            timeline.append({"tick": st["ticks"], "t": st["updated"], "level": st.get("level"),
                             "rate": st.get("admit_rate"),
                             "pressure": st.get("pressure"), "signal": st.get("signal"),
                             "signals": st.get("signals")})
        return st

    try:
        for _poll in range(100):                               # a few idle ticks first
            if poll().get("ticks", 0) >= 3:
                break
            time.sleep(TICK_S)
        idle = timeline[-1]
        assert (idle["level"], idle["rate"]) == (0, 0), timeline

        # 3. the surge: 3x capacity for SURGE_S seconds (bounded by the call count)
        surge_rate = max(1, round(SURGE_X * capacity))
        uac1, dir1 = _uac(lab, "surge", 5070, surge_rate, surge_rate * SURGE_S,
                          "-max_retrans", "5", "-timeout", "120s")
        tick_surge = timeline[-1]["tick"]
        for _poll in range(int(SURGE_S / POLL_S) + 100):       # until sipp has created every call
            poll()
            if (dir1 / "stat.csv").exists() and _rows(dir1 / "stat.csv") and \
                    _stat(dir1)["TotalCallCreated"] >= surge_rate * SURGE_S:
                break
            time.sleep(POLL_S)
        tick_calm = poll().get("ticks")

        # 4. then 0.5x until the controller is back at level 0 with admission off (bounded)
        calm_rate = max(1, round(CALM_X * capacity))
        uac2, dir2 = _uac(lab, "calm", 5071, calm_rate, calm_rate * CALM_MAX_S,
                          "-max_retrans", "5", "-timeout", "120s")
        recovered = None
        for _poll in range(int(CALM_MAX_S / POLL_S)):
            st = poll()
            if st.get("level") == 0 and st.get("admit_rate") == 0 and st["ticks"] > tick_calm:
                recovered = st["ticks"]
                break
            time.sleep(POLL_S)
        ctl_end = read_pinned_ctl(etsf_bpf, etsf_env["ETSF_PIN_ROOT"])
        rc1 = lab.stop(uac1, timeout=120)
        lab.stop(uac2, timeout=60, sig=signal.SIGUSR1)  # enough of the calm phase: no new call, the rest end
    finally:
        if ctlp.poll() is None:
            os.killpg(ctlp.pid, signal.SIGTERM)
        ctlp.wait(timeout=30)
    kam1 = _wait_quiet(kam_pid, lab.ctl)
    xdp = _delta(_xdp_counts(), xdp0)
    adm = _delta(datapath.admission_counters(), adm0)
    per_cpu = _admitted_per_cpu(etsf_bpf, etsf_env["ETSF_PIN_ROOT"])
    kam = _delta(kam1, kam0)
    drops = _proxy_socket(kam_pid)["drops"] - drops0
    audit = [a for a in _audit(etsf_env) if a["event"].startswith("overload")]
    c1, c2 = _counts(dir1), _counts(dir2)
    s1, s2 = _stat(dir1), _stat(dir2)
    refused = _refused_callids(dir1) + _refused_callids(dir2)
    kam_callids = set(re.findall(r"SURGE-INVITE (\S+)", lab.kam_log.read_text()))
    figures = {"capacity": round(capacity, 1), "max_rate": auto["max_rate"], "surge_rate": surge_rate,
               "calm_rate": calm_rate, "surge": s1, "calm": s2, "surge_counts": c1,
               "calm_counts": c2, "admission": adm, "admitted_per_cpu": per_cpu, "xdp": {f"{m} {v}": n for (m, v), n in xdp.items()},
               "kamailio": {k: v for k, v in kam.items() if k.startswith(("core:rcv_requests", "core:drop",
                                                                         "tmx:", "sl:"))},
               "socket_drops": drops, "ticks": {"surge": tick_surge, "calm": tick_calm, "recovered": recovered},
               "audit": [(a["numbers"]["level"], a["numbers"]["admit_rate"], a["rule"], a["numbers"]["pressure"])
                         for a in audit],
               "timeline": [(t["tick"], t["level"], t["rate"], t["pressure"], t["signal"]) for t in timeline]}
    (lab.tmp / "figures.json").write_text(json.dumps(figures, indent=1, default=str))
    (lab.tmp / "timeline.json").write_text(json.dumps({"cfg": auto, "surge_ticks": [tick_surge, tick_calm],
                                                       "ticks": timeline}))
    print("SURGE FIGURES", json.dumps(figures, default=str))
    assert rc1 in (0, 1), (dir1 / "sipp.log").read_text()[-2000:]      # 1: some call failed

    # the controller engaged within a few ticks of the surge: level up, admission rate cut
    during = [t for t in timeline if tick_surge < t["tick"] <= tick_calm]
    engaged = [t["tick"] for t in during if t["rate"]]
    assert engaged and engaged[0] - tick_surge <= 15, figures["timeline"]
    assert max(t["level"] for t in during) >= 1, figures["timeline"]
    rates = [t["rate"] for t in during if t["rate"]]
    assert rates and min(rates) < auto["max_rate"], figures["timeline"]
    # every change audited with the signal that drove it and that signal's value
    assert audit and any(a["numbers"]["level"] > a["numbers"]["previous_level"] for a in audit)
    targets = {"queue": auto["target_queue"], "pdd_ms": auto["target_pdd_ms"],
               "ratio_5xx": auto["target_5xx_ratio"]}
    for a in audit:
        sig, n = a["rule"], a["numbers"]
        assert sig in SIGNALS and sig in n, a
        if sig in targets and n["pressure"] >= 1:
            assert n["pressure"] == pytest.approx(n[sig] / targets[sig], abs=1e-3), a

    # calls were refused with the in-kernel 503, which sipp accepted; none retransmitted
    n503 = c1.get("3_503_Recv", 0) + c2.get("3_503_Recv", 0)
    assert c1.get("3_503_Retrans", 0) == c2.get("3_503_Retrans", 0) == 0
    assert n503 > 0 and adm.get("rejected", 0) == n503 == adm.get("replied", 0), figures
    assert adm.get("retrans_rejected", 0) == 0 and adm.get("reply_unfit", 0) == 0, adm
    assert len(refused) == len(set(refused)) == n503
    assert xdp.get(("INVITE", "DROP/ADMIT_503"), 0) == n503, xdp
    # no BYE and no ACK of a call Kamailio handles shed; every BYE answered.  The ACK of each
    # in-kernel 503 stops at eTSF (Kamailio never saw that transaction): exactly one per 503
    assert {v for (mm, v) in xdp if mm == "BYE"} == {"PASS/OK"}, xdp
    assert {v for (mm, v) in xdp if mm == "ACK"} == {"PASS/OK", "DROP/ADMIT_ACK"}, xdp
    assert xdp[("ACK", "DROP/ADMIT_ACK")] == n503, xdp
    acks = sum(c.get(k, 0) for c in (c1, c2) for k in ("6_ACK_Sent", "11_ACK_Sent")) - n503
    byes = sum(c.get(k, 0) for c in (c1, c2) for k in ("8_BYE_Sent", "8_BYE_Retrans"))
    assert xdp[("ACK", "PASS/OK")] >= acks > 0, (acks, xdp)      # sipp's re-ACKs of 200s are not counted
    assert xdp[("BYE", "PASS/OK")] == byes, (byes, xdp)
    for m in ("ACK", "BYE"):
        assert xdp[(m, "PASS/OK")] - drops <= kam[f"core:rcv_requests_{m.lower()}"] <= xdp[(m, "PASS/OK")]
    for c in (c1, c2):
        assert c.get("10_200_Recv", 0) + c.get("9_408_Recv", 0) == c.get("8_BYE_Sent", 0), c
        assert sum(n for k, n in c.items() if k.endswith("_Unexp")) == 0, c
    assert c1.get("8_BYE_Sent", 0) > 0
    # Kamailio never saw a refused INVITE; it saw what eTSF let through (less socket drops)
    assert not kam_callids & set(refused)
    invites = sum(c.get(k, 0) for c in (c1, c2) for k in ("0_INVITE_Sent", "0_INVITE_Retrans"))
    assert {v for (m, v) in xdp if m == "INVITE"} == {"PASS/OK", "DROP/ADMIT_503"}, xdp
    assert xdp[("INVITE", "PASS/OK")] + n503 == invites, (invites, xdp)
    # what passed: admitted by the bucket (first copies and retransmissions), or while admission was off
    passed = xdp[("INVITE", "PASS/OK")]
    assert adm.get("admitted", 0) + adm.get("retrans_admitted", 0) <= passed, (adm, xdp)
    assert passed - drops <= kam["core:rcv_requests_invite"] <= passed, figures
    # back at level 0, admission off, after the surge
    assert recovered is not None, figures["timeline"]
    assert (ctl_end.overload_level, ctl_end.invite_admit_rate) == (0, 0)
