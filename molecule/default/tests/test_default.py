"""Molecule `default` verify, on every host (one Debian 12, one Debian 13): the host runs its
platform's suite, eTSF is attached on the hook the inventory asks for (mol-sbc1 `datapath_hook: xdp`,
mol-sbc2 the default auto, which is tc on the lab's veth sip0), pinned, policy maps equal the
inventory, restore is enabled; after a real reboot (systemd boots again in the lab host) all of it
is back, on the same hook.  mol-sbc1 keeps its TC programs in clsact filters (`datapath_tc_api:
clsact`); mol-sbc2 has the default (auto), which runs them on tcx links on this kernel: the kernel
lists them at the tcx attach points, and `tc filter show` lists none."""
import hashlib
import json
import os
import pathlib
import re
import subprocess

import testinfra.utils.ansible_runner
import yaml
from etsf import policy
from etsf.bpflinks import tcx_supported

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("all")
REPO = pathlib.Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", pathlib.Path(__file__).parents[3]))
# each platform's Debian suite, as molecule.yml asks the lab to boot it
SCENARIO = yaml.safe_load((pathlib.Path(__file__).parents[1] / "molecule.yml").read_text(encoding="utf-8"))
PLATFORMS = SCENARIO["platforms"]
SUITES = {p["name"]: p.get("suite", "bookworm") for p in PLATFORMS}
HOST_VARS = SCENARIO["provisioner"]["inventory"].get("host_vars", {})
# what each host asks for (the role's default is auto) ...
REQUESTED = {n: HOST_VARS.get(n, {}).get("datapath_hook", "auto") for n in SUITES}
# ... and the hook it must get: auto picks tc on a veth, and every lab host's sip0 is one
HOOKS = {n: "tc" if want == "auto" else want for n, want in REQUESTED.items()}
# the programs that run on sip0 for each hook (TC egress marks on both)
PROGRAMS = {"xdp": ("xdp_sip", "tc_sip_egress"), "tc": ("tc_fastpath", "tc_sip_egress")}
# the hook each datapath hook's classification counts under in `etsfctl stats`
STATS_HOOK = {"xdp": "XDP", "tc": "TC_INGRESS"}
TC_HANDLE = "0xe75e"             # etsf.fastpath.slots.TC_HANDLE: the slot the datapath and fast path share
# how each host's TC programs are attached: what it asks for (the role's default is auto) and
# what it gets (auto: tcx links, where the kernel has them; every lab host runs this kernel)
TC_API_REQUESTED = {n: HOST_VARS.get(n, {}).get("datapath_tc_api", "auto") for n in SUITES}
TC_API = {n: "tcx" if a == "tcx" or (a == "auto" and tcx_supported()) else "clsact"
          for n, a in TC_API_REQUESTED.items()}
# the programs at sip0's TC hooks as the kernel lists them (tcx links by BPF_PROG_QUERY, clsact by tc)
TCVIEW = (REPO / "lab" / "tcview.py").read_text()


def _json(host, cmd):
    out = host.run(cmd)
    assert out.rc == 0, f"{cmd}: {out.stderr}"
    return json.loads(out.stdout)


def _hook(host):
    return HOOKS[host.backend.get_hostname()]


def _tc_ingress_bpf(host):
    """The bpf filters on sip0's TC ingress, as tc lists them (options.prog names the program)."""
    return [f["options"] for f in _json(host, "tc -j filter show dev sip0 ingress")
            if f.get("kind") == "bpf" and "options" in f]


