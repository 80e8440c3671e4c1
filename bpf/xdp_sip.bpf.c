// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * xdp_sip - eTSF XDP ingress SIP classifier.
 *
 * Order of checks (fail-open everywhere):
 *   1. etsf_ctl: bypass -> PASS/BYPASS; stale heartbeat -> PASS/DEADMAN
 *   2. Ethernet (+ one VLAN tag), IPv4/IPv6, UDP/TCP; fragments pass
 *   3. SIP port set of the active policy (5060/5061 without a valid policy);
 *      TLS ports are counted, never parsed
 *   4. payload copied to the per-CPU scratch buffer, SIP parsed (etsf_sip_parse.h)
 *   5. policy: deny (DROP) > not understood (PASS + reason) > no policy >
 *      trust > overload shedding > per-source GCRA rate limit > admission
 *      of new INVITEs > OK
 *   6. a new INVITE refused by admission is answered with a stateless 503
 *      built in the kernel (etsf_respond.h) and sent back out of the
 *      ingress interface (XDP_TX); when it does not fit it is dropped
 * Every packet is counted exactly once in etsf_stats at
 * ETSF_STATS_IDX(ETSF_HOOK_XDP, method, verdict, reason).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "etsf_ctx_xdp.h"
#include "etsf.h"
#include "etsf_classify.h"
#include "etsf_policy.h"
#include "etsf_stats.h"
#include "etsf_telemetry.h"
#include "etsf_admit.h"
#include "etsf_respond.h"
#include "etsf_keepalive.h"
#include "etsf_ingress.h"

/*
 * Grow the frame by delta bytes at its head and move the headers (poff
 * bytes: Ethernet to UDP) to the new start; the payload behind them is
 * overwritten by the caller.  0 = done; -1: the frame is unchanged (no
 * headroom); -2: it was changed and must be dropped.
 */
static __always_inline int etsf_xdp_grow_head(struct xdp_md *ctx, struct etsf_resp *o, __u32 poff,
					      int delta)
{
	__u64 hl = poff;

	/* 64-bit compares on the register passed to the helpers (not on a copy) */
	asm volatile("" : "+r"(hl));
	if (hl > ETSF_RESP_L2L4 || hl < sizeof(struct ethhdr))
		return -1;
	asm volatile("" : "+r"(hl));
	if (bpf_xdp_load_bytes(ctx, 0, o->l2l4, hl))
		return -1;
	if (bpf_xdp_adjust_head(ctx, -delta))
		return -1;
	if (bpf_xdp_store_bytes(ctx, 0, o->l2l4, hl))
		return -2;
	return 0;
}

/*
 * Turn the request frame into the response built in etsf_resp: MACs,
 * addresses and ports swapped, lengths and checksums set, payload replaced.
 * UDP over IPv4 without options or IPv6 without extension headers only.
 * 0 = ready for XDP_TX; -1: the frame is unchanged; -2: it was changed
 * and must be dropped.
 * A global function: the verifier checks it once with unknown arguments
 * instead of once per classifier path that reaches it.
 */
