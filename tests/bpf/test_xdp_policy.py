"""xdp_sip policy: fail-safe, ACLs, GCRA rate limits, overload shedding, protection."""
import socket

import pytest

from etsf import bpf
from etsf import layout as L

from .helpers import SRC4, M, R, V, sip_request, sip_response, udp4, udp6

RL = L.RlClass
BIG = 10 ** 12          # deadman/heartbeat values far from any test duration


def test_bypass(env):
    env.set_policy()
    env.acl("198.18.0.0/15", L.AclAction.DENY)
    c = env.ctl()
    c.bypass = 1
    env.maps["etsf_ctl"].update(bytes(4), bytes(c))
    env.xdp(udp4(sip_request("INVITE")), V.PASS, M.UNKNOWN, R.BYPASS)


def test_deadman_stale(env):
    env.set_policy()
    env.acl("198.18.0.0/15", L.AclAction.DENY)
    now = bpf.monotonic_ns()
    c = env.ctl()
    c.deadman_ns = 1_000_000_000
    c.heartbeat_ns = now - 100 * 1_000_000_000
    env.maps["etsf_ctl"].update(bytes(4), bytes(c))
    env.xdp(udp4(sip_request("INVITE")), V.PASS, M.UNKNOWN, R.DEADMAN)


def test_deadman_fresh(env):
    env.set_policy()
    c = env.ctl()
    c.deadman_ns = BIG
    c.heartbeat_ns = bpf.monotonic_ns()
    env.maps["etsf_ctl"].update(bytes(4), bytes(c))
    env.xdp(udp4(sip_request("INVITE")), V.PASS, M.INVITE, R.OK)


def test_deadman_off(env):
    env.set_policy()
    c = env.ctl()
    c.deadman_ns = 0
    c.heartbeat_ns = 1          # ancient, but the switch is off
    env.maps["etsf_ctl"].update(bytes(4), bytes(c))
    env.xdp(udp4(sip_request("INVITE")), V.PASS, M.INVITE, R.OK)


def test_invalid_slot_policy_is_no_policy(env):
    env.set_policy(flags=0)
    env.acl("198.18.0.0/15", L.AclAction.DENY)
    env.xdp(udp4(sip_request("INVITE")), V.PASS, M.INVITE, R.NO_POLICY)


def test_deny_v4(env):
    env.set_policy()
    env.acl("198.18.1.0/24", L.AclAction.DENY)
    li = env.xdp(udp4(sip_request("INVITE")), V.DROP, M.INVITE, R.DENY)
    assert (li.verdict, li.reason) == (V.DROP, R.DENY)
    env.xdp(udp4(sip_request("INVITE"), src="198.18.2.10"), V.PASS, M.INVITE, R.OK)


def test_deny_v6(env):
    env.set_policy()
    env.acl("2001:db8:1::/48", L.AclAction.DENY)
    env.xdp(udp6(sip_request("REGISTER")), V.DROP, M.REGISTER, R.DENY)


def test_deny_drops_unparsed_on_sip_port(env):
    env.set_policy()
    env.acl(f"{SRC4}/32", L.AclAction.DENY)
    env.xdp(udp4(b"\x00garbage"), V.DROP, M.UNKNOWN, R.DENY)
    env.xdp(udp4(b"\x16\x03", dport=5061), V.DROP, M.UNKNOWN, R.DENY)


def test_deny_does_not_touch_other_ports(env):
    env.set_policy()
    env.acl(f"{SRC4}/32", L.AclAction.DENY)
    env.xdp(udp4(b"dns?", sport=40000, dport=53), V.PASS, M.UNKNOWN, R.NOT_SIP_PORT)


def test_deny_in_inactive_slot_ignored(env):
    env.set_policy(slot=0)
    env.acl("198.18.0.0/15", L.AclAction.DENY, slot=1)
    env.xdp(udp4(sip_request("INVITE")), V.PASS, M.INVITE, R.OK)
    # atomic swap: slot 1 becomes live with its ACL
    env.set_policy(slot=1)
    env.xdp(udp4(sip_request("INVITE")), V.DROP, M.INVITE, R.DENY)


