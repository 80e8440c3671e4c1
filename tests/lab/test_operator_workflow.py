"""The operator workflow on ONE fleet of two freshly booted lab hosts (prefix
$ETSF_LAB_OPS_PREFIX, default `ops-`; only that prefix's hosts are brought up and taken down).

One boot and one rollout, in test order:

1. site.yml from a read-only installed collection, run from another directory, in one batch, with
   the objects compiled once on the controller (datapath_build: controller) and the exporter on the
   management address: the rollout succeeds, no host gets a compiler and each loads the pushed
   objects, nothing is written into the collection and no scratch directory is left on the
   controller.
2. A real Prometheus (Debian 2.x, lab switch netns) scrapes that fleet with the file_sd targets,
   scrape job and alert rules playbooks/prometheus.yml generates from the same inventory:
   up{job="etsf"} == 1 with the inventory's labels, eTSF series for every host (among them every
   series the rules need that a healthy fleet always exports), the three rule groups loaded and
   healthy, and the bypass on one host makes EtsfRevertHeld (an operator's bypass) and, without
   the hold, EtsfBypassEngaged go pending for that host only.
3. playbooks/policy.yml canary batches with the health gate while the lab's UAC peer
   (198.18.1.201, netns etsf-uac) sends SIP OPTIONS to both hosts (bounded: at most 10/s each for
   at most 300 s).  The "bad" policy denies that peer and this fleet's gate accepts only
   RATE_LIMIT/OVERLOAD drops, so the DENY drops of live SIP fail it -- the real gate on real
   traffic.  A failed host is rolled back (maps, boot-time file, history, audit) and the rollout
   stops at that batch.  This runs last: it changes the hosts' policies.

Wall times are printed as ``OPS_FLEET {json}`` (pytest -s).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from labhelpers import (PY, REPO, ansible_bin, etsfctl_json, lab, on_host, on_host_retry, playbook_env,
                        playbook_failures, preconditions, recap, run_ok, tree)

from etsf import __version__, build

sys.path.insert(0, str(REPO))

from lab.prometheus import Prometheus, generate  # noqa: E402

pytestmark = [pytest.mark.lab, pytest.mark.timeout(3600)]

PREFIX = os.environ.get("ETSF_LAB_OPS_PREFIX", "ops-")
H1, H2 = HOSTS = [f"{PREFIX}sbc1", f"{PREFIX}sbc2"]
WALL: dict[str, float] = {}

# the lab inventory leaves the exporter on loopback (the role default): put it on the
# management address, which the switch netns reaches
LISTEN = ("-e", '{"telemetry_listen_address": "{{ etsf_mgmt_address }}"}')
# series the rules read that every healthy host exports (etsf_sip_responses_total appears with
# the first INVITE/REGISTER response; tests/unit/test_alert_rules.py checks it by name)
ALWAYS = {"etsf_up", "etsf_failsafe_bypass", "etsf_failsafe_deadman_tripped", "etsf_overload_level",
          "etsf_sip_packets_total"}

PEER = "198.18.1.201"
PEER_NETNS = "etsf-uac"
SENDER = r"""
import socket, sys, time
targets = sys.argv[1:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.18.1.201", 0))
for i in range(3000):
    for t in targets:
        msg = ("OPTIONS sip:%s:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.201:5070;branch=z9hG4bK-pc%d\r\n"
               "Max-Forwards: 70\r\nFrom: <sip:canary@198.18.1.201>;tag=%d\r\nTo: <sip:%s>\r\n"
               "Call-ID: canary-%d@198.18.1.201\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n") % (t, i, i, t, i)
        s.sendto(msg.encode(), (t, 5060))
    time.sleep(0.1)
"""

FLEET = {
    "etsf_health_window": 2.0,
    "etsf_policy_health_drop_reasons": ["RATE_LIMIT", "OVERLOAD"],
    "etsf_failsafe_enabled": False,
    "etsf_policy_defaults": {
        "version": 1, "sip_ports": [5060], "deny": ["198.18.1.250/32"],
        "rate_limits": {"register": {"rate": 20, "burst": 40}, "options": {"rate": 50, "burst": 100},
                        "invite": {"rate": 50, "burst": 100}, "other": {"rate": 200, "burst": 400}},
        "aggregation": {"ipv4_prefix": 32, "ipv6_prefix": 64},
        "marking": {"enabled": True, "dscp": "CS3", "skb_priority": 6},
    },
}
BAD_HOST_LAYER = {"etsf_policy": {"deny": [f"{PEER}/32"]}}


def _set_layers(inv: Path, bad: str | None, register_rate: int):
    for h in HOSTS:
        f = inv / "host_vars" / f"{h}.yml"
        if h == bad:
            f.write_text(yaml.safe_dump(BAD_HOST_LAYER))
        elif f.exists():
            f.unlink()
    (inv / "group_vars" / "sbc.yml").write_text(yaml.safe_dump(
        {"etsf_policy_group": {"rate_limits": {"register": {"rate": register_rate}}}}))


class Fleet:  # pylint: disable=too-few-public-methods
    """The booted fleet: its inventory directory and the one site.yml run."""

    def __init__(self, inv: Path, site: subprocess.CompletedProcess, coll: Path, before: dict, ctmp: Path):
        self.inv, self.site, self.coll, self.before, self.ctmp = inv, site, coll, before, ctmp
        self.prometheus: Prometheus | None = None


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Two fresh hosts under our own prefix, rolled out once by site.yml from a read-only
    installed collection (datapath_build: controller)."""
    preconditions()
    tmp = tmp_path_factory.mktemp("ops")
    lab("down", "--prefix", PREFIX, timeout=300, check=False)
    coll = tmp / "collections"
    fl = None
    try:
        t0 = time.monotonic()
        lab("up", "--prefix", PREFIX, "--hosts", str(len(HOSTS)), timeout=900)
        WALL["boot_s"] = time.monotonic() - t0
        inv = tmp / "inventory"
        inv.mkdir()
        lab("inventory", "--prefix", PREFIX, "--output", str(inv / "hosts.yml"))
        (inv / "group_vars").mkdir()
        (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump(FLEET))
        (inv / "host_vars").mkdir()
        _set_layers(inv, None, 20)

        out = tmp / "dist"
        run_ok(["make", "-s", "collection", f"COLLECTION_OUT={out}"], cwd=REPO)
        tarball = out / f"etsf-sip-{__version__}.tar.gz"
        elsewhere, ctmp = tmp / "elsewhere", tmp / "controller-tmp"
        elsewhere.mkdir()
        ctmp.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHON"))}
        env.update(ANSIBLE_COLLECTIONS_PATH=str(coll), ANSIBLE_HOST_KEY_CHECKING="False", TMPDIR=str(ctmp),
                   ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-local"), HOME=str(tmp / "home"), ANSIBLE_NOCOLOR="1",
                   PATH=f"{Path(ansible_bin('ansible-playbook')).parent}:{env.get('PATH', '/usr/bin:/bin')}")
        run_ok([ansible_bin("ansible-galaxy"), "collection", "install", "--offline", tarball, "-p", coll],
               cwd=elsewhere, env=env)
        run_ok(["chmod", "-R", "a-w", coll])
        before = tree(coll)
        t0 = time.monotonic()
        site = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"', "sh",
             str(coll), ansible_bin("ansible-playbook"), "-i", str(inv), "etsf.sip.site", *LISTEN,
             # one batch: the canary batches are the Molecule fleet scenario's to test
             "-e", '{"etsf_rollout_batches": ["100%"]}',
             "-e", "datapath_build=controller", "-e", f"datapath_build_arch={os.uname().machine}"],
            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=1800, check=False)
        WALL["site_s"] = time.monotonic() - t0
        assert site.returncode == 0, playbook_failures(site.stdout) or site.stdout[-4000:] + site.stderr[-2000:]
        fl = Fleet(inv, site, coll, before, ctmp)
        yield fl
    finally:
        if fl and fl.prometheus:
            fl.prometheus.stop()
        subprocess.run(["chmod", "-R", "u+w", str(coll)], check=False)
        lab("down", "--prefix", PREFIX, timeout=300, check=False)
        print("OPS_FLEET", json.dumps({k: round(v, 1) for k, v in WALL.items()}))


