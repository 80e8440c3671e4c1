"""Preflight: can this host run eTSF?  Read-only checks, every unmet requirement reported.

Used by ``etsfctl preflight`` and (through ``plugins/module_utils/preflight.py``, a link
to this file) by the ``etsf.sip.preflight`` Ansible module, which must work on a host
where the agent is not installed yet: so this module imports only the standard library.

Each check returns a dict ``{"name", "ok", "severity", "detail", ...}``; ``severity``
is ``"error"`` (blocks a rollout) or ``"warning"`` (reported, does not block).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import gzip
import json
import os
import platform
import re
import resource
import shutil
import socket
import subprocess

DEFAULT_MIN_KERNEL = "5.18"  # bpf_loop (5.17) and bpf_xdp_load_bytes (5.18)

# Kernel options eTSF needs.  "y" or "m" satisfies each.
REQUIRED_KCONFIG = (
    "CONFIG_BPF",
    "CONFIG_BPF_SYSCALL",
    "CONFIG_BPF_JIT",
    "CONFIG_DEBUG_INFO_BTF",
    "CONFIG_NET_CLS_BPF",
    "CONFIG_NET_CLS_ACT",
    "CONFIG_NET_SCH_INGRESS",
)

# What the programs use, as bpftool feature probe names them.
REQUIRED_PROG_TYPES = ("xdp", "sched_cls")
REQUIRED_MAP_TYPES = ("array", "percpu_array", "percpu_hash", "lru_hash", "lpm_trie")
REQUIRED_HELPERS = {
    "xdp": ("bpf_map_lookup_elem", "bpf_map_update_elem", "bpf_ktime_get_ns", "bpf_loop", "bpf_xdp_load_bytes"),
    "sched_cls": ("bpf_map_lookup_elem", "bpf_ktime_get_ns", "bpf_loop", "bpf_skb_load_bytes",
                  "bpf_skb_store_bytes", "bpf_l3_csum_replace"),
}

# Drivers with native (driver-mode) XDP.  Anything else gets generic (skb) mode.
NATIVE_XDP_DRIVERS = frozenset({
    "veth", "virtio_net", "tun", "mlx4_en", "mlx5_core", "i40e", "ice", "ixgbe", "ixgbevf", "igb", "igc",
    "bnxt_en", "qede", "nfp", "ena", "sfc", "thunder-nic", "mvneta", "mvpp2", "stmmac", "netsec",
    "hv_netvsc", "xen-netfront", "bond", "nicvf", "octeontx2-nicpf", "fec", "gve", "idpf",
})

OUR_PROGRAMS = ("xdp_sip", "tc_sip_egress", "tc_fastpath")

HOOKS = ("auto", "xdp", "tc")

# Software devices (ethtool driver names).  None has XDP headroom in its skbs: native XDP on
# them converts and copies every packet, generic XDP runs after the skb exists, so the TC
# ingress program does the same work for less.
VIRTUAL_DRIVERS = frozenset({
    "veth", "bridge", "dummy", "tun", "vxlan", "geneve", "macvlan", "macvtap", "ipvlan", "ipvtap",
    "bonding", "team", "vrf", "ifb", "netkit", "wireguard", "802.1Q VLAN Support", "gre", "ip_gre",
    "ip6_gre", "ipip", "sit", "ip6_tunnel", "ip_vti", "ip6_vti", "nlmon", "openvswitch", "hsr",
    "macsec", "xfrm", "bareudp", "gtp", "vcan", "batman-adv", "loopback",
})
# What each virtual driver is, for the reason auto gives.
_VIRTUAL_WHY = {
    "veth": "native XDP on a veth copies every skb that lacks XDP headroom",
    "tun": "native XDP on tun/tap runs on skbs built for it",
}
MIN_MEMLOCK_BYTES = 64 * 1024 * 1024


def _parse_version(text: str) -> tuple[int, ...]:
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    if not match:
        raise ValueError(f"not a kernel version: {text!r}")
    return tuple(int(part or 0) for part in match.groups())


def _check(name: str, ok: bool, detail: str, severity: str = "error", **extra) -> dict:
    return {"name": name, "ok": bool(ok), "severity": severity, "detail": detail, **extra}


def check_kernel(min_version: str, release: str | None = None) -> dict:
    release = release or platform.release()
    ok = _parse_version(release) >= _parse_version(min_version)
    return _check("kernel_version", ok, f"kernel {release} (minimum {min_version})",
                  release=release, minimum=min_version)


def check_btf(path: str = "/sys/kernel/btf/vmlinux") -> dict:
    ok = os.path.isfile(path) and os.access(path, os.R_OK)
    return _check("btf", ok, f"{path} {'readable' if ok else 'missing or unreadable'}", path=path)


def read_mounts(path: str = "/proc/mounts") -> list[tuple[str, str]]:
    with open(path, encoding="utf-8") as fh:
        return [(parts[1], parts[2]) for parts in (line.split() for line in fh) if len(parts) >= 3]


def check_bpffs(mountpoint: str = "/sys/fs/bpf", mounts: list[tuple[str, str]] | None = None,
                mounted_first: bool = False) -> dict:
    """`mounted_first`: the caller mounts bpffs before it uses the host (the preflight role in
    check mode, whose real run mounts it before checking), so a missing mount is a warning."""
    mounts = read_mounts() if mounts is None else mounts
    ok = any(point == mountpoint and fstype == "bpf" for point, fstype in mounts)
    if not ok and mounted_first:
        return _check("bpffs", False, f"bpffs not mounted at {mountpoint} (a real run mounts it first)",
                      severity="warning", path=mountpoint)
    return _check("bpffs", ok, f"bpffs {'mounted' if ok else 'not mounted'} at {mountpoint}", path=mountpoint)


def check_jit(kconfig: dict[str, str], path: str = "/proc/sys/net/core/bpf_jit_enable") -> dict:
    if kconfig.get("CONFIG_BPF_JIT_ALWAYS_ON") == "y":
        return _check("bpf_jit", True, "BPF JIT always on (CONFIG_BPF_JIT_ALWAYS_ON=y)", value="always")
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().strip()
    except FileNotFoundError:
        # net.core.bpf_jit_enable exists only in the initial network namespace
        return _check("bpf_jit", True, f"{path} not visible in this network namespace: JIT state unknown",
                      severity="warning", value=None)
    except OSError as exc:
        return _check("bpf_jit", False, f"cannot read {path}: {exc.strerror}")
    return _check("bpf_jit", value in ("1", "2"), f"net.core.bpf_jit_enable = {value}", value=value)


def read_kconfig(release: str | None = None) -> tuple[dict[str, str], str | None]:
    release = release or platform.release()
    candidates = ["/proc/config.gz", f"/boot/config-{release}"]
    for path in candidates:
        try:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as fh:
                options = {}
                for line in fh:
                    if line.startswith("CONFIG_") and "=" in line:
                        key, _sep, value = line.strip().partition("=")
                        options[key] = value
                return options, path
        except OSError:
            continue
    return {}, None


def check_kconfig(options: dict[str, str], source: str | None) -> dict:
    if source is None:
        return _check("kernel_config", True, "kernel config not readable (/proc/config.gz, /boot/config-*): not checked",
                      severity="warning", missing=[])
    missing = [opt for opt in REQUIRED_KCONFIG if options.get(opt) not in ("y", "m")]
    detail = f"missing {', '.join(missing)} in {source}" if missing else f"all {len(REQUIRED_KCONFIG)} options set ({source})"
    return _check("kernel_config", not missing, detail, missing=missing, source=source)


SYS_BPF = {"x86_64": 321, "aarch64": 280}


def check_bpf_syscall(machine: str | None = None) -> dict:
    """Can this process use bpf(2) at all?  Creates (and closes) a 1-entry array map.  A refusal
    names the usual causes instead of a list of every feature the probe then cannot see."""
    nr = SYS_BPF.get(machine or platform.machine())
    if nr is None:
        return _check("bpf_syscall", True, f"bpf(2) not probed on {machine or platform.machine()}",
                      severity="warning")
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 32)()
    attr[0], attr[1], attr[2], attr[3] = 2, 4, 4, 1          # BPF_MAP_TYPE_ARRAY, key 4, value 4, 1 entry
    fd = libc.syscall(nr, 0, ctypes.byref(attr), ctypes.sizeof(attr))   # BPF_MAP_CREATE
    if fd >= 0:
        os.close(fd)
        return _check("bpf_syscall", True, "bpf(2) permitted")
    err = ctypes.get_errno()
    return _check("bpf_syscall", False,
                  f"bpf(2) refused: {os.strerror(err)} ({errno.errorcode.get(err, err)}); a seccomp filter "
                  "(containers: allow the bpf system call), missing CAP_BPF/CAP_SYS_ADMIN or "
                  "kernel.unprivileged_bpf_disabled", errno=err)


def probe_features(bpftool: str | None = None) -> dict | None:
    bpftool = bpftool or shutil.which("bpftool")
    if not bpftool:
        return None
    try:
        out = subprocess.run([bpftool, "-j", "feature", "probe", "kernel"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        return json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def check_features(probe: dict | None) -> dict:
    if probe is None:
        return _check("bpf_features", True, "bpftool not installed yet: feature probe skipped (the datapath "
                      "role installs it; loading proves the features)", severity="warning", missing=[])
    missing = []
    for prog in REQUIRED_PROG_TYPES:
        if not probe.get("program_types", {}).get(f"have_{prog}_prog_type"):
            missing.append(f"program type {prog}")
    for mtype in REQUIRED_MAP_TYPES:
        if not probe.get("map_types", {}).get(f"have_{mtype}_map_type"):
            missing.append(f"map type {mtype}")
    helpers = probe.get("helpers", {})
    for prog, names in REQUIRED_HELPERS.items():
        available = set(helpers.get(f"{prog}_available_helpers", []))
        missing.extend(f"helper {name} for {prog}" for name in names if name not in available)
    detail = "missing " + ", ".join(missing) if missing else "program types, map types and helpers available"
    return _check("bpf_features", not missing, detail, missing=missing)


def _ip_link(iface: str) -> dict | None:
    try:
        out = subprocess.run(["ip", "-j", "-d", "link", "show", "dev", iface], capture_output=True, text=True,
                             timeout=10, check=True).stdout
        links = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return links[0] if links else None


def _prog_name(prog_id: int) -> str:
    bpftool = shutil.which("bpftool")
    if bpftool:
        try:
            out = subprocess.run([bpftool, "-j", "prog", "show", "id", str(prog_id)], capture_output=True,
                                 text=True, timeout=10, check=True).stdout
            return json.loads(out).get("name", "?")
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    return "?"


def clsact_programs(iface: str) -> list[dict]:
    """BPF programs in iface's clsact filters, both directions, as `tc filter show` lists them."""
    found = []
    for direction in ("ingress", "egress"):
        try:
            out = subprocess.run(["tc", "-j", "filter", "show", "dev", iface, direction], capture_output=True,
                                 text=True, timeout=10, check=True).stdout
            filters = json.loads(out) if out.strip() else []
        except (OSError, subprocess.SubprocessError, ValueError):
            continue
        for flt in filters:
            opts = flt.get("options", {})
            if flt.get("kind") == "bpf" and opts.get("prog", {}).get("id"):
                found.append({"direction": direction, "id": opts["prog"]["id"],
                              "name": opts["prog"].get("name", "?")})
    return found


