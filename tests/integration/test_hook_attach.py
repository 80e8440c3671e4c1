"""The classifier's hook on a real veth: auto picks TC ingress and says why, --hook xdp
switches to native XDP, the fast path and the tc hook share one TC ingress program through
etsf_if_cfg's flags, detach removes the programs and the map entry, bad input changes nothing.

What the programs do with packets on each hook is tested with traffic elsewhere; this is the
agent's part: attachments, flags, state, status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import NS_PREFIX, Lab, etsfctl

from etsf import layout

#: the kernel's own view of the TC hooks (tcx links and clsact filters)
TCVIEW = (Path(__file__).resolve().parents[2] / "lab" / "tcview.py").read_text()


@pytest.fixture(scope="module")
def veth():
    with Lab(f"{os.getpid() % 100000}", ns_prefix=f"{NS_PREFIX}hk", if_prefix="etsfhk") as lab:
        lab.setup()
        yield lab


def _ip_json(ns: str, *args) -> list:
    r = subprocess.run(["ip", "-n", ns, "-j", *args], capture_output=True, text=True, timeout=10, check=True)
    return json.loads(r.stdout or "[]")


def _kernel_view(lab) -> dict:
    """What the kernel has on the server end, read with ip/tc (not with the agent)."""
    link = _ip_json(lab.srv_ns, "-d", "link", "show", "dev", lab.srv_if)[0]
    xdp = link.get("xdp") or {}
    prog = xdp.get("prog") or {}
    out = {"ifindex": int(link["ifindex"]), "xdp_mode": {1: "native", 2: "generic"}.get(xdp.get("mode")),
           "xdp_prog": prog.get("name"), "tc": {}}
    # tcx links and clsact filters both (tc lists only the filters): lab/tcview.py
    r = subprocess.run(["ip", "netns", "exec", lab.srv_ns, sys.executable, "-c", TCVIEW, lab.srv_if],
                       capture_output=True, text=True, timeout=20, check=True)
    v = json.loads(r.stdout)
    for direction in ("ingress", "egress"):
        out["tc"][direction] = sorted(p["name"] for p in v["tcx"][direction] + v["clsact"][direction])
    return out


def _flags(bpf, root: str, ifindex: int) -> int | None:
    """etsf_if_cfg's flags for ifindex (None: no entry)."""
    with bpf.open_map("etsf_if_cfg", root) as m:
        raw = m.lookup(ifindex.to_bytes(4, "little"))
    return None if raw is None else int(layout.IfCfg.from_bytes(raw).flags)


def _ctl(lab, env, *args, check=True):
    return etsfctl(*args, env=env, netns=lab.srv_ns, check=check)


def _attach(lab, env, *extra) -> dict:
    return json.loads(_ctl(lab, env, "attach", "--iface", lab.srv_if, "--json", *extra).stdout)


def _status_row(lab, env) -> dict:
    return json.loads(_ctl(lab, env, "status", "--json").stdout)["interfaces"][lab.srv_if]


def test_auto_picks_tc_on_veth_then_xdp_forced_then_detach(veth, etsf_env, etsf_bpf):
    root = etsf_env["ETSF_PIN_ROOT"]
    r = _attach(veth, etsf_env)
    assert r["hook"] == "tc" and r["hook_requested"] == "auto", r
    assert "veth: virtual interface" in r["hook_reason"] and r["hook_reason"].endswith("-> tc"), r
    k = _kernel_view(veth)
    assert k["xdp_prog"] is None, k
    assert k["tc"] == {"ingress": ["tc_fastpath"], "egress": ["tc_sip_egress"]}, k
    assert _flags(etsf_bpf, root, k["ifindex"]) == layout.IF_F_CLASSIFY
    row = _status_row(veth, etsf_env)
    assert row["hook"] == "tc" and row["attached"] and row["if_flags"] == ["classify"], row
    text = _ctl(veth, etsf_env, "status").stdout
    assert f"{veth.srv_if} (ifindex {k['ifindex']}): hook tc; xdp - " in text, text
    assert f"; tc ingress {row['tc_ingress_prog_id']} (classify); tc egress {row['tc_prog_id']}" in text, text

    # forced XDP on the veth: native XDP attached, TC ingress gone (nothing steers here)
    r = _attach(veth, etsf_env, "--hook", "xdp")
    assert r["hook"] == "xdp" and r["mode"] == "native" and r["hook_reason"].endswith("forced (--hook xdp)"), r
    k = _kernel_view(veth)
    assert k["xdp_prog"] == "xdp_sip" and k["xdp_mode"] == "native", k
    assert k["tc"] == {"ingress": [], "egress": ["tc_sip_egress"]}, k
    assert _flags(etsf_bpf, root, k["ifindex"]) == layout.IF_F_XDP
    assert _status_row(veth, etsf_env)["hook"] == "xdp"

    # back to tc: XDP goes, the TC ingress program comes back
    r = _attach(veth, etsf_env, "--hook", "tc")
    k = _kernel_view(veth)
    assert r["hook"] == "tc" and k["xdp_prog"] is None and k["tc"]["ingress"] == ["tc_fastpath"], (r, k)
    assert _flags(etsf_bpf, root, k["ifindex"]) == layout.IF_F_CLASSIFY

    r = json.loads(_ctl(veth, etsf_env, "detach", "--iface", veth.srv_if, "--json").stdout)
    assert r["changed"], r
    k = _kernel_view(veth)
    assert k["xdp_prog"] is None and k["tc"] == {"ingress": [], "egress": []}, k
    assert _flags(etsf_bpf, root, k["ifindex"]) is None
    assert veth.srv_if not in json.loads(_ctl(veth, etsf_env, "status", "--json").stdout)["interfaces"]


