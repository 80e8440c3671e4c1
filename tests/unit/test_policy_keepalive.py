"""The keepalive: policy section: normalisation, compilation into etsf_ka_cfg / etsf_ka_id /
policy flags, decode back from those bytes, and the diff when it is switched off."""

import ctypes

from etsf import layout
from etsf import policy as P
from etsf.policy import image
from etsf.policy.changes import diff

KA = """\
version: 1
keepalive:
  enabled: true
  identities: [198.18.0.1, SBC.Example.com., "ping@[2001:DB8::1]", keepalive@198.18.0.2]
  allow: INVITE, ACK, CANCEL, BYE, OPTIONS
  supported: replaces
  server: eTSF
  sample_every: 100
  nat_keepalive: drop
  probe: {address: "::1", port: 5070, interval_ms: 500, timeout_ms: 200, alive_ms: 1500}
"""


def test_default_is_off_and_not_shown():
    p = P.load_text("version: 1\n")
    assert "keepalive" not in p.to_dict()
    assert p.keepalive["enabled"] is False and p.keepalive["nat_keepalive"] == "pass"
    img = image.compile_policy(p, 0, 1)
    pol = layout.Policy.from_bytes(img.policy)
    assert pol.flags & (layout.POL_F_KA | layout.POL_F_NAT_DROP) == 0
    assert img.ka_ids == {} and img.ka_sample_every == 0
    assert layout.KaCfg.from_bytes(img.ka_cfg).hdr_len == 0


def test_normalised():
    ka = P.load_text(KA).to_dict()["keepalive"]
    assert ka["identities"] == ["198.18.0.1", "keepalive@198.18.0.2", "ping@2001:db8::1", "sbc.example.com"]
    assert (ka["allow"], ka["accept"], ka["supported"], ka["server"]) == (
        "INVITE, ACK, CANCEL, BYE, OPTIONS", None, "replaces", "eTSF")
    assert ka["probe"] == {"address": "::1", "port": 5070, "interval_ms": 500, "timeout_ms": 200,
                           "alive_ms": 1500}


def test_compiled_maps():
    img = image.compile_policy(P.load_text(KA), 1, 7)
    pol = layout.Policy.from_bytes(img.policy)
    assert pol.flags == (layout.POL_F_VALID | layout.POL_F_MARK | layout.POL_F_KA | layout.POL_F_NAT_DROP
                         | layout.POL_F_NO_ACL4 | layout.POL_F_NO_ACL6)
    assert img.ka_sample_every == 100
    c = layout.KaCfg.from_bytes(img.ka_cfg)
    want = b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\nSupported: replaces\r\nServer: eTSF\r\n"
    assert bytes(c.hdr[:c.hdr_len]) == want and not any(c.hdr[c.hdr_len:])
    assert (c.probe_family, bytes(c.probe_addr), c.probe_port) == (6, bytes(15) + b"\x01", 5070)
    assert (c.probe_interval_ms, c.probe_timeout_ms, c.probe_alive_ms) == (500, 200, 1500)
    prim, alias = layout.KA_ID_PRIMARY.to_bytes(4, "little"), layout.KA_ID_ALIAS.to_bytes(4, "little")
    assert img.ka_ids == {
        layout.ka_id_key(1, b"198.18.0.1"): prim,
        layout.ka_id_key(1, b"sbc.example.com"): prim,
        layout.ka_id_key(1, b"198.18.0.2", b"keepalive"): prim,
        layout.ka_id_key(1, b"[2001:db8::1]", b"ping"): prim,
        layout.ka_id_key(1, b"[2001:0db8:0000:0000:0000:0000:0000:0001]", b"ping"): alias,
    }


def test_identity_key_layout():
    k = layout.KaIdKey.from_bytes(layout.ka_id_key(1, b"[2001:DB8::1]", b"Ping"))
    assert (k.slot, k.host_len, k.user_len) == (1, 13, 4)
    assert bytes(k.host[:13]) == b"{2001:db8::1}" and not any(k.host[13:])
    assert bytes(k.user[:4]) == b"Ping" and not any(k.user[4:])
    assert ctypes.sizeof(layout.KaIdKey) == 104


def test_decode_round_trip():
    p = P.load_text(KA)
    img = image.compile_policy(p, 0, 3)
    ids = [image.decode_ka_key(k)[1] for k, v in img.ka_ids.items()
           if int.from_bytes(v, "little") & layout.KA_ID_PRIMARY]
    assert {image.decode_ka_key(k)[0] for k in img.ka_ids} == {0}
    ctl = layout.Ctl(ka_sample_every=img.ka_sample_every)
    ka = image.decode_keepalive(layout.Policy.from_bytes(img.policy).flags, img.ka_cfg, ids, ctl.ka_sample_every)
    out = image.decode(img.policy, [], ctl, ka)
    assert out["keepalive"] == p.to_dict()["keepalive"]
    # decoded text is a valid policy again, equal to the original
    assert P.validate({"version": 1, "keepalive": out["keepalive"]}).to_dict()["keepalive"] == out["keepalive"]


def test_diff_switching_keepalive_off_lists_each_field():
    old = P.load_text(KA).to_dict()
    new = P.load_text("version: 1\n").to_dict()
    ch = {c["path"]: (c["old"], c["new"]) for c in diff(old, new) if c["path"].startswith("keepalive.")}
    assert ch["keepalive.enabled"] == (True, False)
    assert ch["keepalive.nat_keepalive"] == ("drop", "pass")
    assert ch["keepalive.sample_every"] == (100, 0)
    assert diff(new, new) == [] and diff(old, old) == []
