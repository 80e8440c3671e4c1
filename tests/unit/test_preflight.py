"""etsf.preflight: every unmet requirement is reported, in one line."""
import etsf.preflight as pf


def test_kernel_version_compare():
    assert pf.check_kernel("5.18", release="6.18.44-fc")["ok"]
    assert pf.check_kernel("5.18", release="5.18.0")["ok"]
    assert not pf.check_kernel("5.18", release="5.15.0-91-generic")["ok"]


def test_bpffs_detection_from_mount_table():
    assert pf.check_bpffs("/sys/fs/bpf", mounts=[("/sys/fs/bpf", "bpf")])["ok"]
    assert not pf.check_bpffs("/sys/fs/bpf", mounts=[("/sys/fs/bpf", "tmpfs"), ("/", "ext4")])["ok"]


def test_bpffs_the_caller_mounts_first_is_a_warning_not_unmet():
    """Check mode of the preflight role: a real run mounts bpffs before it checks."""
    result = pf.check_bpffs("/sys/fs/bpf", mounts=[("/", "ext4")], mounted_first=True)
    assert not result["ok"] and result["severity"] == "warning"
    assert pf.summary([result]) == "all requirements met"
    mounted = pf.check_bpffs("/sys/fs/bpf", mounts=[("/sys/fs/bpf", "bpf")], mounted_first=True)
    assert mounted["ok"] and mounted["severity"] == "error"


def test_kconfig_lists_every_missing_option():
    options = {opt: "y" for opt in pf.REQUIRED_KCONFIG}
    options["CONFIG_NET_CLS_BPF"] = "n"
    del options["CONFIG_DEBUG_INFO_BTF"]
    result = pf.check_kconfig(options, "/proc/config.gz")
    assert not result["ok"]
    assert result["missing"] == ["CONFIG_DEBUG_INFO_BTF", "CONFIG_NET_CLS_BPF"]


def test_kconfig_unreadable_is_a_warning_not_a_failure():
    result = pf.check_kconfig({}, None)
    assert result["severity"] == "warning" and result["ok"]


def test_feature_probe_names_missing_helpers_and_types():
    probe = {
        "program_types": {"have_xdp_prog_type": True, "have_sched_cls_prog_type": False},
        "map_types": {f"have_{m}_map_type": True for m in pf.REQUIRED_MAP_TYPES if m != "lpm_trie"},
        "helpers": {"xdp_available_helpers": list(pf.REQUIRED_HELPERS["xdp"][:-1]),
                    "sched_cls_available_helpers": list(pf.REQUIRED_HELPERS["sched_cls"])},
    }
    result = pf.check_features(probe)
    assert not result["ok"]
    assert "program type sched_cls" in result["missing"]
    assert "map type lpm_trie" in result["missing"]
    assert "helper bpf_xdp_load_bytes for xdp" in result["missing"]
    assert len(result["missing"]) == 3


def test_summary_is_one_line_listing_all_unmet_errors():
    checks = [
        pf.check_kernel("9.0", release="6.1.0"),
        pf.check_bpffs("/sys/fs/bpf", mounts=[]),
        pf.check_kconfig({}, None),  # warning only
        pf.check_btf("/nonexistent/vmlinux"),
    ]
    line = pf.summary(checks)
    assert "\n" not in line
    assert line.startswith("3 unmet requirement(s): ")
    assert "kernel 6.1.0 (minimum 9.0)" in line and "bpffs not mounted" in line and "/nonexistent/vmlinux" in line


def test_run_on_this_host_reports_missing_interface():
    report = pf.run(["etsf-no-such-if"])
    names = {c["name"]: c for c in report["checks"]}
    assert not names["interface:etsf-no-such-if"]["ok"]
    assert "interface:etsf-no-such-if" in report["failed"]
    assert not report["ok"]
    assert "interface etsf-no-such-if does not exist" in report["message"]


def test_loopback_has_no_foreign_programs():
    check = pf.check_interface("lo")
    assert check["foreign_programs"] == []
    assert check["xdp_mode"] in ("native", "generic")


def test_jit_always_on_from_kconfig_and_missing_sysctl(tmp_path):
    assert pf.check_jit({"CONFIG_BPF_JIT_ALWAYS_ON": "y"}, path=str(tmp_path / "none"))["ok"]
    missing = pf.check_jit({}, path=str(tmp_path / "none"))
    assert missing["ok"] and missing["severity"] == "warning"
    off = tmp_path / "jit"
    off.write_text("0\n")
    assert not pf.check_jit({}, path=str(off))["ok"]
    off.write_text("1\n")
    assert pf.check_jit({}, path=str(off))["ok"]


def test_bpf_syscall_permitted_here_and_refusal_collapses_the_feature_list(monkeypatch):
    ok = pf.check_bpf_syscall()
    assert ok["ok"] and ok["detail"] == "bpf(2) permitted", ok        # root on this kernel
    assert pf.check_bpf_syscall("sparc64")["severity"] == "warning"
    refused = pf._check("bpf_syscall", False, "bpf(2) refused: Operation not permitted (EPERM); ...")
    monkeypatch.setattr(pf, "check_bpf_syscall", lambda: refused)
    monkeypatch.setattr(pf, "probe_features", lambda: {})       # would list every feature missing
    rep = pf.run([])
    assert not rep["ok"] and "bpf_syscall" in rep["failed"] and "bpf_features" not in rep["failed"]
    assert "bpf(2) refused: Operation not permitted (EPERM)" in rep["message"]
    assert "program type" not in rep["message"]
