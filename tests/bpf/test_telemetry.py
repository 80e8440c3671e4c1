"""In-kernel SIP transaction latency (bpf/etsf_telemetry.h) through BPF_PROG_TEST_RUN.

BPF_PROG_TEST_RUN runs both programs on the loopback device of this netns, so
requests and responses share one ifindex (as on a one-armed proxy).  TOWARD
(default): requests at XDP ingress, responses at TC egress; FROM: the reverse.
Histogram and counter checks are exact deltas.
"""
import pytest

from etsf import bpf
from etsf import layout as L

from .helpers import M, sip_request, sip_response, udp4

S = L.TmStage
EV = L.TmEvent


class Tm:
    def __init__(self, env):
        self.env = env
        self.root = env.root
        self.maps = {n: bpf.open_map(n, self.root) for n in
                     ("etsf_tm_ifcfg", "etsf_tm_txn", "etsf_tm_hist", "etsf_tm_codes",
                      "etsf_tm_events")}

    def close(self):
        for m in self.maps.values():
            m.close()

    def reset(self, default_dir=None):
        for name in ("etsf_tm_txn", "etsf_tm_ifcfg"):
            m = self.maps[name]
            for k in m.keys():
                m.delete(k)
        if default_dir is not None:
            self.set_dir(0, default_dir)

    def set_dir(self, ifindex, d):
        self.maps["etsf_tm_ifcfg"].update(int(ifindex).to_bytes(4, "little"),
                                          bytes(L.TmIfCfg(dir=int(d))))

    def hist(self, method, stage) -> tuple[int, list[int]]:
        vals = self.maps["etsf_tm_hist"].lookup_percpu(
            L.tm_hist_idx(method, stage).to_bytes(4, "little"))
        count, slots = 0, [0] * L.TM_BUCKETS
        for v in vals:
            h = L.TmHist.from_bytes(v)
            count += h.count
            for i in range(L.TM_BUCKETS):
                slots[i] += h.slot[i]
        return count, slots

    def code(self, method, code) -> int:
        vals = self.maps["etsf_tm_codes"].lookup_percpu(
            L.tm_code_idx(method, code).to_bytes(4, "little"))
        return sum(int.from_bytes(v[:8], "little") for v in vals)

    def event(self, ev) -> int:
        vals = self.maps["etsf_tm_events"].lookup_percpu(int(ev).to_bytes(4, "little"))
        return sum(int.from_bytes(v[:8], "little") for v in vals)

    def snapshot(self):
        h = {(m, s): self.hist(m, s)[0] for m in (M.INVITE, M.REGISTER, M.BYE, M.CANCEL)
             for s in S}
        c = {(m, k): self.code(m, k) for m in (M.INVITE, M.REGISTER)
             for k in (100, 180, 183, 200, 401, 486, 487, 503, 603)}
        e = {ev: self.event(ev) for ev in EV}
        return h, c, e

    def delta(self, before):
        after = self.snapshot()
        out = []
        for b, a in zip(before, after):
            out.append({k: a[k] - b[k] for k in a if a[k] - b[k]})
        return out


@pytest.fixture
def tm(env):
    t = Tm(env)
    t.reset()
    yield t
    t.reset()
    t.close()


def xdp(env, payload):
    ret = bpf.test_run(env.progs["xdp_sip"].fd, udp4(payload))[0]
    assert ret == bpf.XDP_PASS


def tc(env, payload):
    ret = env.tc(udp4(payload, src="198.18.0.1", dst="198.18.1.10"))[0]
    assert ret == bpf.TC_ACT_OK


def test_invite_call_stages_toward(env, tm):
    cid = "stages-1@198.18.1.10"
    b = tm.snapshot()
    xdp(env, sip_request("INVITE", callid=cid, cseq=1))
    tc(env, sip_response(100, "Trying", callid=cid, cseq=1, to_tag=None))
    tc(env, sip_response(180, "Ringing", callid=cid, cseq=1))
    tc(env, sip_response(200, "OK", callid=cid, cseq=1))
    hist, codes, ev = tm.delta(b)
    assert hist == {(M.INVITE, S.TRYING): 1, (M.INVITE, S.RINGING): 1,
                    (M.INVITE, S.FINAL_2XX): 1}
    assert codes == {(M.INVITE, 100): 1, (M.INVITE, 180): 1, (M.INVITE, 200): 1}
    assert ev == {EV.TXN_START: 1, EV.RESP_MATCHED: 3}