def _tc_programs(iface: str) -> list[dict]:
    # programs on tcx links run ahead of every filter, and tc does not list them
    return clsact_programs(iface) + [{"direction": d, "id": i, "name": _prog_name(i)}
                                     for d in ("ingress", "egress") for i in _tcx_ids(iface, d)]


def _tcx_ids(iface: str, direction: str) -> list[int]:
    """Program ids at iface's tcx attach point ([] on a kernel without tcx, or where the agent's
    libbpf cannot be loaded: preflight reports that under its own checks)."""
    try:
        from . import bpflinks
        from .libbpf import BpfError
    except (ImportError, OSError):
        return []
    try:
        if not bpflinks.tcx_supported():
            return []
        return bpflinks.tcx_prog_ids(socket.if_nametoindex(iface), direction)
    except (OSError, BpfError):
        return []


# ---------------------------------------------------------------------------
# which hook classifies on an interface
# ---------------------------------------------------------------------------


class _DrvInfo(ctypes.Structure):
    """struct ethtool_drvinfo (include/uapi/linux/ethtool.h)."""
    _fields_ = [("cmd", ctypes.c_uint32), ("driver", ctypes.c_char * 32), ("version", ctypes.c_char * 32),
                ("fw_version", ctypes.c_char * 32), ("bus_info", ctypes.c_char * 32),
                ("erom_version", ctypes.c_char * 32), ("reserved2", ctypes.c_char * 12),
                ("n_priv_flags", ctypes.c_uint32), ("n_stats", ctypes.c_uint32),
                ("testinfo_len", ctypes.c_uint32), ("eedump_len", ctypes.c_uint32),
                ("regdump_len", ctypes.c_uint32)]