def _apply_compiled(env, text):
    """The slot as the agent writes it: compile_policy's struct and ACL entries in slot 0."""
    from etsf import policy as P
    img = P.compile_policy(P.load_text(text), slot=0, generation=1)
    for name, entries in (("etsf_acl_v4", img.acl_v4), ("etsf_acl_v6", img.acl_v6)):
        for k, v in entries.items():
            env.maps[name].update(k, v)
    env.set_policy(L.Policy.from_bytes(img.policy))
    return L.Policy.from_bytes(img.policy)


def test_compiled_policy_skips_only_the_empty_family(env):
    """A v6-only deny list: the v4 lookup is skipped (flag), the v6 source is still denied."""
    pol = _apply_compiled(env, "version: 1\ndeny: ['2001:db8:1::/48']\n")
    assert pol.flags & L.POL_F_NO_ACL4 and not pol.flags & L.POL_F_NO_ACL6
    env.xdp(udp6(sip_request("REGISTER")), V.DROP, M.REGISTER, R.DENY)
    env.xdp(udp4(sip_request("INVITE")), V.PASS, M.INVITE, R.OK)
    pol = _apply_compiled(env, "version: 1\ndeny: ['198.18.1.0/24']\n")
    assert pol.flags & L.POL_F_NO_ACL6 and not pol.flags & L.POL_F_NO_ACL4
    env.xdp(udp4(sip_request("INVITE")), V.DROP, M.INVITE, R.DENY)


def test_no_acl_flag_is_what_the_program_trusts(env):
    """The flag says the family has no entry: an entry written behind it is not looked up (only
    compile_policy sets it, with the slot's entries); without the flag the entry applies."""
    pol = env.set_policy()
    env.acl(f"{SRC4}/32", L.AclAction.DENY)
    pol.flags |= L.POL_F_NO_ACL4
    env.set_policy(pol)
    env.xdp(udp4(sip_request("INVITE")), V.PASS, M.INVITE, R.OK)
    pol.flags &= ~L.POL_F_NO_ACL4
    env.set_policy(pol)
    env.xdp(udp4(sip_request("INVITE")), V.DROP, M.INVITE, R.DENY)


def test_trust_bypasses_limits(env):
    env.set_policy(rates={RL.INVITE: (1, 1)}, shed_below=[4, 4, 4, 4])
    env.acl(f"{SRC4}/32", L.AclAction.TRUST)
    env.set_ctl(overload_level=3)
    env.xdp(udp4(sip_request("INVITE")), V.PASS, M.INVITE, R.TRUSTED, n=5)


def test_trust_v6(env):
    env.set_policy(rates={RL.REGISTER: (1, 1)})
    env.acl("2001:db8:1::/48", L.AclAction.TRUST)
    env.xdp(udp6(sip_request("REGISTER")), V.PASS, M.REGISTER, R.TRUSTED, n=3)


def test_deny_broad_trust_specific(env):
    """Longest prefix wins: a trusted /32 inside a denied /16 is trusted."""
    env.set_policy()
    env.acl("198.18.0.0/16", L.AclAction.DENY)
    env.acl(f"{SRC4}/32", L.AclAction.TRUST)
    env.xdp(udp4(sip_request("INVITE")), V.PASS, M.INVITE, R.TRUSTED)
    env.xdp(udp4(sip_request("INVITE"), src="198.18.7.7"), V.DROP, M.INVITE, R.DENY)


def test_trust_broad_deny_specific(env):
    env.set_policy()
    env.acl("198.18.0.0/16", L.AclAction.TRUST)
    env.acl(f"{SRC4}/32", L.AclAction.DENY)
    env.xdp(udp4(sip_request("INVITE")), V.DROP, M.INVITE, R.DENY)
    env.xdp(udp4(sip_request("INVITE"), src="198.18.7.7"), V.PASS, M.INVITE, R.TRUSTED)


# ---- rate limiting ----------------------------------------------------------------
# rate 1/s: the bucket refills one token per second, far slower than a test runs,
# so "burst N passes N then drops" is exact.