def test_tc_hook_and_fast_path_share_one_ingress_program(veth, etsf_env, etsf_bpf):
    root = etsf_env["ETSF_PIN_ROOT"]
    _attach(veth, etsf_env, "--hook", "xdp")
    _ctl(veth, etsf_env, "fastpath", "attach", "--iface", veth.srv_if)
    k = _kernel_view(veth)
    idx = k["ifindex"]
    # xdp hook on a steering interface: both programs, TC ingress takes XDP's result
    assert k["xdp_prog"] == "xdp_sip" and k["tc"]["ingress"] == ["tc_fastpath"], k
    assert _flags(etsf_bpf, root, idx) == layout.IF_F_XDP | layout.IF_F_STEER

    _attach(veth, etsf_env, "--hook", "tc")
    k = _kernel_view(veth)
    assert k["xdp_prog"] is None and k["tc"]["ingress"] == ["tc_fastpath"], k
    assert _flags(etsf_bpf, root, idx) == layout.IF_F_CLASSIFY | layout.IF_F_STEER

    # the datapath lets go: the fast path keeps its program
    _ctl(veth, etsf_env, "detach", "--iface", veth.srv_if)
    k = _kernel_view(veth)
    assert k["tc"] == {"ingress": ["tc_fastpath"], "egress": []}, k
    assert _flags(etsf_bpf, root, idx) == layout.IF_F_STEER

    # classify again, then the fast path lets go: the program stays for the tc hook
    _attach(veth, etsf_env, "--hook", "tc")
    r = json.loads(_ctl(veth, etsf_env, "fastpath", "detach", "--iface", veth.srv_if, "--json").stdout)
    assert r["changed"], r
    k = _kernel_view(veth)
    assert k["tc"]["ingress"] == ["tc_fastpath"], k
    assert _flags(etsf_bpf, root, idx) == layout.IF_F_CLASSIFY

    _ctl(veth, etsf_env, "detach", "--iface", veth.srv_if)
    k = _kernel_view(veth)
    assert k["xdp_prog"] is None and k["tc"] == {"ingress": [], "egress": []}, k
    assert _flags(etsf_bpf, root, idx) is None


def _tm(bpf, root: str, ifindex: int) -> int | None:
    """etsf_if_cfg's telemetry direction copy for ifindex (None: no entry)."""
    with bpf.open_map("etsf_if_cfg", root) as m:
        raw = m.lookup(ifindex.to_bytes(4, "little"))
    return None if raw is None else int(layout.IfCfg.from_bytes(raw).tm)


def test_interface_entry_carries_the_telemetry_direction(veth, etsf_env, etsf_bpf):
    """Attach puts the interface's telemetry direction next to its flags (what etsf_tm_ifcfg gives
    it: its own entry, else the default, else toward) and `etsfctl telemetry direction` keeps that
    copy current, so TC ingress need not look etsf_tm_ifcfg up per request."""
    root = etsf_env["ETSF_PIN_ROOT"]
    known = layout.IF_TM_KNOWN
    idx = _attach(veth, etsf_env, "--hook", "tc")["ifindex"]
    try:
        assert _tm(etsf_bpf, root, idx) == known | layout.TmDir.TOWARD
        _ctl(veth, etsf_env, "telemetry", "direction", "--default", "off")
        assert _tm(etsf_bpf, root, idx) == known | layout.TmDir.OFF
        _ctl(veth, etsf_env, "telemetry", "direction", "--iface", veth.srv_if, "from")
        assert _tm(etsf_bpf, root, idx) == known | layout.TmDir.FROM
        _ctl(veth, etsf_env, "telemetry", "direction", "--default", "toward")
        assert _tm(etsf_bpf, root, idx) == known | layout.TmDir.FROM      # its own entry wins
        # a second attach (another flag, the same entry) keeps the direction
        _attach(veth, etsf_env, "--hook", "tc")
        assert (_flags(etsf_bpf, root, idx), _tm(etsf_bpf, root, idx)) == (layout.IF_F_CLASSIFY,
                                                                           known | layout.TmDir.FROM)
    finally:
        with etsf_bpf.open_map("etsf_tm_ifcfg", root) as m:
            for k in list(m.keys()):
                m.delete(k)
        _ctl(veth, etsf_env, "detach", "--iface", veth.srv_if)
    assert _tm(etsf_bpf, root, idx) is None


