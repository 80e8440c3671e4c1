"""The hook choice: auto decides by driver from sysfs and the ethtool driver name (fed here as
a sysfs tree and a (driver, bus_info) pair), bad hooks are refused in one line, the role's
datapath_hook is one schema (spec, defaults, README, module)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

import etsf.preflight as pf
from etsf.datapath import DatapathError, hooks

ROOT = pathlib.Path(__file__).resolve().parents[2]


class Sysfs:
    """A /sys tree with class/net links the way the kernel lays them out."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        (root / "class" / "net").mkdir(parents=True)

    def _link(self, name: str, devdir: pathlib.Path, ifindex: int) -> None:
        devdir.mkdir(parents=True)
        (devdir / "ifindex").write_text(f"{ifindex}\n")
        os.symlink(os.path.relpath(devdir, self.root / "class" / "net"), self.root / "class" / "net" / name)

    def virtual(self, name: str, ifindex: int, lower=()) -> None:
        d = self.root / "devices" / "virtual" / "net" / name
        self._link(name, d, ifindex)
        for low in lower:
            os.symlink(os.path.relpath(self.root / "class" / "net" / low, d), d / f"lower_{low}")

    def nic(self, name: str, ifindex: int, driver: str, pci: str) -> None:
        dev = self.root / "devices" / "pci0000:00" / pci
        drv = self.root / "bus" / "pci" / "drivers" / driver
        drv.mkdir(parents=True, exist_ok=True)
        self._link(name, dev / "net" / name, ifindex)
        dev.joinpath("driver").symlink_to(os.path.relpath(drv, dev))
        (dev / "net" / name / "device").symlink_to(os.path.relpath(dev, dev / "net" / name))


@pytest.fixture
def sysfs(tmp_path):
    return Sysfs(tmp_path / "sys")


def _choose(sysfs, name, ifindex=None, drvinfo=None):
    facts = pf.iface_facts(name, str(sysfs.root), ifindex=ifindex, drvinfo=drvinfo)
    lows = [pf.iface_facts(low, str(sysfs.root)) for low in facts["lower"]]
    return facts, pf.choose_hook(facts, lows)


def test_veth_gets_tc_and_says_why(sysfs):
    sysfs.virtual("veth0", 5)
    facts, choice = _choose(sysfs, "veth0", 5, ("veth", ""))
    assert facts["virtual"] and facts["driver"] == "veth"
    assert choice["hook"] == "tc"
    assert choice["reason"] == ("veth0: veth: virtual interface, native XDP on a veth copies every skb "
                                "that lacks XDP headroom -> tc")


@pytest.mark.parametrize("driver", ["bridge", "dummy", "tun", "vxlan", "macvlan", "ipvlan", "team", "ifb"])
def test_other_virtual_interfaces_get_tc(sysfs, driver):
    sysfs.virtual("v0", 9)
    _facts, choice = _choose(sysfs, "v0", 9, (driver, ""))
    assert choice["hook"] == "tc" and f"v0: {driver}: virtual interface" in choice["reason"]


def test_virtual_without_ethtool_answer_is_known_by_its_sysfs_path(sysfs):
    sysfs.virtual("br-x", 3)
    facts, choice = _choose(sysfs, "br-x", 3, None)
    assert facts["virtual"] and choice["hook"] == "tc"


def test_nic_with_native_xdp_gets_xdp(sysfs):
    sysfs.nic("eth0", 2, "ixgbe", "0000:00:03.0")
    facts, choice = _choose(sysfs, "eth0", 2, None)      # driver from device/driver alone
    assert facts == {"iface": "eth0", "driver": "ixgbe", "virtual": False, "lower": [], "sysfs": True}
    assert choice["hook"] == "xdp" and choice["reason"].startswith("eth0: ixgbe: NIC driver with native XDP")


def test_nic_without_native_xdp_gets_tc(sysfs):
    sysfs.nic("enp1s0", 2, "r8169", "0000:01:00.0")
    _facts, choice = _choose(sysfs, "enp1s0", 2, ("r8169", "0000:01:00.0"))
    assert choice["hook"] == "tc" and "without native XDP" in choice["reason"]


def test_bond_follows_its_members(sysfs):
    sysfs.nic("eth0", 2, "ice", "0000:00:03.0")
    sysfs.nic("eth1", 3, "ice", "0000:00:04.0")
    sysfs.nic("eth2", 4, "r8169", "0000:00:05.0")
    sysfs.virtual("bond0", 10, lower=("eth0", "eth1"))
    sysfs.virtual("bond1", 11, lower=("eth0", "eth2"))
    facts, choice = _choose(sysfs, "bond0", 10, ("bonding", ""))
    assert facts["lower"] == ["eth0", "eth1"] and choice["hook"] == "xdp", choice
    _facts, choice = _choose(sysfs, "bond1", 11, ("bonding", ""))
    assert choice["hook"] == "tc" and "eth0, eth2" in choice["reason"], choice
    sysfs.virtual("bond2", 12)
    assert _choose(sysfs, "bond2", 12, ("bonding", ""))[1]["hook"] == "tc"     # no member: nothing to ride on


def test_sysfs_of_another_namespace_is_ignored(sysfs):
    """Under `nsenter --net` /sys still shows the namespace it was mounted in: an interface of
    the same name there (other ifindex) must not decide for ours."""
    sysfs.nic("sip0", 2, "ixgbe", "0000:00:03.0")
    facts, choice = _choose(sysfs, "sip0", 7, ("veth", ""))
    assert not facts["sysfs"] and choice["hook"] == "tc"