def _check_attached(host):
    hook = _hook(host)
    st = _json(host, "etsfctl status --json")
    row = st["interfaces"]["sip0"]
    assert row["attached"] and row["hook"] == hook == row["hook_recorded"], row
    assert row["hook_requested"] == REQUESTED[host.backend.get_hostname()], row
    assert row["tc_prog_name"] == "tc_sip_egress"
    api = TC_API[host.backend.get_hostname()]
    assert row["tc_api"] == api and row["tc_api_requested"] == TC_API_REQUESTED[host.backend.get_hostname()], row
    # attached as the kernel sees it, by name (not just our state file)
    link = _json(host, "ip -j -d link show dev sip0")[0]
    ingress = _tc_ingress_bpf(host)
    out = host.run("python3 -c %s sip0", TCVIEW)
    assert out.rc == 0, out.stderr
    tcx = {d: [p["id"] for p in progs] for d, progs in json.loads(out.stdout)["tcx"].items()}
    if api == "tcx":
        assert ingress == [] and tcx["egress"] == [row["tc_prog_id"]], (ingress, tcx, row)
        assert tcx["ingress"] == ([row["tc_ingress_prog_id"]] if hook == "tc" else []), (tcx, row)
    else:
        assert tcx == {"ingress": [], "egress": []}, tcx
    if hook == "xdp":
        assert row["xdp_prog_name"] == "xdp_sip" and row["xdp_mode"] == "native", row
        assert row["if_flags"] == ["xdp"] and row["tc_ingress_prog_id"] is None, row
        prog_id = link["xdp"]["prog"]["id"]
        assert _json(host, f"bpftool -j prog show id {prog_id}")["name"] == "xdp_sip"
        assert ingress == [], ingress                   # no TC ingress classifier besides XDP
    else:
        assert "veth" in row["hook_reason"] and row["hook_reason"].endswith("-> tc"), row
        assert row["tc_ingress_prog_name"] == "tc_fastpath" and row["if_flags"] == ["classify"], row
        assert row["xdp_prog_id"] is None and "xdp" not in link, link   # no XDP program at all
        if api == "clsact":
            assert [(f["handle"], f["prog"]["name"], f["prog"]["id"]) for f in ingress] == \
                [(TC_HANDLE, "tc_fastpath", row["tc_ingress_prog_id"])], ingress
        assert _json(host, f"bpftool -j prog show id {row['tc_ingress_prog_id']}")["name"] == "tc_fastpath"
    return st


def _check_pins(host):
    for name in ("etsf_ctl", "etsf_policy", "etsf_acl_v4", "etsf_acl_v6", "etsf_rl", "etsf_stats",
                 "etsf_if_cfg"):
        assert host.file(f"/sys/fs/bpf/etsf/maps/{name}").exists, name
    want = PROGRAMS[_hook(host)]
    for name in want:
        assert host.file(f"/sys/fs/bpf/etsf/progs/{name}").exists, name
    # the other hook's classifier is not pinned either: it never ran on this host
    for name in {p for progs in PROGRAMS.values() for p in progs} - set(want):
        assert not host.file(f"/sys/fs/bpf/etsf/progs/{name}").exists, name
    # tcx links live as long as their pins (one per direction eTSF attaches there)
    links = host.file("/sys/fs/bpf/etsf/links")
    names = sorted(links.listdir()) if links.exists else []
    want_links = ["egress"] + (["ingress"] if _hook(host) == "tc" else [])
    assert [n.split("-")[1] for n in names] == (want_links if TC_API[host.backend.get_hostname()] == "tcx" else []), names


def _check_policy(host):
    want = policy.validate(host.ansible.get_variables()["etsf_policy_defaults"]).to_dict()
    live = _json(host, "etsfctl policy show --json")
    live.pop("active_slot", None)
    assert live.pop("generation") >= 1
    # the running overload level is kept when the policy does not set one
    want["overload"]["level"] = live["overload"]["level"]
    assert live == want


def test_scenario_covers_both_suites_and_host_runs_its_own(host):
    assert set(SUITES.values()) == {"bookworm", "trixie"}, SUITES
    assert sorted(testinfra_hosts) == sorted(SUITES)              # the verify runs on every platform
    release = dict(line.split("=", 1) for line in host.file("/etc/os-release").content_string.splitlines()
                   if "=" in line)
    assert release["VERSION_CODENAME"] == SUITES[host.backend.get_hostname()], release


def test_programs_attached_by_name(host):
    _check_attached(host)
    # what came in on sip0 since the rollout (the health gate's probe exchange at least) was
    # classified at this host's hook, and only there
    counted = {r["hook"] for r in _json(host, "etsfctl stats --json")["counters"] if r["hook"] != "TC_EGRESS"}
    assert counted == {STATS_HOOK[_hook(host)]}, counted


def test_pins_under_sys_fs_bpf_etsf(host):
    _check_pins(host)


def test_sources_on_the_host_are_the_checkouts(host):
    """datapath_build host: the eBPF sources arrive as one archive, unpacked unchanged, and the
    unpacked tree matches the archive (what the next rollout compares before unpacking again)."""
    want = {str(p.relative_to(REPO / "bpf")): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (REPO / "bpf").rglob("*") if p.is_file()}
    out = host.check_output("cd /usr/share/etsf/bpf && find . -type f -exec sha256sum -- {} +")
    got = {name.strip().lstrip("*").removeprefix("./"): digest
           for digest, name in (line.split(None, 1) for line in out.splitlines())}
    assert got == want, sorted(set(got.items()) ^ set(want.items()))
    cmp = host.run("tar --compare -f /var/lib/etsf/dist/etsf-bpf-src.tar -C /usr/share/etsf/bpf")
    assert cmp.rc == 0, cmp.stdout + cmp.stderr


def test_policy_maps_equal_inventory(host):
    _check_policy(host)


