/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_ingress.h - what an ingress classifier decides before the parse (a
 * denied source, a REGISTER over its limit) and after it, the same at every
 * ingress hook (XDP, TC ingress): the policy verdict, the NAT
 * keep-alive drop, and whether an in-kernel answer is due (503 for a new
 * INVITE refused by admission, 200 for a keep-alive OPTIONS).  Putting an
 * answer on the wire is the hook's own code (etsf_xdp_reply at XDP,
 * etsf_skb_reply at TC); its outcome is accounted here, so both hooks give
 * the same verdicts, reasons and counters.
 */
#ifndef ETSF_INGRESS_H
#define ETSF_INGRESS_H

#include "etsf.h"
#include "etsf_maps.h"
#include "etsf_policy.h"
#include "etsf_admit.h"
#include "etsf_respond.h"
#include "etsf_keepalive.h"
#include "etsf_classify.h"

/*
 * The payload's first 16 bytes into *b (in place in the linear head, the
 * usual case: no helper call; else copied to copy).  0 when there are fewer.
 */
static __always_inline int etsf_peek(etsf_ctx_t *ctx, const struct etsf_pkt *p, __u8 *copy,
				     const __u8 **b)
{
	void *data, *data_end;
	__u32 off = p->poff;

	if (p->plen < 16)
		return 0;
	etsf_ctx_bounds(ctx, &data, &data_end);
	if (off < 512 && data + off + 16 <= data_end) {
		*b = data + off;
		return 1;
	}
	if (etsf_ctx_load_bytes(ctx, off, copy, 16))
		return 0;
	*b = copy;
	return 1;
}

/*
 * The method a payload's first token names, as the parser's start line names
 * it in a well-formed message (RESPONSE for "SIP/2.0 "); ETSF_M_UNKNOWN for
 * any other token, a TLS port or fewer than 16 bytes.
 */
static __always_inline __u32 etsf_peek_method(etsf_ctx_t *ctx, const struct etsf_pkt *p, __u32 pc)
{
	const __u8 *b = NULL;
	__u8 copy[16];
	__u32 n;
	__u64 w;

	if (pc != ETSF_PORT_SIP || !etsf_peek(ctx, p, copy, &b) || !b)
		return ETSF_M_UNKNOWN;
	__builtin_memcpy(&w, b, 8);
	if ((w | ETSF_SIP_LOWER64) == ETSF_SIP_C8('s', 'i', 'p', '/', '2', '.', '0', ' '))
		return ETSF_M_RESPONSE;
	n = b[3] == ' ' ? 3 : b[4] == ' ' ? 4 : b[5] == ' ' ? 5 : b[6] == ' ' ? 6 :
	    b[7] == ' ' ? 7 : b[8] == ' ' ? 8 : b[9] == ' ' ? 9 : 0;
	n = etsf_sip_method_word(w, b[8], n);
	return n == ETSF_M_OTHER ? ETSF_M_UNKNOWN : n;
}

/* does the payload start "REGISTER "? (the only method decided before the parse) */
static __always_inline int etsf_peek_register(etsf_ctx_t *ctx, const struct etsf_pkt *p)
{
	const __u8 *b = NULL;
	__u8 copy[16];
	__u64 w;

	if (!etsf_peek(ctx, p, copy, &b) || !b)
		return 0;
	__builtin_memcpy(&w, b, 8);
	return w == ETSF_SIP_C8('R', 'E', 'G', 'I', 'S', 'T', 'E', 'R') && b[8] == ' ';
}

/* etsf_classify_early's arguments and outcome */
struct etsf_early {
	__u32 hook;         /* in: ETSF_HOOK_*                                  */
	__u32 pc;           /* in: ETSF_PORT_SIP / ETSF_PORT_TLS                */
	__u32 verdict;      /* out, when decided                                */
	__u32 reason;
};

/*
 * What an ingress hook decides before the payload is copied or parsed, under
 * the live (valid) policy: a denied source -> DROP/DENY (deny applies to
 * every packet on a SIP or TLS port, understood or not), counted under the
 * method its first token names; a REGISTER over UDP from a source neither
 * denied nor trusted that etsf_policy_register_early drops.  Returns 1 when
 * decided (e->verdict, e->reason, r->method).  The ACL action stays in
 * p->acl for etsf_policy_verdict.  A global function: the verifier checks its
 * branches once, and the caller goes on with one state whatever the ACL and
 * the method were.
 */
__attribute__((noinline)) int etsf_classify_early(etsf_ctx_t *ctx, struct etsf_pkt *p,
						  struct etsf_sip_result *r, struct etsf_early *e)
{
	const struct etsf_policy *pol;
	struct etsf_parse_stat *ps;
	struct etsf_ctl *ctl;
	__u32 zero = 0, slot, acl, why;