def test_live_interface_of_this_host():
    """auto_hook on the loopback of the running kernel: a software device, tc."""
    choice = pf.auto_hook("lo")
    assert choice["hook"] == "tc" and choice["virtual"] and choice["driver"] == "loopback"


def test_preflight_reports_the_hook_per_interface():
    rep = pf.run(["lo", "etsf-nope0"])
    row = next(c for c in rep["checks"] if c["name"] == "hook:lo")
    assert row["ok"] and row["hook"] == "tc" and row["detail"].startswith("auto hook tc: lo: loopback: virtual")
    assert rep["interfaces"]["lo"]["hook"] == "tc" and rep["interfaces"]["lo"]["reason"] == row["reason"]
    # an interface that does not exist gets its failed check, no hook row
    assert "hook:etsf-nope0" not in [c["name"] for c in rep["checks"]]
    assert "hook" not in rep["interfaces"]["etsf-nope0"]


def test_bad_hook_is_refused_naming_the_field():
    for bad in ("foo", "", None, "XDP"):
        with pytest.raises(DatapathError, match=r"^--hook must be one of auto, xdp, tc \(got .*\)$"):
            hooks.check(bad)
    assert hooks.resolve("lo", "xdp") == ("xdp", "lo: forced (--hook xdp)")


def test_cli_refuses_bad_hook_in_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), ETSF_STATE_DIR=str(tmp_path / "state"),
               ETSF_PIN_ROOT=str(tmp_path / "pins"), ETSF_RUN_DIR=str(tmp_path / "run"))
    r = subprocess.run([sys.executable, "-m", "etsf", "attach", "--iface", "lo", "--hook", "foo"],
                       capture_output=True, text=True, env=env, timeout=60, check=False)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "--hook" in r.stderr, r.stderr
    assert not (tmp_path / "state").exists()


def test_flag_names():
    from etsf import layout
    assert hooks.flag_names(layout.IF_F_CLASSIFY | layout.IF_F_STEER) == ["classify", "steer"]
    assert hooks.flag_names(layout.IF_F_XDP) == ["xdp"]


def test_tm_field_follows_the_programs_rule():
    """etsf_if_cfg.tm: the interface's etsf_tm_ifcfg entry, else key 0's, else toward; past OFF is
    OFF; nothing known (0) when etsf_tm_ifcfg is not pinned."""
    from etsf import layout
    k, d = layout.IF_TM_KNOWN, layout.TmDir
    assert hooks.tm_field(None, 5) == 0
    assert hooks.tm_field({}, 5) == k | d.TOWARD
    assert hooks.tm_field({0: d.OFF}, 5) == k | d.OFF
    assert hooks.tm_field({0: d.OFF, 5: d.FROM}, 5) == k | d.FROM
    assert hooks.tm_field({0: d.FROM, 6: d.OFF}, 5) == k | d.FROM
    assert hooks.tm_field({5: 7}, 5) == k | d.OFF


def test_role_hook_is_one_schema():
    """datapath_hook: spec, defaults, README table, the module's choices and the agent agree."""
    role = ROOT / "roles" / "datapath"
    spec = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    assert spec["datapath_hook"]["choices"] == list(hooks.HOOKS) and defaults["datapath_hook"] == "auto"
    readme = (role / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z0-9_]+)` \| (.*?) \|", readme, re.M))
    assert set(rows) == set(spec), "README table and meta/argument_specs.yml list different variables"
    for name, opt in spec.items():
        if "choices" in opt and name != "datapath_packages":
            assert rows[name] == f"`{opt['default']}`", name
    module = (ROOT / "plugins" / "modules" / "datapath.py").read_text()
    assert "choices: [auto, xdp, tc]" in module and 'hook=dict(type="str", choices=["auto", "xdp", "tc"]' in module
    assert 'hook: "{{ datapath_hook }}"' in (role / "tasks" / "run.yml").read_text()
    assert "hook: {{ datapath_hook }}" in (role / "templates" / "datapath.yml.j2").read_text()


def test_role_tc_api_is_one_schema():
    """datapath_tc_api: spec, defaults, the module's option, the restore file and the agent agree."""
    from etsf.cli import build_parser
    role = ROOT / "roles" / "datapath"
    spec = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    assert spec["datapath_tc_api"]["choices"] == list(hooks.TC_APIS) and defaults["datapath_tc_api"] == "auto"
    assert spec["datapath_tc_api"]["default"] == "auto"
    module = (ROOT / "plugins" / "modules" / "datapath.py").read_text()
    assert "choices: [auto, clsact, tcx]" in module and "default: auto" in module
    assert 'tc_api=dict(type="str", choices=["auto", "clsact", "tcx"], default="auto")' in module
    assert 'tc_api: "{{ datapath_tc_api }}"' in (role / "tasks" / "run.yml").read_text()
    assert "tc_api: {{ datapath_tc_api }}" in (role / "templates" / "datapath.yml.j2").read_text()
    assert "datapath_tc_api in ['auto', 'clsact', 'tcx']" in (role / "tasks" / "preflight.yml").read_text()
    args = build_parser().parse_args(["attach", "--iface", "lo"])
    assert args.tc_api == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["attach", "--iface", "lo", "--tc-api", "tc"])
