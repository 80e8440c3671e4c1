"""`etsfctl overload auto` against the REAL pinned etsf_ctl and a REAL proxy socket: a UDP
socket bound on the proxy port in its own network namespace that nobody reads, filled with
datagrams (its rx_queue grows), then drained.  The controller raises the level and cuts the
admission rate, audits each change with the signal and its value, publishes its state and
heartbeat, leaves a manually pinned level alone until resumed, and returns to level 0 with
admission off once the queue is empty.  Ticks are counted; nothing is timed."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from conftest import NS_PREFIX, etsfctl, read_pinned_ctl
from etsf import paths

PORT = 5060
PAYLOAD = 1000
# the socket holder: binds the proxy port and obeys one command per stdin line
HOLDER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(("127.0.0.1", %d))
s.setblocking(False)
print("ready", flush=True)
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "fill":
        for _ in range(int(arg)):
            s.sendto(b"x" * %d, ("127.0.0.1", %d))
        print("filled", flush=True)
    elif cmd == "drain":
        n = 0
        try:
            while True:
                s.recv(65536)
                n += 1
        except BlockingIOError:
            pass
        print("drained", n, flush=True)
""" % (PORT, PAYLOAD, PORT)

AUTO = {"enabled": True, "proxy_ports": [PORT], "target_queue": 16384, "target_pdd_ms": 0,
        "target_5xx_ratio": 0, "min_rate": 10, "max_rate": 400, "dwell_s": 0, "max_step": 0.5,
        "hysteresis": 0.2, "interval_ms": 100}


@pytest.fixture
def loaded(etsf_env, etsf_bpf, build_dir):
    progs = etsf_bpf.load_object(os.path.join(build_dir, "xdp_sip.bpf.o"), etsf_env["ETSF_PIN_ROOT"])
    yield progs
    for p in progs.values():
        p.close()


@pytest.fixture
def proxy_ns():
    """A netns with lo up and the unread proxy socket; yields (netns name, command function)."""
    ns = f"{NS_PREFIX}oc{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    proc = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-c", HOLDER],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"

        def cmd(line: str) -> str:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            return proc.stdout.readline().strip()
        yield ns, cmd
    finally:
        if proc is not None:
            proc.stdin.close()
            proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def _policy(tmp_path, name="policy.yml", **auto):
    p = tmp_path / name
    p.write_text(json.dumps({"version": 1, "sip_ports": [PORT], "overload": {"auto": dict(AUTO, **auto)}}))
    return str(p)


def _auto(env, ns, policy, *args):
    r = etsfctl("overload", "auto", "--policy", policy, "--interval", "0.01", "--json", *args, env=env, netns=ns)
    return json.loads(r.stdout)


