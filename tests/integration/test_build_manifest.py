"""Objects built elsewhere (the controller, datapath_build: controller) carry build.json: the
loader refuses objects built for another map layout or architecture, or without a manifest,
with one line and before anything changes; matching objects load on a host without a compiler."""

from __future__ import annotations

import json
import os
import shutil

from conftest import etsfctl

from etsf import __version__, build


def _push(build_dir: str, dest, **manifest) -> str:
    """What the role pushes (objects, stamp, manifest), with manifest fields overridden."""
    os.makedirs(dest)
    for name in os.listdir(build_dir):
        if name.endswith(".o") or name in (build.STAMP_FILE, build.MANIFEST_FILE):
            shutil.copy2(os.path.join(build_dir, name), os.path.join(dest, name))
    path = os.path.join(dest, build.MANIFEST_FILE)
    if manifest.pop("drop", False):
        os.unlink(path)
    elif manifest:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        data.update(manifest)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f)
    return str(dest)


def _snapshot(env, lab):
    st = json.loads(etsfctl("status", "--json", env=env, netns=lab.srv_ns).stdout)
    row = st["interfaces"].get(lab.srv_if, {})
    maps = sorted(os.listdir(os.path.join(env["ETSF_PIN_ROOT"], "maps")))
    with open(os.path.join(env["ETSF_STATE_DIR"], "state.json"), "rb") as f:
        state = f.read()
    return row.get("xdp_prog_id"), row.get("tc_prog_id"), maps, state


def test_manifest_records_layout_arch_and_btf(build_dir):
    m = build.check_manifest(build_dir)
    assert m["layout"] == build.layout_hash() and len(m["layout"]) == 16
    assert m["arch"] == os.uname().machine and m["btf"] == "core" and m["agent"] == __version__
    with open(os.path.join(build_dir, build.STAMP_FILE), encoding="utf-8") as f:
        assert m["stamp"] == f.read().strip()


def test_incompatible_objects_refused_running_programs_kept(lab, etsf_env, build_dir, tmp_path):
    etsfctl("attach", "--hook", "xdp", "--iface", lab.srv_if, "--json", env=etsf_env, netns=lab.srv_ns)
    before = _snapshot(etsf_env, lab)
    assert before[0] and before[1]
    mine = build.layout_hash()
    cases = [
        (dict(layout="0123456789abcdef", agent="0.0.1"),
         "objects built for map layout 0123456789abcdef (agent 0.0.1), this agent "
         f"{__version__} uses layout {mine}: rebuild them with this agent's sources, nothing was loaded"),
        (dict(arch="aarch64"),
         f"objects built for aarch64, this host is {os.uname().machine}: "
         "rebuild them for this architecture, nothing was loaded"),
        (dict(format=7), "format: expected 1, got 7"),
        (dict(drop=True), "missing: objects of unknown layout, rebuild them (etsfctl build)"),
    ]
    for i, (change, why) in enumerate(cases):
        pushed = _push(build_dir, tmp_path / f"pushed{i}", **change)
        r = etsfctl("attach", "--hook", "xdp", "--iface", lab.srv_if, "--build-dir", pushed, env=etsf_env,
                    netns=lab.srv_ns, check=False)
        assert r.returncode == 1
        want = f"etsfctl: error: refusing the objects: {pushed}/build.json{':' if 'missing' not in why else ''} {why}"
        assert r.stderr.splitlines() == [want], r.stderr
        # the running programs, the pinned maps and the state are exactly as before
        assert _snapshot(etsf_env, lab) == before


def test_prebuilt_restore_needs_no_compiler_and_refuses_a_mismatch(lab, etsf_env, build_dir, tmp_path):
    # no clang, no bpftool, no sources: a prebuilt restore must never try to compile
    env = dict(etsf_env, ETSF_CLANG="/nonexistent/clang", ETSF_BPFTOOL="/nonexistent/bpftool",
               ETSF_BPF_SRC="/nonexistent/bpf")
    bad = _push(build_dir, tmp_path / "bad", layout="fedcba9876543210")
    config = tmp_path / "datapath.yml"
    config.write_text(f"version: 1\nmode: native\ninterfaces: [{lab.srv_if}]\n"
                      f"build_dir: {bad}\nprebuilt: true\n")
    r = etsfctl("restore", "--config", str(config), env=env, netns=lab.srv_ns, check=False)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith(f"etsfctl: error: refusing the objects: {bad}/build.json: objects built for "
                               "map layout fedcba9876543210"), r.stderr
    st = json.loads(etsfctl("status", "--json", env=env, netns=lab.srv_ns).stdout)
    assert st["interfaces"] == {}

    good = _push(build_dir, tmp_path / "good")
    config.write_text(f"version: 1\nmode: native\ninterfaces: [{lab.srv_if}]\n"
                      f"build_dir: {good}\nprebuilt: true\n")
    out = json.loads(etsfctl("restore", "--config", str(config), "--json", env=env, netns=lab.srv_ns).stdout)
    assert out["built"] is False and list(out["attached"]) == [lab.srv_if]
    st = json.loads(etsfctl("status", "--json", env=env, netns=lab.srv_ns).stdout)
    assert st["interfaces"][lab.srv_if]["attached"]

    config.write_text(f"version: 1\ninterfaces: [{lab.srv_if}]\nprebuilt: 'yes'\n")
    r = etsfctl("restore", "--config", str(config), env=env, check=False)
    assert r.returncode == 1 and r.stderr.splitlines() == [
        f"etsfctl: error: {config}: prebuilt: expected true or false"]


def test_module_refuses_prebuilt_objects_of_another_layout(etsf_env, build_dir, tmp_path):
    """The etsf.sip.datapath module with prebuilt=true (datapath_build: controller) fails with the
    same one line before planning any attach, detach or replace."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    bad = _push(build_dir, tmp_path / "pushed", layout="0123456789abcdef", agent="0.0.1")
    env = dict(os.environ, **etsf_env, PYTHONPATH=str(repo / "src"), ANSIBLE_CONFIG=str(repo / "ansible.cfg"),
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"), ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    args = json.dumps({"interfaces": ["lo"], "prebuilt": True, "build_dir": bad})
    r = subprocess.run([str(repo / ".venv/bin/ansible"), "localhost", "-i", "localhost,", "-c", "local",
                        "-e", f"ansible_python_interpreter={sys.executable}", "-m", "etsf.sip.datapath",
                        "-a", args], cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 2 and "localhost | FAILED! =>" in r.stdout, r.stdout + r.stderr
    result = json.loads(r.stdout.split("=>", 1)[1])
    assert result["msg"] == (f"{bad}/build.json: objects built for map layout 0123456789abcdef (agent 0.0.1), "
                             f"this agent {__version__} uses layout {build.layout_hash()}: rebuild them with "
                             "this agent's sources, nothing was loaded")
    # nothing was recorded: the agent's state was never written
    assert not os.path.exists(os.path.join(etsf_env["ETSF_STATE_DIR"], "state.json"))