@pytest.mark.parametrize("method,cls", [
    ("REGISTER", RL.REGISTER), ("OPTIONS", RL.OPTIONS), ("INVITE", RL.INVITE),
    ("SUBSCRIBE", RL.OTHER), ("MESSAGE", RL.OTHER),
])
@pytest.mark.parametrize("burst", [1, 5])
def test_gcra_burst_exact(env, method, cls, burst):
    env.set_policy(rates={cls: (1, burst)})
    m = M[method]
    env.xdp(udp4(sip_request(method)), V.PASS, m, R.OK, n=burst)
    env.xdp(udp4(sip_request(method)), V.DROP, m, R.RATE_LIMIT, n=3)
    k = L.RlKey(family=4, rl_class=cls, prefix=32)
    k.addr[:4] = [198, 18, 1, 10]
    st = L.RlState.from_bytes(env.maps["etsf_rl"].lookup(bytes(k)))
    assert (st.passed, st.dropped) == (burst, 3)


def test_gcra_under_limit(env):
    env.set_policy(rates={RL.REGISTER: (1, 100)})
    env.xdp(udp4(sip_request("REGISTER")), V.PASS, M.REGISTER, R.OK, n=50)


def test_rate_zero_unlimited(env):
    env.set_policy(rates={RL.REGISTER: (0, 1)})
    env.xdp(udp4(sip_request("REGISTER")), V.PASS, M.REGISTER, R.OK, n=20)


def test_rate_classes_independent(env):
    env.set_policy(rates={RL.REGISTER: (1, 2), RL.INVITE: (1, 2)})
    env.xdp(udp4(sip_request("REGISTER")), V.PASS, M.REGISTER, R.OK, n=2)
    env.xdp(udp4(sip_request("REGISTER")), V.DROP, M.REGISTER, R.RATE_LIMIT)
    env.xdp(udp4(sip_request("INVITE")), V.PASS, M.INVITE, R.OK, n=2)
    env.xdp(udp4(sip_request("OPTIONS")), V.PASS, M.OPTIONS, R.OK, n=5)   # class unlimited


def test_gcra_refill_via_tat(env):
    env.set_policy(rates={RL.OPTIONS: (1, 2)})
    env.xdp(udp4(sip_request("OPTIONS")), V.PASS, M.OPTIONS, R.OK, n=2)
    env.xdp(udp4(sip_request("OPTIONS")), V.DROP, M.OPTIONS, R.RATE_LIMIT)
    k = L.RlKey(family=4, rl_class=RL.OPTIONS, prefix=32)
    k.addr[:4] = [198, 18, 1, 10]
    st = L.RlState.from_bytes(env.maps["etsf_rl"].lookup(bytes(k)))
    st.tat_ns = bpf.monotonic_ns() - 10 * 10 ** 9      # long idle: full bucket again
    env.maps["etsf_rl"].update(bytes(k), bytes(st))
    env.xdp(udp4(sip_request("OPTIONS")), V.PASS, M.OPTIONS, R.OK, n=2)
    env.xdp(udp4(sip_request("OPTIONS")), V.DROP, M.OPTIONS, R.RATE_LIMIT)


def test_aggregation_v4_24(env):
    env.set_policy(rates={RL.REGISTER: (1, 3)}, agg_prefix_v4=24)
    env.xdp(udp4(sip_request("REGISTER"), src="198.18.1.10"), V.PASS, M.REGISTER, R.OK, n=2)
    env.xdp(udp4(sip_request("REGISTER"), src="198.18.1.99"), V.PASS, M.REGISTER, R.OK)
    env.xdp(udp4(sip_request("REGISTER"), src="198.18.1.200"), V.DROP, M.REGISTER,
            R.RATE_LIMIT)
    env.xdp(udp4(sip_request("REGISTER"), src="198.18.2.1"), V.PASS, M.REGISTER, R.OK, n=3)
    k = L.RlKey(family=4, rl_class=RL.REGISTER, prefix=24)
    k.addr[:4] = [198, 18, 1, 0]
    assert env.maps["etsf_rl"].lookup(bytes(k)) is not None


