"""policy.services against the REAL maps (unique pin root), through etsfctl:

* an invalid services section is rejected with one line naming the field and
  every map (classifier + fast path) is byte-identical afterwards;
* services need the fast-path maps: without them the policy is rejected and
  nothing changes;
* services swap atomically with the policy slot: the new slot's services, rings
  and backend membership are written before the etsf_ctl flip; the old slot's
  are released after it; backend ids stay stable; removing all services frees
  everything.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import etsfctl, loaded

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_fastpath_schema import INVALID  # noqa: E402
from test_policy_maps import dump_maps  # noqa: E402

VIP = "198.18.32.100"


def services(*backends, vip=VIP):
    return ("version: 1\nservices:\n  - name: sip-proxy\n    vip: " + vip
            + "\n    port: 5060\n    backends:\n"
            + "".join(f"      - {{address: {a}, port: 5060}}\n" for a in backends))


@pytest.fixture
def fp_loaded(etsf_env, etsf_bpf, build_dir):
    with loaded(etsf_bpf, build_dir, "tc_fastpath.bpf.o", etsf_env["ETSF_PIN_ROOT"]) as progs:
        yield progs


def _fp_view(etsf_env):
    from etsf import fastpath
    from etsf import layout as L
    from etsf import policy as P
    with P.Maps(etsf_env["ETSF_PIN_ROOT"]) as maps:
        slot = int(L.Ctl.from_bytes(maps["etsf_ctl"].lookup(bytes(4))).active_slot)
        svc_slots = sorted({L.FpSvcKey.from_bytes(k).slot for k in maps[fastpath.MAP_SVC].keys()})
        bk = {i: (fastpath.addr_str(b.family, b.addr), b.flags & fastpath.SLOT_BITS)
              for i, b in fastpath.read_backends(maps).items()}
        return slot, svc_slots, bk, fastpath.decode_slot(slot, maps)


@pytest.mark.parametrize("name,text,expected", INVALID, ids=[i[0] for i in INVALID])
def test_invalid_services_change_no_map(tmp_path, etsf_env, etsf_bpf, fp_loaded, name, text, expected):
    good = tmp_path / "good.yml"
    good.write_text(services("198.18.31.11", "198.18.31.12"))
    etsfctl("policy", "apply", str(good), env=etsf_env)
    before = dump_maps(etsf_bpf, etsf_env["ETSF_PIN_ROOT"])
    bad = tmp_path / "bad.yml"
    bad.write_text(text)
    r = etsfctl("policy", "apply", str(bad), env=etsf_env, check=False)
    assert r.returncode != 0
    err = r.stderr.strip()
    assert "\n" not in err and expected in err, err
    assert dump_maps(etsf_bpf, etsf_env["ETSF_PIN_ROOT"]) == before


def test_services_without_fastpath_maps_rejected(tmp_path, etsf_env, etsf_bpf, build_dir):
    root = etsf_env["ETSF_PIN_ROOT"]
    with loaded(etsf_bpf, build_dir, "xdp_sip.bpf.o", root):
        base = tmp_path / "base.yml"
        base.write_text("version: 1\n")
        etsfctl("policy", "apply", str(base), env=etsf_env)
        before = dump_maps(etsf_bpf, root)
        pol = tmp_path / "svc.yml"
        pol.write_text(services("198.18.31.11"))
        r = etsfctl("policy", "apply", str(pol), env=etsf_env, check=False)
        assert r.returncode != 0
        assert "policy.services: fast-path maps not found" in r.stderr and "\n" not in r.stderr.strip()
        assert dump_maps(etsf_bpf, root) == before


def test_services_swap_with_the_policy_slot(tmp_path, etsf_env, etsf_bpf, fp_loaded, monkeypatch):
    for k, v in etsf_env.items():
        monkeypatch.setenv(k, v)
    pol = tmp_path / "p.yml"
    pol.write_text(services("198.18.31.11", "198.18.31.12", "198.18.31.13"))
    r = json.loads(etsfctl("policy", "apply", str(pol), "--json", env=etsf_env).stdout)
    slot, svc_slots, bk, live = _fp_view(etsf_env)
    assert r["slot"] == slot and svc_slots == [slot]
    ids = {a: i for i, (a, _bits) in bk.items()}
    assert set(ids) == {"198.18.31.11", "198.18.31.12", "198.18.31.13"}
    assert all(bits == (0x10 << slot) for _a, bits in bk.values())
    assert [b["address"] for b in live[0]["backends"]] == sorted(ids)

    # remove .12 and add .14: .11/.13 keep their ids, membership follows the slot
    pol.write_text(services("198.18.31.11", "198.18.31.13", "198.18.31.14"))
    r = json.loads(etsfctl("policy", "apply", str(pol), "--diff", "--json", env=etsf_env).stdout)
    slot2, svc_slots2, bk2, live2 = _fp_view(etsf_env)
    assert slot2 == 1 - slot and svc_slots2 == [slot2]
    ids2 = {a: i for i, (a, _bits) in bk2.items()}
    assert set(ids2) == {"198.18.31.11", "198.18.31.13", "198.18.31.14"}
    assert ids2["198.18.31.11"] == ids["198.18.31.11"] and ids2["198.18.31.13"] == ids["198.18.31.13"]
    assert all(bits == (0x10 << slot2) for _a, bits in bk2.values())
    assert [c["path"] for c in r["diff"]] == ["services"]
    show = json.loads(etsfctl("policy", "show", "--json", env=etsf_env).stdout)
    assert "198.18.31.14" in json.dumps(show)

    # same file again: no change (idempotent); then no services at all: everything freed
    r = json.loads(etsfctl("policy", "apply", str(pol), "--json", env=etsf_env).stdout)
    assert r["changed"] is False
    pol.write_text("version: 1\n")
    etsfctl("policy", "apply", str(pol), env=etsf_env)
    _slot3, svc_slots3, bk3, live3 = _fp_view(etsf_env)
    assert svc_slots3 == [] and bk3 == {} and live3 == []