__attribute__((noinline)) int etsf_xdp_reply(struct xdp_md *ctx, __u32 l3off, __u32 l4off,
					     __u32 family, __u32 pkt_len)
{
	struct etsf_resp *o;
	__u32 zero = 0, n, poff, ulen;
	__s64 sum;
	int delta, rc;
	void *data, *data_end;
	struct ethhdr *eth;
	struct udphdr *udp;

	if (!ctx)
		return -1;
	o = bpf_map_lookup_elem(&etsf_resp, &zero);
	if (!o)
		return -1;
	n = o->st.out;
	if (n == 0 || n > ETSF_RESP_MAX)
		return -1;
	if (l3off != sizeof(struct ethhdr) && l3off != sizeof(struct ethhdr) + 4)
		return -1;
	if (family != 4 && family != 6)
		return -1;
	if (l4off != l3off + (family == 4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr)))
		return -1;
	poff = l4off + sizeof(struct udphdr);
	ulen = sizeof(struct udphdr) + n;
	delta = (int)(poff + n) - (int)pkt_len;
	/*
	 * Tail first: drivers with page-sized buffers have the room and the
	 * headers stay where they are.  A veth or generic-XDP frame is an skb
	 * buffer sized to its data (tailroom: alignment slack), but XDP keeps
	 * XDP_PACKET_HEADROOM in front of every frame: grow there instead.
	 */
	if (bpf_xdp_adjust_tail(ctx, delta)) {
		if (delta <= 0)
			return -1;
		rc = etsf_xdp_grow_head(ctx, o, poff, delta);
		if (rc)
			return rc;
	}

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return -2;
	etsf_resp_swap_macs(eth);

	if (family == 4) {
		struct iphdr *ip = data + l3off;
		struct {
			__be32 saddr, daddr;
			__u8 zero, proto;
			__be16 len;
			struct udphdr uh;
		} ph = {};

		if ((void *)(ip + 1) + sizeof(*udp) > data_end)
			return -2;
		udp = (void *)(ip + 1);
		if (etsf_resp_ip4(ip, ulen))
			return -2;
		ph.saddr = ip->saddr;
		ph.daddr = ip->daddr;
		ph.proto = IPPROTO_UDP;
		ph.len = bpf_htons(ulen);
		ph.uh.source = udp->dest;
		ph.uh.dest = udp->source;
		ph.uh.len = ph.len;
		*udp = ph.uh;
		sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	} else {
		struct ipv6hdr *ip6 = data + l3off;
		struct {
			struct in6_addr saddr, daddr;
			__be32 len;
			__be32 nh;
			struct udphdr uh;
		} ph = {};

		if ((void *)(ip6 + 1) + sizeof(*udp) > data_end)
			return -2;
		udp = (void *)(ip6 + 1);
		etsf_resp_ip6(ip6, ulen);
		ph.saddr = ip6->saddr;
		ph.daddr = ip6->daddr;
		ph.len = bpf_htonl(ulen);
		ph.nh = bpf_htonl(IPPROTO_UDP);
		ph.uh.source = udp->dest;
		ph.uh.dest = udp->source;
		ph.uh.len = bpf_htons(ulen);
		*udp = ph.uh;
		sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	}
	if (sum < 0)
		return -2;
	sum = etsf_resp_csum(o, n, (__u32)sum);
	if (sum < 0)
		return -2;
	udp->check = etsf_csum_fold(sum);
	if (udp->check == 0)
		udp->check = 0xffff;

	n -= 1;
	asm volatile("" : "+r"(n));
	n &= ETSF_RESP_MASK;
	n += 1;
	if (bpf_xdp_store_bytes(ctx, poff, o->buf, n))
		return -2;
	return 0;
}

/*
 * Hand the result of a passed SIP packet to TC ingress in XDP metadata
 * (struct etsf_meta in front of the frame), on interfaces whose etsf_if_cfg
 * entry has ETSF_IF_F_XDP only.  When the driver has no room for metadata
 * the packet passes without it: TC ingress parses itself (fail-open).
 */
static __always_inline void etsf_xdp_meta(struct xdp_md *ctx, const struct etsf_sip_result *r,
					  __u32 reason)
{
	__u32 key = ctx->ingress_ifindex;
	struct etsf_if_cfg *ic = bpf_map_lookup_elem(&etsf_if_cfg, &key);
	struct etsf_meta *m;
	void *data;

	if (!ic || !(ic->flags & ETSF_IF_F_XDP))
		return;
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(*m)))
		return;
	m = (void *)(long)ctx->data_meta;
	data = (void *)(long)ctx->data;
	if ((void *)(m + 1) > data)
		return;
	m->magic = ETSF_META_MAGIC;
	m->method = r->method;
	m->verdict = ETSF_V_PASS;
	m->reason = (__u8)reason;
	m->flags = r->has_callid ? ETSF_META_F_CALLID : 0;
	m->callid_hash = r->has_callid ? r->callid_hash : 0;
}

