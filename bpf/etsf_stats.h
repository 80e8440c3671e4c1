/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_stats.h - the per-packet accounting of the classifiers: exactly one
 * etsf_stats counter per packet, per-interface etsf_ifstats, and the last
 * parse result in etsf_last when the agent asks for it (ETSF_CTL_F_RECORD).
 */
#ifndef ETSF_STATS_H
#define ETSF_STATS_H

#include "etsf.h"
#include "etsf_maps.h"
#include "etsf_parse.h"
#include "etsf_sip_parse.h"

static __always_inline void etsf_count(__u32 hook, __u32 method, __u32 verdict,
				       __u32 reason, __u32 bytes)
{
	__u32 idx;
	struct etsf_counter *ctr;

	if (method >= ETSF_METHODS)
		method = ETSF_M_UNKNOWN;
	if (hook >= ETSF_HOOKS)
		hook = ETSF_HOOK_XDP;
	idx = ETSF_STATS_IDX(hook, method, verdict & 3, reason & (ETSF_REASONS - 1));
	ctr = bpf_map_lookup_elem(&etsf_stats, &idx);
	if (ctr) {
		ctr->packets++;
		ctr->bytes += bytes;
	}
}

static __always_inline struct etsf_ifstat *etsf_ifstat_get(__u32 ifindex)
{
	struct etsf_ifstat *s = bpf_map_lookup_elem(&etsf_ifstats, &ifindex);

	if (!s) {
		struct etsf_ifstat zero = {};

		bpf_map_update_elem(&etsf_ifstats, &ifindex, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&etsf_ifstats, &ifindex);
	}
	return s;
}

static __always_inline void etsf_record(const struct etsf_ctl *ctl, const struct etsf_sip_result *r,
					const struct etsf_pkt *p, __u32 verdict, __u32 reason)
{
	__u32 zero = 0;
	struct etsf_sip_info *li;

	if (!ctl || !(ctl->flags & ETSF_CTL_F_RECORD))
		return;
	li = bpf_map_lookup_elem(&etsf_last, &zero);
	if (!li)
		return;
	li->callid_hash = r->callid_hash;
	li->cseq = r->cseq;
	li->status = r->status;
	li->method = r->method;
	li->cseq_method = r->cseq_method;
	li->has_callid = r->has_callid;
	li->has_to_tag = r->has_to_tag;
	li->verdict = verdict;
	li->reason = reason;
	li->family = p->family;
	li->l4proto = p->l4proto;
	li->payload_len = p->plen > 0xffff ? 0xffff : p->plen;
}

/*
 * An ingress packet's interface counters, all at once at the end of the
 * program: an entry pointer held from the start would split every path after
 * it on whether the entry exists (the verifier keeps NULL and non-NULL apart).
 */
static __always_inline void etsf_ifstat_rx(__u32 ifindex, __u32 bytes, int sip, int dropped)
{
	struct etsf_ifstat *s = etsf_ifstat_get(ifindex);

	if (!s)
		return;
	s->rx_packets++;
	s->rx_bytes += bytes;
	s->sip_packets += sip;
	s->dropped += dropped;
}

#endif /* ETSF_STATS_H */
