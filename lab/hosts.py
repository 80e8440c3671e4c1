"""Lab hosts: overlay root per host, systemd-nspawn under a supervisor, readiness, teardown."""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from lab import net, rootfs
from lab.common import (APT_ARCHIVES, DEFAULT_SLOT_BASE, HOSTS_DIR, MGMT_NET,
                        NAME_RE, OTHER_SLOT_RANGE, PREFIX_RE, PROXY_LOG, PROXY_PORT, REPO_ROOT,
                        RUN_DIR, SIP_NET, SSH_KEY, SWITCH_MGMT_ADDR, SWITCH_NS, LabError, kill,
                        log, pid_alive, proc_cmdline, python_exe, run, ssh_common_args,
                        wait_pid_gone)

BOOT_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0


# ---------------------------------------------------------------- naming & addressing
def host_names(prefix: str, count: int) -> list[str]:
    if not PREFIX_RE.match(prefix):
        raise LabError(f"bad --prefix {prefix!r}: lower-case letters, digits, '-' (max 8)")
    if not 1 <= count <= 89:
        raise LabError("--hosts must be between 1 and 89")
    names = [f"{prefix}sbc{i}" for i in range(1, count + 1)]
    for n in names:
        if not NAME_RE.match(n):
            raise LabError(f"host name {n!r} too long (max 12 characters)")
    return names


def allocate_octet(state: dict, name: str, prefix: str, index: int) -> int:
    if name in state["hosts"]:
        return state["hosts"][name]["octet"]
    used = {h["octet"] for h in state["hosts"].values()}
    if prefix == "":
        octet = DEFAULT_SLOT_BASE + index
        if octet in used:
            raise LabError(f"address slot {octet} already used")
        return octet
    for octet in OTHER_SLOT_RANGE:
        if octet not in used:
            return octet
    raise LabError("no free address slot")


def host_record(name: str, prefix: str, octet: int,
                suite: str = rootfs.DEFAULT_SUITE) -> dict:
    return {"name": name, "prefix": prefix, "octet": octet, "suite": suite,
            "mgmt_address": f"{MGMT_NET}.{octet}", "sip_address": f"{SIP_NET}.{octet}",
            "netns": net.ns_of(name), "dir": str(HOSTS_DIR / name),
            "supervisor_pid": None}


def host_dir(name: str) -> Path:
    return HOSTS_DIR / name


def root_dir(name: str) -> Path:
    return host_dir(name) / "root"


def nspawn_pidfile(name: str) -> Path:
    return RUN_DIR / f"{name}.nspawn.pid"


# ---------------------------------------------------------------- mounts
def mounts() -> list[str]:
    out = []
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 1:
            out.append(parts[1].replace("\\040", " "))
    return out


def is_mounted(path: Path) -> bool:
    return str(path) in mounts()


def host_suite(rec: dict) -> str:
    """The Debian suite a host boots (records written before suites existed: the default)."""
    return rec.get("suite") or rootfs.DEFAULT_SUITE


def ensure_overlay(name: str, suite: str = rootfs.DEFAULT_SUITE) -> None:
    d = host_dir(name)
    for sub in ("upper", "work", "root"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    if not is_mounted(d / "root"):
        run(["mount", "-t", "overlay", f"etsf-lab-{name}", "-o",
             f"lowerdir={rootfs.base_dir(suite)},upperdir={d / 'upper'},workdir={d / 'work'}",
             str(d / "root")])


def unmount_tree(path: Path) -> None:
    """Unmount `path` and anything below it (deepest first, bounded)."""
    for _unused in range(20):
        below = sorted((m for m in mounts() if m == str(path) or m.startswith(str(path) + "/")),
                       key=len, reverse=True)
        if not below:
            return
        for m in below:
            if run(["umount", m], check=False).returncode != 0:
                run(["umount", "-l", m], check=False)
    raise LabError(f"could not unmount {path}")


# ---------------------------------------------------------------- per-host layer
def ensure_ssh_key() -> None:
    if SSH_KEY.exists() and SSH_KEY.with_suffix(".pub").exists():
        return
    SSH_KEY.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(SSH_KEY.parent, 0o700)
    for f in (SSH_KEY, SSH_KEY.with_suffix(".pub")):
        if f.exists():
            f.unlink()
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "etsf-lab", "-f", str(SSH_KEY)])