class _IfReq(ctypes.Structure):
    _fields_ = [("ifr_name", ctypes.c_char * 16), ("ifr_data", ctypes.c_void_p), ("_pad", ctypes.c_char * 16)]


SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 0x00000003


def ethtool_drvinfo(iface: str) -> tuple[str, str] | None:
    """(driver, bus_info) of iface in this process's network namespace, from the kernel's
    ETHTOOL_GDRVINFO; None when it cannot be asked.  Unlike /sys/class/net, which under
    `nsenter --net` still shows the namespace sysfs was mounted in, this follows the netns."""
    info = _DrvInfo(cmd=ETHTOOL_GDRVINFO)
    req = _IfReq(ifr_name=iface.encode()[:15], ifr_data=ctypes.addressof(info))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            fcntl.ioctl(sock.fileno(), SIOCETHTOOL, req)
    except OSError:
        return None
    return info.driver.decode(errors="replace"), info.bus_info.decode(errors="replace")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return None


def iface_facts(iface: str, sysfs_root: str = "/sys", ifindex: int | None = None,
                drvinfo: tuple[str, str] | None = None) -> dict:
    """What decides the hook, from sysfs under sysfs_root (class/net/IFACE: device/driver,
    the devices/virtual path, lower_* links) and the ethtool driver name (drvinfo).
    sysfs is used only when its ifindex is `ifindex` (else it shows another namespace's
    interface of that name); ifindex None trusts it."""
    net = os.path.join(sysfs_root, "class", "net", iface)
    visible = os.path.isdir(net)
    if visible and ifindex is not None and _read(os.path.join(net, "ifindex")) != str(ifindex):
        visible = False
    driver = drvinfo[0] if drvinfo else ""
    sys_driver = ""
    virtual = None
    lower: list[str] = []
    if visible:
        try:
            sys_driver = os.path.basename(os.readlink(os.path.join(net, "device", "driver")))
        except OSError:
            sys_driver = ""
        real = os.path.realpath(net)
        virtual = f"{os.sep}virtual{os.sep}" in real or not os.path.exists(os.path.join(net, "device"))
        lower = sorted(n[len("lower_"):] for n in os.listdir(net) if n.startswith("lower_"))
    driver = driver or sys_driver or ("loopback" if iface == "lo" else "")
    if virtual is None:
        virtual = driver in VIRTUAL_DRIVERS or (drvinfo is not None and not drvinfo[1]) or not driver
    return {"iface": iface, "driver": driver or "unknown", "virtual": bool(virtual), "lower": lower,
            "sysfs": visible}


