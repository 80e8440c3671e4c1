// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * tc_sip_egress - eTSF TC (clsact egress, direct action) SIP marker.
 *
 * Classifies locally generated SIP with the same parser as the XDP program
 * and, when the active policy has ETSF_POL_F_MARK, sets skb->priority to
 * policy.skb_priority and the DSCP to policy.dscp (IPv4: TOS byte with the
 * header checksum fixed incrementally; IPv6: traffic class).  Always returns
 * TC_ACT_OK: egress is never dropped.
 *
 * DSCP: the policy compiler's default is CS3 (24) for SIP signalling, per
 * RFC 4594 (section 4.2, "Signaling" service class); EF (46) is for the media
 * (RTP), not for SIP.  The kernel applies policy.dscp as given (0..63).
 *
 * With a valid policy and ETSF_CTL_F_OC set, a UDP response whose top Via
 * carries `oc` gets the RFC 7339 overload parameters (etsf_oc.h) before it is
 * marked; the outcome is counted in etsf_oc_stats.
 *
 * Counted at ETSF_STATS_IDX(ETSF_HOOK_TC_EGRESS, method, verdict, reason):
 * MARK/OK when marked, else PASS with the parse or policy reason.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "etsf_ctx_skb.h"
#include "etsf.h"
#include "etsf_kernel.h"
#include "etsf_classify.h"
#include "etsf_stats.h"
#include "etsf_telemetry.h"
#include "etsf_oc.h"

/*
 * RFC 1624 eqn. 3: the header checksum after one 16-bit word changed from
 * old to new, HC' = ~(~HC + ~m + m').  The one's complement sum does not
 * depend on byte order, so the words are used as loaded.
 */
static __always_inline __u16 etsf_csum16_replace(__u16 csum, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~csum + (__u16)~old + (__u32)new;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/*
 * The DSCP into an IPv6 header's first two bytes: version(4) traffic
 * class(8) flow-label-high(4); the ECN bits and the flow label stay.
 */
static __always_inline void etsf_v6_set_dscp(__u8 *h, __u8 dscp)
{
	__u8 tc = (__u8)(((h[0] & 0x0f) << 4) | (h[1] >> 4));

	tc = (__u8)((dscp << 2) | (tc & 0x3));
	h[0] = (__u8)(0x60 | (tc >> 4));
	h[1] = (__u8)(((tc & 0x0f) << 4) | (h[1] & 0x0f));
}

/*
 * The TOS / traffic class byte written in place when the IP header is in the
 * linear part of the skb (every locally generated datagram): loads and
 * stores, no helper call.  1 = done, 0 = not linear (the caller uses the
 * helpers), -1 = not IP.
 */
static __always_inline int etsf_set_dscp_direct(struct __sk_buff *skb, const struct etsf_pkt *p,
						__u8 dscp)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 l3 = p->l3off;
	__u8 *h;

	if (l3 > ETSF_L3_OFF_MAX)
		return 0;
	h = data + l3;
	if (p->family == 4) {
		__u16 oldw, neww, csum;

		if ((void *)(h + 12) > data_end)
			return 0;
		__builtin_memcpy(&oldw, h, 2);
		neww = oldw;
		((__u8 *)&neww)[1] = (__u8)((dscp << 2) | (h[1] & 0x3));
		if (oldw == neww)
			return 1;
		__builtin_memcpy(&csum, h + 10, 2);
		csum = etsf_csum16_replace(csum, oldw, neww);
		h[1] = ((__u8 *)&neww)[1];
		__builtin_memcpy(h + 10, &csum, 2);
		return 1;
	}
	if (p->family == 6) {
		if ((void *)(h + 2) > data_end)
			return 0;
		etsf_v6_set_dscp(h, dscp);
		return 1;
	}
	return -1;
}

/* the same through the skb helpers, for a header outside the linear part */
static __always_inline int etsf_set_dscp(struct __sk_buff *skb, const struct etsf_pkt *p,
					 __u8 dscp)
{
	__u32 l3 = p->l3off;
	int rc = etsf_set_dscp_direct(skb, p, dscp);

	if (rc)
		return rc > 0 ? 0 : -1;
	if (p->family == 4) {
		__u8 hdr[2];     /* version/ihl, tos */
		__u16 oldw, neww;

		if (bpf_skb_load_bytes(skb, l3, hdr, 2))
			return -1;
		__builtin_memcpy(&oldw, hdr, 2);
		hdr[1] = (__u8)((dscp << 2) | (hdr[1] & 0x3));
		__builtin_memcpy(&neww, hdr, 2);
		if (oldw == neww)
			return 0;
		if (bpf_l3_csum_replace(skb, l3 + 10, oldw, neww, 2))
			return -1;
		return bpf_skb_store_bytes(skb, l3 + 1, &hdr[1], 1, 0) ? -1 : 0;
	}
	if (p->family == 6) {
		__u8 hdr[2];

		if (bpf_skb_load_bytes(skb, l3, hdr, 2))
			return -1;
		etsf_v6_set_dscp(hdr, dscp);
		return bpf_skb_store_bytes(skb, l3, hdr, 2, 0) ? -1 : 0;
	}
	return -1;
}

SEC("tc")
int tc_sip_egress(struct __sk_buff *skb)
{
	struct etsf_pkt p = {};
	struct etsf_sip_result r = {};
	const struct etsf_policy *pol = NULL;
	struct etsf_ifstat *ifs;
	struct etsf_ctl *ctl = NULL;
	__u32 reason, verdict = ETSF_V_PASS;
	int valid = 0, oc;

	if (skb->cb[0] == ETSF_CB_OWN_ANSWER && skb->cb[1] == skb->len) {
		skb->cb[0] = 0;
		return TC_ACT_OK;
	}
	p.pkt_len = etsf_ctx_len(skb);
	reason = etsf_classify(skb, ETSF_HOOK_TC_EGRESS, &p, &r, &ctl, &pol, &valid);
	if (reason != ETSF_R_OK)
		goto out;
	reason = r.reason;      /* TLS, or why the message was not understood */
	if (reason != ETSF_R_OK)
		goto out;
	if (etsf_tm_enabled(pol, valid))
		etsf_tm_observe(ETSF_HOOK_TC_EGRESS, skb->ifindex, etsf_if_tm_dir(skb->ifindex), &r);
	if (!valid || !pol) {
		reason = ETSF_R_NO_POLICY;
		goto out;
	}
	if (ctl && (ctl->flags & ETSF_CTL_F_OC) && r.method == ETSF_M_RESPONSE &&
	    p.l4proto == IPPROTO_UDP) {
		oc = etsf_oc_rewrite(skb, &p, ctl);
		if (oc >= 0)
			etsf_oc_count(oc);
		p.pkt_len = skb->len;
	}
	if (pol->flags & ETSF_POL_F_MARK) {
		skb->priority = pol->skb_priority;
		if (etsf_set_dscp(skb, &p, pol->dscp & 0x3f)) {
			reason = ETSF_R_INTERNAL;
			goto out;
		}
		verdict = ETSF_V_MARK;
		ifs = etsf_ifstat_get(skb->ifindex);
		if (ifs) {
			ifs->tx_marked++;
			ifs->tx_bytes += p.pkt_len;
		}
	}

out:
	etsf_count(ETSF_HOOK_TC_EGRESS, r.method, verdict, reason, p.pkt_len);
	etsf_record(ctl, &r, &p, verdict, reason);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