# -- 1. the rollout from the read-only installed collection --------------------------------------

def test_site_from_read_only_installed_collection_controller_build(fleet):
    out = fleet.site.stdout
    for host in HOSTS:
        m = re.search(rf"^{re.escape(host)}\s*:\s*(.*)$", out, re.M)
        assert m and "failed=0" in m.group(1) and "unreachable=0" in m.group(1), out[-3000:]

        # no compiler on the host, no sources: it loaded what the controller built
        pkgs = on_host(host, "dpkg-query -W -f='${Package} ${db:Status-Status}\\n' clang llvm libbpf-dev; true").stdout
        assert " installed" not in pkgs, pkgs
        assert on_host(host, "command -v clang", check=False).returncode != 0
        assert on_host(host, "test -e /usr/share/etsf/bpf", check=False).returncode != 0
        manifest = json.loads(on_host_retry(host, "cat /var/lib/etsf/build/build.json"))
        assert manifest["layout"] == build.layout_hash() and manifest["arch"] == os.uname().machine
        assert yaml.safe_load(on_host_retry(host, "cat /etc/etsf/datapath.yml"))["prebuilt"] is True
        status = json.loads(on_host_retry(host, "etsfctl status --json"))
        assert status["interfaces"]["sip0"]["attached"]
        assert on_host_retry(host, "etsfctl --version").strip() == f"etsfctl {__version__}"

    # the installed collection is untouched and the controller's scratch directories are gone
    assert tree(fleet.coll) == fleet.before
    assert not list(fleet.ctmp.iterdir())