	if (!ctx || !p || !r || !e)
		return 0;
	ctl = bpf_map_lookup_elem(&etsf_ctl, &zero);
	if (!ctl)
		return 0;
	slot = ctl->active_slot & 1;
	pol = bpf_map_lookup_elem(&etsf_policy, &slot);
	if (!pol || !(pol->flags & ETSF_POL_F_VALID))
		return 0;
	acl = etsf_acl_of(pol, slot, p);
	if (acl == ETSF_ACL_DENY) {
		r->method = etsf_peek_method(ctx, p, e->pc);
		e->verdict = ETSF_V_DROP;
		e->reason = ETSF_R_DENY;
	} else {
		if (acl == ETSF_ACL_TRUST || e->pc != ETSF_PORT_SIP || p->l4proto != IPPROTO_UDP ||
		    !etsf_peek_register(ctx, p))
			return 0;
		why = etsf_policy_register_early(ctl, pol, p);
		if (!why)
			return 0;
		r->method = ETSF_M_REGISTER;
		e->verdict = ETSF_V_DROP;
		e->reason = why;
	}
	slot = e->hook;
	ps = bpf_map_lookup_elem(&etsf_parse_stats, &slot);
	if (ps)
		ps->early++;
	return 1;
}

/*
 * Verdict for a packet on a SIP/TLS port (r parsed, pr = r->reason).  Returns
 * the answer code due (503, 200) or 0; *verdict and *reason set, *kc the
 * keep-alive answer's configuration for a 200.
 */
static __always_inline __u32 etsf_ingress_decide(const struct etsf_ctl *ctl,
						 const struct etsf_policy *pol, int valid,
						 struct etsf_pkt *p,
						 const struct etsf_sip_result *r, __u32 *verdict,
						 __u32 *reason, const struct etsf_ka_cfg **kc)
{
	*verdict = etsf_policy_verdict(ctl, pol, valid, p, r, r->reason, reason);
	if (*reason == ETSF_R_ADMISSION && !(ctl->flags & ETSF_CTL_F_ADMIT_SILENT))
		return 503;
	if (etsf_ka_candidate(pol, valid, p, r, *verdict, *reason)) {
		__u32 slot = ctl->active_slot & 1;

		*kc = bpf_map_lookup_elem(&etsf_ka_cfg, &slot);
		return *kc ? 200 : 0;
	}
	if (*verdict == ETSF_V_PASS && etsf_ka_nat(p, r)) {
		struct etsf_ka_stats *st = etsf_ka_stats_get();

		if (st)
			st->nat_keepalive_seen++;
		if (valid && pol && (pol->flags & ETSF_POL_F_NAT_DROP)) {
			*verdict = ETSF_V_DROP;
			*reason = ETSF_R_NAT_KEEPALIVE;
			if (st)
				st->nat_keepalive_dropped++;
		}
	}
	return 0;
}

/*
 * Build the answer for code into etsf_resp.  Returns 1 when the hook is to
 * put it on the wire, 0 when not (a 503 that does not fit, a keep-alive the
 * proxy answers: counted by etsf_ka_decide).
 */
static __always_inline int etsf_ingress_build(const struct etsf_ctl *ctl, const struct etsf_pkt *p,
					      const struct etsf_sip_result *r, __u32 code,
					      const struct etsf_ka_cfg *kc)
{
	struct etsf_resp *o = etsf_respond(p, r, ctl, code, code == 200 ? kc : NULL);

	if (code == 503)
		return o && p->l4proto == IPPROTO_UDP;
	return etsf_ka_decide(ctl, o, r, ctl->active_slot & 1, etsf_ka_stats_get()) ==
	       ETSF_KA_ANSWER;
}

/*
 * Account the answer: tried = etsf_ingress_build's result, rc = the hook's
 * reply (0 sent; -1 the frame is unchanged; -2 it was changed: drop).
 * Returns 1 when the answer goes out (the request is consumed).
 */
static __always_inline int etsf_ingress_answered(__u32 code, int tried, int rc, __u32 *verdict,
						 __u32 *reason)
{
	if (code == 503) {
		struct etsf_admit *a = etsf_admit_get();

		if (tried && rc == 0) {
			*reason = ETSF_R_ADMIT_503;
			if (a)
				a->replied++;
			return 1;
		}
		if (a)
			a->reply_unfit++;
		return 0;
	}
	if (tried) {
		struct etsf_ka_stats *st = etsf_ka_stats_get();

		if (rc == 0) {
			*verdict = ETSF_V_REDIRECT;
			*reason = ETSF_R_KA_ANSWERED;
			if (st)
				st->answered++;
			return 1;
		}
		if (rc == -1) {
			/* frame untouched: the proxy answers */
			if (st)
				st->passed_not_matching++;
		} else {
			*verdict = ETSF_V_DROP;
			*reason = ETSF_R_INTERNAL;
		}
	}
	return 0;
}

#endif /* ETSF_INGRESS_H */
