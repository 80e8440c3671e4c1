// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * etsf_reply_skb_check.c - test-only TC program: the in-kernel answers of
 * xdp_sip (the 503 to an INVITE refused by admission, the 200 to a
 * keep-alive OPTIONS) put on the wire by etsf_skb_reply instead of
 * etsf_xdp_reply, so tests/bpf/test_respond_skb.py can compare the two
 * frames and deliver the TC one over a veth.  Built only by the tests
 * (etsf.build.build_test_object; not a *.bpf.c, so `etsfctl build` never
 * compiles, ships or loads it); the production TC ingress program
 * (tc_fastpath) calls etsf_skb_reply the same way.
 *
 * etsf_reply_check (test-only, pinned by name under the test's pin root)
 * counts, per packet answered, the skb's checksum state seen on entry
 * (index = ip_summed: 0 NONE, 1 UNNECESSARY, 2 COMPLETE, 3 PARTIAL), so a
 * test knows which state its traffic exercised, and the outcomes of
 * etsf_skb_reply (ETSF_RCHK_*).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "etsf_ctx_skb.h"
#include "etsf.h"
#include "etsf_kernel.h"
#include "etsf_classify.h"
#include "etsf_policy.h"
#include "etsf_admit.h"
#include "etsf_respond.h"
#include "etsf_keepalive.h"
#include "etsf_reply_skb.h"

#define ETSF_RCHK_SENT      4          /* etsf_skb_reply returned 0  */
#define ETSF_RCHK_UNCHANGED 5          /* -1                         */
#define ETSF_RCHK_DROPPED   6          /* -2                         */
#define ETSF_RCHK_SLOTS     8

#ifndef TC_ACT_SHOT
#define TC_ACT_SHOT  2
#endif

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ETSF_RCHK_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_reply_check SEC(".maps");

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

static __always_inline void etsf_rchk_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&etsf_reply_check, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("tc")
int tc_reply_check(struct __sk_buff *skb)
{
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	struct etsf_pkt p = {};
	struct etsf_sip_result r = {};
	const struct etsf_policy *pol = NULL;
	struct etsf_ctl *ctl = NULL;
	const struct etsf_ka_cfg *kc = NULL;
	struct etsf_resp *o;
	__u32 reason, verdict, code = 0, summed;
	int valid = 0, rc;

	summed = (__u32)BPF_CORE_READ_BITFIELD(kskb, ip_summed) & 3;
	p.pkt_len = skb->len;
	p.ifindex = skb->ingress_ifindex;
	reason = etsf_classify(skb, ETSF_HOOK_TC_INGRESS, &p, &r, &ctl, &pol, &valid);
	if (reason != ETSF_R_OK || !ctl)
		return TC_ACT_OK;
	verdict = etsf_policy_verdict(ctl, pol, valid, &p, &r, r.reason, &reason);
	if (reason == ETSF_R_ADMISSION && !(ctl->flags & ETSF_CTL_F_ADMIT_SILENT)) {
		code = 503;
	} else if (etsf_ka_candidate(pol, valid, &p, &r, verdict, reason)) {
		__u32 slot = ctl->active_slot & 1;

		kc = bpf_map_lookup_elem(&etsf_ka_cfg, &slot);
		if (kc)
			code = 200;
	}
	if (!code || p.l4proto != IPPROTO_UDP)
		return verdict == ETSF_V_DROP ? TC_ACT_SHOT : TC_ACT_OK;
	o = etsf_respond(&p, &r, ctl, code, code == 200 ? kc : NULL);
	if (code == 200 &&
	    etsf_ka_decide(ctl, o, &r, ctl->active_slot & 1, etsf_ka_stats_get()) != ETSF_KA_ANSWER)
		return TC_ACT_OK;
	if (!o)
		return verdict == ETSF_V_DROP ? TC_ACT_SHOT : TC_ACT_OK;
	rc = etsf_skb_reply(skb, p.l3off, p.l4off, p.family, p.pkt_len);
	if (rc == 0) {
		etsf_rchk_count(summed);
		etsf_rchk_count(ETSF_RCHK_SENT);
		return bpf_redirect(skb->ifindex, 0);
	}
	etsf_rchk_count(rc == -1 ? ETSF_RCHK_UNCHANGED : ETSF_RCHK_DROPPED);
	return rc == -1 && verdict != ETSF_V_DROP ? TC_ACT_OK : TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
