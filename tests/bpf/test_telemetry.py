"""In-kernel SIP transaction latency (bpf/etsf_telemetry.h) through BPF_PROG_TEST_RUN.

BPF_PROG_TEST_RUN runs both programs on the loopback device of this netns, so
requests and responses share one ifindex (as on a one-armed proxy).  TOWARD
(default): requests at XDP ingress, responses at TC egress; FROM: the reverse.
Histogram and counter checks are exact deltas.
"""
import pytest

from etsf import bpf
from etsf import layout as L

from .helpers import M, sets_clear, sip_request, sip_response, tm_get, tm_key, tm_set_start, tm_txns, udp4

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
        sets_clear(self.maps["etsf_tm_txn"])
        m = self.maps["etsf_tm_ifcfg"]
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
    assert len(tm_txns(m)) == 1
    k = tm_key(cid, 1, 1, M.INVITE)         # XDP's PROG_TEST_RUN: ifindex 1
    assert tm_get(m, k) is not None
    tm_set_start(m, k, bpf.monotonic_ns() - 3_000_000_000)
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
    txns = tm_txns(tm.maps["etsf_tm_txn"])
    found = tm_get(tm.maps["etsf_tm_txn"], tm_key(cid, 1, 1, M.INVITE))
    tc(env, sip_response(200, "OK", callid=cid, cseq=1))
    hist, codes, ev = tm.delta(b)
    if tm_off:
        assert txns == [] and found is None
        assert (hist, codes, ev) == ({}, {}, {})
    else:
        assert len(txns) == 1 and found is not None and found.start_ns > 0
        assert hist == {(M.INVITE, S.FINAL_2XX): 1}
        assert codes == {(M.INVITE, 200): 1}
        assert ev == {EV.TXN_START: 1, EV.RESP_MATCHED: 1}


def _same_set(n: int, ifindex: int = 1) -> list[str]:
    """n Call-IDs whose INVITE (CSeq 1) transactions share one etsf_tm_txn set."""
    by_set: dict[int, list[str]] = {}
    i = 0
    while True:
        cid = f"set-{i}@198.18.1.10"
        idx = L.tm_slot(tm_key(cid, 1, ifindex, M.INVITE))[0]
        by_set.setdefault(idx, []).append(cid)
        if len(by_set[idx]) == n:
            return by_set[idx]
        i += 1


def test_full_set_gives_its_oldest_way_to_a_new_transaction(env, tm):
    """Four ways per set: a fifth INVITE of the same set takes the oldest's way and counts
    TXN_FULL (that transaction was younger than 32 s); its 200 then finds nothing, the others'
    still match.  Once the ways are older than a transaction's life, taking one is not counted."""
    m = tm.maps["etsf_tm_txn"]
    cids = _same_set(6)
    b = tm.snapshot()
    for cid in cids[:4]:
        xdp(env, sip_request("INVITE", callid=cid, cseq=1))
    assert len(tm_txns(m)) == 4
    assert tm.delta(b)[2] == {EV.TXN_START: 4}
    xdp(env, sip_request("INVITE", callid=cids[4], cseq=1))
    assert tm.delta(b)[2] == {EV.TXN_START: 5, EV.TXN_FULL: 1}
    assert tm_get(m, tm_key(cids[0], 1, 1, M.INVITE)) is None          # the oldest went
    assert all(tm_get(m, tm_key(c, 1, 1, M.INVITE)) for c in cids[1:5])
    assert len(tm_txns(m)) == 4
    b = tm.snapshot()
    tc(env, sip_response(200, "OK", callid=cids[0], cseq=1))
    tc(env, sip_response(200, "OK", callid=cids[4], cseq=1))
    assert tm.delta(b)[2] == {EV.RESP_NOMATCH: 1, EV.RESP_MATCHED: 1}
    # every way older than a transaction's life: the next one replaces the oldest, uncounted
    old = bpf.monotonic_ns() - L.TM_TXN_LIFE_NS - 1_000_000_000
    for j, c in enumerate(cids[1:5]):
        tm_set_start(m, tm_key(c, 1, 1, M.INVITE), old + j)
    b = tm.snapshot()
    xdp(env, sip_request("INVITE", callid=cids[5], cseq=1))
    assert tm.delta(b)[2] == {EV.TXN_START: 1}
    assert tm_get(m, tm_key(cids[1], 1, 1, M.INVITE)) is None
    assert tm_get(m, tm_key(cids[5], 1, 1, M.INVITE)) is not None


