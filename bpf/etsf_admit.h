/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_admit.h - admission of new INVITEs by fraction: a GCRA token bucket
 * per CPU (etsf_ctl.invite_admit_rate / invite_admit_burst), and a shared
 * LRU of decisions keyed by Call-ID + CSeq so that retransmissions of an
 * INVITE get the answer the first copy got without taking a token.  Only
 * out-of-dialog INVITEs (no To-tag) come here: ACK, BYE, CANCEL, in-dialog
 * requests and responses are never shed by admission.
 */
#ifndef ETSF_ADMIT_H
#define ETSF_ADMIT_H

#include "etsf.h"
#include "etsf_parse.h"
#include "etsf_sip_parse.h"
#include "etsf_tm_maps.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct etsf_admit);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_admit SEC(".maps");

/*
 * One LRU list per CPU (BPF_F_NO_COMMON_LRU), like the token bucket: a
 * retransmission arriving on another CPU still finds the decision (the table
 * is shared); an early eviction only lets a retransmission take a token.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, ETSF_ADMIT_TXN_MAX);
	__type(key, __u64);
	__type(value, struct etsf_admit_txn);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_admit_txn SEC(".maps");

static __always_inline __u64 etsf_admit_key(__u64 callid_hash, __u32 cseq)
{
	return callid_hash ^ ((__u64)cseq * 0x9E3779B97F4A7C15ULL);
}

static __always_inline struct etsf_admit *etsf_admit_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&etsf_admit, &zero);
}

/*
 * The INVITE passed an ingress hook less than a transaction lifetime ago
 * (etsf_admit_note).  A global function: verified once, not on every path
 * of the policy that reaches it.
 */
__attribute__((noinline)) int etsf_admit_passed(const struct etsf_pkt *p,
						const struct etsf_sip_result *r, __u64 now)
{
	if (!p || !r)
		return 0;
	return etsf_tm_request_seen(r->callid_hash, r->cseq, ETSF_M_INVITE, p->ifindex, now,
				    ETSF_ADMIT_TXN_NS);
}

/*
 * Admission off: the INVITE passes, and is remembered as admitted, so that
 * its retransmissions still pass once admission is switched on (the proxy
 * has the first copy; a 503 to a copy would end a call the proxy goes on to
 * connect).  When telemetry inserts this INVITE's transaction entry
 * (etsf_tm_txn, never deleted on the final response) that entry is the
 * memory (etsf_admit_passed) and etsf_admit_txn is not touched: one LRU
 * insert per INVITE, not two, and no lookup in a table too big to stay in
 * the cache (an LRU insert and such misses are the dearest steps of an
 * INVITE's classification).  Otherwise etsf_admit_txn gets an admit,
 * overwriting any decision but a live admit.  Call only for an
 * out-of-dialog INVITE with a Call-ID.
 */
static __always_inline void etsf_admit_note(const struct etsf_policy *pol, int valid,
					    const struct etsf_pkt *p,
					    const struct etsf_sip_result *r)
{
	__u64 key = etsf_admit_key(r->callid_hash, r->cseq);
	struct etsf_admit_txn *t, nt = {};
	__u64 now;

	if (etsf_tm_records_request_in(pol, valid, p->ifindex))
		return;
	t = bpf_map_lookup_elem(&etsf_admit_txn, &key);
	now = bpf_ktime_get_ns();
	if (t && t->admitted && now - t->ts_ns < ETSF_ADMIT_TXN_NS)
		return;
	nt.ts_ns = now;
	nt.admitted = 1;
	bpf_map_update_elem(&etsf_admit_txn, &key, &nt, BPF_ANY);
}

/*
 * 1 = admit, 0 = refuse.  Call only for an out-of-dialog INVITE with a
 * Call-ID and admission on (ctl->invite_admit_rate != 0).
 */
static __always_inline int etsf_admit_invite(const struct etsf_ctl *ctl,
					     const struct etsf_pkt *p,
					     const struct etsf_sip_result *r)
{
	struct etsf_admit *a = etsf_admit_get();
	struct etsf_admit_txn *t, nt = {};
	__u64 key = etsf_admit_key(r->callid_hash, r->cseq);
	__u64 now = bpf_ktime_get_ns();
	__u64 T, tau, tat;
	__u32 burst = ctl->invite_admit_burst;
	int ok, live;

	if (!a)
		return 1;       /* fail open */
	t = bpf_map_lookup_elem(&etsf_admit_txn, &key);
	live = t && now - t->ts_ns < ETSF_ADMIT_TXN_NS;
	if (live && t->admitted) {
		a->retrans_admitted++;
		return 1;
	}
	/* passed while admission was off (etsf_admit_note): a refusal from before no longer holds */
	if (etsf_admit_passed(p, r, now)) {
		a->retrans_admitted++;
		return 1;
	}
	if (live) {
		a->retrans_rejected++;
		return 0;
	}
	ok = 0;
	if (burst) {
		T = 1000000000ULL / ctl->invite_admit_rate;
		if (T == 0)
			T = 1;
		tau = T * (burst - 1);
		tat = a->tat_ns > now ? a->tat_ns : now;
		if (tat - now <= tau) {
			a->tat_ns = tat + T;
			ok = 1;
		}
	}
	if (ok)
		a->admitted++;
	else
		a->rejected++;
	nt.ts_ns = now;
	nt.admitted = ok;
	bpf_map_update_elem(&etsf_admit_txn, &key, &nt, BPF_ANY);
	return ok;
}

/*
 * 1 = this ACK acknowledges a final response to an INVITE that admission
 * refused (Call-ID + CSeq number of a live refusal): the answer was ours, the
 * proxy never saw the transaction, so the ACK has nowhere useful to go.  An
 * ACK for an admitted INVITE (its 2xx or the proxy's error) is never matched,
 * nor one for an INVITE that passed after its refusal, while admission was off.
 */
static __always_inline int etsf_admit_refused_ack(const struct etsf_pkt *p,
						  const struct etsf_sip_result *r)
{
	__u64 key = etsf_admit_key(r->callid_hash, r->cseq);
	struct etsf_admit_txn *t;
	__u64 now;

	t = bpf_map_lookup_elem(&etsf_admit_txn, &key);
	if (!t || t->admitted)
		return 0;
	now = bpf_ktime_get_ns();
	return now - t->ts_ns < ETSF_ADMIT_TXN_NS && !etsf_admit_passed(p, r, now);
}

#endif /* ETSF_ADMIT_H */
