"""Pure-Python tests of the policy schema: validation, compilation, decode, diff."""

import ctypes
import ipaddress

import pytest

from etsf import layout
from etsf import policy as P

from policy_cases import FULL, INVALID  # noqa: E402  (tests/unit is on sys.path)


@pytest.mark.parametrize("name,text,expected", INVALID, ids=[i[0] for i in INVALID])
def test_invalid_policy_one_line_error_naming_field(name, text, expected):
    with pytest.raises(P.PolicyError) as ei:
        P.load_text(text)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(expected), msg
    assert msg.split(":", 1)[0] == ei.value.path


def test_at_least_15_kinds_of_invalid_policies():
    assert len({e[2].split(":")[0] for e in INVALID}) >= 15


def test_defaults_minimal_policy():
    p = P.load_text("version: 1\n")
    d = p.to_dict()
    assert d["sip_ports"] == [5060]
    assert d["tls_ports"] == [5061]
    assert d["trust"] == [] and d["deny"] == []
    assert all(v == {"rate": 0, "burst": 1} for v in d["rate_limits"].values())
    assert d["aggregation"] == {"ipv4_prefix": 32, "ipv6_prefix": 64}
    assert d["priorities"]["INVITE"] == "high"
    for m in ("ACK", "BYE", "CANCEL", "PRACK", "UPDATE"):
        assert d["priorities"][m] == "critical"
    for m in ("REGISTER", "OPTIONS", "SUBSCRIBE", "PUBLISH"):
        assert d["priorities"][m] == "low"
    for m in ("NOTIFY", "INFO", "REFER", "MESSAGE", "OTHER"):
        assert d["priorities"][m] == "normal"
    assert d["overload"] == {"level": None, "shed_below": ["low", "normal", "high", "critical"]}
    assert d["marking"] == {"enabled": True, "dscp": 24, "skb_priority": 0}
    assert d["deadman"] == {"timeout_ms": 0}


def test_full_example_values():
    p = P.load_text(FULL)
    d = p.to_dict()
    assert d["sip_ports"] == [5060, 5080]
    assert d["trust"] == ["198.18.10.0/24", "2001:db8:10::/48"]
    assert d["deny"] == ["198.18.66.0/24", "198.18.67.7/32"]
    assert d["rate_limits"]["options"] == {"rate": 5, "burst": 5}   # burst defaults to rate
    assert d["rate_limits"]["other"] == {"rate": 0, "burst": 1}
    assert d["priorities"]["INVITE"] == "critical"
    assert d["priorities"]["MESSAGE"] == "low"                      # case-insensitive method
    assert d["marking"]["dscp"] == 26                               # AF31
    assert d["overload"]["level"] == 1


@pytest.mark.parametrize("name,value", [("CS3", 24), ("EF", 46), ("AF41", 34), ("cs0", 0), (63, 63), (0, 0)])
def test_dscp_names(name, value):
    assert P.load_text(f"version: 1\nmarking: {{dscp: {name}}}\n").dscp == value


def test_docs_example_is_valid():
    import pathlib
    import re
    doc = pathlib.Path(__file__).resolve().parents[2] / "docs" / "policy.md"
    text = doc.read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    full = [b for b in blocks if b.startswith("version: 1")]
    assert full, "docs/policy.md has a full example"
    for b in full:
        P.load_text(b)


# ---------------------------------------------------------------------------
# compile
# ---------------------------------------------------------------------------


