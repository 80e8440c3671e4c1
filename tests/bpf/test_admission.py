"""Admission of new INVITEs by per-CPU token rate (etsf_ctl.invite_admit_rate/burst): tokens
counted, retransmissions answered consistently from etsf_admit_txn, expiry of a decision,
what is never shed.  The test pins itself to one CPU: the buckets are per CPU."""
import os
import time

import pytest

from etsf import bpf
from etsf import layout as L

from .helpers import admit_get, admit_put, M, R, V, sip_request, sip_response, tm_get, udp4


@pytest.fixture
def one_cpu():
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(old)})
    yield
    os.sched_setaffinity(0, old)


def admission(env, rate, burst, flags=L.CTL_F_RECORD | L.CTL_F_ADMIT_SILENT, pol_flags=None, **pol):
    if pol_flags is not None:
        pol["flags"] = pol_flags
    env.set_policy(**pol)
    c = env.ctl()
    c.invite_admit_rate = rate
    c.invite_admit_burst = burst
    c.retry_after_s = 5
    c.flags = flags
    env.maps["etsf_ctl"].update(bytes(4), bytes(c))


def invite(i, cseq=1):
    return udp4(sip_request("INVITE", callid=f"adm-{i}@198.18.1.10", cseq=cseq))


def verdicts(env, frames):
    return [env.xdp_raw(f)[0] for f in frames]


def test_off_admits_everything(env, one_cpu):
    admission(env, 0, 0)
    env.xdp(invite(1), V.PASS, M.INVITE, R.OK, n=1)
    a = env.admit()
    assert (a.admitted, a.rejected) == (0, 0)


def tm_key(i, cseq=1, ifindex=1):
    return L.TmTxnKey(callid_hash=L.fnv1a64(f"adm-{i}@198.18.1.10".encode()), cseq=cseq,
                      ifindex=ifindex, method=M.INVITE)


@pytest.mark.parametrize("tm_off", [False, True], ids=["telemetry-on", "telemetry-off"])
def test_passed_while_off_stays_admitted_once_on(env, one_cpu, tm_off):
    """An INVITE that passed while admission was off reached the proxy: once admission is on,
    its retransmissions pass too (no token, no 503), while new INVITEs are refused.  With
    telemetry on, its transaction entry is the memory (no etsf_admit_txn insert: one table write
    per INVITE); with telemetry off, etsf_admit_txn holds it."""
    flags = L.POL_F_VALID | (L.POL_F_TM_OFF if tm_off else 0)
    admission(env, 0, 0, pol_flags=flags)
    env.xdp(invite(5), V.PASS, M.INVITE, R.OK)
    if tm_off:
        t = admit_get(env.maps["etsf_admit_txn"], "adm-5@198.18.1.10", 1)
        assert t.admitted == 1 and t.ts_ns > 0
        assert tm_get(env.maps["etsf_tm_txn"], tm_key(5)) is None
    else:
        assert admit_get(env.maps["etsf_admit_txn"], "adm-5@198.18.1.10", 1) is None
        assert tm_get(env.maps["etsf_tm_txn"], tm_key(5)) is not None
    admission(env, 1000, 0, pol_flags=flags)                      # on, admitting no new INVITE
    env.xdp(invite(5), V.PASS, M.INVITE, R.OK, n=2)
    env.xdp(invite(6), V.DROP, M.INVITE, R.ADMISSION)
    a = env.admit()
    assert (a.admitted, a.retrans_admitted, a.rejected, a.retrans_rejected) == (0, 2, 1, 0)
    admission(env, 0, 0, pol_flags=flags)                         # off again: the refused one passes
    env.xdp(invite(6), V.PASS, M.INVITE, R.OK)
    admission(env, 1000, 0, pol_flags=flags)                      # and stays admitted
    env.xdp(invite(6), V.PASS, M.INVITE, R.OK)
    assert (env.admit().retrans_admitted, env.admit().retrans_rejected) == (3, 0)


