/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_admit.h - admission of new INVITEs by fraction: a GCRA token bucket
 * per CPU (etsf_ctl.invite_admit_rate / invite_admit_burst), and a shared
 * table of decisions keyed by Call-ID + CSeq so that retransmissions of an
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
 * Sets of four ways, one cache line each, as telemetry's transactions
 * (etsf_tm_maps.h): a decision reads and writes one line, with no lock and no
 * list to keep; an LRU hash insert cost a bucket, a free node and the list
 * nodes its rotation scans, each a cache miss in traffic.  Shared by all CPUs,
 * so a retransmission arriving on another CPU finds the decision.  A full set
 * gives its oldest decision's way to the new one: an early eviction only lets
 * a retransmission take a token.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, ETSF_ADMIT_SETS);
	__type(key, __u32);
	__type(value, struct etsf_admit_set);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_admit_txn SEC(".maps");

static __always_inline __u64 etsf_admit_key(__u64 callid_hash, __u32 cseq)
{
	return callid_hash ^ ((__u64)cseq * 0x9E3779B97F4A7C15ULL);
}

/*
 * The set of an INVITE's decision (NULL only if the map is missing) and, in
 * *tag, its tag.  Both from the mixed key, so an upgrade can place the
 * decisions an LRU of these keys held (etsf.layout.admit_slot).
 */
static __always_inline struct etsf_admit_set *etsf_admit_set_of(__u64 callid_hash, __u32 cseq,
								 __u32 *tag)
{
	__u64 h = etsf_mix64(etsf_admit_key(callid_hash, cseq));
	__u32 i = (__u32)h & (ETSF_ADMIT_SETS - 1);

	*tag = etsf_tm_tag(h);
	return bpf_map_lookup_elem(&etsf_admit_txn, &i);
}

/* the decision of s holding tag, or NULL */
static __always_inline struct etsf_admit_txn *etsf_admit_way(struct etsf_admit_set *s, __u32 tag)
{
	return ETSF_SET_WAY(s, tag);
}

#define ETSF_ADMIT_NONE (-1)     /* no live decision */

/*
 * The live decision for r's INVITE: 1 admitted, 0 refused, ETSF_ADMIT_NONE
 * (none, or older than ETSF_ADMIT_TXN_NS).  This and etsf_admit_record are
 * global functions: the set's steps are verified once, not on every path of
 * the policy that reaches admission.
 */
__attribute__((noinline)) int etsf_admit_decision(const struct etsf_sip_result *r, __u64 now)
{
	struct etsf_admit_set *s;
	struct etsf_admit_txn *t;
	__u32 tag;

	if (!r)
		return ETSF_ADMIT_NONE;
	s = etsf_admit_set_of(r->callid_hash, r->cseq, &tag);
	if (!s)
		return ETSF_ADMIT_NONE;
	t = etsf_admit_way(s, tag);
	if (!t || now - t->ts_ns >= ETSF_ADMIT_TXN_NS)
		return ETSF_ADMIT_NONE;
	return t->admitted ? 1 : 0;
}

/*
 * Write the decision for r's INVITE: into its own way, else a free one or the
 * set's oldest.  The tag last: a reader on another CPU never pairs it with
 * the way's previous decision.
 */
__attribute__((noinline)) int etsf_admit_record(const struct etsf_sip_result *r, __u64 now,
						__u32 admitted)
{
	struct etsf_admit_set *s;
	struct etsf_admit_txn *t;
	__u32 tag;

	if (!r)
		return 0;
	s = etsf_admit_set_of(r->callid_hash, r->cseq, &tag);
	if (!s)
		return 0;
	t = etsf_admit_way(s, tag);
	if (!t)
		t = &s->way[etsf_way_oldest(s->way[0].ts_ns, s->way[1].ts_ns, s->way[2].ts_ns,
					    s->way[3].ts_ns)];
	t->ts_ns = now;
	t->admitted = admitted;
	asm volatile("" ::: "memory");
	t->tag = tag;
	return 0;
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
 * memory (etsf_admit_passed) and etsf_admit_txn is not touched: one table
 * write per INVITE, not two (a write and the cache misses of a table too big
 * to stay in the cache are the dearest steps of an INVITE's
 * classification).  Otherwise etsf_admit_txn gets an admit,
 * overwriting any decision but a live admit.  Call only for an
 * out-of-dialog INVITE with a Call-ID.
 */
static __always_inline void etsf_admit_note(const struct etsf_policy *pol, int valid,
					    struct etsf_pkt *p,
					    const struct etsf_sip_result *r)
{
	__u64 now;

	if (etsf_tm_records_request_in(pol, valid, p))
		return;
	now = bpf_ktime_get_ns();
	if (etsf_admit_decision(r, now) != 1)
		etsf_admit_record(r, now, 1);
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
	__u64 now = bpf_ktime_get_ns();
	__u64 T, tau, tat;
	__u32 burst = ctl->invite_admit_burst;
	int ok, d;

	if (!a)
		return 1;       /* fail open */
	d = etsf_admit_decision(r, now);
	if (d == 1) {
		a->retrans_admitted++;
		return 1;
	}
	/* passed while admission was off (etsf_admit_note): a refusal from before no longer holds */
	if (etsf_admit_passed(p, r, now)) {
		a->retrans_admitted++;
		return 1;
	}
	if (d == 0) {
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
	etsf_admit_record(r, now, ok);
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
	__u64 now = bpf_ktime_get_ns();

	return etsf_admit_decision(r, now) == 0 && !etsf_admit_passed(p, r, now);
}

#endif /* ETSF_ADMIT_H */