def test_bad_hook_is_one_line_and_changes_nothing(veth, etsf_env, etsf_bpf):
    root = etsf_env["ETSF_PIN_ROOT"]
    _attach(veth, etsf_env, "--hook", "xdp")
    before = _kernel_view(veth)
    for args, word in ((["--hook", "foo"], "--hook"), (["--hook", "tc", "--mode", "generic"], "--mode")):
        r = _ctl(veth, etsf_env, "attach", "--iface", veth.srv_if, *args, check=False)
        err = r.stderr.strip()
        assert r.returncode != 0 and word in err and len(err.splitlines()) == 1, (args, r.returncode, err)
        assert _kernel_view(veth) == before
        assert _flags(etsf_bpf, root, before["ifindex"]) == layout.IF_F_XDP
    _ctl(veth, etsf_env, "detach", "--iface", veth.srv_if)


def test_restore_reapplies_the_configured_hook(veth, etsf_env, etsf_bpf, tmp_path):
    root = etsf_env["ETSF_PIN_ROOT"]
    config = tmp_path / "datapath.yml"
    config.write_text(f"version: 1\nhook: tc\ninterfaces: [{veth.srv_if}]\nprebuilt: true\n"
                      f"build_dir: {etsf_env['ETSF_BUILD_DIR']}\n")
    out = json.loads(_ctl(veth, etsf_env, "restore", "--config", str(config), "--json").stdout)
    assert out["hooks"] == {veth.srv_if: "tc"}, out
    k = _kernel_view(veth)
    assert k["xdp_prog"] is None and k["tc"]["ingress"] == ["tc_fastpath"], k
    assert _flags(etsf_bpf, root, k["ifindex"]) == layout.IF_F_CLASSIFY
    r = json.loads(_ctl(veth, etsf_env, "revert", "--mode", "detach", "--json").stdout)
    assert r["interfaces"] == {veth.srv_if: True}, r
    assert _kernel_view(veth)["tc"] == {"ingress": [], "egress": []}
    assert _flags(etsf_bpf, root, k["ifindex"]) is None


def _module(lab, env, tmp_path, check: bool = False, **params) -> dict:
    """One run of the etsf.sip.datapath module on localhost inside the server namespace."""
    repo = Path(__file__).resolve().parents[2]
    args = {"interfaces": [lab.srv_if], "prebuilt": True, "build_dir": env["ETSF_BUILD_DIR"], **params}
    e = dict(os.environ, **env, PYTHONPATH=str(repo / "src"), ANSIBLE_CONFIG=str(repo / "ansible.cfg"),
             ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"), ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    cmd = ["nsenter", f"--net=/run/netns/{lab.srv_ns}", str(repo / ".venv/bin/ansible"), "localhost",
           "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
           "-m", "etsf.sip.datapath", "-a", json.dumps(args), "--diff", *(["--check"] if check else [])]
    r = subprocess.run(cmd, cwd=repo, env=e, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    head, _sep, body = r.stdout.partition("localhost | ")
    out = json.loads(body.split("=>", 1)[1])
    out["diff_text"] = head            # what --diff printed before the result
    return out


def test_module_hook_check_mode_diff_and_idempotence(veth, etsf_env, etsf_bpf, tmp_path):
    root = etsf_env["ETSF_PIN_ROOT"]
    res = _module(veth, etsf_env, tmp_path, check=True)            # hook: auto
    assert res["changed"] and res["actions"] == {veth.srv_if: "attach"}, res
    assert res["interfaces"][veth.srv_if]["hook"] == "tc", res        # the after view (diff: after)
    assert _kernel_view(veth)["tc"] == {"ingress": [], "egress": []}        # check mode: nothing done

    res = _module(veth, etsf_env, tmp_path)
    assert res["changed"] and res["interfaces"][veth.srv_if]["hook"] == "tc", res
    # the role's default is recorded as asked (auto) with the driver's reason, as etsfctl does
    row = _status_row(veth, etsf_env)
    assert row["hook_requested"] == "auto" and "veth" in row["hook_reason"], row
    res = _module(veth, etsf_env, tmp_path)
    assert not res["changed"] and res["actions"] == {veth.srv_if: "unchanged"}, res

    res = _module(veth, etsf_env, tmp_path, check=True, hook="xdp")
    assert res["changed"] and res["actions"] == {veth.srv_if: "switch"}, res
    assert res["interfaces"][veth.srv_if]["hook"] == "xdp", res
    assert '-        "hook": "tc",' in res["diff_text"], res["diff_text"]
    assert '+        "hook": "xdp",' in res["diff_text"], res["diff_text"]
    k = _kernel_view(veth)
    assert k["xdp_prog"] is None and k["tc"]["ingress"] == ["tc_fastpath"], k

    res = _module(veth, etsf_env, tmp_path, hook="xdp")
    k = _kernel_view(veth)
    assert res["changed"] and k["xdp_prog"] == "xdp_sip" and k["tc"]["ingress"] == [], (res, k)
    assert _flags(etsf_bpf, root, k["ifindex"]) == layout.IF_F_XDP

    res = _module(veth, etsf_env, tmp_path, state="detached")
    assert res["changed"] and _kernel_view(veth)["xdp_prog"] is None, res
    assert _flags(etsf_bpf, root, k["ifindex"]) is None