def test_compile_struct_fields():
    p = P.load_text(FULL)
    img = P.compile_policy(p, slot=1, generation=7)
    assert len(img.policy) == ctypes.sizeof(layout.Policy)
    s = layout.Policy.from_buffer_copy(img.policy)
    assert s.generation == 7
    assert s.flags == P.POL_F_VALID | P.POL_F_MARK      # ACL entries of both families: no NO_ACL flag
    assert list(s.sip_ports) == [5060, 5080, 0, 0, 0, 0, 0, 0]
    assert list(s.tls_ports) == [5061, 0, 0, 0]
    assert s.method_prio[layout.Method.INVITE] == layout.Prio.CRITICAL
    assert s.method_prio[layout.Method.MESSAGE] == layout.Prio.LOW
    assert s.method_prio[layout.Method.REGISTER] == layout.Prio.LOW
    assert s.method_prio[layout.Method.BYE] == layout.Prio.CRITICAL
    assert s.method_prio[layout.Method.NOTIFY] == layout.Prio.NORMAL
    assert list(s.shed_below) == [0, 1, 2, 3]
    assert (s.agg_prefix_v4, s.agg_prefix_v6) == (24, 56)
    assert s.dscp == 26 and s.skb_priority == 6
    assert (s.rate[layout.RlClass.REGISTER].rate_pps, s.rate[layout.RlClass.REGISTER].burst) == (10, 20)
    assert (s.rate[layout.RlClass.INVITE].rate_pps, s.rate[layout.RlClass.INVITE].burst) == (50, 100)
    assert (s.rate[layout.RlClass.OPTIONS].rate_pps, s.rate[layout.RlClass.OPTIONS].burst) == (5, 5)
    assert s.rate[layout.RlClass.OTHER].rate_pps == 0
    assert img.overload_level == 1
    assert img.deadman_ns == 5_000_000_000


@pytest.mark.parametrize("text, tm_off", [
    ("version: 1\n", False),
    ("version: 1\ntelemetry: null\n", False),
    ("version: 1\ntelemetry: {transactions: true}\n", False),
    ("version: 1\ntelemetry: {transactions: false}\n", True),
])
def test_compile_telemetry_transactions_flag(text, tm_off):
    """`telemetry.transactions: false` sets ETSF_POL_F_TM_OFF (and nothing else); the live policy
    decoded from the slot says the same, and shows the key only when it is not the default."""
    p = P.load_text(text)
    s = layout.Policy.from_buffer_copy(P.compile_policy(p, slot=0, generation=1).policy)
    assert s.flags == (P.POL_F_VALID | P.POL_F_MARK | (layout.POL_F_TM_OFF if tm_off else 0)
                       | layout.POL_F_NO_ACL4 | layout.POL_F_NO_ACL6)
    live = P.decode(bytes(s), [], None)
    live.pop("generation")
    assert live == p.to_dict()
    assert live.get("telemetry") == ({"transactions": False} if tm_off else None)


def test_compile_marking_disabled_clears_flag():
    p = P.load_text("version: 1\nmarking: {enabled: false}\n")
    s = layout.Policy.from_buffer_copy(P.compile_policy(p, 0, 1).policy)
    assert s.flags == P.POL_F_VALID | layout.POL_F_NO_ACL4 | layout.POL_F_NO_ACL6


@pytest.mark.parametrize("acl, no_acl", [
    ("", layout.POL_F_NO_ACL4 | layout.POL_F_NO_ACL6),
    ("trust: [198.18.1.0/24]\n", layout.POL_F_NO_ACL6),
    ("deny: [2001:db8::/32]\n", layout.POL_F_NO_ACL4),
    ("trust: [198.18.1.0/24]\ndeny: [2001:db8::/32]\n", 0),
])
def test_compile_no_acl_flags(acl, no_acl):
    """A family the slot has no ACL entry for is flagged (the programs skip its trie lookup);
    the flags do not show in the live policy decoded from the slot."""
    p = P.load_text("version: 1\n" + acl)
    img = P.compile_policy(p, 0, 1)
    s = layout.Policy.from_buffer_copy(img.policy)
    assert s.flags & (layout.POL_F_NO_ACL4 | layout.POL_F_NO_ACL6) == no_acl
    assert bool(img.acl_v4) == (not no_acl & layout.POL_F_NO_ACL4)
    assert bool(img.acl_v6) == (not no_acl & layout.POL_F_NO_ACL6)
    entries = [(P.decode_acl_key(k)[1], int.from_bytes(v, "little"))
               for k, v in {**img.acl_v4, **img.acl_v6}.items()]
    live = P.decode(bytes(s), entries, None)
    live.pop("generation")
    assert live == p.to_dict()


