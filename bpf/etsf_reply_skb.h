/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_reply_skb.h - put an in-kernel SIP answer (etsf_respond.h) on the
 * wire from a TC program: the request sk_buff becomes the response (MACs,
 * addresses and ports swapped, lengths and checksums set, payload replaced)
 * and the caller redirects it out of the interface it came in on.  The TC
 * twin of etsf_xdp_reply in xdp_sip; both produce the same frame.
 *
 * Checksums.  The IPv4 header checksum is computed here in full.  The UDP
 * checksum depends on the skb's checksum state, which a program cannot read
 * (struct __sk_buff does not show ip_summed):
 *   - CHECKSUM_NONE / UNNECESSARY (a NIC, or a sender that summed in
 *     software): the field must hold the full checksum; nobody fills it in.
 *   - CHECKSUM_PARTIAL (a local sender over a veth with tx checksum offload):
 *     the field must hold the folded pseudo-header sum only; whoever sends
 *     the skb on (a NIC in hardware, skb_checksum_help() when the egress
 *     device cannot) sums from csum_start over the UDP header and payload
 *     into it, and a receiver in this host (the veth peer) trusts a PARTIAL
 *     skb without summing.  csum_start / csum_offset stay valid: the headers
 *     do not move (change_tail grows at the tail; pskb_expand_head keeps
 *     csum_start relative).
 *   - CHECKSUM_COMPLETE (skb->csum covers the old bytes): reset to NONE by
 *     bpf_skb_change_tail, which trims or grows (see etsf_skb_reply).
 * The field is therefore built from zero with two bpf_l4_csum_replace()
 * calls whose kernel side differs per state: the sum of the UDP header and
 * payload is added only when the skb is not PARTIAL, the pseudo-header sum
 * (BPF_F_PSEUDO_HDR) in every state.  From a zero field that leaves
 * ~fold(pseudo + udp) when not PARTIAL and fold(pseudo) when PARTIAL:
 * correct in each case by construction, without knowing which.  A computed
 * 0 is sent as 0xffff (0 means "no checksum" in UDP; the two are the same
 * value in ones' complement, so a PARTIAL seed is unaffected).
 * CHECKSUM_UNNECESSARY is reset first (bpf_csum_level): it vouched for the
 * request's bytes, not ours.
 *
 * The response leaves with bpf_redirect(skb->ifindex, 0): out of the
 * interface's egress, so it never comes back through this interface's TC
 * ingress (its TC egress program, when there is one, sees it like any
 * locally sent packet).  A VLAN tag the stack took off on receive stays in
 * the skb (vlan_tci) and is put back on the way out; an in-band tag in the
 * frame (l3off 18) is kept as it is.
 */
#ifndef ETSF_REPLY_SKB_H
#define ETSF_REPLY_SKB_H

#include "etsf_respond.h"

/* a 64-bit sum of 32-bit words folded to 32 bits with the end-around carry (a __wsum) */
static __always_inline __u32 etsf_wsum_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	return (__u32)s;
}

/*
 * Turn the request skb into the response built in etsf_resp.  UDP over IPv4
 * without options or IPv6 without extension headers; l3off / l4off from the
 * start of the frame (the Ethernet header), pkt_len = skb->len.
 * 0: the skb holds the response, return bpf_redirect(skb->ifindex, 0);
 * -1: the skb is unchanged; -2: it was changed and must be dropped.
 * A global function: verified once with unknown arguments.
 *
 * One resize: bpf_skb_change_tail linearises the skb (its whole length is
 * made writable first) and grows or trims it, either of which resets
 * CHECKSUM_COMPLETE; an answer exactly as long as the request would leave
 * the length, and so COMPLETE, as it was: that one is trimmed first.  The
 * headers are then rewritten in place (direct access), the sums of the
 * pseudo header and the UDP header are added up here, and only the payload
 * is summed and stored by helpers.
 */