def _audit(env):
    path = os.path.join(env["ETSF_STATE_DIR"], "failsafe-audit.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def test_queue_surge_raises_level_cuts_rate_and_recovers(tmp_path, etsf_env, etsf_bpf, loaded, proxy_ns):
    root = etsf_env["ETSF_PIN_ROOT"]
    ns, cmd = proxy_ns
    policy = _policy(tmp_path)
    hb = str(tmp_path / "run" / "overload.heartbeat")

    idle = _auto(etsf_env, ns, policy, "--once", "--heartbeat-file", hb)["last"]
    assert (idle["level"], idle["rate"], idle["changed"]) == (0, 0, False) and idle["signals"] == {"queue": 0}
    assert _audit(etsf_env) == [] and os.path.exists(hb)

    assert cmd("fill 60") == "filled"              # ~60 x truesize >> 4 x target_queue: level 3
    out = _auto(etsf_env, ns, policy, "--count", "10")
    hist = out["history"]
    levels, rates = [h["level"] for h in hist], [h["rate"] for h in hist]
    # up to level 2 at once, with admission engaged at max_rate and cut on every tick; level 3
    # (its shed_below drops new INVITEs without a 503) only once admission is down to min_rate
    assert levels[:2] == [1, 2] and rates[0] == AUTO["max_rate"]
    top = levels.index(3)
    assert set(levels[1:top]) == {2} and all(x == 3 for x in levels[top:])
    assert rates[top] == AUTO["min_rate"] and rates[top - 1] == AUTO["min_rate"]
    assert all(b < a for a, b in zip(rates[:top - 1], rates[1:top - 1]))
    assert all(h["signal"] == "queue" and h["signals"]["queue"] > 4 * AUTO["target_queue"] for h in hist)
    up = sum(1 for h in hist if h["changed"])
    assert up == top + 1                           # every cut and every level change, then held
    c = read_pinned_ctl(etsf_bpf, root)
    assert (c.overload_level, c.invite_admit_rate) == (3, AUTO["min_rate"])
    assert c.invite_admit_burst == max(1, AUTO["min_rate"] * 10 // 1000)
    assert c.retry_after_s == 5                    # the policy's default Retry-After of the 503
    audit = [a for a in _audit(etsf_env) if a["event"].startswith("overload")]
    assert len(audit) == up
    assert [a["numbers"]["level"] for a in audit if a["event"] == "overload_level"] == [1, 2, 3]
    assert audit[0]["rule"] == "queue" and audit[0]["numbers"]["queue"] == hist[0]["signals"]["queue"]
    assert audit[0]["numbers"]["previous_level"] == 0 and audit[0]["numbers"]["admit_rate"] == AUTO["max_rate"]
    st = _auto(etsf_env, ns, policy, "--show")["state"]
    assert (st["level"], st["admit_rate"], st["changes_total"], st["pinned"] if "pinned" in st else False) == \
        (3, AUTO["min_rate"], up, False)

    assert cmd("drain").startswith("drained")
    out = _auto(etsf_env, ns, policy, "--count", "14")
    hist = out["history"]
    assert [h["level"] for h in hist[:3]] == [2, 1, 0] and hist[-1]["level"] == 0
    assert hist[-1]["rate"] == 0 and all(h["signals"]["queue"] == 0 for h in hist)
    c = read_pinned_ctl(etsf_bpf, root)
    assert (c.overload_level, c.invite_admit_rate, c.invite_admit_burst) == (0, 0, 0)
    # nothing is offered (admission counts no new INVITE): the rate holds, and admission
    # switches off in the first tick at level 0 idle for dwell_s (0 here)
    rates = [h["rate"] for h in hist]
    off = rates.index(0)
    # (the first tick after a start has no admission counts to difference against)
    assert all(h["signals"]["admitted"] == 0 and h["signals"]["refused"] == 0 for h in hist[1:])
    assert set(rates[:off]) == {rates[0]} and rates[0] >= AUTO["min_rate"] and set(rates[off:]) == {0}
    assert hist[off]["level"] == 0 and all(h["level"] > 0 for h in hist[:off])
    down = sum(1 for h in hist if h["changed"])
    assert down == off + 1
    oa = json.loads(etsfctl("status", "--json", env=etsf_env).stdout)["overload_auto"]
    assert (oa["level"], oa["admit_rate"], oa["changes_total"], oa["pinned"] if "pinned" in oa else False) == \
        (0, 0, up + down, False)


def test_manual_level_is_pinned_until_resume(tmp_path, etsf_env, etsf_bpf, loaded, proxy_ns):
    root = etsf_env["ETSF_PIN_ROOT"]
    ns, _cmd = proxy_ns
    policy = _policy(tmp_path)
    etsfctl("overload", "set", "2", env=etsf_env)
    out = _auto(etsf_env, ns, policy, "--count", "3")
    assert all(h["pinned"] and "level" not in h for h in out["history"])
    assert read_pinned_ctl(etsf_bpf, root).overload_level == 2 and _audit(etsf_env) == []
    _auto(etsf_env, ns, policy, "--resume")
    out = _auto(etsf_env, ns, policy, "--once")["last"]
    assert not out["pinned"] and out["level"] == 1          # from the pinned 2, one step down
    assert read_pinned_ctl(etsf_bpf, root).overload_level == 1
    (a,) = _audit(etsf_env)
    assert a["event"] == "overload_level" and a["numbers"]["previous_level"] == 2


def test_disabled_or_invalid_controller_refused(tmp_path, etsf_env, etsf_bpf, loaded):
    root = etsf_env["ETSF_PIN_ROOT"]
    before = bytes(read_pinned_ctl(etsf_bpf, root))
    for policy, needle in ((_policy(tmp_path, enabled=False), "overload.auto.enabled is false"),
                           (_policy(tmp_path, "bad.yml", min_rate=500), "policy.overload.auto.min_rate")):
        r = etsfctl("overload", "auto", "--once", "--policy", policy, env=etsf_env, check=False)
        assert r.returncode != 0 and r.stdout == ""
        assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr
    assert bytes(read_pinned_ctl(etsf_bpf, root)) == before
    assert not os.path.exists(os.path.join(etsf_env["ETSF_STATE_DIR"], "overload.json"))


def _notify_socket(tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(tmp_path / "notify"))
    s.setblocking(False)
    return s


def _datagrams(s) -> list[bytes]:
    out = []
    with contextlib.suppress(BlockingIOError):
        while True:
            out.append(s.recv(256))
    return out


def test_ready_after_the_first_tick_only(tmp_path, etsf_env, etsf_bpf, loaded, proxy_ns):
    """etsf-overload.service is Type=notify: the controller tells systemd READY=1 once, after
    its first tick wrote etsf_ctl, the state file and the heartbeat; one that cannot tick (its
    policy unreadable) never does, so its start fails instead of restarting in a loop."""
    ns, _cmd = proxy_ns
    hb = tmp_path / "run" / "overload.heartbeat"
    hb.parent.mkdir()
    env = dict(etsf_env, NOTIFY_SOCKET=str(tmp_path / "notify"))
    with _notify_socket(tmp_path) as s:
        out = _auto(env, ns, _policy(tmp_path), "--count", "3", "--heartbeat-file", str(hb))
        assert out["ticks"] == 3 and hb.exists()
        assert _datagrams(s) == [b"READY=1"]
        # a restart into a broken start: the last process's clean stop left the heartbeat
        # "stopped" (not stale to the fail-safe); the new start makes it current before it fails,
        # and the next failing start does not renew it, so the fail-safe's heartbeat rule sees it age
        paths.write_heartbeat(str(hb), stopped=True)
        os.utime(hb, (time.time() - 600, time.time() - 600))
        ages = []
        for _start in range(2):
            r = etsfctl("overload", "auto", "--policy", str(tmp_path / "missing.yml"), "--heartbeat-file", str(hb),
                        env=env, netns=ns, check=False)
            assert r.returncode == 1 and "policy: cannot read" in r.stderr
            assert not paths.heartbeat_stopped(str(hb))
            ages.append(time.time() - hb.stat().st_mtime)
            os.utime(hb, (time.time() - 120, time.time() - 120))
        assert ages[0] < 60 and ages[1] >= 120, ages
        assert _datagrams(s) == []                      # neither failing start said ready
