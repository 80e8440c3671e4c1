"""Policy history and rollback against the REAL maps of the REAL objects (unique pin root).

* apply A, apply B, ``etsfctl policy rollback`` -> the live policy, its ACL entries and the
  kernel's verdicts are A's again, in a new generation; the history lists 3 entries and the
  audit log the three events;
* a generation that is not kept -> one line naming it, every map byte-identical, history unchanged;
* the history keeps only the newest N;
* ``apply --defaults F --group F FILE --check --diff`` shows and applies the merged layers.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import etsfctl
from test_policy_maps import _acl_slots, _set_ctl, dump_maps, loaded, sip_register  # noqa: F401  pylint: disable=unused-import

XDP_PASS, XDP_DROP = 2, 1

A = """\
version: 1
deny: [198.18.66.0/24]
rate_limits:
  register: {rate: 10, burst: 20}
"""
B = """\
version: 1
deny: [198.18.77.0/24]
rate_limits:
  register: {rate: 99, burst: 200}
marking: {enabled: false}
"""


def _live(env):
    doc = json.loads(etsfctl("policy", "show", "--json", env=env).stdout)
    return {k: v for k, v in doc.items() if k not in ("generation", "active_slot")}, doc["generation"]


def _history(env):
    return json.loads(etsfctl("policy", "history", "--json", env=env).stdout)


def test_apply_apply_rollback_restores_first_policy(tmp_path, etsf_env, etsf_bpf, loaded):
    root = etsf_env["ETSF_PIN_ROOT"]
    xdp = loaded["xdp_sip"]
    fa, fb = tmp_path / "a.yml", tmp_path / "b.yml"
    fa.write_text(A)
    fb.write_text(B)
    etsfctl("policy", "apply", str(fa), env=etsf_env)
    live_a, gen_a = _live(etsf_env)
    acl_a = _acl_slots(etsf_bpf, root)
    etsfctl("policy", "apply", str(fb), env=etsf_env)
    live_b, gen_b = _live(etsf_env)
    assert (gen_a, gen_b) == (1, 2) and live_b != live_a
    _set_ctl(etsf_bpf, root, overload_level=0)
    assert etsf_bpf.test_run(xdp.fd, sip_register("198.18.66.5"))[0] == XDP_PASS
    assert etsf_bpf.test_run(xdp.fd, sip_register("198.18.77.5"))[0] == XDP_DROP

    # check mode shows the way back and writes nothing
    before = dump_maps(etsf_bpf, root)
    r = etsfctl("policy", "rollback", "--check", env=etsf_env)
    assert "rollback to generation 1" in r.stdout
    assert "~ rate_limits.register.rate: 99 -> 10" in r.stdout
    assert "+ deny: 198.18.66.0/24" in r.stdout and "- deny: 198.18.77.0/24" in r.stdout
    assert dump_maps(etsf_bpf, root) == before

    out = json.loads(etsfctl("policy", "rollback", "--json", env=etsf_env).stdout)
    assert out["changed"] is True and out["rollback_to"] == 1 and out["generation"] == 3
    live_r, gen_r = _live(etsf_env)
    assert gen_r == 3 and live_r == live_a
    # same ACL prefixes as A, now in the other slot (the swap went through the inactive slot)
    assert list(_acl_slots(etsf_bpf, root).values()) == list(acl_a.values())
    assert etsf_bpf.test_run(xdp.fd, sip_register("198.18.66.5"))[0] == XDP_DROP
    assert etsf_bpf.test_run(xdp.fd, sip_register("198.18.77.5"))[0] == XDP_PASS

    hist = _history(etsf_env)
    assert [(h["generation"], h["action"], h["live"]) for h in hist] == [
        (1, "apply", False), (2, "apply", False), (3, "rollback", True)]
    assert hist[2]["rollback_to"] == 1 and hist[2]["previous_generation"] == 2
    assert hist[2]["sha256"] == hist[0]["sha256"] != hist[1]["sha256"]
    table = etsfctl("policy", "history", env=etsf_env).stdout.splitlines()
    assert len(table) == 4 and table[3].startswith("*     3") and "rollback to 1" in table[3]
    audit = [json.loads(ln) for ln in
             (Path(etsf_env["ETSF_STATE_DIR"]) / "policy-audit.jsonl").read_text().splitlines()]
    assert [(a["event"], a["generation"]) for a in audit] == [("apply", 1), ("apply", 2), ("rollback", 3)]

    # rollback to an explicit generation: B again
    out = json.loads(etsfctl("policy", "rollback", "2", "--json", env=etsf_env).stdout)
    assert out["generation"] == 4 and _live(etsf_env)[0] == live_b


def test_bad_generation_changes_nothing(tmp_path, etsf_env, etsf_bpf, loaded):
    root = etsf_env["ETSF_PIN_ROOT"]
    fa = tmp_path / "a.yml"
    fa.write_text(A)
    # nothing kept yet: no earlier policy to go back to
    r = etsfctl("policy", "rollback", env=etsf_env, check=False)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "etsfctl: error: rollback: no policy older than the live generation 0 in the history (kept: none)"]
    etsfctl("policy", "apply", str(fa), env=etsf_env)
    before, hist = dump_maps(etsf_bpf, root), _history(etsf_env)
    for args, line in (
            (("7",), "rollback.generation: generation 7 is not in the policy history (kept: 1)"),
            ((), "rollback: no policy older than the live generation 1 in the history (kept: 1)")):
        for extra in ((), ("--check",), ("--json",)):
            r = etsfctl("policy", "rollback", *args, *extra, env=etsf_env, check=False)
            assert r.returncode == 1, r
            assert r.stderr.strip().splitlines() == [f"etsfctl: error: {line}"]
    r = etsfctl("policy", "rollback", "0", env=etsf_env, check=False)
    assert r.returncode == 2 and "must be in 1..4294967295" in r.stderr
    assert dump_maps(etsf_bpf, root) == before
    assert _history(etsf_env) == hist


def test_history_keeps_newest_n(tmp_path, etsf_env, etsf_bpf, loaded):
    f = tmp_path / "p.yml"
    for rate in (1, 2, 3, 4):
        f.write_text(A.replace("rate: 10", f"rate: {rate}"))
        etsfctl("policy", "apply", str(f), "--history-keep", "3", env=etsf_env)
    hist = _history(etsf_env)
    assert [h["generation"] for h in hist] == [2, 3, 4]
    assert [h["policy"] if "policy" in h else None for h in hist] == [None] * 3    # documents not listed
    kept = sorted(p.name for p in (Path(etsf_env["ETSF_STATE_DIR"]) / "policy-history").iterdir())
    assert kept == ["2.json", "3.json", "4.json"]
    doc = json.loads((Path(etsf_env["ETSF_STATE_DIR"]) / "policy-history" / "2.json").read_text())
    assert doc["policy"]["rate_limits"]["register"]["rate"] == 2
    r = etsfctl("policy", "rollback", "1", env=etsf_env, check=False)
    assert r.stderr.strip() == ("etsfctl: error: rollback.generation: generation 1 is not in the policy "
                                "history (kept: 2, 3, 4)")


def test_layered_apply_shows_and_applies_the_merge(tmp_path, etsf_env, etsf_bpf, loaded):
    d, g, h = tmp_path / "defaults.yml", tmp_path / "group.yml", tmp_path / "host.yml"
    d.write_text("version: 1\ndeny: [198.18.250.0/24]\ntrust: [198.19.0.0/24]\n"
                 "rate_limits: {register: {rate: 20, burst: 40}, invite: {rate: 30, burst: 60}}\n"
                 "sip_ports: [5060, 5080]\n")
    g.write_text("deny: [198.18.251.0/24]\nrate_limits: {register: {rate: 50}}\nsip_ports: [5070]\n")
    h.write_text("trust: [198.19.1.0/24]\nrate_limits: {invite: {burst: 99}}\n")
    r = etsfctl("policy", "apply", "--defaults", str(d), "--group", str(g), str(h), "--check", "--diff",
                env=etsf_env)
    assert r.stdout.startswith("merged policy (defaults < group < host):\n")
    assert "+ deny: 198.18.250.0/24\n+ deny: 198.18.251.0/24\n" in r.stdout
    assert "+ rate_limits.register.rate: 50\n" in r.stdout
    etsfctl("policy", "apply", "--defaults", str(d), "--group", str(g), str(h), env=etsf_env)
    live, _gen = _live(etsf_env)
    assert live["deny"] == ["198.18.250.0/24", "198.18.251.0/24"]
    assert live["trust"] == ["198.19.0.0/24", "198.19.1.0/24"]
    assert live["sip_ports"] == [5070]
    assert live["rate_limits"]["register"] == {"rate": 50, "burst": 40}
    assert live["rate_limits"]["invite"] == {"rate": 30, "burst": 99}
    # a layer of the wrong shape: one line naming it, nothing written
    before = dump_maps(etsf_bpf, root := etsf_env["ETSF_PIN_ROOT"])
    g.write_text("deny: 198.18.251.0/24\n")
    r = etsfctl("policy", "apply", "--defaults", str(d), "--group", str(g), str(h), env=etsf_env, check=False)
    assert r.returncode == 1 and r.stderr.strip() == (
        f"etsfctl: error: group ({g}).deny: must be a list of CIDR prefixes (got str)")
    assert dump_maps(etsf_bpf, root) == before


def test_policy_live_before_history_is_adopted_and_can_be_rolled_back_to(tmp_path, etsf_env, etsf_bpf, loaded):
    import shutil
    fa, fb = tmp_path / "a.yml", tmp_path / "b.yml"
    fa.write_text(A)
    fb.write_text(B)
    etsfctl("policy", "apply", str(fa), env=etsf_env)
    live_a, _gen = _live(etsf_env)
    shutil.rmtree(Path(etsf_env["ETSF_STATE_DIR"]) / "policy-history")    # an agent that kept none
    etsfctl("policy", "apply", str(fb), env=etsf_env)
    assert [(h["generation"], h["action"]) for h in _history(etsf_env)] == [(1, "adopt"), (2, "apply")]
    out = json.loads(etsfctl("policy", "rollback", "--json", env=etsf_env).stdout)
    assert out["rollback_to"] == 1 and _live(etsf_env)[0] == live_a