def test_compile_acl_keys():
    p = P.load_text(FULL)
    img = P.compile_policy(p, slot=1, generation=1)
    assert len(img.acl_v4) == 3 and len(img.acl_v6) == 1
    got = {}
    for k, v in list(img.acl_v4.items()) + list(img.acl_v6.items()):
        slot, net = P.decode_acl_key(k)
        assert slot == 1
        got[str(net)] = int.from_bytes(v, "little")
    assert got == {"198.18.10.0/24": layout.AclAction.TRUST, "2001:db8:10::/48": layout.AclAction.TRUST,
                   "198.18.66.0/24": layout.AclAction.DENY, "198.18.67.7/32": layout.AclAction.DENY}
    k = layout.AclV4Key.from_buffer_copy(next(iter(img.acl_v4)))
    assert k.prefixlen == 8 + 24 and k.slot == 1
    assert bytes(k.addr) == ipaddress.ip_address("198.18.10.0").packed
    assert len(next(iter(img.acl_v6))) == ctypes.sizeof(layout.AclV6Key)


def test_decode_roundtrip():
    p = P.load_text(FULL)
    img = P.compile_policy(p, slot=0, generation=3)
    acl = [(P.decode_acl_key(k)[1], int.from_bytes(v, "little"))
           for k, v in list(img.acl_v4.items()) + list(img.acl_v6.items())]
    ctl = layout.Ctl()
    ctl.overload_level = 1
    ctl.deadman_ns = 5_000_000_000
    live = P.decode(img.policy, acl, ctl)
    assert live.pop("generation") == 3
    assert live == p.to_dict()
    assert P.diff(live, p.to_dict()) == []


def test_decode_invalid_slot_is_none():
    assert P.decode(bytes(ctypes.sizeof(layout.Policy)), [], None) is None


# ---------------------------------------------------------------------------
# diff
# ---------------------------------------------------------------------------


def test_diff_changes():
    old = P.load_text(FULL).to_dict()
    new_text = FULL.replace("register: {rate: 10, burst: 20}", "register: {rate: 15, burst: 20}") \
                   .replace("  - 198.18.66.0/24\n", "  - 198.18.68.0/24\n") \
                   .replace("dscp: AF31", "dscp: CS3")
    new = P.load_text(new_text).to_dict()
    ch = P.diff(old, new)
    assert {"path": "rate_limits.register.rate", "op": "change", "old": 10, "new": 15} in ch
    assert {"path": "deny", "op": "add", "value": "198.18.68.0/24"} in ch
    assert {"path": "deny", "op": "remove", "value": "198.18.66.0/24"} in ch
    assert {"path": "marking.dscp", "op": "change", "old": 26, "new": 24} in ch
    assert len(ch) == 4
    text = P.format_diff(ch)
    assert "~ rate_limits.register.rate: 10 -> 15" in text
    assert "+ deny: 198.18.68.0/24" in text and "- deny: 198.18.66.0/24" in text


def test_diff_identical_is_empty_and_order_insensitive():
    a = P.load_text("version: 1\nsip_ports: [5080, 5060]\ntrust: [198.18.2.0/24, 198.18.1.0/24]\n").to_dict()
    b = P.load_text("version: 1\nsip_ports: [5060, 5080]\ntrust: [198.18.1.0/24, 198.18.2.0/24]\n").to_dict()
    assert P.diff(a, b) == []
    assert P.format_diff([]) == "no changes"


def test_diff_overload_level_unset_means_keep():
    old = P.load_text("version: 1\noverload: {level: 2}\n").to_dict()
    new = P.load_text("version: 1\n").to_dict()
    assert P.diff(old, new) == []


def test_diff_against_nothing_lists_everything():
    ch = P.diff(None, P.load_text("version: 1\ntrust: [198.18.1.0/24]\n").to_dict())
    paths = {c["path"] for c in ch}
    assert {"version", "sip_ports", "trust", "rate_limits.register.rate"} <= paths