def provision(name: str) -> None:
    """Write the host-specific files into the host's overlay layer (once)."""
    root = root_dir(name)
    marker = host_dir(name) / "provisioned"
    if marker.exists():
        return
    (root / "etc/hostname").write_text(f"{name}\n")
    (root / "etc/hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    (root / "etc/machine-id").write_text(secrets.token_hex(16) + "\n")
    # no DNS in the lab (no route out); an empty resolver config fails fast instead of
    # timing out on the controller's nameserver. apt needs none: the proxy resolves.
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    resolv.write_text("# etsf lab: no DNS (hosts have no route out; apt uses the lab proxy)\n")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    ak = ssh_dir / "authorized_keys"
    ak.write_text(SSH_KEY.with_suffix(".pub").read_text())
    os.chmod(ak, 0o600)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    run(["ssh-keygen", "-A", "-f", str(root)])
    (root / "etc/apt/apt.conf.d/01proxy").write_text(
        "// etsf lab: hosts have no internet route; apt goes through the lab proxy\n"
        f'Acquire::http::Proxy "http://{SWITCH_MGMT_ADDR}:{PROXY_PORT}/";\n'
        'Acquire::https::Proxy "DIRECT";\n'
        'Acquire::http::Pipeline-Depth "0";\n'
        'Acquire::Retries "3";\n'
        'Binary::apt::APT::Keep-Downloaded-Packages "true";\n'
        'APT::Keep-Downloaded-Packages "true";\n'
        '// the archive cache is a bind mount shared by all lab hosts\n'
        'APT::Sandbox::User "root";\n')
    # the bind-mounted shared archive cache must exist in the image
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))


# ---------------------------------------------------------------- supervisor / nspawn
# Runs nspawn inside the host's netns and a private mount namespace whose /sys is a fresh
# sysfs of that netns (so /sys/class/net shows mgmt0/sip0, as on a real host), with the
# machine's cgroup tree bound back under it (nspawn needs it).
NSPAWN_WRAPPER = r"""
set -e
d=$(mktemp -d /tmp/etsf-lab-cg.XXXXXX)
mount --rbind /sys/fs/cgroup "$d"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount --rbind "$d" /sys/fs/cgroup
umount -l "$d"
rmdir "$d"
exec "$@"
"""


def nspawn_argv(name: str) -> list[str]:
    return nspawn_argv_for(net.ns_of(name), root_dir(name), name)


def nspawn_argv_for(ns: str, root: Path, machine: str, console: str = "passive",
                    allow_bpf: bool = True) -> list[str]:
    """systemd-nspawn --boot of the tree `root` as `machine` inside the existing netns `ns`.
    allow_bpf=False keeps nspawn's default system call filter, which refuses bpf(2): a machine
    that cannot run eTSF (the appliance's failed-preflight path)."""
    return ["nsenter", f"--net=/run/netns/{ns}", "--",
            "unshare", "--mount", "--propagation", "slave", "--",
            "sh", "-c", NSPAWN_WRAPPER, "etsf-lab-nspawn",
            "systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--capability=all",
            *(["--system-call-filter=bpf perf_event_open"] if allow_bpf else []),
            f"--network-namespace-path=/run/netns/{ns}",
            "--link-journal=no", f"--console={console}", "--resolv-conf=off",
            "--timezone=off",
            "-D", str(root), "-M", machine]


def is_supervisor(pid: int | None, name: str | None = None) -> bool:
    if not pid_alive(pid):
        return False
    cl = proc_cmdline(pid)
    if "lab.supervisor" not in cl:
        return False
    return name is None or (f"--name={name}" in cl or
                            ("--name" in cl and cl[cl.index("--name") + 1:][:1] == [name]))