def test_burst_admits_exactly_burst_new_invites(env, one_cpu):
    """rate 1/s, burst B: N distinct INVITEs admit B plus at most one token per elapsed second."""
    burst, n = 5, 12
    admission(env, 1, burst)
    t0 = time.monotonic()
    rets = verdicts(env, [invite(i) for i in range(n)])
    elapsed = time.monotonic() - t0
    admitted = rets.count(bpf.XDP_PASS)
    assert rets.count(bpf.XDP_DROP) == n - admitted
    assert burst <= admitted <= burst + 1 + int(elapsed)
    assert rets[:burst] == [bpf.XDP_PASS] * burst
    a = env.admit()
    assert (a.admitted, a.rejected) == (admitted, n - admitted)
    assert env.counter(L.Hook.XDP, M.INVITE, V.DROP, R.ADMISSION) >= n - admitted


def test_burst_zero_admits_none(env, one_cpu):
    admission(env, 1000, 0)
    env.xdp(invite(1), V.DROP, M.INVITE, R.ADMISSION)
    env.xdp(invite(2), V.DROP, M.INVITE, R.ADMISSION)
    assert env.admit().rejected == 2


def test_retransmission_of_admitted_takes_no_token(env, one_cpu):
    admission(env, 1, 1)
    env.xdp(invite(1), V.PASS, M.INVITE, R.OK)
    # the bucket is empty now (1 token per second): the copies of the admitted INVITE still pass
    env.xdp(invite(1), V.PASS, M.INVITE, R.OK, n=3)
    a = env.admit()
    assert (a.admitted, a.retrans_admitted) == (1, 3)
    assert a.rejected == 0


def test_retransmission_of_rejected_is_rejected_again(env, one_cpu):
    admission(env, 1, 0)
    env.xdp(invite(7), V.DROP, M.INVITE, R.ADMISSION)
    c = env.ctl()
    c.invite_admit_burst = 100          # tokens now, but the decision for this INVITE holds
    env.maps["etsf_ctl"].update(bytes(4), bytes(c))
    env.xdp(invite(7), V.DROP, M.INVITE, R.ADMISSION, n=2)
    env.xdp(invite(8), V.PASS, M.INVITE, R.OK)
    a = env.admit()
    assert (a.rejected, a.retrans_rejected, a.admitted) == (1, 2, 1)


def test_new_cseq_is_a_new_decision(env, one_cpu):
    admission(env, 1, 1)
    env.xdp(invite(3, cseq=1), V.PASS, M.INVITE, R.OK)
    env.xdp(invite(3, cseq=2), V.DROP, M.INVITE, R.ADMISSION)


@pytest.mark.parametrize("default_dir,if_dir,in_tm", [(None, L.TmDir.OFF, False), (L.TmDir.OFF, L.TmDir.TOWARD, True),
                                                      (L.TmDir.TOWARD, L.TmDir.FROM, False)],
                         ids=["iface-off", "iface-toward-default-off", "iface-from"])
def test_note_follows_the_interface_direction(env, one_cpu, default_dir, if_dir, in_tm):
    """Telemetry on in the policy: the INVITE's memory is telemetry's transaction only where the
    interface it entered (ifindex 1 here; else key 0) records requests entering (`toward`),
    else admission's own decision; never both.  The direction is looked up once per packet and
    serves both."""
    with bpf.open_map("etsf_tm_ifcfg", env.root) as ifc:
        try:
            if default_dir is not None:
                ifc.update(bytes(4), bytes(L.TmIfCfg(dir=int(default_dir))))
            ifc.update((1).to_bytes(4, "little"), bytes(L.TmIfCfg(dir=int(if_dir))))
            admission(env, 0, 0)
            env.xdp(invite(7), V.PASS, M.INVITE, R.OK)
            assert (tm_get(env.maps["etsf_tm_txn"], tm_key(7)) is not None) == in_tm
            t = admit_get(env.maps["etsf_admit_txn"], "adm-7@198.18.1.10", 1)
            assert (t is None) == in_tm and (in_tm or t.admitted == 1)
            admission(env, 1000, 0)                             # on, no token: the copy still passes
            env.xdp(invite(7), V.PASS, M.INVITE, R.OK)
            assert env.admit().retrans_admitted == 1
        finally:
            for k in ifc.keys():
                ifc.delete(k)