def test_aggregation_v6_64(env):
    env.set_policy(rates={RL.INVITE: (1, 2)}, agg_prefix_v6=64)
    env.xdp(udp6(sip_request("INVITE"), src="2001:db8:1:2::1"), V.PASS, M.INVITE, R.OK)
    env.xdp(udp6(sip_request("INVITE"), src="2001:db8:1:2:ffff::9"), V.PASS, M.INVITE, R.OK)
    env.xdp(udp6(sip_request("INVITE"), src="2001:db8:1:2::77"), V.DROP, M.INVITE,
            R.RATE_LIMIT)
    env.xdp(udp6(sip_request("INVITE"), src="2001:db8:1:3::1"), V.PASS, M.INVITE, R.OK)


def _masked(addr: bytes, plen: int) -> list[int]:
    """addr under a prefix of plen bits, computed bit by bit (the reference for the key)."""
    bits = "".join(f"{b:08b}" for b in addr)
    bits = bits[:plen] + "0" * (len(bits) - plen)
    return [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]


@pytest.mark.parametrize("family,src,policy_prefix,key_prefix", [
    (4, "198.19.171.205", 32, 32), (4, "198.19.171.205", 20, 20), (4, "198.19.171.205", 1, 1),
    (4, "198.19.171.205", 31, 31), (4, "198.19.171.205", 0, 32), (4, "198.19.171.205", 33, 32),
    (6, "2001:db8:abcd:ef12:3456:789a:bcde:f0ff", 128, 128),
    (6, "2001:db8:abcd:ef12:3456:789a:bcde:f0ff", 61, 61),
    (6, "2001:db8:abcd:ef12:3456:789a:bcde:f0ff", 64, 64),
    (6, "2001:db8:abcd:ef12:3456:789a:bcde:f0ff", 95, 95),
    (6, "2001:db8:abcd:ef12:3456:789a:bcde:f0ff", 127, 127),
    (6, "2001:db8:abcd:ef12:3456:789a:bcde:f0ff", 0, 128),
])
def test_rate_limit_key_is_the_source_under_the_prefix(env, family, src, policy_prefix, key_prefix):
    """The one etsf_rl entry a REGISTER makes holds its source masked to the aggregation prefix
    (0 or over the family's length: the whole address), the rest of the key zero."""
    agg = {"agg_prefix_v4": policy_prefix} if family == 4 else {"agg_prefix_v6": policy_prefix}
    env.set_policy(rates={RL.REGISTER: (10, 10)}, **agg)
    pkt = udp4(sip_request("REGISTER"), src=src) if family == 4 else udp6(sip_request("REGISTER"), src=src)
    env.xdp(pkt, V.PASS, M.REGISTER, R.OK)
    raw = socket.inet_pton(socket.AF_INET if family == 4 else socket.AF_INET6, src)
    want = L.RlKey(family=family, rl_class=RL.REGISTER, prefix=key_prefix)
    want.addr[:len(raw)] = _masked(raw, key_prefix)
    assert env.maps["etsf_rl"].keys() == [bytes(want)]


PROTECTED = [
    ("ACK", lambda: sip_request("ACK"), M.ACK),
    ("BYE", lambda: sip_request("BYE"), M.BYE),
    ("CANCEL", lambda: sip_request("CANCEL"), M.CANCEL),
    ("re-INVITE", lambda: sip_request("INVITE", to_tag="dlg1"), M.INVITE),
    ("in-dialog OPTIONS", lambda: sip_request("OPTIONS", to_tag="dlg2"), M.OPTIONS),
    ("200", lambda: sip_response(200), M.RESPONSE),
    ("180", lambda: sip_response(180), M.RESPONSE),
]


@pytest.mark.parametrize("name,mk,method", PROTECTED, ids=[p[0] for p in PROTECTED])
def test_protected_from_rate_limit(env, name, mk, method):
    cls = {M.INVITE: RL.INVITE, M.OPTIONS: RL.OPTIONS}.get(method, RL.OTHER)
    env.set_policy(rates={cls: (1, 1)})
    # exhaust the bucket with an out-of-dialog request of the same class
    first = {RL.INVITE: "INVITE", RL.OPTIONS: "OPTIONS"}.get(cls, "MESSAGE")
    env.xdp(udp4(sip_request(first)), V.PASS, M[first], R.OK)
    env.xdp(udp4(sip_request(first)), V.DROP, M[first], R.RATE_LIMIT)
    env.xdp(udp4(mk()), V.PASS, method, R.PROTECTED, n=3)