def choose_hook(facts: dict, lower_facts: list[dict] | None = None) -> dict:
    """{"hook": "xdp"|"tc", "reason"} for an interface described by iface_facts(): native XDP
    only where the driver runs it before an skb exists (a physical NIC with driver XDP, or a
    bond over such NICs), TC ingress everywhere else."""
    drv, name = facts["driver"], facts["iface"]
    if drv == "bonding" and facts.get("lower"):
        lows = lower_facts or []
        if lows and len(lows) == len(facts["lower"]) and all(
                choose_hook(f)["hook"] == "xdp" for f in lows):
            return {"hook": "xdp", "reason": f"{name}: bond over native-XDP NICs "
                    f"({', '.join(f['iface'] + ' ' + f['driver'] for f in lows)}) -> xdp"}
        return {"hook": "tc", "reason": f"{name}: bond with a member without native XDP "
                f"({', '.join(facts['lower'])}) -> tc"}
    if facts["virtual"] or drv in VIRTUAL_DRIVERS:
        why = _VIRTUAL_WHY.get(drv, "a software device has no driver XDP before the skb")
        return {"hook": "tc", "reason": f"{name}: {drv}: virtual interface, {why} -> tc"}
    if drv in NATIVE_XDP_DRIVERS:
        return {"hook": "xdp", "reason": f"{name}: {drv}: NIC driver with native XDP, drops before "
                "an skb exists -> xdp"}
    return {"hook": "tc", "reason": f"{name}: {drv}: NIC driver without native XDP (generic XDP "
            "runs on the skb, as TC does) -> tc"}


