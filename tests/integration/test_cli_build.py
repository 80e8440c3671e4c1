"""`etsfctl build` compiles the real objects against this kernel's BTF (stamp-cached)."""

import json
import os

from conftest import etsfctl


def test_build_cli(tmp_path, etsf_env):
    out = tmp_path / "objs"
    r = etsfctl("build", "--out", str(out), "--json", env=etsf_env, timeout=300)
    res = json.loads(r.stdout)
    names = {os.path.basename(o) for o in res["objects"]}
    assert {"xdp_sip.bpf.o", "tc_sip.bpf.o"} <= names
    assert res["changed"] is True and len(res["stamp"]) >= 16
    for o in res["objects"]:
        with open(o, "rb") as f:
            assert f.read(4) == b"\x7fELF"
    again = json.loads(etsfctl("build", "--out", str(out), "--json", env=etsf_env, timeout=300).stdout)
    assert again["changed"] is False and again["stamp"] == res["stamp"]
    forced = json.loads(etsfctl("build", "--out", str(out), "--force", "--json", env=etsf_env, timeout=300).stdout)
    assert forced["changed"] is True
    st = json.loads(open(os.path.join(etsf_env["ETSF_STATE_DIR"], "state.json")).read())
    assert st["build"]["out_dir"] == str(out)


def test_build_error_one_line(tmp_path, etsf_env):
    src = tmp_path / "src"
    src.mkdir()
    r = etsfctl("build", "--out", str(tmp_path / "o"), env={**etsf_env, "ETSF_BPF_SRC": str(src)},
                check=False, timeout=120)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("etsfctl: error: build failed")