def test_protected_under_limit_is_ok(env):
    env.set_policy(rates={RL.OTHER: (1, 10)})
    env.xdp(udp4(sip_request("BYE")), V.PASS, M.BYE, R.OK, n=3)


# ---- overload --------------------------------------------------------------------
# default test policy: INVITE HIGH(2), REGISTER NORMAL(1), OPTIONS/SUBSCRIBE LOW(0),
# ACK/BYE/CANCEL/RESPONSE CRITICAL(3); shed_below = [0, 1, 2, 3]
OVERLOAD_CASES = [
    # level, method, dropped?
    (0, "OPTIONS", False), (0, "REGISTER", False), (0, "INVITE", False),
    (1, "OPTIONS", True), (1, "SUBSCRIBE", True), (1, "REGISTER", False),
    (1, "INVITE", False),
    (2, "REGISTER", True), (2, "INVITE", False), (2, "OPTIONS", True),
    (3, "INVITE", True), (3, "REGISTER", True), (3, "OPTIONS", True),
]


@pytest.mark.parametrize("level,method,dropped", OVERLOAD_CASES)
def test_overload_levels(env, level, method, dropped):
    env.set_policy()
    env.set_ctl(overload_level=level)
    if dropped:
        env.xdp(udp4(sip_request(method)), V.DROP, M[method], R.OVERLOAD)
    else:
        env.xdp(udp4(sip_request(method)), V.PASS, M[method], R.OK)


@pytest.mark.parametrize("name,mk,method", PROTECTED, ids=[p[0] for p in PROTECTED])
def test_overload_never_sheds_protected(env, name, mk, method):
    # everything below CRITICAL+1 would be shed: only protection saves these
    env.set_policy(shed_below=[4, 4, 4, 4], method_prio={m: 0 for m in range(L.METHODS)})
    env.set_ctl(overload_level=3)
    env.xdp(udp4(mk()), V.PASS, method, R.PROTECTED)
    env.xdp(udp4(sip_request("INVITE")), V.DROP, M.INVITE, R.OVERLOAD)


def test_overload_level_clamped(env):
    env.set_policy()
    env.set_ctl(overload_level=99)      # treated as 3
    env.xdp(udp4(sip_request("INVITE")), V.DROP, M.INVITE, R.OVERLOAD)


def test_not_understood_never_dropped_by_overload(env):
    env.set_policy(shed_below=[4, 4, 4, 4], rates={c: (1, 1) for c in RL})
    env.set_ctl(overload_level=3)
    env.xdp(udp4(b"\x00junk"), V.PASS, M.UNKNOWN, R.NOT_SIP, n=3)
    env.xdp(udp4(b"OPTIONS sip:x SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n"), V.PASS, M.OPTIONS,
            R.NO_CALLID, n=3)


def test_deadman_future_heartbeat_is_dead(env):
    env.set_policy()
    env.set_ctl(deadman_ns=10 ** 9, heartbeat_ns=bpf.monotonic_ns() + 100 * 10 ** 9)
    env.xdp(udp4(sip_request("INVITE")), V.PASS, M.UNKNOWN, R.DEADMAN)


def test_deadman_and_bypass_in_tc(env):
    from .helpers import H
    env.set_policy(flags=L.POL_F_VALID | L.POL_F_MARK)
    env.set_ctl(deadman_ns=10 ** 9, heartbeat_ns=1)
    before = env.counter(H.TC_EGRESS, M.UNKNOWN, V.PASS, R.DEADMAN)
    ret, out, _unused = env.tc(udp4(sip_request("INVITE")))
    assert ret == 0 and env.counter(H.TC_EGRESS, M.UNKNOWN, V.PASS, R.DEADMAN) == before + 1
    assert out == udp4(sip_request("INVITE"))