def test_retransmissions_do_not_double_count(env, tm):
    cid = "retrans-1@198.18.1.10"
    b = tm.snapshot()
    for _copy in range(3):                                    # INVITE retransmitted
        xdp(env, sip_request("INVITE", callid=cid, cseq=7))
    tc(env, sip_response(100, "Trying", callid=cid, cseq=7, to_tag=None))
    tc(env, sip_response(100, "Trying", callid=cid, cseq=7, to_tag=None))
    tc(env, sip_response(183, "Session Progress", callid=cid, cseq=7))
    tc(env, sip_response(180, "Ringing", callid=cid, cseq=7))   # ringing already timed
    tc(env, sip_response(180, "Ringing", callid=cid, cseq=7))   # retransmission
    for _copy in range(4):                                    # 486 retransmitted until ACK
        tc(env, sip_response(486, "Busy Here", callid=cid, cseq=7))
    xdp(env, sip_request("ACK", callid=cid, cseq=7, to_tag="a6c85cf"))
    xdp(env, sip_request("INVITE", callid=cid, cseq=7))   # late retransmission
    hist, codes, ev = tm.delta(b)
    assert hist == {(M.INVITE, S.TRYING): 1, (M.INVITE, S.RINGING): 1,
                    (M.INVITE, S.FINAL_4XX): 1}
    assert codes == {(M.INVITE, 100): 1, (M.INVITE, 183): 1, (M.INVITE, 180): 1,
                     (M.INVITE, 486): 1}
    assert ev == {EV.TXN_START: 1, EV.REQ_RETRANS: 3, EV.RESP_MATCHED: 3,
                  EV.RESP_RETRANS: 1 + 1 + 3}


def test_register_and_final_classes(env, tm):
    b = tm.snapshot()
    xdp(env, sip_request("REGISTER", callid="reg-1@x", cseq=1, uri="sip:example.com"))
    tc(env, sip_response(401, "Unauthorized", callid="reg-1@x", cseq=1, cseq_method="REGISTER"))
    xdp(env, sip_request("REGISTER", callid="reg-1@x", cseq=2, uri="sip:example.com"))
    tc(env, sip_response(200, "OK", callid="reg-1@x", cseq=2, cseq_method="REGISTER"))
    for i, (code, stage) in enumerate(((503, S.FINAL_5XX), (603, S.FINAL_6XX))):
        cid = f"cls-{i}@x"
        xdp(env, sip_request("INVITE", callid=cid, cseq=1))
        tc(env, sip_response(code, "X", callid=cid, cseq=1))
    hist, codes, ev = tm.delta(b)
    assert hist == {(M.REGISTER, S.FINAL_4XX): 1, (M.REGISTER, S.FINAL_2XX): 1,
                    (M.INVITE, S.FINAL_5XX): 1, (M.INVITE, S.FINAL_6XX): 1}
    assert codes == {(M.REGISTER, 401): 1, (M.REGISTER, 200): 1, (M.INVITE, 503): 1,
                     (M.INVITE, 603): 1}


def test_cancel_and_bye_are_their_own_transactions(env, tm):
    cid = "cancel-1@x"
    b = tm.snapshot()
    xdp(env, sip_request("INVITE", callid=cid, cseq=1))
    tc(env, sip_response(180, "Ringing", callid=cid, cseq=1))
    xdp(env, sip_request("CANCEL", callid=cid, cseq=1))
    tc(env, sip_response(200, "OK", callid=cid, cseq=1, cseq_method="CANCEL"))
    tc(env, sip_response(487, "Request Terminated", callid=cid, cseq=1))
    xdp(env, sip_request("BYE", callid="bye-1@x", cseq=2, to_tag="t"))
    tc(env, sip_response(200, "OK", callid="bye-1@x", cseq=2, cseq_method="BYE"))
    hist, codes, _ev = tm.delta(b)
    assert hist == {(M.INVITE, S.RINGING): 1, (M.CANCEL, S.FINAL_2XX): 1,
                    (M.INVITE, S.FINAL_4XX): 1, (M.BYE, S.FINAL_2XX): 1}
    # per-code counters only for INVITE and REGISTER
    assert codes == {(M.INVITE, 180): 1, (M.INVITE, 487): 1}


def test_wrong_direction_and_unmatched(env, tm):
    b = tm.snapshot()
    # TOWARD: a response at XDP ingress / request at TC egress is not the measured direction
    xdp(env, sip_response(200, "OK", callid="dir-1@x", cseq=1))
    tc(env, sip_request("INVITE", callid="dir-1@x", cseq=1))
    # a response at TC egress without a tracked request: counted, not timed
    tc(env, sip_response(200, "OK", callid="nomatch@x", cseq=9))
    # different CSeq number or method does not match
    xdp(env, sip_request("INVITE", callid="dir-2@x", cseq=1))
    tc(env, sip_response(200, "OK", callid="dir-2@x", cseq=2))
    tc(env, sip_response(200, "OK", callid="dir-2@x", cseq=1, cseq_method="OPTIONS"))
    hist, codes, ev = tm.delta(b)
    assert hist == {}
    assert codes == {(M.INVITE, 200): 2}
    assert ev == {EV.TXN_START: 1, EV.RESP_NOMATCH: 3}


