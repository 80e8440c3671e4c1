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
 *   - CHECKSUM_COMPLETE (skb->csum covers the old bytes): removed by the
 *     first bpf_skb_change_tail, which trims and so resets it to NONE.
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

/*
 * Turn the request skb into the response built in etsf_resp.  UDP over IPv4
 * without options or IPv6 without extension headers; l3off / l4off from the
 * start of the frame (the Ethernet header), pkt_len = skb->len.
 * 0: the skb holds the response, return bpf_redirect(skb->ifindex, 0);
 * -1: the skb is unchanged; -2: it was changed and must be dropped.
 * A global function: verified once with unknown arguments.
 */
__attribute__((noinline)) int etsf_skb_reply(struct __sk_buff *skb, __u32 l3off, __u32 l4off,
					     __u32 family, __u32 pkt_len)
{
	struct etsf_resp *o;
	struct udphdr uh = {};
	__u32 zero = 0, n, poff, ulen, csum_off;
	__u64 hl;
	__u16 chk;
	__s64 sum, psum;
	__u8 *hdr, mac[ETH_ALEN];

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
	hdr = o->l2l4;
	/* 64-bit compares on the register passed to the helpers (not on a copy) */
	hl = poff;
	asm volatile("" : "+r"(hl));
	if (hl > ETSF_RESP_L2L4 || hl < sizeof(struct ethhdr))
		return -1;
	asm volatile("" : "+r"(hl));
	if (bpf_skb_load_bytes(skb, 0, hdr, hl))
		return -1;

	/* trim to the headers, then grow: see the checksum notes above */
	if (bpf_skb_change_tail(skb, poff, 0))
		return -1;
	if (bpf_skb_change_tail(skb, poff + n, 0))
		return -2;
	bpf_csum_level(skb, BPF_CSUM_LEVEL_RESET);

	__builtin_memcpy(mac, hdr, ETH_ALEN);
	__builtin_memcpy(hdr, hdr + ETH_ALEN, ETH_ALEN);
	__builtin_memcpy(hdr + ETH_ALEN, mac, ETH_ALEN);

	if (family == 4) {
		struct iphdr *ip = (struct iphdr *)(hdr + l3off);
		struct {
			__be32 saddr, daddr;
			__u8 zero, proto;
			__be16 len;
		} ph = {};

		if (etsf_resp_ip4(ip, ulen))
			return -2;
		ph.saddr = ip->saddr;
		ph.daddr = ip->daddr;
		ph.proto = IPPROTO_UDP;
		ph.len = bpf_htons(ulen);
		psum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	} else {
		struct ipv6hdr *ip6 = (struct ipv6hdr *)(hdr + l3off);
		struct {
			struct in6_addr saddr, daddr;
			__be32 len;
			__be32 nh;
		} ph = {};

		etsf_resp_ip6(ip6, ulen);
		ph.saddr = ip6->saddr;
		ph.daddr = ip6->daddr;
		ph.len = bpf_htonl(ulen);
		ph.nh = bpf_htonl(IPPROTO_UDP);
		psum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	}
	if (psum < 0)
		return -2;
	{
		struct udphdr *u = (struct udphdr *)(hdr + l4off);

		uh.source = u->dest;
		uh.dest = u->source;
		uh.len = bpf_htons(ulen);
		uh.check = 0;
		*u = uh;
	}
	/* the UDP header and payload without the pseudo header */
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&uh, sizeof(uh), 0);
	if (sum < 0)
		return -2;
	sum = etsf_resp_csum(o, n, (__u32)sum);
	if (sum < 0)
		return -2;

	hl = poff;
	asm volatile("" : "+r"(hl));
	if (hl > ETSF_RESP_L2L4 || hl < sizeof(struct ethhdr))
		return -2;
	asm volatile("" : "+r"(hl));
	if (bpf_skb_store_bytes(skb, 0, hdr, hl, 0))
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
	if (bpf_l4_csum_replace(skb, csum_off, 0, (__u32)psum, BPF_F_PSEUDO_HDR))
		return -2;
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
