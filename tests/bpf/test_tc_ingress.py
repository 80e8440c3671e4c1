"""tc_fastpath as the one TC ingress program: classification at ETSF_HOOK_TC_INGRESS with the
same verdicts, reasons and methods as xdp_sip, steering from the same parse (one SIP parse per
packet, none for a return-path reply), and the Call-ID from xdp_sip's metadata.

Each parity case runs the same packets through xdp_sip and, from the same map state, through
tc_fastpath with etsf_if_cfg[ifindex] = CLASSIFY; exactly one etsf_stats counter moves per packet
and it is the same (method, verdict, reason) at the two hooks.  PROG_TEST_RUN delivers its skb on
lo (ifindex 1), so the etsf_if_cfg entry is for ifindex 1 and removed again afterwards.  The
metadata hand-off runs for real: XDP live-frame test runs turn a frame with metadata into an skb
on a dummy interface in a namespace of this test, where tc_fastpath is attached at ingress.
"""
from __future__ import annotations

import ctypes
import os
import socket
import subprocess

import pytest
from scapy.all import IP, UDP, Ether, Raw

from etsf import bpf, fastpath
from etsf import layout as L
from etsf import libbpf

from .helpers import admit_get, SkBuff, M, R, V, sip_request, sip_response, tcp4, tm_get, udp4, udp6
from .test_fastpath import B4, CLIENT4, SERVICES, VIP4, Fp, check_csums, maglev_backend
from .test_keepalive import ANSWERED, ka_on
from .test_respond import reject_all
from .test_rfc4475 import CORPUS, ROWS

H = L.Hook
FP = L.FpReason
IFX = 1                       # test_run's skb arrives on lo
TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7
TC_OF_XDP = {bpf.XDP_PASS: TC_ACT_OK, bpf.XDP_DROP: TC_ACT_SHOT}


@pytest.fixture(scope="module")
def tci_loaded(loaded, objects):
    progs = bpf.load_object(objects["tc_fastpath.bpf.o"], loaded["root"])
    maps = {n: bpf.open_map(n, loaded["root"])
            for n in ("etsf_if_cfg", "etsf_parse_stats", *fastpath.FP_MAPS)}
    yield {"prog": progs["tc_fastpath"], "maps": maps, "root": loaded["root"]}
    try:
        maps["etsf_if_cfg"].delete(IFX.to_bytes(4, "little"))
    except OSError:
        pass
    for m in maps.values():
        m.close()
    for p in progs.values():
        p.close()


class Tci(Fp):
    """The fast-path helper plus the interface's hook choice and the parse counters."""

    def set_if(self, flags, ifindex=IFX, tm=0):
        self.maps["etsf_if_cfg"].update(ifindex.to_bytes(4, "little"), bytes(L.IfCfg(flags=flags, tm=tm)))

    def clear_if(self, ifindex=IFX):
        try:
            self.maps["etsf_if_cfg"].delete(ifindex.to_bytes(4, "little"))
        except OSError:
            pass

    def parse_stat(self, hook=H.TC_INGRESS):
        vals = self.maps["etsf_parse_stats"].lookup_percpu(int(hook).to_bytes(4, "little"))
        tot = {f: 0 for f, *_rest in L.ParseStat._fields_}
        for v in vals:
            s = L.ParseStat.from_bytes(v)
            for f in tot:
                tot[f] += getattr(s, f)
        return tot


@pytest.fixture
def t(env, tci_loaded):
    x = Tci(env, tci_loaded)
    x.clear()
    x.clear_if()
    yield x
    x.clear_if()


def one_count(env, run, pkt):
    """Run pkt; exactly one etsf_stats counter moves, by one: (retval, hook, method, verdict,
    reason)."""
    before = env.counters_total()
    ret = run(pkt)
    after = env.counters_total()
    moved = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert list(moved.values()) == [1], moved
    return (ret, *L.stats_unidx(next(iter(moved))))


def xdp_run(env):
    return lambda pkt: bpf.test_run(env.progs["xdp_sip"].fd, pkt)[0]