def auto_hook(iface: str, sysfs_root: str = "/sys") -> dict:
    """choose_hook() for a live interface of this network namespace, with its facts."""
    try:
        idx = socket.if_nametoindex(iface)
    except OSError:
        idx = None
    facts = iface_facts(iface, sysfs_root, ifindex=idx, drvinfo=ethtool_drvinfo(iface))
    lows = [iface_facts(low, sysfs_root, drvinfo=ethtool_drvinfo(low)) for low in facts["lower"]]
    return {**choose_hook(facts, lows), "driver": facts["driver"], "virtual": facts["virtual"]}


def check_hook(iface: str, sysfs_root: str = "/sys") -> dict:
    """The hook `etsfctl attach --hook auto` (and datapath_hook: auto) picks, and why."""
    choice = auto_hook(iface, sysfs_root)
    return _check(f"hook:{iface}", True, f"auto hook {choice['hook']}: {choice['reason']}", iface=iface,
                  hook=choice["hook"], reason=choice["reason"])


def check_interface(iface: str) -> dict:
    link = _ip_link(iface)
    if link is None:
        return _check(f"interface:{iface}", False, f"interface {iface} does not exist", iface=iface)
    driver = link.get("linkinfo", {}).get("info_kind") or ""
    try:
        driver = os.path.basename(os.readlink(f"/sys/class/net/{iface}/device/driver"))
    except OSError:
        pass
    xdp_mode = "native" if driver in NATIVE_XDP_DRIVERS else "generic"
    foreign = []
    xdp = link.get("xdp") or {}
    for prog in ([xdp.get("prog")] if xdp.get("prog") else []) + list(xdp.get("attached", [])):
        prog_id = prog.get("id") if isinstance(prog, dict) else None
        if prog_id:
            name = prog.get("name") or _prog_name(prog_id)
            if name not in OUR_PROGRAMS:
                foreign.append({"hook": "xdp", "id": prog_id, "name": name})
    for prog in _tc_programs(iface):
        if prog["name"] not in OUR_PROGRAMS:
            foreign.append({"hook": f"tc/{prog['direction']}", "id": prog["id"], "name": prog["name"]})
    detail = f"{iface}: driver {driver or 'unknown'}, XDP {xdp_mode}"
    if foreign:
        detail += "; foreign programs attached: " + ", ".join(f"{f['hook']} {f['name']} (id {f['id']})" for f in foreign)
    return _check(f"interface:{iface}", not foreign, detail, iface=iface, driver=driver, xdp_mode=xdp_mode,
                  foreign_programs=foreign)