# -- 2. a real Prometheus scraping the fleet -------------------------------------------------------

@pytest.fixture(scope="module")
def prometheus(fleet, tmp_path_factory):
    """Prometheus with the configuration generated from the fleet's inventory; the fleet
    fixture stops it."""
    if fleet.prometheus is None:
        work = tmp_path_factory.mktemp("prometheus")
        cp = generate(fleet.inv, work, *LISTEN)
        assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-2000:]
        prom = Prometheus(work)
        prom.start()
        fleet.prometheus = prom
    return fleet.prometheus


def _all_hosts(res):
    return res if len(res) == len(HOSTS) else None


def _up(prom):
    res = prom.query('up{job="etsf"}')
    return res if len(res) == len(HOSTS) and all(r["value"][1] == "1" for r in res) else None


def test_every_host_is_scraped_with_its_labels(fleet, prometheus):
    res = prometheus.wait(lambda: _up(prometheus))
    assert res, f"up{{job=\"etsf\"}}: {prometheus.query('up')}"
    got = {r["metric"]["host"]: r["metric"] for r in res}
    assert sorted(got) == HOSTS
    addresses = dict(re.findall(r"^\s+(\S+):\n\s+ansible_host: (\S+)", (fleet.inv / "hosts.yml").read_text(), re.M))
    for host, labels in got.items():
        assert labels["instance"] == f"{addresses[host]}:9761" and labels["group"] == "sbc", labels
    print("PROMETHEUS up", json.dumps([[r["metric"]["host"], r["metric"]["instance"], r["value"][1]]
                                       for r in res]))
    targets = prometheus.api("targets")["data"]["activeTargets"]
    assert sorted(t["labels"]["host"] for t in targets if t["health"] == "up") == HOSTS


def test_etsf_series_are_stored_for_every_host(prometheus):
    assert prometheus.wait(lambda: _up(prometheus))
    res = prometheus.wait(lambda: _all_hosts(prometheus.query('etsf_up{job="etsf"} == 1')))
    assert sorted(r["metric"]["host"] for r in res) == HOSTS
    packets = prometheus.query('count by (host) (etsf_sip_packets_total{job="etsf"})')
    assert sorted(r["metric"]["host"] for r in packets) == HOSTS
    names = set(prometheus.api("label/__name__/values")["data"])
    assert ALWAYS <= names, ALWAYS - names
    print("PROMETHEUS etsf_up", json.dumps([[r["metric"]["host"], r["value"][1]] for r in res]))


