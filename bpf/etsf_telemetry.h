/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_telemetry.h - in-kernel SIP transaction latency (the paper's "Performance
 * Telemetry Module").  Included by xdp_sip.bpf.c and tc_sip.bpf.c, which call
 * etsf_tm_observe() once per classified SIP message (parse reason OK, not
 * dropped) unless the live policy has ETSF_POL_F_TM_OFF (policy key
 * `telemetry.transactions: false`: no inserts, lookups or code counts).
 * Layouts are in etsf_structs.h / etsf_consts.h (struct etsf_tm_*, enum
 * etsf_tm_*), maps in etsf_tm_maps.h.
 *
 * Per interface (map etsf_tm_ifcfg, key ifindex, key 0 = default for every
 * interface without an entry; no entry at all = TOWARD):
 *   TOWARD: requests are seen entering (XDP ingress), responses leaving
 *           (TC egress): latency as the host's SIP element answers it.
 *   FROM:   requests leaving (TC egress), responses entering (XDP ingress):
 *           latency of the next hop, as seen by the host.
 *   OFF:    nothing.
 *
 * A request (not ACK) writes its transaction (Call-ID hash, CSeq, ifindex,
 * method) -> start time into a way of its set, unless its tag is already
 * there: a retransmitted request keeps the first timestamp.  A response looks up (Call-ID hash, CSeq, ifindex, CSeq method);
 * per transaction each stage is recorded once (first 100, first 180/183,
 * first final), and each code is counted once (retransmitted responses are
 * neither timed nor counted again).  Entries are never deleted on the final
 * response, so a retransmitted final or a late retransmitted request is still
 * recognised; a set's oldest way goes to a new transaction.  Responses without a tracked request are
 * counted (by code) and as RESP_NOMATCH, never timed.  Admission control reads
 * an INVITE's entry as the record that it passed while admission was off
 * (etsf_admit.h: etsf_admit_note), so it keeps no entry of its own for it.
 */
#ifndef ETSF_TELEMETRY_H
#define ETSF_TELEMETRY_H

#include "etsf.h"
#include "etsf_tm_maps.h"
#include "etsf_sip_parse.h"

/* dedupe bits in struct etsf_tm_txn.seen */
#define ETSF_TM_SEEN_100     (1u << 0)   /* 100 counted + TRYING recorded      */
#define ETSF_TM_SEEN_RINGING (1u << 1)   /* RINGING recorded                   */
#define ETSF_TM_SEEN_FINAL   (1u << 7)   /* first final counted + recorded     */
#define ETSF_TM_SEEN_18X     8           /* bits 8..17: 180..189 counted       */
#define ETSF_TM_SEEN_1XX     (1u << 18)  /* any other 1xx counted              */

static __always_inline void etsf_tm_event(__u32 ev)
{
	__u64 *v = bpf_map_lookup_elem(&etsf_tm_events, &ev);

	if (v)
		*v += 1;
}

/*
 * Bit length of the latency in microseconds: slot b holds [2^(b-1), 2^b) us.
 * A binary search without branches: each step's "is the upper half non-zero"
 * is 0 or 1 by arithmetic ((x + 2^k - 1) >> k for x < 2^k), so the verifier
 * walks one path here, not one per slot (64 with a branch per step).  The
 * barriers keep clang from turning a step back into a compare and a branch.
 */
static __always_inline __u64 etsf_tm_upper(__u64 x, __u32 k)
{
	__u64 t = x >> k;

	t += (1ULL << k) - 1;
	asm volatile("" : "+r"(t));
	return t >> k;          /* 1 if x >> k was non-zero, else 0 */
}

static __always_inline __u32 etsf_tm_slot(__u64 ns)
{
	__u64 us = ns / 1000, s, b;

	s = etsf_tm_upper(us, 32) << 5; us >>= s; b = s;
	s = etsf_tm_upper(us, 16) << 4; us >>= s; b += s;
	s = etsf_tm_upper(us, 8) << 3;  us >>= s; b += s;
	s = etsf_tm_upper(us, 4) << 2;  us >>= s; b += s;
	s = etsf_tm_upper(us, 2) << 1;  us >>= s; b += s;
	s = etsf_tm_upper(us, 1);       us >>= s; b += s;
	b += us;                /* us is 0 or 1 here */
	return b > ETSF_TM_BUCKETS - 1 ? ETSF_TM_BUCKETS - 1 : (__u32)b;
}

static __always_inline void etsf_tm_count_code(__u32 method, __u32 code)
{
	__u32 idx;
	__u64 *v;

	if (code < ETSF_TM_CODE_MIN || code >= ETSF_TM_CODE_MIN + ETSF_TM_CODES)
		return;
	if (method == ETSF_M_INVITE)
		idx = code - ETSF_TM_CODE_MIN;
	else if (method == ETSF_M_REGISTER)
		idx = ETSF_TM_CODES + code - ETSF_TM_CODE_MIN;
	else
		return;
	v = bpf_map_lookup_elem(&etsf_tm_codes, &idx);
	if (v)
		*v += 1;
}

static __always_inline void etsf_tm_record(__u32 method, __u32 stage, __u64 ns)
{
	__u32 idx = method * ETSF_TM_STAGES + stage, b = etsf_tm_slot(ns);
	struct etsf_tm_hist *h;

	h = bpf_map_lookup_elem(&etsf_tm_hist, &idx);
	if (!h)
		return;
	asm volatile("" : "+r"(b));     /* keep the mask: the verifier needs it */
	b &= ETSF_TM_BUCKETS - 1;
	h->count += 1;
	h->sum_ns += ns;
	h->slot[b] += 1;
}

/* the way a new transaction takes: a free one or else the set's oldest */
static __always_inline __u32 etsf_tm_victim(const struct etsf_tm_set *s)
{
	return etsf_way_oldest(s->way[0].start_ns, s->way[1].start_ns, s->way[2].start_ns,
			       s->way[3].start_ns);
}

/*
 * hook: ETSF_HOOK_XDP, ETSF_HOOK_TC_INGRESS or ETSF_HOOK_TC_EGRESS; dir: the
 * interface's direction (etsf_tm_dir; at ingress etsf_pkt_tm_dir, shared with
 * admission's note); r: a classified SIP message.
 * A global (non-inlined) function: the verifier checks it once, on its own,
 * instead of once per path of the caller (keeps xdp_sip's budget).
 */
__attribute__((noinline)) int etsf_tm_observe(__u32 hook, __u32 ifindex, __u32 dir,
					       const struct etsf_sip_result *r)
{
	struct etsf_tm_txn_key k;
	struct etsf_tm_set *s;
	struct etsf_tm_txn *t;
	__u32 ingress, is_req, tag;
	__u32 code, stage, sbit, cbit, seen;
	__u64 now, h;

	if (!r || !r->has_callid || r->method == ETSF_M_UNKNOWN || r->method >= ETSF_METHODS)
		return 0;
	if (dir >= ETSF_TM_OFF)
		return 0;
	/* both ingress hooks (XDP, TC ingress) see what comes toward the node */
	ingress = hook != ETSF_HOOK_TC_EGRESS;
	is_req = r->method != ETSF_M_RESPONSE;
	if (is_req != (ingress == (dir == ETSF_TM_TOWARD)))
		return 0;

	etsf_tm_key(&k, r->callid_hash, r->cseq, ifindex,
		    is_req ? r->method : r->cseq_method);
	h = etsf_tm_hash(&k);
	tag = etsf_tm_tag(h);
	s = etsf_tm_set_of(h);
	if (!s)
		return 0;

	/* the clock is read only where a time is kept or timed: a retransmission needs none */
	if (is_req) {
		if (r->method == ETSF_M_ACK)     /* no response to wait for */
			return 0;
		if (etsf_tm_way(s, tag)) {
			etsf_tm_event(ETSF_TM_EV_REQ_RETRANS);
			return 0;
		}
		now = bpf_ktime_get_ns();
		t = &s->way[etsf_tm_victim(s)];
		/* an open transaction gives up its way: its answer will not be timed */
		if (t->tag && !(t->seen & ETSF_TM_SEEN_FINAL) && now - t->start_ns < ETSF_TM_TXN_LIFE_NS)
			etsf_tm_event(ETSF_TM_EV_TXN_FULL);
		/* the tag last: a response on another CPU never pairs it with the old start */
		t->start_ns = now;
		t->seen = 0;
		asm volatile("" ::: "memory");
		t->tag = tag;
		etsf_tm_event(ETSF_TM_EV_TXN_START);
		return 0;
	}

	code = r->status;
	stage = ETSF_TM_STAGES;          /* none */
	sbit = 0;
	if (code == 100) {
		stage = ETSF_TM_TRYING;
		sbit = cbit = ETSF_TM_SEEN_100;
	} else if (code >= 180 && code <= 189) {
		cbit = 1u << (ETSF_TM_SEEN_18X + (code - 180));
		if (code == 180 || code == 183) {
			stage = ETSF_TM_RINGING;
			sbit = ETSF_TM_SEEN_RINGING;
		}
	} else if (code < 200) {
		cbit = ETSF_TM_SEEN_1XX;
	} else {
		stage = ETSF_TM_FINAL_2XX + (code / 100 - 2);
		if (stage > ETSF_TM_FINAL_6XX)
			stage = ETSF_TM_FINAL_6XX;
		sbit = cbit = ETSF_TM_SEEN_FINAL;
	}

	t = etsf_tm_way(s, tag);
	if (!t) {
		etsf_tm_event(ETSF_TM_EV_RESP_NOMATCH);
		etsf_tm_count_code(k.method, code);
		return 0;
	}
	seen = t->seen;
	if (seen & cbit) {
		etsf_tm_event(ETSF_TM_EV_RESP_RETRANS);
		return 0;
	}
	t->seen = seen | cbit | sbit;
	etsf_tm_count_code(k.method, code);
	if (stage < ETSF_TM_STAGES && !(seen & sbit)) {
		now = bpf_ktime_get_ns();
		etsf_tm_record(k.method, stage, now - t->start_ns);
		etsf_tm_event(ETSF_TM_EV_RESP_MATCHED);
	}
	return 0;
}

#endif /* ETSF_TELEMETRY_H */