__attribute__((noinline)) int etsf_skb_reply(struct __sk_buff *skb, __u32 l3off, __u32 l4off,
					     __u32 family, __u32 pkt_len)
{
	struct etsf_resp *o;
	__u32 zero = 0, n, poff, ulen, csum_off, psum, usum;
	__u64 ps;
	__u16 chk;
	__s64 sum;
	void *data, *data_end;
	struct ethhdr *eth;
	struct udphdr *udp;

	if (!skb)
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
	if (pkt_len <= poff || pkt_len != skb->len)
		return -1;
	ulen = sizeof(struct udphdr) + n;

	if (poff + n == pkt_len) {
		if (bpf_skb_change_tail(skb, poff, 0))
			return -1;
		if (bpf_skb_change_tail(skb, poff + n, 0))
			return -2;
	} else if (bpf_skb_change_tail(skb, poff + n, 0)) {
		return -1;
	}
	bpf_csum_level(skb, BPF_CSUM_LEVEL_RESET);

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return -2;
	etsf_resp_swap_macs(eth);

	if (family == 4) {
		struct iphdr *ip = data + l3off;

		if ((void *)(ip + 1) + sizeof(*udp) > data_end)
			return -2;
		udp = (void *)(ip + 1);
		if (etsf_resp_ip4(ip, ulen))
			return -2;
		/* saddr, daddr, then zero / protocol / length as one 32-bit word */
		ps = (__u64)ip->saddr + ip->daddr +
		     ((__u32)IPPROTO_UDP << 8 | (__u32)bpf_htons(ulen) << 16);
	} else {
		struct ipv6hdr *ip6 = data + l3off;
		int i;

		if ((void *)(ip6 + 1) + sizeof(*udp) > data_end)
			return -2;
		udp = (void *)(ip6 + 1);
		etsf_resp_ip6(ip6, ulen);
		ps = (__u64)bpf_htonl(ulen) + bpf_htonl(IPPROTO_UDP);
#pragma unroll
		for (i = 0; i < 4; i++)
			ps += (__u64)ip6->saddr.in6_u.u6_addr32[i] + ip6->daddr.in6_u.u6_addr32[i];
	}
	psum = etsf_wsum_fold(ps);
	{
		__be16 sport = udp->source;

		udp->source = udp->dest;
		udp->dest = sport;
		udp->len = bpf_htons(ulen);
		udp->check = 0;
		/* the UDP header as two 32-bit words: ports, then length and a zero checksum */
		usum = etsf_wsum_fold((__u64)((__u32)udp->source | (__u32)udp->dest << 16) +
				      udp->len);
	}
	/* the UDP header and payload without the pseudo header */
	sum = etsf_resp_csum(o, n, usum);
	if (sum < 0)
		return -2;

	n -= 1;
	asm volatile("" : "+r"(n));
	n &= ETSF_RESP_MASK;
	n += 1;
	if (bpf_skb_store_bytes(skb, poff, o->buf, n, 0))
		return -2;

	csum_off = l4off + offsetof(struct udphdr, check);
	if (bpf_l4_csum_replace(skb, csum_off, 0, (__u32)sum, 0))
		return -2;
	if (bpf_l4_csum_replace(skb, csum_off, 0, psum, BPF_F_PSEUDO_HDR))
		return -2;
	/*
	 * The field can only have come out 0 when the full sum folds to
	 * 0xffff (not PARTIAL: the complement of it); the pseudo-header sum
	 * alone (PARTIAL) is never 0.  Only then is it read back.
	 */
	if (etsf_csum_fold((__u64)psum + (__u32)sum) != 0)
		return 0;
	if (bpf_skb_load_bytes(skb, csum_off, &chk, sizeof(chk)))
		return -2;
	if (chk == 0) {
		chk = 0xffff;
		if (bpf_skb_store_bytes(skb, csum_off, &chk, sizeof(chk), 0))
			return -2;
	}
	return 0;
}

#endif /* ETSF_REPLY_SKB_H */