def tc_run(t):
    return lambda pkt: t.run(pkt)[0]


def _invite(i=0, **kw):
    return udp4(sip_request("INVITE", callid=f"par-{i}@198.18.1.10"), **kw)


def _deny(env):
    env.set_policy()
    env.acl("198.18.1.0/24", L.AclAction.DENY)


def _bypass(env):
    env.set_policy()
    env.set_ctl(bypass=1, active_slot=0)


def _deadman(env):
    env.set_policy()
    env.set_ctl(deadman_ns=1_000_000, heartbeat_ns=1, active_slot=0)


def _overload(env):
    env.set_policy()
    c = env.ctl()
    c.overload_level = 3
    env.maps["etsf_ctl"].update(bytes(4), bytes(c))


FRAG = bytes(Ether() / IP(src="198.18.1.10", dst="198.18.0.1", flags="MF") / UDP(sport=5060, dport=5060)
             / Raw(sip_request("INVITE")))

NO_CALLID_REGISTER = b"REGISTER sip:example.com SIP/2.0\r\nCSeq: 1 REGISTER\r\n\r\n"

# case: (setup, packets, the (method, verdict, reason) each packet must get at both hooks)
CASES = {
    "ok_invite": (lambda env: env.set_policy(), [_invite()], [(M.INVITE, V.PASS, R.OK)]),
    "ok_invite_v6": (lambda env: env.set_policy(), [udp6(sip_request("INVITE"))],
                     [(M.INVITE, V.PASS, R.OK)]),
    "ok_tcp": (lambda env: env.set_policy(), [tcp4(sip_request("INVITE"))],
               [(M.INVITE, V.PASS, R.OK)]),
    "deny": (_deny, [_invite()], [(M.INVITE, V.DROP, R.DENY)]),
    "rate_limit": (lambda env: env.set_policy(rates={L.RlClass.REGISTER: (1, 1)}),
                   [udp4(sip_request("REGISTER", callid=f"rl-{i}@x")) for i in range(3)],
                   [(M.REGISTER, V.PASS, R.OK)] + [(M.REGISTER, V.DROP, R.RATE_LIMIT)] * 2),
    # REGISTER is never in a dialog: a To-tag does not protect it, a malformed one is limited
    # on its start line once its source is over the limit (both decided before the parse)
    "register_tagged_over_limit": (
        lambda env: env.set_policy(rates={L.RlClass.REGISTER: (1, 1)}),
        [udp4(sip_request("REGISTER", callid="rt-0@x")),
         udp4(sip_request("REGISTER", callid="rt-1@x", to_tag="t1"))],
        [(M.REGISTER, V.PASS, R.OK), (M.REGISTER, V.DROP, R.RATE_LIMIT)]),
    "register_malformed_over_limit": (
        lambda env: env.set_policy(rates={L.RlClass.REGISTER: (1, 1)}),
        [udp4(NO_CALLID_REGISTER), udp4(sip_request("REGISTER", callid="rm-0@x")),
         udp4(NO_CALLID_REGISTER)],
        [(M.REGISTER, V.PASS, R.NO_CALLID), (M.REGISTER, V.PASS, R.OK),
         (M.REGISTER, V.DROP, R.RATE_LIMIT)]),
    "register_shed": (
        lambda env: (env.set_policy(), env.set_ctl(overload_level=2)),
        [udp4(sip_request("REGISTER", callid="rs-0@x", to_tag="t1"))],
        [(M.REGISTER, V.DROP, R.OVERLOAD)]),
    "overload": (_overload, [udp4(sip_request("OPTIONS")), _invite(), udp4(sip_response(180, "Ringing"))],
                 [(M.OPTIONS, V.DROP, R.OVERLOAD), (M.INVITE, V.DROP, R.OVERLOAD),
                  (M.RESPONSE, V.PASS, R.OK)]),
    "not_sip": (lambda env: env.set_policy(), [udp4(b"\x80\x00hello RTP-ish bytes")],
                [(M.UNKNOWN, V.PASS, R.NOT_SIP)]),
    "not_sip_port": (lambda env: env.set_policy(), [udp4(sip_request("INVITE"), dport=9999, sport=9999)],
                     [(M.UNKNOWN, V.PASS, R.NOT_SIP_PORT)]),
    "fragment": (lambda env: env.set_policy(), [FRAG], [(M.UNKNOWN, V.PASS, R.FRAGMENT)]),
    "no_policy": (lambda env: None, [_invite()], [(M.INVITE, V.PASS, R.NO_POLICY)]),
    "nat_keepalive": (lambda env: env.set_policy(flags=L.POL_F_VALID | L.POL_F_NAT_DROP),
                      [udp4(b"\r\n\r\n")], [(M.UNKNOWN, V.DROP, R.NAT_KEEPALIVE)]),
    "bypass": (_bypass, [_invite()], [(M.UNKNOWN, V.PASS, R.BYPASS)]),
    "deadman": (_deadman, [_invite()], [(M.UNKNOWN, V.PASS, R.DEADMAN)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_classify_at_tc_ingress_same_as_xdp(env, t, case):
    setup, pkts, want = CASES[case]
    t.set_if(L.IF_F_CLASSIFY)
    got = {}
    for hook, run in ((H.XDP, xdp_run(env)), (H.TC_INGRESS, tc_run(t))):
        env.reset()
        setup(env)
        got[hook] = [one_count(env, run, p) for p in pkts]
        assert [g[1] for g in got[hook]] == [hook] * len(pkts)
        assert [tuple(g[2:]) for g in got[hook]] == want, (hook, got[hook])
    assert [TC_OF_XDP[g[0]] for g in got[H.XDP]] == [g[0] for g in got[H.TC_INGRESS]]


def _limit(cls, burst=1):
    return lambda env: env.set_policy(rates={cls: (1, burst)})


def _trust_register(env):
    env.set_policy(rates={L.RlClass.REGISTER: (1, 1)})
    env.acl("198.18.1.0/24", L.AclAction.TRUST)


EARLY = {
    # case: (setup, packet, (method, verdict, reason), decided before the parse?)
    "deny": (_deny, _invite(), (M.INVITE, V.DROP, R.DENY), True),
    "deny_response": (_deny, udp4(sip_response(180, "Ringing")), (M.RESPONSE, V.DROP, R.DENY), True),
    "register_over": (_limit(L.RlClass.REGISTER), udp4(sip_request("REGISTER", callid="eo@x")),
                      (M.REGISTER, V.DROP, R.RATE_LIMIT), True),
    "register_conforming": (_limit(L.RlClass.REGISTER, 2), udp4(sip_request("REGISTER", callid="ec@x")),
                            (M.REGISTER, V.PASS, R.OK), False),
    "options_over": (_limit(L.RlClass.OPTIONS), udp4(sip_request("OPTIONS", callid="op@x")),
                     (M.OPTIONS, V.DROP, R.RATE_LIMIT), False),
    "register_tcp_over": (_limit(L.RlClass.REGISTER), tcp4(sip_request("REGISTER", callid="et@x")),
                          (M.REGISTER, V.DROP, R.RATE_LIMIT), False),
    "trusted_register": (_trust_register, udp4(sip_request("REGISTER", callid="tr@x")),
                         (M.REGISTER, V.PASS, R.TRUSTED), False),
}


@pytest.mark.parametrize("case", sorted(EARLY))
def test_early_decision_parses_nothing(env, t, case):
    """A denied source and a REGISTER over UDP over its limit are decided before the payload
    is copied or parsed, at both ingress hooks: no parse counted, one early decision; all
    else is parsed once. Over-limit cases send one conforming packet first (not counted)."""
    setup, pkt, want, early = EARLY[case]
    t.set_if(L.IF_F_CLASSIFY)
    for hook, run in ((H.XDP, xdp_run(env)), (H.TC_INGRESS, tc_run(t))):
        env.reset()
        setup(env)
        if want[2] == R.RATE_LIMIT:
            run(pkt)                                   # takes the one slot of the burst
        s0 = t.parse_stat(hook)
        got = one_count(env, run, pkt)
        s1 = t.parse_stat(hook)
        assert (got[1], *got[2:]) == (hook, *want), (hook, got)
        assert (s1["sip_parses"] - s0["sip_parses"], s1["early"] - s0["early"]) == \
            ((0, 1) if early else (1, 0)), (hook, s0, s1)


def test_classify_counts_interface_and_records(env, t):
    env.set_policy()
    env.acl("198.18.1.0/24", L.AclAction.DENY)
    t.set_if(L.IF_F_CLASSIFY)
    key = IFX.to_bytes(4, "little")
    m = env.maps["etsf_ifstats"]

    def ifstat():
        tot = L.IfStat()
        for v in m.lookup_percpu(key):
            s = L.IfStat.from_bytes(v)
            for f, *_rest in L.IfStat._fields_:
                setattr(tot, f, getattr(tot, f) + getattr(s, f))
        return tot

    before = ifstat()
    pkt = _invite()
    assert t.run(pkt)[0] == TC_ACT_SHOT
    after = ifstat()
    assert (after.rx_packets - before.rx_packets, after.dropped - before.dropped) == (1, 1)
    assert after.rx_bytes - before.rx_bytes == len(pkt)
    last = env.last()
    assert (last.verdict, last.reason, last.method) == (V.DROP, R.DENY, M.INVITE)


def _answer_503(env):
    reject_all(env)
    return udp4(sip_request("INVITE", callid="ans-503@198.18.1.10"), sport=5062), \
        (M.INVITE, V.DROP, R.ADMIT_503), "replied"


def _answer_200(env):
    ka_on(env)
    return udp4(ANSWERED["plain"], sport=5062), (M.OPTIONS, V.REDIRECT, R.KA_ANSWERED), "answered"


@pytest.mark.parametrize("answer", [_answer_503, _answer_200], ids=["503", "keepalive_200"])
def test_answers_at_tc_ingress_same_frame_as_xdp(env, t, answer):
    """A new INVITE refused by admission and a keep-alive OPTIONS: answered in the kernel at TC
    ingress too (redirected back out), counted as at XDP, the same frame as XDP_TX."""
    t.set_if(L.IF_F_CLASSIFY)
    skb = SkBuff(ingress_ifindex=IFX)
    out = {}
    for hook in (H.XDP, H.TC_INGRESS):
        env.reset()
        frame, want, stat = answer(env)
        n0 = getattr(env.admit(), stat) if stat == "replied" else env.ka_stats()[stat]
        c0 = env.counter(hook, *want)
        if hook == H.XDP:
            ret, out[hook], _ns = bpf.test_run(env.progs["xdp_sip"].fd, frame)
            assert ret == bpf.XDP_TX
        else:
            ret, out[hook], _ns, ctx = bpf.test_run_ctx(t.prog.fd, frame, ctx=bytes(skb))
            assert ret == TC_ACT_REDIRECT
            # tagged for TC egress, which lets its own answer go uncounted (as XDP_TX skips it)
            cb = SkBuff.from_buffer_copy(ctx.ljust(ctypes.sizeof(SkBuff), b"\0")).cb
            assert (cb[0], cb[1]) == (L.CB_OWN_ANSWER, len(out[hook]))
        assert (env.last().method, env.last().verdict, env.last().reason) == want
        assert env.counter(hook, *want) == c0 + 1
        n1 = getattr(env.admit(), stat) if stat == "replied" else env.ka_stats()[stat]
        assert n1 == n0 + 1
    assert out[H.TC_INGRESS] == out[H.XDP]
    assert Ether(out[H.XDP])[IP].dst == "198.18.1.10" and Ether(out[H.XDP])[UDP].dport == 5062


def test_passed_while_admission_off_remembered_by_telemetry_at_tc(env, t):
    """At TC ingress, as at XDP: an INVITE that passed while admission was off leaves one
    transaction (telemetry's, keyed by the skb's ingress ifindex), none in etsf_admit_txn, and once
    admission refuses every new INVITE its retransmission still passes (retrans_admitted)."""
    t.set_if(L.IF_F_CLASSIFY)
    env.set_policy()
    frame = udp4(sip_request("INVITE", callid="tc-off@198.18.1.10", cseq=1))
    tm = L.TmTxnKey(callid_hash=L.fnv1a64(b"tc-off@198.18.1.10"), cseq=1, ifindex=IFX, method=M.INVITE)
    assert t.run(frame)[0] == TC_ACT_OK
    assert admit_get(env.maps["etsf_admit_txn"], "tc-off@198.18.1.10", 1) is None
    assert tm_get(env.maps["etsf_tm_txn"], tm) is not None
    reject_all(env)
    assert t.run(frame)[0] == TC_ACT_OK
    assert (env.last().method, env.last().verdict, env.last().reason) == (M.INVITE, V.PASS, R.OK)
    assert (env.admit().retrans_admitted, env.admit().rejected) == (1, 0)
    t.clear_if()


@pytest.mark.parametrize("tm, looked_up, recorded", [
    (0, None, True),                                       # an older agent's entry: no etsf_tm_ifcfg entry = TOWARD
    (0, L.TmDir.OFF, False),                               # looked up: the default says OFF
    (L.IF_TM_KNOWN | L.TmDir.OFF, None, False),            # the entry's copy is what the program reads
    (L.IF_TM_KNOWN | L.TmDir.TOWARD, L.TmDir.OFF, True),
    (L.IF_TM_KNOWN | L.TmDir.FROM, L.TmDir.TOWARD, False),
], ids=["unknown-none", "unknown-default-off", "known-off", "known-toward", "known-from"])
def test_tc_ingress_direction_from_the_interface_entry(env, t, tm, looked_up, recorded):
    """TC ingress takes the telemetry direction from the interface's etsf_if_cfg entry when the
    agent put it there (IF_TM_KNOWN), without looking etsf_tm_ifcfg up; an entry without it
    (written by an older agent) has the direction looked up as before."""
    env.set_policy()
    t.set_if(L.IF_F_CLASSIFY, tm=tm)
    callid = f"tc-dir-{tm}-{looked_up}@198.18.1.10"
    key = L.TmTxnKey(callid_hash=L.fnv1a64(callid.encode()), cseq=1, ifindex=IFX, method=M.INVITE)
    with bpf.open_map("etsf_tm_ifcfg", env.root) as ifc:
        try:
            if looked_up is not None:
                ifc.update(bytes(4), bytes(L.TmIfCfg(dir=int(looked_up))))
            assert t.run(udp4(sip_request("INVITE", callid=callid, cseq=1)))[0] == TC_ACT_OK
            assert (env.last().method, env.last().verdict, env.last().reason) == (M.INVITE, V.PASS, R.OK)
            assert (tm_get(env.maps["etsf_tm_txn"], key) is not None) == recorded
        finally:
            for k in ifc.keys():
                ifc.delete(k)
    t.clear_if()


# --- one parse per packet --------------------------------------------------------------------


def test_classify_and_steer_one_parse(env, t):
    env.set_policy()
    t.apply(SERVICES, target=0, active=1)
    t.set_if(L.IF_F_CLASSIFY | L.IF_F_STEER)
    callid = "one-parse@198.18.0.1"
    p0, fwd0 = t.parse_stat()["sip_parses"], t.reason(FP.FWD)
    req = udp4(sip_request("INVITE", callid=callid), src=CLIENT4, dst=VIP4, sport=5062, dport=5060)
    ret, _hook, method, verdict, reason = one_count(env, tc_run(t), req)
    assert (ret, _hook, method, verdict, reason) == (TC_ACT_REDIRECT, H.TC_INGRESS, M.INVITE,
                                                     V.PASS, R.OK)
    assert t.parse_stat()["sip_parses"] == p0 + 1
    assert t.reason(FP.FWD) == fwd0 + 1
    ret, out = t.run(req)
    b = check_csums(out)[IP].dst
    assert ret == TC_ACT_REDIRECT and b == maglev_backend(t, callid, B4)
    assert t.parse_stat()["sip_parses"] == p0 + 2

    # the backend's reply on the return path: rewritten, never parsed, not classified here
    reply = bytes(Ether() / IP(src=b, dst=CLIENT4) / UDP(sport=5070, dport=5062)
                  / Raw(sip_response(180, "Ringing", callid=callid)))
    p1, ret0, stats0 = t.parse_stat()["sip_parses"], t.reason(FP.RET), env.counters_total()
    ret, out = t.run(reply)
    assert ret == TC_ACT_REDIRECT and Ether(out)[IP].src == VIP4
    assert t.parse_stat()["sip_parses"] == p1
    assert t.reason(FP.RET) == ret0 + 1
    assert env.counters_total() == stats0


def test_classified_drop_is_never_steered(env, t):
    env.set_policy()
    env.acl(f"{CLIENT4}/32", L.AclAction.DENY)
    t.apply(SERVICES, target=0, active=1)
    t.set_if(L.IF_F_CLASSIFY | L.IF_F_STEER)
    fwd0 = t.reason(FP.FWD)
    req = udp4(sip_request("INVITE", callid="dropped@x"), src=CLIENT4, dst=VIP4, dport=5060)
    assert one_count(env, tc_run(t), req) == (TC_ACT_SHOT, H.TC_INGRESS, M.INVITE, V.DROP,
                                              R.DENY)
    assert t.reason(FP.FWD) == fwd0
    assert t.maps[fastpath.MAP_AFF].keys() == []


def test_steer_only_does_not_classify(env, t):
    """No etsf_if_cfg entry: steering exactly as before, nothing counted at TC_INGRESS."""
    env.set_policy()
    env.acl(f"{CLIENT4}/32", L.AclAction.DENY)
    t.apply(SERVICES, target=0, active=1)
    stats0, p0 = env.counters_total(), t.parse_stat()["sip_parses"]
    ret, _out = t.run(udp4(sip_request("INVITE", callid="steer@x"), src=CLIENT4, dst=VIP4, dport=5060))
    assert ret == TC_ACT_REDIRECT
    assert env.counters_total() == stats0
    assert t.parse_stat()["sip_parses"] == p0 + 1


# --- XDP metadata ------------------------------------------------------------------------------


def test_xdp_flag_without_metadata_parses_and_steers(env, t):
    env.set_policy()
    t.apply(SERVICES, target=0, active=1)
    t.set_if(L.IF_F_XDP | L.IF_F_STEER)
    callid = "no-meta@198.18.0.1"
    s0, fwd0, stats0 = t.parse_stat(), t.reason(FP.FWD), env.counters_total()
    ret, out = t.run(udp4(sip_request("INVITE", callid=callid), src=CLIENT4, dst=VIP4, dport=5060))
    assert ret == TC_ACT_REDIRECT
    assert check_csums(out)[IP].dst == maglev_backend(t, callid, B4)
    s1 = t.parse_stat()
    assert (s1["meta_missing"] - s0["meta_missing"], s1["meta_used"] - s0["meta_used"],
            s1["sip_parses"] - s0["sip_parses"]) == (1, 0, 1)
    assert t.reason(FP.FWD) == fwd0 + 1
    assert env.counters_total() == stats0, "xdp_sip classified it: not counted again"


BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1


class XdpMd(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint32), ("data_end", ctypes.c_uint32),
                ("data_meta", ctypes.c_uint32), ("ingress_ifindex", ctypes.c_uint32),
                ("rx_queue_index", ctypes.c_uint32), ("egress_ifindex", ctypes.c_uint32)]


def xdp_live(prog_fd, frame, meta: bytes, ifindex, repeat):
    """Run an XDP program on frame (with meta in front of it) in live-frame mode: each XDP_PASS
    becomes an skb received on ifindex, metadata included, so TC ingress there sees it."""
    data = meta + frame
    din = ctypes.create_string_buffer(data, len(data))
    md = XdpMd(data=len(meta), data_end=len(data), data_meta=0, ingress_ifindex=ifindex)
    opts = libbpf.TestRunOpts(sz=ctypes.sizeof(libbpf.TestRunOpts),
                              data_in=ctypes.cast(din, ctypes.c_void_p), data_size_in=len(data),
                              ctx_in=ctypes.cast(ctypes.pointer(md), ctypes.c_void_p),
                              ctx_size_in=ctypes.sizeof(md), repeat=repeat,
                              flags=BPF_F_TEST_XDP_LIVE_FRAMES)
    ret = libbpf.get_lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts))
    assert ret == 0, os.strerror(-ret)