def start_supervisor(name: str) -> int:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    logfile = host_dir(name) / "console.log"
    env = dict(os.environ, SYSTEMD_NSPAWN_API_VFS_WRITABLE="1",
               PYTHONPATH=str(REPO_ROOT))
    argv = [python_exe(), "-m", "lab.supervisor", "--name", name, "--log", str(logfile),
            "--pidfile", str(nspawn_pidfile(name)), "--stop-timeout", str(STOP_TIMEOUT),
            "--netns", net.ns_of(name), "--ifaces", "mgmt0,sip0",
            "--", *nspawn_argv(name)]
    p = subprocess.Popen(argv, cwd=str(REPO_ROOT), env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=open(logfile, "ab"),  # noqa: SIM115
                         start_new_session=True, close_fds=True)
    return p.pid


def nspawn_pid(name: str) -> int | None:
    try:
        pid = int(nspawn_pidfile(name).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def container_pid1(name: str) -> int | None:
    """Host pid of the container's PID 1: in the host's netns with NSpid ending in 1."""
    return container_pid1_in(net.ns_of(name))


def container_pid1_in(ns: str) -> int | None:
    """Host pid of the PID 1 of a container running in network namespace `ns`."""
    try:
        ns_ino = os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return None
    for pid in net.netns_pids(ns):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino != ns_ino:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("NSpid:"):
                    ids = line.split()[1:]
                    if len(ids) > 1 and ids[-1] == "1":
                        return pid
        except OSError:
            continue
    return None


def nsenter(name: str, cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    pid = container_pid1(name)
    if pid is None:
        raise LabError(f"{name}: container is not running")
    return run(["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "--", *cmd],
               check=False, timeout=timeout)


def systemd_state(name: str) -> str:
    try:
        cp = nsenter(name, ["systemctl", "is-system-running"], timeout=10)
    except LabError:
        return "down"
    return (cp.stdout or "").strip() or "unknown"


def boot_id(name: str) -> str | None:
    try:
        cp = nsenter(name, ["cat", "/proc/sys/kernel/random/boot_id"], timeout=10)
    except LabError:
        return None
    return cp.stdout.strip() if cp.returncode == 0 else None


def ssh_argv(address: str, cmd: list[str] | None = None, *, batch: bool = True) -> list[str]:
    argv = ["ssh", "-i", str(SSH_KEY), *ssh_common_args(), "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=5", "-o", "IdentitiesOnly=yes"]
    if batch:
        argv += ["-o", "BatchMode=yes"]
    argv.append(f"root@{address}")
    if cmd:
        argv += ["--", *cmd]
    return argv


def ssh_ok(address: str) -> bool:
    try:
        return run(ssh_argv(address, ["true"]), check=False, timeout=15).returncode == 0
    except LabError:
        return False


def wait_ready(records: list[dict], timeout: float = BOOT_TIMEOUT,
               old_boot_ids: dict | None = None) -> None:
    """Wait (bounded) until each host's systemd is running/degraded and sshd answers."""
    results: dict[str, str] = {}

    def one(rec: dict) -> None:
        name = rec["name"]
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        last_note = 0.0
        phase = "booting"
        while time.monotonic() < deadline:
            if not is_supervisor(rec.get("supervisor_pid"), name):
                results[name] = "supervisor died (see console.log)"
                return
            if phase == "booting":
                bid = boot_id(name)
                if bid and (old_boot_ids is None or bid != old_boot_ids.get(name)):
                    st = systemd_state(name)
                    if st in ("running", "degraded"):
                        phase = "ssh"
                        log(f"{name}: systemd {st} after {time.monotonic() - t0:.1f}s")
                    elif st in ("maintenance", "stopping"):
                        results[name] = f"systemd {st}"
                        return
            if phase == "ssh":
                if ssh_ok(rec["mgmt_address"]):
                    results[name] = "ok"
                    log(f"{name}: ready (ssh root@{rec['mgmt_address']}) "
                        f"after {time.monotonic() - t0:.1f}s")
                    return
            if time.monotonic() - last_note > 10:
                last_note = time.monotonic()
                log(f"{name}: waiting ({phase}, {time.monotonic() - t0:.0f}s)")
            time.sleep(0.5)
        results[name] = f"not ready after {timeout:.0f}s (phase {phase})"

    threads = [threading.Thread(target=one, args=(r,), daemon=True) for r in records]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 30)
    bad = {n: r for n, r in results.items() if r != "ok"}
    missing = [r["name"] for r in records if r["name"] not in results]
    if bad or missing:
        raise LabError("hosts not ready: " + ", ".join(
            [f"{n}: {r}" for n, r in sorted(bad.items())] + [f"{n}: no result" for n in missing]))


def stop_hosts(records: list[dict]) -> None:
    """Orderly poweroff via the supervisor (SIGTERM -> nspawn -> container), then force."""
    sups = [(r["name"], r.get("supervisor_pid")) for r in records]
    for name, pid in sups:
        if is_supervisor(pid, name):
            log(f"{name}: powering off")
            kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT + 10
    for name, pid in sups:
        if is_supervisor(pid, name):
            wait_pid_gone(pid, max(0.5, deadline - time.monotonic()))
            if pid_alive(pid):
                log(f"{name}: supervisor did not exit, killing")
                kill(pid, signal.SIGKILL)
        npid = nspawn_pid(name)
        if npid and "systemd-nspawn" in " ".join(proc_cmdline(npid)):
            kill(npid, signal.SIGKILL)
            wait_pid_gone(npid, 5)


def teardown_host(rec: dict) -> None:
    """Everything of one host: processes, mounts, files, network."""
    name = rec["name"]
    ns = net.ns_of(name)
    if ns in net.list_netns():
        # anything still running in the host netns (a container left behind by a crash)
        for pid in net.netns_pids(ns):
            kill(pid, signal.SIGKILL)
    unmount_tree(root_dir(name))
    shutil.rmtree(host_dir(name), ignore_errors=True)
    for f in (nspawn_pidfile(name),):
        try:
            f.unlink()
        except OSError:
            pass
    net.delete_host_net(name)


# ---------------------------------------------------------------- apt proxy
def proxy_running(pid: int | None) -> bool:
    return pid_alive(pid) and "lab.proxy" in proc_cmdline(pid)


def proxy_answers() -> bool:
    return run(["ip", "netns", "exec", SWITCH_NS, "nc", "-z", "-w", "2", SWITCH_MGMT_ADDR,
                str(PROXY_PORT)], check=False, timeout=10).returncode == 0


def ensure_proxy(state: dict) -> None:
    pid = state.get("proxy_pid")
    if proxy_running(pid) and proxy_answers():
        return
    if proxy_running(pid):
        kill(pid, signal.SIGKILL)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([python_exe(), "-m", "lab.proxy", "--netns", SWITCH_NS,
                          "--listen", f"{SWITCH_MGMT_ADDR}:{PROXY_PORT}", "--cache", str(APT_ARCHIVES)],
                         cwd=str(REPO_ROOT), env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=open(PROXY_LOG, "ab"), start_new_session=True)  # noqa: SIM115
    state["proxy_pid"] = p.pid
    for _unused in range(50):
        if proxy_answers():
            log(f"apt proxy listening on {SWITCH_MGMT_ADDR}:{PROXY_PORT} in netns {SWITCH_NS} "
                f"(pid {p.pid})")
            return
        if p.poll() is not None:
            break
        time.sleep(0.2)
    raise LabError(f"apt proxy did not start (see {PROXY_LOG})")


def stop_proxy(state: dict) -> None:
    pid = state.get("proxy_pid")
    if proxy_running(pid):
        kill(pid, signal.SIGTERM)
        if not wait_pid_gone(pid, 5):
            kill(pid, signal.SIGKILL)
            wait_pid_gone(pid, 5)
    state["proxy_pid"] = None
