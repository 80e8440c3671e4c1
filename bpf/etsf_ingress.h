/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_ingress.h - what an ingress classifier decides after the parse, the
 * same at every ingress hook (XDP, TC ingress): the policy verdict, the NAT
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

/*
 * Verdict for a packet on a SIP/TLS port (r parsed, pr = r->reason).  Returns
 * the answer code due (503, 200) or 0; *verdict and *reason set, *kc the
 * keep-alive answer's configuration for a 200.
 */
static __always_inline __u32 etsf_ingress_decide(const struct etsf_ctl *ctl,
						 const struct etsf_policy *pol, int valid,
						 const struct etsf_pkt *p,
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