CLONE_NEWNET = 0x40000000


@pytest.fixture
def dummy_ns(t):
    """A namespace of this test with a veth pair, tc_fastpath on one end's ingress; this thread
    runs in it for the test (network namespaces are per thread)."""
    ns, dev = f"h17x-meta-{os.getpid() % 100000}", "h17xv0"
    libc = ctypes.CDLL(None, use_errno=True)
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        for cmd in (["link", "add", dev, "type", "veth", "peer", "name", "h17xv1"],
                    ["link", "set", "h17xv1", "up"], ["link", "set", dev, "up"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True, capture_output=True)
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            assert libc.setns(fd, CLONE_NEWNET) == 0, os.strerror(ctypes.get_errno())
        finally:
            os.close(fd)
        try:
            ifindex = socket.if_nametoindex(dev)
            bpf.tc_attach(ifindex, t.prog.fd, "ingress")
            yield ifindex
        finally:
            assert libc.setns(home, CLONE_NEWNET) == 0
    finally:
        os.close(home)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def test_xdp_metadata_callid_steers_without_parsing(env, t, dummy_ns):
    """xdp_sip's result in the metadata: TC ingress takes the Call-ID hash from there (the
    backend is the one Maglev picks for the metadata's hash, not for the packet's Call-ID) and
    never parses; a frame without the magic falls back to parsing (meta_missing)."""
    ifindex = dummy_ns
    env.set_policy()
    t.apply(SERVICES, target=0, active=1)
    t.set_if(L.IF_F_XDP | L.IF_F_STEER, ifindex)
    try:
        callid = "real@198.18.0.1"
        meta_callid = next(c for c in (f"from-xdp-{i}@198.18.0.1" for i in range(50))
                           if maglev_backend(t, c, B4) != maglev_backend(t, callid, B4))
        want = maglev_backend(t, meta_callid, B4)
        h = L.fnv1a64(meta_callid.encode())
        meta = bytes(L.Meta(magic=L.META_MAGIC, method=M.INVITE, verdict=V.PASS, reason=R.OK,
                            flags=L.META_F_CALLID, callid_hash=h))
        frame = udp4(sip_request("INVITE", callid=callid), src=CLIENT4, dst=VIP4, dport=5060)
        s0, b0 = t.parse_stat(), t.bstat(t.bid(want, 5070))["packets"]
        n = 4
        xdp_live(env.progs["xdp_count"].fd, frame, meta, ifindex, n)
        s1 = t.parse_stat()
        assert (s1["meta_used"] - s0["meta_used"], s1["meta_missing"] - s0["meta_missing"],
                s1["sip_parses"] - s0["sip_parses"]) == (n, 0, 0)
        assert t.bstat(t.bid(want, 5070))["packets"] == b0 + n
        ak = L.FpAffKey(callid_hash=h, vport=5060, family=4, proto=17)
        ak.vip[:4] = list(bytes(map(int, VIP4.split("."))))
        assert t.maps[fastpath.MAP_AFF].lookup(bytes(ak)) is not None

        bad = bytes(L.Meta(magic=0x12345678, flags=L.META_F_CALLID, callid_hash=h))
        xdp_live(env.progs["xdp_count"].fd, frame, bad, ifindex, 1)
        s2 = t.parse_stat()
        assert (s2["meta_used"] - s1["meta_used"], s2["meta_missing"] - s1["meta_missing"],
                s2["sip_parses"] - s1["sip_parses"]) == (0, 1, 1)
    finally:
        t.clear_if(ifindex)


def test_xdp_sip_hands_off_to_tc_one_parse(env, t, dummy_ns):
    """xdp_sip and tc_fastpath on one interface (ETSF_IF_F_XDP | STEER): xdp_sip classifies and
    parses, TC ingress steers the dialog to its Maglev backend from the metadata: one parse per
    packet on the node."""
    ifindex = dummy_ns
    env.set_policy()
    t.apply(SERVICES, target=0, active=1)
    t.set_if(L.IF_F_XDP | L.IF_F_STEER, ifindex)
    try:
        callid = "handoff@198.18.0.1"
        want = t.bid(maglev_backend(t, callid, B4), 5070)
        frame = udp4(sip_request("INVITE", callid=callid), src=CLIENT4, dst=VIP4, dport=5060)
        tc0, xdp0 = t.parse_stat(), t.parse_stat(H.XDP)
        b0, ok0 = t.bstat(want)["packets"], env.counter(H.XDP, M.INVITE, V.PASS, R.OK)
        n = 3
        xdp_live(env.progs["xdp_sip"].fd, frame, b"", ifindex, n)
        tc1, xdp1 = t.parse_stat(), t.parse_stat(H.XDP)
        assert xdp1["sip_parses"] - xdp0["sip_parses"] == n
        assert env.counter(H.XDP, M.INVITE, V.PASS, R.OK) - ok0 == n
        assert (tc1["meta_used"] - tc0["meta_used"], tc1["meta_missing"] - tc0["meta_missing"],
                tc1["sip_parses"] - tc0["sip_parses"]) == (n, 0, 0)
        assert t.bstat(want)["packets"] == b0 + n
    finally:
        t.clear_if(ifindex)


def test_rfc4475_same_classification_at_tc_ingress(env, t):
    """Every RFC 4475 torture message that fits a frame: the same counter and the same parse
    (method, status, Call-ID hash, CSeq) at TC ingress as at XDP."""
    env.set_policy()
    t.set_if(L.IF_F_CLASSIFY)
    n = 0
    for row in ROWS:
        msg = (CORPUS / f"{row['name']}.dat").read_bytes()
        if len(msg) > 1400:
            continue
        seen = []
        for run in (xdp_run(env), tc_run(t)):
            got = one_count(env, run, udp4(msg))
            li = env.last()
            seen.append((got[2:], li.method, li.status, li.callid_hash, li.cseq, li.reason))
        assert seen[0] == seen[1], row["name"]
        n += 1
    assert n == 48, "the corpus's 49 messages less the one larger than a frame"


#: instructions the verifier processed for tc_fastpath with the classifier (Debian 12's clang 14,
#: kernel 6.18) and the ceiling, +10 % (as tests/bpf/test_verifier_budget.py); steering alone
#: needed 39,749 before the classifier joined it, and 67,831 with eight parser steps per bpf_loop call;
#: 42,686 before the decisions ahead of the parse (their global function); 44,240 before the header
#: parse, the answer builder, the Maglev pick and the rate-limit key became global functions; 26,701
#: before the telemetry direction came with the interface's entry
TC_FASTPATH_INSNS = (26_284, 28_912)
#: the datapath's goal: at least 30 % fewer than steering alone needed (39,749)
TC_FASTPATH_GOAL = 39_749 * 7 // 10


def test_tc_fastpath_verifier_ceiling(tci_loaded):
    measured, ceiling = TC_FASTPATH_INSNS
    assert ceiling == measured * 11 // 10
    n = bpf.prog_info(tci_loaded["prog"].id)["verified_insns"]
    print(f"tc_fastpath: {n} instructions processed (ceiling {ceiling})")
    assert 0 < n <= ceiling, f"tc_fastpath: {n} instructions processed, ceiling {ceiling}"
    assert n <= TC_FASTPATH_GOAL, f"tc_fastpath: {n} instructions processed, goal {TC_FASTPATH_GOAL}"
