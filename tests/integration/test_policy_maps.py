"""Policy apply against the REAL maps of the REAL objects (unique pin root).

* every invalid policy (>= 15 kinds) is rejected by `etsfctl policy apply` with one
  line naming the field, and every map is byte-identical before and after;
* a valid apply writes the inactive slot, flips etsf_ctl.active_slot, bumps the
  generation, removes the old slot's ACL entries -- and the kernel program uses it
  (BPF_PROG_TEST_RUN with a SIP REGISTER from a denied / a normal source).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import etsfctl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from policy_cases import FULL, INVALID  # noqa: E402

XDP_PASS, XDP_DROP = 2, 1
PERCPU_TYPES = {5, 6, 10}  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH


@pytest.fixture
def loaded(etsf_env, etsf_bpf, build_dir):
    """Load both objects (maps pinned under the unique pin root); no attach."""
    root = etsf_env["ETSF_PIN_ROOT"]
    progs = {}
    progs.update(etsf_bpf.load_object(os.path.join(build_dir, "xdp_sip.bpf.o"), root))
    progs.update(etsf_bpf.load_object(os.path.join(build_dir, "tc_sip.bpf.o"), root))
    yield progs
    for p in progs.values():
        p.close()


def _is_percpu(m) -> bool:
    return int(m.map_type) in PERCPU_TYPES


def dump_maps(bpf, pin_root) -> dict[str, dict[bytes, object]]:
    out = {}
    d = os.path.join(pin_root, "maps")
    for name in sorted(os.listdir(d)):
        m = bpf.Map.open_pinned(os.path.join(d, name))
        try:
            pc = _is_percpu(m)
            entries = {}
            for k in list(m.keys()):
                k = bytes(k)
                entries[k] = tuple(bytes(v) for v in m.lookup_percpu(k)) if pc else m.lookup(k)
            out[name] = entries
        finally:
            m.close()
    assert "etsf_ctl" in out and "etsf_policy" in out and "etsf_acl_v4" in out
    return out


def _ctl(bpf, root):
    from etsf import layout
    m = bpf.open_map("etsf_ctl", root)
    try:
        return layout.Ctl.from_buffer_copy(m.lookup((0).to_bytes(4, "little")))
    finally:
        m.close()


def _set_ctl(bpf, root, **fields):
    ctl = _ctl(bpf, root)
    for k, v in fields.items():
        setattr(ctl, k, v)
    m = bpf.open_map("etsf_ctl", root)
    try:
        m.update((0).to_bytes(4, "little"), bytes(ctl))
    finally:
        m.close()


def _acl_slots(bpf, root):
    from etsf import policy
    slots = {}
    for name in ("etsf_acl_v4", "etsf_acl_v6"):
        m = bpf.open_map(name, root)
        try:
            for k in list(m.keys()):
                s, net = policy.decode_acl_key(bytes(k))
                slots.setdefault(s, set()).add(str(net))
        finally:
            m.close()
    return slots


def sip_register(src: str, dst: str = "198.18.2.2", sport: int = 5070, dport: int = 5060) -> bytes:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    payload = (
        f"REGISTER sip:{dst} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {src}:{sport};branch=z9hG4bK-etsf-it\r\n"
        f"From: <sip:it@{src}>;tag=1\r\n"
        f"To: <sip:it@{src}>\r\n"
        f"Call-ID: etsf-it-{src}@{src}\r\n"
        "CSeq: 1 REGISTER\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                 / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload)


@pytest.mark.parametrize("name,text,expected", INVALID, ids=[i[0] for i in INVALID])
def test_invalid_policy_changes_no_map(tmp_path, etsf_env, etsf_bpf, loaded, name, text, expected):
    root = etsf_env["ETSF_PIN_ROOT"]
    good = tmp_path / "good.yml"
    good.write_text(FULL)
    etsfctl("policy", "apply", str(good), env=etsf_env)          # a live policy to protect
    before = dump_maps(etsf_bpf, root)
    bad = tmp_path / "bad.yml"
    bad.write_text(text)
    for extra in ((), ("--check",), ("--diff",), ("--json",)):
        r = etsfctl("policy", "apply", str(bad), *extra, env=etsf_env, check=False)
        assert r.returncode == 1, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert lines[0] == f"etsfctl: error: {lines[0][len('etsfctl: error: '):]}"
        assert lines[0][len("etsfctl: error: "):].startswith(expected), lines[0]
        assert "Traceback" not in r.stderr
    after = dump_maps(etsf_bpf, root)
    assert after == before
    applied = Path(etsf_env["ETSF_STATE_DIR"]) / "policy.applied.yml"
    assert applied.read_text() == FULL


def test_valid_apply_flips_slot_and_kernel_uses_it(tmp_path, etsf_env, etsf_bpf, loaded):
    root = etsf_env["ETSF_PIN_ROOT"]
    xdp = loaded["xdp_sip"]
    denied = sip_register("198.18.66.5")
    normal = sip_register("198.18.3.9")

    # no policy yet: the classifier passes everything
    assert etsf_bpf.test_run(xdp.fd, denied)[0] == XDP_PASS
    ctl0 = _ctl(etsf_bpf, root)
    assert (ctl0.active_slot, ctl0.generation) == (0, 0)

    # --check writes nothing
    f1 = tmp_path / "p1.yml"
    f1.write_text(FULL)
    before = dump_maps(etsf_bpf, root)
    r = etsfctl("policy", "apply", str(f1), "--check", "--json", env=etsf_env)
    out = json.loads(r.stdout)
    assert out["check"] is True and out["changed"] is True
    assert {"path": "deny", "op": "add", "value": "198.18.66.0/24"} in out["diff"]
    assert dump_maps(etsf_bpf, root) == before

    # apply #1 -> slot 1, generation 1
    r = etsfctl("policy", "apply", str(f1), "--json", env=etsf_env)
    out = json.loads(r.stdout)
    assert out["changed"] is True and out["slot"] == 1 and out["generation"] == 1
    ctl = _ctl(etsf_bpf, root)
    assert (ctl.active_slot, ctl.generation, ctl.overload_level) == (1, 1, 1)
    assert ctl.deadman_ns == 5_000_000_000
    assert _acl_slots(etsf_bpf, root) == {1: {"198.18.10.0/24", "2001:db8:10::/48",
                                              "198.18.66.0/24", "198.18.67.7/32"}}
    # identical apply: idempotent, nothing written
    before = dump_maps(etsf_bpf, root)
    out = json.loads(etsfctl("policy", "apply", str(f1), "--json", env=etsf_env).stdout)
    assert out["changed"] is False and out["diff"] == []
    assert dump_maps(etsf_bpf, root) == before

    ctl.deadman_ns = 0          # keep the dead-man switch and shedding out of this check
    ctl.overload_level = 0
    m = etsf_bpf.open_map("etsf_ctl", root)
    m.update((0).to_bytes(4, "little"), bytes(ctl))
    m.close()
    assert etsf_bpf.test_run(xdp.fd, denied)[0] == XDP_DROP
    assert etsf_bpf.test_run(xdp.fd, normal)[0] == XDP_PASS

    # show decodes the live policy == the file
    live = json.loads(etsfctl("policy", "show", "--json", env=etsf_env).stdout)
    assert live["generation"] == 1 and live["active_slot"] == 1
    assert live["deny"] == ["198.18.66.0/24", "198.18.67.7/32"]
    assert live["rate_limits"]["register"] == {"rate": 10, "burst": 20}

    # apply #2 without the deny entry -> slot 0, generation 2, slot 1 ACL entries gone
    f2 = tmp_path / "p2.yml"
    f2.write_text(FULL.replace("  - 198.18.66.0/24\n", "").replace("deadman: {timeout_ms: 5000}", "deadman: {timeout_ms: 0}"))
    r = etsfctl("policy", "apply", str(f2), "--diff", env=etsf_env)
    assert "- deny: 198.18.66.0/24" in r.stdout
    assert "generation 2 live in slot 0" in r.stdout
    ctl = _ctl(etsf_bpf, root)
    assert (ctl.active_slot, ctl.generation, ctl.deadman_ns) == (0, 2, 0)
    assert ctl.overload_level == 1              # the policy sets overload.level: 1 again
    assert _acl_slots(etsf_bpf, root) == {0: {"198.18.10.0/24", "2001:db8:10::/48", "198.18.67.7/32"}}
    _set_ctl(etsf_bpf, root, overload_level=0)
    assert etsf_bpf.test_run(xdp.fd, denied)[0] == XDP_PASS
    assert etsf_bpf.test_run(xdp.fd, sip_register("198.18.67.7"))[0] == XDP_DROP
    # overload level 1 sheds REGISTER (low) from a normal source, INVITE (critical here) passes
    _set_ctl(etsf_bpf, root, overload_level=1)
    assert etsf_bpf.test_run(xdp.fd, sip_register("198.18.3.10"))[0] == XDP_DROP
    assert (Path(etsf_env["ETSF_STATE_DIR"]) / "policy.applied.yml").read_text() == f2.read_text()


def test_runtime_controls(etsf_env, etsf_bpf, loaded):
    root = etsf_env["ETSF_PIN_ROOT"]
    out = json.loads(etsfctl("overload", "set", "2", "--json", env=etsf_env).stdout)
    assert out == {"changed": True, "overload_level": 2, "previous": 0}
    assert _ctl(etsf_bpf, root).overload_level == 2
    out = json.loads(etsfctl("bypass", "on", "--json", env=etsf_env).stdout)
    assert out["bypass"] is True and _ctl(etsf_bpf, root).bypass == 1
    etsfctl("bypass", "off", env=etsf_env)
    assert _ctl(etsf_bpf, root).bypass == 0
    t0 = etsf_bpf.monotonic_ns()
    etsfctl("heartbeat", "--once", env=etsf_env)
    assert _ctl(etsf_bpf, root).heartbeat_ns >= t0
    st = json.loads(etsfctl("status", "--json", env=etsf_env).stdout)
    assert st["overload_level"] == 2 and st["bypass"] is False
    assert "etsf_ctl" in st["pins"]["maps"]
    assert st["heartbeat_age_ms"] is not None and st["heartbeat_age_ms"] < 60_000


KA_POLICY = """\
version: 1
keepalive:
  enabled: true
  identities: [198.18.2.2, "ping@[2001:db8::2]"]
  allow: INVITE, ACK, BYE, CANCEL, OPTIONS
  server: eTSF
  sample_every: 50
  nat_keepalive: drop