def test_decision_expires_after_transaction_lifetime(env, one_cpu):
    """An etsf_admit_txn entry older than 32 s is ignored: a new decision is taken."""
    admission(env, 1, 0)
    req = sip_request("INVITE", callid="old@198.18.1.10", cseq=9)
    m = env.maps["etsf_admit_txn"]
    admit_put(m, "old@198.18.1.10", 9, bpf.monotonic_ns() - L.ADMIT_TXN_NS - 10**9, 1)
    env.xdp(udp4(req), V.DROP, M.INVITE, R.ADMISSION)
    admit_put(m, "old@198.18.1.10", 9, bpf.monotonic_ns(), 1)
    env.xdp(udp4(req), V.PASS, M.INVITE, R.OK)
    a = env.admit()
    assert (a.rejected, a.retrans_admitted) == (1, 1)


def test_decision_recorded_in_txn_map(env, one_cpu):
    admission(env, 1, 0)
    env.xdp(invite(4, cseq=44), V.DROP, M.INVITE, R.ADMISSION)
    t = admit_get(env.maps["etsf_admit_txn"], "adm-4@198.18.1.10", 44)
    assert t.admitted == 0 and t.ts_ns > 0


def _same_set(n: int) -> list[int]:
    """n INVITE numbers (invite(i), CSeq 1) whose decisions share one etsf_admit_txn set."""
    by_set: dict[int, list[int]] = {}
    i = 1000
    while True:
        idx = L.admit_slot(L.admit_key(L.fnv1a64(f"adm-{i}@198.18.1.10".encode()), 1))[0]
        by_set.setdefault(idx, []).append(i)
        if len(by_set[idx]) == n:
            return by_set[idx]
        i += 1


def test_full_set_gives_its_oldest_decision_way(env, one_cpu):
    """Four decisions per set: a fifth new INVITE of the same set takes the oldest's way.  The
    others' retransmissions keep their answer without a token; the first's is decided again
    (a new refusal, not a retransmission's)."""
    m = env.maps["etsf_admit_txn"]
    ids = _same_set(5)
    admission(env, 1, 0)                                        # every new INVITE refused
    for i in ids:
        env.xdp(invite(i), V.DROP, M.INVITE, R.ADMISSION)
    assert admit_get(m, f"adm-{ids[0]}@198.18.1.10", 1) is None   # the oldest went
    assert all(admit_get(m, f"adm-{i}@198.18.1.10", 1).admitted == 0 for i in ids[1:])
    a = env.admit()
    assert (a.rejected, a.retrans_rejected) == (5, 0)
    for i in ids[1:]:
        env.xdp(invite(i), V.DROP, M.INVITE, R.ADMISSION)
    env.xdp(invite(ids[0]), V.DROP, M.INVITE, R.ADMISSION)
    a = env.admit()
    assert (a.rejected, a.retrans_rejected) == (6, 4)
    assert admit_get(m, f"adm-{ids[1]}@198.18.1.10", 1) is None   # now the oldest of the set


def test_agent_slot_is_the_programs(env, one_cpu):
    """etsf.layout.admit_get() finds each decision the programs wrote, admitted or refused,
    across Call-IDs and CSeq numbers (set and tag from one mix of the key)."""
    sent = [(3000 + i, 1 + i * 7919) for i in range(40)]
    admission(env, 1000, 1000)                                  # the first 20 admitted
    for i, cseq in sent[:20]:
        env.xdp(invite(i, cseq=cseq), V.PASS, M.INVITE, R.OK)
    admission(env, 1, 0)                                        # the next 20 refused
    for i, cseq in sent[20:]:
        env.xdp(invite(i, cseq=cseq), V.DROP, M.INVITE, R.ADMISSION)
    got = [admit_get(env.maps["etsf_admit_txn"], f"adm-{i}@198.18.1.10", cseq) for i, cseq in sent]
    assert [t.admitted for t in got] == [1] * 20 + [0] * 20
    a = env.admit()
    assert (a.admitted, a.rejected) == (20, 20)


@pytest.mark.parametrize("method", ["ACK", "BYE", "CANCEL", "PRACK", "UPDATE"])
def test_never_sheds_other_requests(env, one_cpu, method):
    admission(env, 1, 0)
    env.xdp(udp4(sip_request(method, callid="dlg@x", cseq=2)), V.PASS, M[method], R.OK)
    assert env.admit().rejected == 0