SEC("xdp")
int xdp_sip(struct xdp_md *ctx)
{
	struct etsf_pkt p = {};
	struct etsf_sip_result r = {};
	const struct etsf_policy *pol = NULL;
	struct etsf_ctl *ctl = NULL;
	const struct etsf_ka_cfg *kc = NULL;
	__u32 reason, verdict = ETSF_V_PASS, code = 0, pc = ETSF_PORT_NONE;
	struct etsf_early e = {};
	int valid = 0, tx = 0, sip = 0;

	p.pkt_len = etsf_ctx_len(ctx);
	p.ifindex = ctx->ingress_ifindex;

	reason = etsf_classify_l4(ctx, &p, &ctl, &pol, &valid, &pc);
	if (reason != ETSF_R_OK)
		goto out;
	e.hook = ETSF_HOOK_XDP;
	e.pc = pc;
	if (valid && pol && etsf_classify_early(ctx, &p, &r, &e)) {
		verdict = e.verdict;
		reason = e.reason;
		sip = r.method != ETSF_M_UNKNOWN;
		goto out;
	}
	etsf_classify_sip(ctx, ETSF_HOOK_XDP, &p, pc, &r);
	sip = r.reason == ETSF_R_OK;
	verdict = etsf_policy_verdict(ctl, pol, valid, &p, &r, r.reason, &reason);
	if (reason == ETSF_R_ADMISSION && !(ctl->flags & ETSF_CTL_F_ADMIT_SILENT)) {
		code = 503;
	} else if (etsf_ka_candidate(pol, valid, &p, &r, verdict, reason)) {
		__u32 slot = ctl->active_slot & 1;

		kc = bpf_map_lookup_elem(&etsf_ka_cfg, &slot);
		if (kc)
			code = 200;
	} else if (verdict == ETSF_V_PASS && etsf_ka_nat(&p, &r)) {
		struct etsf_ka_stats *st = etsf_ka_stats_get();

		if (st)
			st->nat_keepalive_seen++;
		if (valid && pol && (pol->flags & ETSF_POL_F_NAT_DROP)) {
			verdict = ETSF_V_DROP;
			reason = ETSF_R_NAT_KEEPALIVE;
			if (st)
				st->nat_keepalive_dropped++;
		}
	}
	if (code) {
		/* one call site: the builder is verified once for both answers */
		struct etsf_resp *o = etsf_respond(&p, &r, ctl, code, code == 200 ? kc : NULL);

		if (code == 503) {
			struct etsf_admit *a = etsf_admit_get();

			if (o && p.l4proto == IPPROTO_UDP &&
			    etsf_xdp_reply(ctx, p.l3off, p.l4off, p.family, p.pkt_len) == 0) {
				reason = ETSF_R_ADMIT_503;
				tx = 1;
				if (a)
					a->replied++;
			} else if (a) {
				a->reply_unfit++;
			}
		} else {
			struct etsf_ka_stats *st = etsf_ka_stats_get();

			if (etsf_ka_decide(ctl, o, &r, ctl->active_slot & 1, st) == ETSF_KA_ANSWER) {
				int rc = etsf_xdp_reply(ctx, p.l3off, p.l4off, p.family, p.pkt_len);

				if (rc == 0) {
					verdict = ETSF_V_REDIRECT;
					reason = ETSF_R_KA_ANSWERED;
					tx = 1;
					if (st)
						st->answered++;
				} else if (rc == -1) {
					/* frame untouched: the proxy answers */
					if (st)
						st->passed_not_matching++;
				} else {
					verdict = ETSF_V_DROP;
					reason = ETSF_R_INTERNAL;
				}
			}
		}
	}
	if (r.reason == ETSF_R_OK && verdict != ETSF_V_DROP && !tx &&
	    etsf_tm_enabled(pol, valid))
		etsf_tm_observe(ETSF_HOOK_XDP, p.ifindex, etsf_pkt_tm_dir(&p), &r);
	if (r.reason == ETSF_R_OK && verdict == ETSF_V_PASS && !tx)
		etsf_xdp_meta(ctx, &r, reason);

out:
	etsf_ifstat_rx(p.ifindex, p.pkt_len, sip, verdict == ETSF_V_DROP);
	etsf_count(ETSF_HOOK_XDP, r.method, verdict, reason, p.pkt_len);
	etsf_record(ctl, &r, &p, verdict, reason);
	if (tx)
		return XDP_TX;
	return verdict == ETSF_V_DROP ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