"""


def _ka_ids(bpf, root):
    from etsf.policy import image
    m = bpf.open_map("etsf_ka_id", root)
    try:
        return {(image.decode_ka_key(bytes(k)) + (int.from_bytes(m.lookup(k)[:4], "little"),))
                for k in list(m.keys())}
    finally:
        m.close()


def sip_options(src: str, dst: str = "198.18.2.2") -> bytes:
    return sip_register(src, dst).replace(b"REGISTER sip:", b"OPTIONS sip:").replace(b"1 REGISTER", b"1 OPTIONS")


def test_keepalive_apply_and_kernel_answers(tmp_path, etsf_env, etsf_bpf, loaded):
    from etsf import layout
    from etsf import policy as P
    root = etsf_env["ETSF_PIN_ROOT"]
    xdp = loaded["xdp_sip"]
    f1 = tmp_path / "ka.yml"
    f1.write_text(KA_POLICY)
    out = json.loads(etsfctl("policy", "apply", str(f1), "--json", env=etsf_env).stdout)
    assert out["changed"] is True and out["slot"] == 1
    assert {"path": "keepalive.enabled", "op": "set", "old": None, "new": True} in out["diff"]
    ctl = _ctl(etsf_bpf, root)
    assert ctl.ka_sample_every == 50 and ctl.node_secret != 0
    assert _ka_ids(etsf_bpf, root) == {(1, "198.18.2.2", layout.KA_ID_PRIMARY),
                                       (1, "ping@2001:db8::2", layout.KA_ID_PRIMARY),
                                       (1, "ping@2001:0db8:0000:0000:0000:0000:0000:0002", layout.KA_ID_ALIAS)}
    m = etsf_bpf.open_map("etsf_ka_cfg", root)
    c = layout.KaCfg.from_bytes(m.lookup((1).to_bytes(4, "little")))
    m.close()
    assert bytes(c.hdr[:c.hdr_len]) == b"Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\nServer: eTSF\r\n"

    # the kernel: stale probe -> passed; alive -> answered; NAT keep-alive dropped
    assert etsf_bpf.test_run(xdp.fd, sip_options("198.18.3.9"))[0] == XDP_PASS
    _set_ctl(etsf_bpf, root, proxy_alive_until_ns=etsf_bpf.monotonic_ns() + 3600 * 10**9)
    ret, frame, _unused = etsf_bpf.test_run(xdp.fd, sip_options("198.18.3.9"))
    assert ret == 3 and b"SIP/2.0 200 OK\r\n" in frame and b"Server: eTSF\r\n" in frame   # XDP_TX
    assert etsf_bpf.test_run(xdp.fd, sip_options("198.18.3.9", dst="198.18.2.3"))[0] == XDP_PASS
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    nat = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="198.18.3.9", dst="198.18.2.2")
                / UDP(sport=5070, dport=5060) / b"\r\n\r\n")
    assert etsf_bpf.test_run(xdp.fd, nat)[0] == XDP_DROP

    # show decodes the live policy; the same file again changes nothing
    live = json.loads(etsfctl("policy", "show", "--json", env=etsf_env).stdout)
    assert live["keepalive"] == P.load_text(KA_POLICY).to_dict()["keepalive"]
    assert P.read_keepalive(root) == live["keepalive"]
    before = dump_maps(etsf_bpf, root)
    out = json.loads(etsfctl("policy", "apply", str(f1), "--json", env=etsf_env).stdout)
    assert out["changed"] is False and out["diff"] == []
    assert dump_maps(etsf_bpf, root) == before

    # keepalive off: slot 0 live, slot 1 identities gone, OPTIONS to the proxy again
    f2 = tmp_path / "off.yml"
    f2.write_text("version: 1\n")
    r = etsfctl("policy", "apply", str(f2), "--diff", env=etsf_env)
    assert "~ keepalive.enabled: true -> false" in r.stdout
    ctl = _ctl(etsf_bpf, root)
    assert (ctl.active_slot, ctl.ka_sample_every) == (0, 0)
    assert _ka_ids(etsf_bpf, root) == set()
    assert etsf_bpf.test_run(xdp.fd, sip_options("198.18.3.9"))[0] == XDP_PASS
    assert "keepalive" not in json.loads(etsfctl("policy", "show", "--json", env=etsf_env).stdout)
    assert P.read_keepalive(root)["enabled"] is False