def test_agent_hash_is_the_programs(env, tm):
    """etsf.layout.tm_slot() finds what the programs wrote, for Call-IDs, CSeqs and methods
    across the table (the set and the tag both come from one 64-bit mix)."""
    m = tm.maps["etsf_tm_txn"]
    sent = [(f"h{i}-{'x' * (i % 13)}@198.18.1.10", 1 + i * 7919, meth)
            for i, meth in enumerate([M.INVITE, M.REGISTER, M.BYE, M.OPTIONS] * 8)]
    for cid, cseq, meth in sent:
        xdp(env, sip_request(M(meth).name, callid=cid, cseq=cseq))
    assert len(tm_txns(m)) == len(sent)
    assert all(tm_get(m, tm_key(cid, cseq, 1, meth)) is not None for cid, cseq, meth in sent)
    assert {L.tm_slot(tm_key(cid, cseq, 1, meth))[0] for cid, cseq, meth in sent}.__len__() > len(sent) // 2


def test_answered_transaction_gives_up_its_way_uncounted(env, tm):
    """A full set of answered transactions (final response seen): the next one takes the
    oldest's way and nothing is counted as lost (its timing is already recorded)."""
    m = tm.maps["etsf_tm_txn"]
    cids = _same_set(5)
    for cid in cids[:4]:
        xdp(env, sip_request("INVITE", callid=cid, cseq=1))
        tc(env, sip_response(200, "OK", callid=cid, cseq=1))
    b = tm.snapshot()
    xdp(env, sip_request("INVITE", callid=cids[4], cseq=1))
    assert tm.delta(b)[2] == {EV.TXN_START: 1}
    assert tm_get(m, tm_key(cids[0], 1, 1, M.INVITE)) is None
    assert len(tm_txns(m)) == 4


def test_exported_occupancy_is_the_live_transactions(env, tm):
    """What the exporter (and the fail-safe's map_pressure rule) reads as the table's entries:
    the transactions started less than 32 s ago, not every way ever written (ways are reused,
    never deleted, so that count would say "full" on any node that has seen 32,768)."""
    from etsf.telemetry import reader
    m = tm.maps["etsf_tm_txn"]
    cids = [f"occ-{i}@198.18.1.10" for i in range(3)]
    for cid in cids:
        xdp(env, sip_request("INVITE", callid=cid, cseq=1))
    tm_set_start(m, tm_key(cids[0], 1, 1, M.INVITE), bpf.monotonic_ns() - L.TM_TXN_LIFE_NS - 10**9)
    snap = reader.snapshot(root=env.root, programs=False)
    assert snap["maps"]["etsf_tm_txn"] == {"entries": 2, "max_entries": L.TM_TXN_MAX}
    assert len(tm_txns(m)) == 3


FROM_SEEN = {EV.TXN_START: 1, EV.RESP_MATCHED: 1}


@pytest.mark.parametrize("looked_up, tm_copy, want_events", [
    (L.TmDir.FROM, 0, FROM_SEEN),                                        # no copy: looked up
    (None, L.IF_TM_KNOWN | L.TmDir.FROM, FROM_SEEN),
    (L.TmDir.FROM, L.IF_TM_KNOWN | L.TmDir.TOWARD, {EV.RESP_NOMATCH: 1}),
    (L.TmDir.FROM, L.IF_TM_KNOWN | L.TmDir.OFF, {}),
], ids=["no-copy", "copy-from", "copy-toward", "copy-off"])
def test_xdp_and_egress_read_the_interface_entry(env, tm, looked_up, tm_copy, want_events):
    """xdp_sip and tc_sip_egress take the interface's direction from the copy the agent keeps in
    its etsf_if_cfg entry, as TC ingress does, and look etsf_tm_ifcfg up only without one.  FROM:
    the INVITE leaving (TC egress) starts the transaction and its 180 entering (XDP) is timed;
    TOWARD: only the 200 leaving is seen (no request: unmatched); OFF: nothing."""
    tm.reset(default_dir=looked_up)
    key = (1).to_bytes(4, "little")
    with bpf.open_map("etsf_if_cfg", env.root) as ifc:
        ifc.update(key, bytes(L.IfCfg(flags=L.IF_F_XDP, tm=tm_copy)))
        try:
            b = tm.snapshot()
            tc(env, sip_request("INVITE", callid="ifcopy@x", cseq=5))
            xdp(env, sip_response(180, "Ringing", callid="ifcopy@x", cseq=5))
            tc(env, sip_response(200, "OK", callid="ifcopy@x", cseq=5))
            ev = tm.delta(b)[2]
        finally:
            ifc.delete(key)
    assert ev == want_events
