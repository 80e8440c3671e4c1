"""Supported distributions: one list (roles/common/vars/main.yml) that the roles' metadata,
their per-distribution vars files, the preflight check and the lab's suites agree with."""
import pathlib

import pytest
import yaml

import etsf.preflight as pf
from lab import inventory, rootfs

ROOT = pathlib.Path(__file__).resolve().parents[2]
PLATFORMS = yaml.safe_load((ROOT / "roles/common/vars/main.yml").read_text())["__common_platforms"]
FLEET_ROLES = ["preflight", "datapath", "policy", "telemetry", "failsafe"]
BOOKWORM = {"PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)", "ID": "debian", "VERSION_ID": "12"}
TRIXIE = {"PRETTY_NAME": "Debian GNU/Linux 13 (trixie)", "ID": "debian", "VERSION_ID": "13"}


def test_platform_list_is_debian_12_and_13():
    assert [(p["distribution"], p["version"], p["release"]) for p in PLATFORMS] == [
        ("Debian", "12", "bookworm"), ("Debian", "13", "trixie")]


@pytest.mark.parametrize("role", FLEET_ROLES)
def test_role_metadata_lists_the_supported_platforms(role):
    meta = yaml.safe_load((ROOT / f"roles/{role}/meta/main.yml").read_text())
    want = {}
    for p in PLATFORMS:
        want.setdefault(p["distribution"], []).append(p["release"])
    got = {p["name"]: p["versions"] for p in meta["galaxy_info"]["platforms"]}
    assert got == want
    spec = (ROOT / f"roles/{role}/meta/argument_specs.yml").read_text()
    for p in PLATFORMS:
        assert f"{p['distribution']} {p['version']} ({p['release']})" in spec


@pytest.mark.parametrize("role", FLEET_ROLES)
def test_role_imports_common_first_under_every_tag(role):
    tasks = yaml.safe_load((ROOT / f"roles/{role}/tasks/main.yml").read_text())
    first = tasks[0]
    assert first["ansible.builtin.import_role"]["name"] == "etsf.sip.common"
    assert first["tags"] == ["always"]
    # the offline check is defined once, in etsf.sip.common
    vars_main = ROOT / f"roles/{role}/vars/main.yml"
    assert not vars_main.exists() or "etsf_offline" not in vars_main.read_text()


@pytest.mark.parametrize("role,names", [
    ("datapath", {"__datapath_build_packages", "__datapath_runtime_packages"}),
    ("preflight", {"__preflight_packages"}),
])
def test_os_specific_values_exist_for_every_platform(role, names):
    for p in PLATFORMS:
        path = ROOT / f"roles/{role}/vars/{p['distribution']}-{p['version']}.yml"
        data = yaml.safe_load(path.read_text())
        assert set(data) == names, path
        assert all(isinstance(v, list) and v for v in data.values()), path


def test_datapath_build_and_run_packages_on_both_releases():
    for p in PLATFORMS:
        data = yaml.safe_load((ROOT / f"roles/datapath/vars/Debian-{p['version']}.yml").read_text())
        assert {"clang", "llvm", "libbpf-dev"} == set(data["__datapath_build_packages"])
        assert {"bpftool", "libbpf1", "python3-yaml"} <= set(data["__datapath_runtime_packages"])


def test_distribution_check_accepts_bookworm_and_trixie():
    for release in (BOOKWORM, TRIXIE):
        check = pf.check_distribution(PLATFORMS, release)
        assert check["ok"] and check["name"] == "distribution", check


def test_distribution_check_refuses_others_naming_what_is_supported():
    bullseye = {"PRETTY_NAME": "Debian GNU/Linux 11 (bullseye)", "ID": "debian", "VERSION_ID": "11"}
    check = pf.check_distribution(PLATFORMS, bullseye)
    assert not check["ok"] and check["severity"] == "error"
    assert check["detail"] == ("Debian GNU/Linux 11 (bullseye) is not supported "
                               "(supported: Debian 12 (bookworm), Debian 13 (trixie))")
    sid = {"PRETTY_NAME": "Debian GNU/Linux trixie/sid", "ID": "debian"}
    assert not pf.check_distribution(PLATFORMS, sid)["ok"]
    ubuntu = {"ID": "ubuntu", "VERSION_ID": "12.04"}
    assert not pf.check_distribution(PLATFORMS, ubuntu)["ok"]
    assert not pf.check_distribution(PLATFORMS, {})["ok"]


def test_os_release_parsing(tmp_path):
    path = tmp_path / "os-release"
    path.write_text('PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nNAME="Debian GNU/Linux"\n'
                    'VERSION_ID="13"\n# a comment\nID=debian\n\n')
    assert pf.read_os_release(str(path)) == {"PRETTY_NAME": "Debian GNU/Linux 13 (trixie)",
                                             "NAME": "Debian GNU/Linux", "VERSION_ID": "13",
                                             "ID": "debian"}
    assert pf.read_os_release(str(tmp_path / "missing")) == {}


def test_run_adds_the_distribution_check_only_when_asked():
    names = [c["name"] for c in pf.run(distributions=PLATFORMS)["checks"]]
    assert names[0] == "distribution"
    assert "distribution" not in [c["name"] for c in pf.run()["checks"]]


def test_lab_suites_are_the_supported_releases():
    assert list(rootfs.SUITES) == [p["release"] for p in PLATFORMS]
    assert rootfs.DEFAULT_SUITE == "bookworm"
    assert rootfs.parse_suites("bookworm,trixie") == ["bookworm", "trixie"]


def test_lab_rejects_an_unknown_suite_naming_it():
    with pytest.raises(rootfs.LabError, match=r"bad --suites entry 'sid': expected one of bookworm, trixie"):
        rootfs.parse_suites("bookworm,sid")


def test_lab_keeps_each_suite_in_its_own_cache():
    assert rootfs.base_dir("bookworm").name == "rootfs-base"
    assert rootfs.base_dir("trixie").name == "rootfs-base-trixie"
    assert rootfs.stamp_path("trixie").name == "rootfs-base-trixie.stamp.json"


def test_lab_inventory_records_each_hosts_suite():
    recs = [{"name": "x-sbc1", "octet": 100, "mgmt_address": "198.18.0.100",
             "sip_address": "198.18.1.100", "suite": "bookworm"},
            {"name": "x-sbc2", "octet": 101, "mgmt_address": "198.18.0.101",
             "sip_address": "198.18.1.101", "suite": "trixie"},
            {"name": "x-sbc3", "octet": 102, "mgmt_address": "198.18.0.102",
             "sip_address": "198.18.1.102"}]
    hosts = yaml.safe_load(inventory.render(recs))["all"]["children"]["sbc"]["hosts"]
    assert {n: h["etsf_lab_suite"] for n, h in hosts.items()} == {
        "x-sbc1": "bookworm", "x-sbc2": "trixie", "x-sbc3": "bookworm"}