def _rules(prom):
    """The rule groups once every rule has been evaluated without error ("unknown" before)."""
    groups = prom.api("rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    return groups if rules and all(r["health"] == "ok" for r in rules) else None


def _alerts(prom, name):
    return [a for a in prom.api("alerts")["data"]["alerts"] if a["labels"]["alertname"] == name]


def test_alert_rules_are_loaded_and_healthy(prometheus):
    groups = prometheus.wait(lambda: _rules(prometheus))
    assert groups, prometheus.api("rules")
    assert sorted(g["name"] for g in groups) == ["etsf-availability", "etsf-failsafe", "etsf-sip"]
    rules = [r for g in groups for r in g["rules"]]
    shipped = yaml.safe_load((Path(REPO) / "roles/monitoring/files/prometheus/etsf-alerts.yml").read_text())
    assert sorted(r["name"] for r in rules) == sorted(r["alert"] for g in shipped["groups"] for r in g["rules"])
    assert len(rules) >= 8 and {r["type"] for r in rules} == {"alerting"}
    print("PROMETHEUS rules", json.dumps({r["name"]: r["health"] for r in rules}))


def _by_host(prom, name):
    return {a["labels"]["host"]: a for a in _alerts(prom, name)}


def _only(prom, host, present, absent):
    """Alert *present* for host (by host) while *absent* is not raised for it; else None."""
    got, other = _by_host(prom, present), _by_host(prom, absent)
    return got if host in got and host not in other else None


def test_bypass_on_one_host_raises_its_alert(prometheus):
    """An operator's bypass is held (it outlives reboots): a warning that names the mode, not the
    page the fail-safe's bypass raises.  With the hold gone and the flag still set, as when the
    watchdog or a tool writing the maps set it, the page comes instead; both clear with bypass off."""
    assert prometheus.wait(lambda: _up(prometheus))
    host = HOSTS[0]
    on_host(host, "/usr/local/bin/etsfctl bypass on")
    try:
        held = prometheus.wait(lambda: _only(prometheus, host, "EtsfRevertHeld", "EtsfBypassEngaged"))
        assert held, (_alerts(prometheus, "EtsfRevertHeld"), _alerts(prometheus, "EtsfBypassEngaged"))
        assert list(held) == [host], held
        assert held[host]["labels"]["mode"] == "bypass" and held[host]["labels"]["severity"] == "warning"
        print("PROMETHEUS alert", json.dumps({k: held[host][k] for k in ("labels", "state")}))
        on_host(host, "rm /var/lib/etsf/revert.json")
        paged = prometheus.wait(lambda: _only(prometheus, host, "EtsfBypassEngaged", "EtsfRevertHeld"))
    finally:
        on_host(host, "/usr/local/bin/etsfctl bypass off")
    assert paged and list(paged) == [host], _alerts(prometheus, "EtsfBypassEngaged")
    assert paged[host]["state"] in ("pending", "firing") and paged[host]["labels"]["severity"] == "critical"
    print("PROMETHEUS alert", json.dumps({k: paged[host][k] for k in ("labels", "state")}))
    # and it clears with the bypass
    assert prometheus.wait(lambda: not _alerts(prometheus, "EtsfBypassEngaged")
                           and not _alerts(prometheus, "EtsfRevertHeld"))


# -- 3. canary policy rollouts (last: they change the hosts' policies) -----------------------------

def _playbook(inv: Path, playbook: str, *args: str, timeout: float = 1500):
    t0 = time.monotonic()
    cp = subprocess.run([ansible_bin("ansible-playbook"), "-i", str(inv), playbook, *args], cwd=REPO,
                        env=playbook_env(), capture_output=True, text=True, timeout=timeout, check=False)
    return cp, time.monotonic() - t0


def _live(host: str):
    doc = etsfctl_json(host, "policy show")
    return {k: v for k, v in doc.items() if k not in ("generation", "active_slot")}, doc["generation"]


def _policy_run(inv: Path):
    """playbooks/policy.yml in two batches while the peer sends SIP to both hosts."""
    hosts = yaml.safe_load((inv / "hosts.yml").read_text())["all"]["children"]["sbc"]["hosts"]
    addrs = [hosts[h]["etsf_sip_address"] for h in HOSTS]
    sender = subprocess.Popen(["nsenter", f"--net=/run/netns/{PEER_NETNS}", PY, "-c", SENDER, *addrs],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return _playbook(inv, "playbooks/policy.yml", "-e", '{"etsf_policy_batches": [1, "100%"]}', timeout=600)
    finally:
        sender.kill()
        sender.wait(timeout=30)


def test_failed_canary_batch_rolls_back_and_stops(fleet):
    inv = fleet.inv
    # site.yml rolled out the group layer (register rate 20) and no host layer; the bypass test
    # left the bypass off
    base = {h: _live(h) for h in HOSTS}
    for h in HOSTS:
        assert base[h][0]["rate_limits"]["register"] == {"rate": 20, "burst": 40}
        assert base[h][0]["deny"] == ["198.18.1.250/32"]

    # run 1: the second batch's host gets a policy that denies the probed peer
    _set_layers(inv, H2, 10)
    cp, WALL["policy_run1_s"] = _policy_run(inv)
    out = cp.stdout
    assert cp.returncode != 0, out[-3000:]
    rec = recap(out)
    print("POLICY_CANARY run 1:\n" + playbook_failures(out) + "\n" + out[max(out.find("PLAY RECAP"), 0):])
    assert rec[H1]["failed"] == 0 and rec[H2]["failed"] == 1, rec
    assert f"{H2}: policy rollout failed (rolled back to generation {base[H2][1]}" in out, out[-3000:]
    assert "unexpected reason DENY" in out, playbook_failures(out)
    # the canary host passed its gate and keeps the new policy
    live1, gen1 = _live(H1)
    assert live1["rate_limits"]["register"] == {"rate": 10, "burst": 40} and gen1 == base[H1][1] + 1
    # the failed host runs the policy it had before, in a new generation; the boot-time file too
    live2, gen2 = _live(H2)
    assert live2 == base[H2][0] and gen2 == base[H2][1] + 2
    hist2 = etsfctl_json(H2, "policy history")
    assert [(h["generation"], h["action"]) for h in hist2[-2:]] == [(gen2 - 1, "apply"), (gen2, "rollback")]
    assert hist2[-1]["rollback_to"] == base[H2][1] and hist2[-1]["live"] is True
    assert hist2[-1]["sha256"] == next(h for h in hist2 if h["generation"] == base[H2][1])["sha256"]
    boot = yaml.safe_load(on_host_retry(H2, "cat /etc/etsf/policy.yml"))
    assert boot["deny"] == ["198.18.1.250/32"] and boot["rate_limits"]["register"]["rate"] == 20
    audit = [json.loads(x) for x in on_host_retry(H2, "cat /var/lib/etsf/policy-audit.jsonl").splitlines()]
    assert audit[-1]["event"] == "rollback" and audit[-1]["generation"] == gen2

    # run 2: the FIRST batch fails -> rolled back, and the second batch is never touched
    _set_layers(inv, H1, 7)
    hist_h2 = etsfctl_json(H2, "policy history")
    cp, WALL["policy_run2_s"] = _policy_run(inv)
    assert cp.returncode != 0
    print("POLICY_CANARY run 2:\n" + cp.stdout[max(cp.stdout.find("PLAY RECAP"), 0):])
    assert recap(cp.stdout)[H1]["failed"] == 1
    live1b, gen1b = _live(H1)
    assert live1b == live1 and gen1b == gen1 + 2
    assert etsfctl_json(H1, "policy history")[-1]["rollback_to"] == gen1
    assert _live(H2) == (live2, gen2) and etsfctl_json(H2, "policy history") == hist_h2