def test_restore_unit_enabled_and_preflight_report(host):
    assert host.service("etsf-restore.service").is_enabled
    report = json.loads(host.file("/var/lib/etsf/preflight.json").content_string)
    sip0 = report["interfaces"]["sip0"]
    # preflight reports what auto would pick (tc on the veth), whatever the inventory pins
    assert report["ok"] and sip0["xdp_mode"] == "native" and sip0["driver"] == "veth", sip0
    assert sip0["hook"] == "tc" and "veth" in sip0["reason"], sip0
    # restore re-attaches the hook the inventory asked for (datapath.yml, written by the role)
    dp = yaml.safe_load(host.file("/etc/etsf/datapath.yml").content_string)
    assert dp["hook"] == REQUESTED[host.backend.get_hostname()], dp
    assert dp["tc_api"] == TC_API_REQUESTED[host.backend.get_hostname()], dp


def test_everything_back_after_reboot(host):
    name = host.backend.get_hostname()
    before = host.file("/proc/sys/kernel/random/boot_id").content_string.strip()
    subprocess.run([str(REPO / ".venv/bin/python"), "-m", "lab", "reboot", name], cwd=REPO, check=True,
                   timeout=240)
    after = host.file("/proc/sys/kernel/random/boot_id").content_string.strip()
    assert after != before, "the host did not boot again"
    assert host.service("etsf-restore.service").is_running or \
        host.run("systemctl show -p ActiveState --value etsf-restore.service").stdout.strip() == "active"
    _check_attached(host)
    _check_pins(host)
    _check_policy(host)


SCRAPE = ("python3 -c \"import urllib.request,sys; "
          "r=urllib.request.urlopen('http://127.0.0.1:9761/metrics', timeout=10); "
          "sys.stdout.write(r.read().decode())\"")


def _samples(body, name):
    """(labels, value) of every sample of metric `name` in a Prometheus text body."""
    out = []
    for line in body.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1:].rsplit("} ", 1)
            out.append((dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(value)))
    return out


def test_exporter_unprivileged_and_scrapes(host):
    svc = host.service("etsf-exporter.service")
    assert svc.is_running and svc.is_enabled
    pid = host.check_output("systemctl show -p MainPID --value etsf-exporter.service").strip()
    status = host.file(f"/proc/{pid}/status").content_string
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    uid = int(fields["Uid"].split()[0])
    assert uid != 0 and host.user("etsf").uid == uid           # the unprivileged etsf user
    cap_eff = int(fields["CapEff"].strip(), 16)
    assert cap_eff & ~(1 << 39) == 0, hex(cap_eff)             # at most CAP_BPF (39), never CAP_SYS_ADMIN
    assert cap_eff & (1 << 21) == 0
    body = host.check_output(SCRAPE)
    assert 'etsf_up 1.0' in body
    # program_info names exactly the programs this host runs (the pinned ones)
    info = {labels["program"] for labels, _value in _samples(body, "etsf_bpf_program_info")}
    assert info == set(PROGRAMS[_hook(host)]), info
    hooks = [(labels, value) for labels, value in _samples(body, "etsf_interface_hook") if labels["iface"] == "sip0"]
    assert [(labels["hook"], labels["steer"], value) for labels, value in hooks] == [(_hook(host), "0", 1.0)], hooks
    assert "etsf_policy_generation" in body
    assert "etsf_sip_packets_total" in body


def test_failsafe_watchdog_engaged(host):
    svc = host.service("etsf-failsafe.service")
    assert svc.is_running and svc.is_enabled
    st = json.loads(host.check_output("etsfctl failsafe status --json"))["state"]
    assert st["state"] == "engaged" and st["trips_total"] == 0, st
    # the watchdog is the agent that heartbeats: the heartbeat is fresh
    status = json.loads(host.check_output("etsfctl status --json"))
    assert status["heartbeat_age_ms"] is not None and status["heartbeat_age_ms"] < 5000
    assert host.file("/var/lib/etsf/failsafe-audit.jsonl").contains('"event": "start"')


def test_exporter_heartbeat_watched_by_failsafe(host):
    """The exporter rewrites its heartbeat file; the watchdog's heartbeat rule lists it."""
    hb = host.file("/run/etsf-exporter/heartbeat")
    assert hb.exists and hb.user == "etsf"
    age = float(host.check_output("echo $(( $(date +%s) - $(stat -c %Y /run/etsf-exporter/heartbeat) ))"))
    assert age <= 15, age                                       # rewritten every 5 s
    cfg = host.file("/etc/etsf/failsafe.yml").content_string
    assert "/run/etsf-exporter/heartbeat" in cfg, cfg
    st = json.loads(host.check_output("etsfctl failsafe status --json"))["state"]
    assert st["state"] == "engaged", st
