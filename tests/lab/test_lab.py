"""The eTSF lab for real: boot, reach with Ansible, BPF inside hosts, reboot, clean down.

Tests run in file order and share one lab (module fixture `lab_up`); the last two tests
take the lab down and bring it up again to prove teardown is complete and the rootfs cache
is reused.
"""
from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from pathlib import Path

import pytest

from labhelpers import REPO, ansible_bin, lab, lab_state, on_host

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]

HOSTS = ["sbc1", "sbc2", "sbc3"]
LAB_NET = ipaddress.ip_network("198.18.0.0/15")
PROXY_LOG = Path("/run/etsf-lab/apt-proxy.log")
XDP_SRC = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp")
int xdp_lab_pass(struct xdp_md *ctx) { return XDP_PASS; }
char LICENSE[] SEC("license") = "GPL";
"""


def test_up_boots_three_hosts(lab_up):
    assert "lab up: 3 host(s) ready" in lab_up
    for h in HOSTS:
        assert re.search(rf"{h}: ready \(ssh root@198\.18\.0\.\d+\)", lab_up), lab_up
    assert (REPO / "inventory/lab/hosts.yml").exists()


def test_status_json_reports_running_hosts_with_lab_addresses(lab_up):
    import json
    st = json.loads(lab("status", "--json", "--prefix", "").stdout)
    assert st["switch_netns"] == "etsf-lab"
    assert st["proxy"]["running"] is True
    names = [h["name"] for h in st["hosts"]]
    assert names == HOSTS
    for h in st["hosts"]:
        assert h["systemd"] in ("running", "degraded"), h
        assert h["supervisor_pid"] and h["nspawn_pid"] and h["pid1"], h
        for key in ("mgmt_address", "sip_address"):
            assert ipaddress.ip_address(h[key]) in LAB_NET, h


def test_no_lab_address_in_root_netns(lab_up):
    out = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True,
                         check=True).stdout
    assert "198.18." not in out
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                           check=True).stdout
    assert "br-mgmt" not in links and "br-sip" not in links


def test_every_lab_address_is_in_198_18_slash_15(lab_up):
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=True).stdout.split()
    lab_ns = [n for n in namespaces if n.startswith("etsf-")]
    assert {"etsf-lab", "etsf-uac", "etsf-uas", "etsf-atk"} <= set(lab_ns)
    for ns in lab_ns:
        out = subprocess.run(["ip", "-n", ns, "-o", "addr"], capture_output=True, text=True,
                             check=True).stdout
        for m in re.finditer(r"\binet6? (\S+)/\d+", out):
            addr = ipaddress.ip_address(m.group(1))
            assert addr.is_loopback or addr in LAB_NET, f"{ns}: {addr}"


def test_ansible_ping_all_hosts(lab_up):
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_NOCOLOR="1")
    cp = subprocess.run([ansible_bin("ansible"), "-i", "inventory/lab", "sbc", "-m", "ping"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    for h in HOSTS:
        assert re.search(rf"^{h} \| SUCCESS", cp.stdout, re.M), cp.stdout


def test_preflight_role_rejects_bad_bpffs_path_before_writing_anything(lab_up):
    """A bpffs mount point that does not exist on the host is refused with one line naming the
    variable, before the boot-time mount unit is written; a relative one is refused up front."""
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_NOCOLOR="1")
    unit = "/etc/systemd/system/etsf-bpffs.service"
    assert on_host("sbc3", f"test -e {unit}", check=False).returncode != 0
    for path, expect in (("/run/etsf-no-such-dir", "sbc3: preflight_bpffs_path: /run/etsf-no-such-dir is not "
                                                   "an existing directory on this host"),
                         ("sys/fs/bpf", "preflight_report_path and preflight_bpffs_path absolute")):
        cp = subprocess.run([ansible_bin("ansible-playbook"), "-i", "inventory/lab", "playbooks/preflight.yml",
                             "-l", "sbc3", "-e", f"preflight_bpffs_path={path}"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert cp.returncode == 2, cp.stdout[-3000:] + cp.stderr
        assert expect in cp.stdout, cp.stdout[-3000:]
        assert re.search(r"^sbc3\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=1", cp.stdout, re.M), cp.stdout
    assert on_host("sbc3", f"test -e {unit}", check=False).returncode != 0   # nothing written


def test_btf_visible_and_systemd_running_in_hosts(lab_up):
    for h in HOSTS:
        out = on_host(h, "hostname; systemctl is-system-running; "
                         "test -s /sys/kernel/btf/vmlinux && echo BTF-OK; "
                         "ip -o route show default | wc -l", check=False).stdout.split()
        assert out[0] == h
        assert out[1] in ("running", "degraded")
        assert out[2] == "BTF-OK"
        assert out[3] == "0", "lab hosts must have no default route"


def test_apt_proxy_allowlist(lab_up):
    probe = ("python3 - <<'EOF'\n"
             "import urllib.request, urllib.error\n"
             "op = urllib.request.build_opener(urllib.request.ProxyHandler("
             "{'http': 'http://198.18.0.1:3142'}))\n"
             "for url in ('http://example.org/', 'http://deb.debian.org/debian/dists/bookworm/Release'):\n"
             "    try:\n"
             "        r = op.open(urllib.request.Request(url, method='HEAD'), timeout=20)\n"
             "        print(url, r.status)\n"
             "    except urllib.error.HTTPError as e:\n"
             "        print(url, e.code)\n"
             "EOF")
    out = on_host("sbc1", probe).stdout
    assert "http://example.org/ 403" in out, out
    assert "http://deb.debian.org/debian/dists/bookworm/Release 200" in out, out


@pytest.fixture(scope="module")
def xdp_object(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("xdp")
    (d / "xdp_lab_pass.c").write_text(XDP_SRC)
    arch_inc = f"/usr/include/{os.uname().machine}-linux-gnu"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", f"-I{arch_inc}", "-c",
                    str(d / "xdp_lab_pass.c"), "-o", str(d / "xdp_lab_pass.o")], check=True)
    return d / "xdp_lab_pass.o"


def test_apt_install_via_proxy_shared_cache_and_xdp_attach(lab_up, xdp_object):
    log_offset = PROXY_LOG.stat().st_size if PROXY_LOG.exists() else 0
    obj = xdp_object.read_bytes()
    for h in HOSTS:  # one after the other: the 2nd and 3rd install come from the shared cache
        on_host(h, "export DEBIAN_FRONTEND=noninteractive; apt-get update -q >/dev/null && "
                   "apt-get install -y -q --no-install-recommends bpftool >/dev/null && "
                   "ls /var/cache/apt/archives/bpftool_*.deb")
        on_host(h, "cat > /tmp/xdp_lab_pass.o", input=obj)
        out = on_host(h, "set -e; mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; "
                         "rm -f /sys/fs/bpf/t; "
                         "bpftool prog load /tmp/xdp_lab_pass.o /sys/fs/bpf/t type xdp; "
                         "bpftool net attach xdp pinned /sys/fs/bpf/t dev sip0; "
                         "ip -d link show sip0").stdout
        assert re.search(r"\bxdp\b", out.splitlines()[0]), out
        assert "prog/xdp id" in out, out
    new_log = PROXY_LOG.read_text(errors="replace")[log_offset:]
    assert "GET http://deb.debian.org/" in new_log  # apt really went through the proxy
    # three installs, the bpftool .deb fetched from upstream at most once (shared archive cache
    # in the proxy); the other installs were served from the cache
    assert len(re.findall(r"cache miss, fetch http://deb\.debian\.org/\S*/bpftool_", new_log)) <= 1, new_log
    assert len(re.findall(r"cache hit http://deb\.debian\.org/\S*/bpftool_", new_log)) >= 2, new_log


def test_reboot_brings_host_back_with_new_boot_id(lab_up):
    before = on_host("sbc1", "cat /proc/sys/kernel/random/boot_id").stdout.strip()
    out = lab("reboot", "sbc1", timeout=240).stdout
    assert "sbc1: back after" in out, out
    res = on_host("sbc1", "cat /proc/sys/kernel/random/boot_id; systemctl is-system-running; "
                          "ip -d link show sip0 | head -1", check=False).stdout.splitlines()
    assert res[0] and res[0] != before
    assert res[1] in ("running", "degraded")
    # like a real reboot, the XDP attachment of the previous boot is gone
    assert not re.search(r"\bxdp\b", res[2]), res[2]
    # other hosts were not disturbed
    assert on_host("sbc2", "systemctl is-system-running", check=False).stdout.strip() in (
        "running", "degraded")


def test_ansible_reboot_module_works_on_lab_hosts(lab_up):
    """Roles use ansible.builtin.reboot (boot-time restore tests): it must see a new boot id."""
    before = on_host("sbc2", "cat /proc/sys/kernel/random/boot_id").stdout.strip()
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_NOCOLOR="1")
    cp = subprocess.run([ansible_bin("ansible"), "-i", "inventory/lab", "sbc2", "-m",
                         "ansible.builtin.reboot", "-a", "reboot_timeout=120"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "rebooted: true" in cp.stdout or '"rebooted": true' in cp.stdout, cp.stdout
    after = on_host("sbc2", "cat /proc/sys/kernel/random/boot_id").stdout.strip()
    assert after and after != before


# the lab's own netns names (other suites on this machine may use similar names)
LAB_NETNS_RE = re.compile(r"^etsf-([a-z0-9-]*sbc\d+|lab|uac|uas|atk)$")


def _leftovers() -> list[str]:
    left = []
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    left += [f"netns {n}" for n in ns.split() if LAB_NETNS_RE.match(n)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    for m in re.finditer(r"^\d+: ([^:@]+)", links, re.M):
        if re.match(r"(vm-\S*sbc\d+|vs-\S*sbc\d+|vp-(uac|uas|atk)|br-mgmt|br-sip|mgmt0|sip0)$",
                    m.group(1)):
            left.append(f"link {m.group(1)}")
    for line in Path("/proc/mounts").read_text().splitlines():
        src, target = line.split()[:2]
        if (target.startswith(("/var/lib/etsf-lab", "/var/cache/etsf-lab"))
                or src.startswith("etsf-lab-")
                or (target.startswith("/run/netns/") and LAB_NETNS_RE.match(target[11:]))):
            left.append(f"mount {target}")
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "systemd-nspawn" in cmd or "lab.supervisor" in cmd or "lab.proxy" in cmd:
            left.append(f"process {pid} {cmd}")
    return left


def test_down_leaves_nothing_behind(lab_up):
    out = lab("down", "--all", timeout=180).stdout
    assert "no hosts left" in out, out
    assert _leftovers() == []
    assert not (REPO / "inventory/lab/hosts.yml").exists()
    assert not any(Path("/var/lib/etsf-lab/hosts").glob("*"))


def test_second_up_reuses_cached_rootfs(lab_up):
    out = lab("up", "--hosts", "3").stdout
    assert "rootfs: reusing cached base" in out, out
    assert "running debootstrap" not in out, out
    assert lab_state()["last_up"]["rootfs"] == "reused"
    lab("down", "--all", timeout=180)
    assert _leftovers() == []