def check_memlock(release: str | None = None) -> dict:
    soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    # Since 5.11 BPF memory is charged to the memory cgroup, not RLIMIT_MEMLOCK.
    memcg = _parse_version(release or platform.release()) >= (5, 11)
    unlimited = soft == resource.RLIM_INFINITY
    ok = unlimited or soft >= MIN_MEMLOCK_BYTES or memcg
    shown = "unlimited" if unlimited else f"{soft} bytes"
    detail = f"RLIMIT_MEMLOCK {shown}" + (" (BPF memory is memcg-accounted on this kernel)" if memcg else "")
    return _check("memlock", ok, detail, severity="error" if not memcg else "warning", memlock=None if unlimited else soft)


def read_os_release(path: str = "/etc/os-release") -> dict[str, str]:
    """KEY=value pairs of os-release(5); {} when it cannot be read."""
    out = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                key, sep, value = line.strip().partition("=")
                if sep and key and not key.startswith("#"):
                    out[key] = value.strip().strip("\"'")
    except OSError:
        return {}
    return out


def check_distribution(supported: list[dict], os_release: dict[str, str]) -> dict:
    """Is the host one of `supported` ({distribution, version[, release]} entries, matched
    against os-release ID and the major part of VERSION_ID)?"""
    dist = os_release.get("ID", "")
    major = os_release.get("VERSION_ID", "").split(".")[0]
    shown = os_release.get("PRETTY_NAME") or f"{dist or 'unknown'} {major}".strip()
    names = ", ".join(f"{p['distribution']} {p['version']}"
                      + (f" ({p['release']})" if p.get("release") else "") for p in supported)
    ok = any(str(p["distribution"]).lower() == dist.lower() and str(p["version"]) == major
             for p in supported)
    detail = f"{shown} {'supported' if ok else 'is not supported'} (supported: {names})"
    return _check("distribution", ok, detail, distribution=dist, version=major)


def run(interfaces: list[str] | tuple[str, ...] = (), min_kernel: str = DEFAULT_MIN_KERNEL,
        bpffs_path: str = "/sys/fs/bpf", distributions: list[dict] | None = None,
        bpffs_mounted_first: bool = False) -> dict:
    """Run every check; return the report (never raises for an unmet requirement).
    With `distributions`, the host's distribution must be one of them."""
    options, source = read_kconfig()
    syscall = check_bpf_syscall()
    checks = [
        *([check_distribution(distributions, read_os_release())] if distributions else []),
        check_kernel(min_kernel),
        check_btf(),
        check_bpffs(bpffs_path, mounted_first=bpffs_mounted_first),
        check_jit(options),
        check_kconfig(options, source),
        syscall,
        check_features(probe_features()) if syscall["ok"] else
        _check("bpf_features", True, "not probed: bpf(2) refused", severity="warning", missing=[]),
        check_memlock(),
    ]
    for iface in interfaces:
        checks.append(check_interface(iface))
        if checks[-1].get("driver") is not None:
            checks.append(check_hook(iface))
    failed = [c for c in checks if not c["ok"] and c["severity"] == "error"]
    return {
        "ok": not failed,
        "kernel": platform.release(),
        "interfaces": {c["iface"]: {"xdp_mode": c.get("xdp_mode"), "driver": c.get("driver"),
                                    "foreign_programs": c.get("foreign_programs", []),
                                    **{k: h[k] for h in checks if h["name"] == f"hook:{c['iface']}"
                                       for k in ("hook", "reason")}}
                       for c in checks if c["name"].startswith("interface:")},
        "checks": checks,
        "failed": [c["name"] for c in failed],
        "message": summary(checks),
    }


def summary(checks: list[dict]) -> str:
    """ONE line listing every unmet requirement (or 'all requirements met')."""
    unmet = [c["detail"] for c in checks if not c["ok"] and c["severity"] == "error"]
    if not unmet:
        return "all requirements met"
    return f"{len(unmet)} unmet requirement(s): " + "; ".join(unmet)