def test_from_direction(env, tm):
    tm.reset(default_dir=L.TmDir.FROM)
    cid = "from-1@x"
    b = tm.snapshot()
    tc(env, sip_request("INVITE", callid=cid, cseq=3))      # proxy forwards INVITE out
    xdp(env, sip_request("INVITE", callid="ignored@x", cseq=3))
    xdp(env, sip_response(180, "Ringing", callid=cid, cseq=3))
    xdp(env, sip_response(200, "OK", callid=cid, cseq=3))
    hist, codes, ev = tm.delta(b)
    assert hist == {(M.INVITE, S.RINGING): 1, (M.INVITE, S.FINAL_2XX): 1}
    assert ev == {EV.TXN_START: 1, EV.RESP_MATCHED: 2}


@pytest.mark.parametrize("key", [0, 1])
def test_off(env, tm, key):
    """OFF per interface (loopback = ifindex 1 in test runs) or as the default (key 0)."""
    tm.set_dir(key, L.TmDir.OFF)
    b = tm.snapshot()
    xdp(env, sip_request("INVITE", callid="off@x", cseq=1))
    tc(env, sip_response(200, "OK", callid="off@x", cseq=1))
    assert tm.delta(b) == [{}, {}, {}]


def test_interface_entry_overrides_default(env, tm):
    tm.set_dir(0, L.TmDir.OFF)
    tm.set_dir(1, L.TmDir.TOWARD)
    b = tm.snapshot()
    xdp(env, sip_request("INVITE", callid="ovr@x", cseq=1))
    tc(env, sip_response(200, "OK", callid="ovr@x", cseq=1))
    hist = tm.delta(b)[0]
    assert hist == {(M.INVITE, S.FINAL_2XX): 1}


def test_dropped_requests_are_not_tracked(env, tm):
    env.acl("198.18.1.10/32", L.AclAction.DENY)
    env.set_policy()
    b = tm.snapshot()
    ret = bpf.test_run(env.progs["xdp_sip"].fd, udp4(sip_request("INVITE", callid="d@x")))[0]
    assert ret == bpf.XDP_DROP
    assert tm.delta(b) == [{}, {}, {}]


def test_latency_lands_in_log2_bucket(env, tm):
    """The transaction's start time is set to `now - 3 s` by hand: the 200 lands in
    slot 22 = [2^21, 2^22) us = [2.097, 4.194) s, whatever the scheduling delay
    between the map update and the response (> 1 s of margin)."""
    cid = "lat-1@x"
    xdp(env, sip_request("INVITE", callid=cid, cseq=1))
    m = tm.maps["etsf_tm_txn"]
    keys = m.keys()
    assert len(keys) == 1
    k = L.TmTxnKey.from_bytes(keys[0])
    assert (k.cseq, k.method, k.callid_hash) == (1, M.INVITE, L.fnv1a64(cid.encode()))
    t = L.TmTxn.from_bytes(m.lookup(keys[0]))
    t.start_ns = bpf.monotonic_ns() - 3_000_000_000
    m.update(keys[0], bytes(t))
    before = tm.hist(M.INVITE, S.FINAL_2XX)[1]
    tc(env, sip_response(200, "OK", callid=cid, cseq=1))
    after = tm.hist(M.INVITE, S.FINAL_2XX)[1]
    assert [a - b for a, b in zip(after, before)] == [0] * 22 + [1] + [0] * 9


@pytest.mark.parametrize("tm_off", [False, True])
def test_policy_turns_transaction_inserts_off(env, tm, tm_off):
    """Policy `telemetry.transactions: false` (ETSF_POL_F_TM_OFF): neither program
    observes; the default (flag clear) inserts one transaction per INVITE."""
    env.set_policy(flags=L.POL_F_VALID | (L.POL_F_TM_OFF if tm_off else 0))
    cid = "tmflag@x"
    b = tm.snapshot()
    xdp(env, sip_request("INVITE", callid=cid, cseq=1))
    keys = tm.maps["etsf_tm_txn"].keys()
    tc(env, sip_response(200, "OK", callid=cid, cseq=1))
    hist, codes, ev = tm.delta(b)
    if tm_off:
        assert keys == []
        assert (hist, codes, ev) == ({}, {}, {})
    else:
        assert [L.TmTxnKey.from_bytes(k).callid_hash for k in keys] == [L.fnv1a64(cid.encode())]
        assert hist == {(M.INVITE, S.FINAL_2XX): 1}
        assert codes == {(M.INVITE, 200): 1}
        assert ev == {EV.TXN_START: 1, EV.RESP_MATCHED: 1}