def test_in_dialog_invite_and_responses_never_shed(env, one_cpu):
    admission(env, 1, 0)
    env.xdp(udp4(sip_request("INVITE", to_tag="t1")), V.PASS, M.INVITE, R.OK)
    env.xdp(udp4(sip_response(503, "Service Unavailable")), V.PASS, M.RESPONSE, R.OK)
    assert env.admit().rejected == 0


def test_register_not_subject_to_admission_but_shed_by_level_first(env, one_cpu):
    """REGISTER is shed by the overload level before calls; admission counts INVITEs only."""
    admission(env, 1, 0)
    env.xdp(udp4(sip_request("REGISTER")), V.PASS, M.REGISTER, R.OK)
    c = env.ctl()
    c.overload_level = 2                # default shed_below[2] = 2: NORMAL (REGISTER) shed
    env.maps["etsf_ctl"].update(bytes(4), bytes(c))
    env.xdp(udp4(sip_request("REGISTER")), V.DROP, M.REGISTER, R.OVERLOAD)
    env.xdp(invite(5), V.DROP, M.INVITE, R.ADMISSION)
    assert env.admit().rejected == 1


def test_per_source_limit_drops_silently_before_admission(env, one_cpu):
    """An INVITE over its source's rate limit is dropped silently: no admission decision, no 503."""
    admission(env, 1, 0, flags=L.CTL_F_RECORD, rates={L.RlClass.INVITE: (1, 1)})
    ret, last = env.xdp_raw(invite(1))
    assert (ret, last.reason) == (bpf.XDP_TX, R.ADMIT_503)
    env.xdp(invite(2), V.DROP, M.INVITE, R.RATE_LIMIT)
    a = env.admit()
    assert (a.rejected, a.replied) == (1, 1)


def _ack(i, cseq=1):
    return udp4(sip_request("ACK", callid=f"adm-{i}@198.18.1.10", cseq=cseq, to_tag="etsf-503"))


@pytest.mark.parametrize("tm_off", [False, True], ids=["telemetry-on", "telemetry-off"])
def test_ack_of_refused_invite_is_absorbed(env, one_cpu, tm_off):
    """The ACK of a refused INVITE (same Call-ID and CSeq number) stops at the node; the ACK of an
    admitted one, and an ACK whose CSeq does not match the refusal, pass.  Once a copy of the
    refused INVITE has passed (admission off), the proxy has it and its ACK passes too."""
    flags = L.POL_F_VALID | (L.POL_F_TM_OFF if tm_off else 0)
    admission(env, 1, 1, pol_flags=flags)
    env.xdp(invite(20), V.PASS, M.INVITE, R.OK)
    env.xdp(invite(21), V.DROP, M.INVITE, R.ADMISSION)
    env.xdp(_ack(21), V.DROP, M.ACK, R.ADMIT_ACK, n=2)      # a re-ACK of a 503 retransmission too
    env.xdp(_ack(20), V.PASS, M.ACK, R.OK)
    env.xdp(_ack(21, cseq=2), V.PASS, M.ACK, R.OK)
    # admission switched off: the refusal still stands for its transaction's lifetime
    admission(env, 0, 0, pol_flags=flags)
    env.xdp(_ack(21), V.DROP, M.ACK, R.ADMIT_ACK)
    a = env.admit()
    assert (a.admitted, a.rejected) == (1, 1)
    env.xdp(invite(21), V.PASS, M.INVITE, R.OK)              # a copy passes while admission is off
    env.xdp(_ack(21), V.PASS, M.ACK, R.OK)
    admission(env, 1, 0, pol_flags=flags)                    # on again: the copy stays admitted
    env.xdp(invite(21), V.PASS, M.INVITE, R.OK)
    env.xdp(_ack(21), V.PASS, M.ACK, R.OK)
    assert env.admit().retrans_admitted == 1


def test_ack_after_refusal_expired_passes(env, one_cpu):
    admission(env, 1, 0)
    admit_put(env.maps["etsf_admit_txn"], "adm-22@198.18.1.10", 1,
              bpf.monotonic_ns() - L.ADMIT_TXN_NS - 10**9, 0)
    env.xdp(_ack(22), V.PASS, M.ACK, R.OK)
