/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_parse.h - L2..L4 header parsing, one helper per layer: Ethernet and
 * one VLAN tag, IPv4, IPv6 with its extension headers, UDP, TCP.  Every
 * packet access is preceded by an explicit bounds check against data_end.
 * Each helper returns ETSF_R_OK to go on, else the reason the packet is
 * passed with; *off is the offset of the next header, *l4max the L4 bytes
 * the IP header declares (shrunk by every header consumed).
 */
#ifndef ETSF_PARSE_H
#define ETSF_PARSE_H

#include "etsf.h"
#include "etsf_kernel.h"

#define ETSF_V6_EXT_MAX 3       /* HBH / routing / dest-opts headers walked */

/* what the classifiers and the fast path know of a packet after L4 */
struct etsf_pkt {
	__u32 pkt_len;      /* whole frame                                   */
	__u32 l3off;
	__u32 l4off;
	__u32 poff;         /* L4 payload offset                             */
	__u32 plen;         /* L4 payload length present in the frame        */
	__u16 sport;
	__u16 dport;
	__u8  family;       /* 4 / 6                                         */
	__u8  l4proto;
	__u8  acl;          /* ETSF_PKT_ACL_KNOWN | the ACL action, once looked up */
	__u8  tm;           /* ETSF_PKT_TM_KNOWN | telemetry's direction, once looked up */
	__u8  saddr[16];
	__u32 ifindex;      /* interface the packet entered on (telemetry's key) */
};

/* the largest L3 offset etsf_parse_eth gives: Ethernet and at most one VLAN tag */
#define ETSF_L3_OFF_MAX 18

static __always_inline int etsf_is_vlan(__u16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

/* Ethernet + at most one VLAN tag: *proto = the ethertype behind them */
static __always_inline __u32 etsf_parse_eth(void *data, void *data_end, __u32 *off,
					    __u16 *proto)
{
	struct ethhdr *eth = data;
	struct vlan_hdr *vh;

	if ((void *)(eth + 1) > data_end)
		return ETSF_R_TRUNC_L2L3;
	*proto = eth->h_proto;
	*off = sizeof(*eth);
	if (!etsf_is_vlan(*proto))
		return ETSF_R_OK;
	vh = data + *off;
	if ((void *)(vh + 1) > data_end)
		return ETSF_R_TRUNC_L2L3;
	*proto = vh->h_vlan_encapsulated_proto;
	*off += sizeof(*vh);
	return etsf_is_vlan(*proto) ? ETSF_R_VLAN_NESTED : ETSF_R_OK;
}

/* IPv4, options allowed; any fragment (MF or offset) is FRAGMENT */
static __always_inline __u32 etsf_parse_ipv4(void *data, void *data_end, struct etsf_pkt *p,
					     __u32 *off, __u32 *l4max)
{
	struct iphdr *ip = data + *off;
	__u32 ihl, tot;

	if ((void *)(ip + 1) > data_end)
		return ETSF_R_TRUNC_L2L3;
	if (ip->version != 4 || ip->ihl < 5)
		return ETSF_R_BAD_IP;
	ihl = ip->ihl * 4;
	tot = bpf_ntohs(ip->tot_len);
	if (tot < ihl)
		return ETSF_R_BAD_IP;
	if (data + *off + ihl > data_end)
		return ETSF_R_TRUNC_L2L3;
	p->family = 4;
	__builtin_memcpy(p->saddr, &ip->saddr, 4);
	if (ip->frag_off & bpf_htons(0x3fff))   /* MF or offset */
		return ETSF_R_FRAGMENT;
	p->l4proto = ip->protocol;
	*off += ihl;
	*l4max = tot - ihl;
	return ETSF_R_OK;
}

static __always_inline int etsf_ipv6_skippable(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS;
}

/*
 * IPv6: up to ETSF_V6_EXT_MAX hop-by-hop / routing / destination-options
 * headers are walked; a fragment header is FRAGMENT, a longer chain or AH is
 * IPV6_EXTHDR.
 */
static __always_inline __u32 etsf_parse_ipv6(void *data, void *data_end, struct etsf_pkt *p,
					     __u32 *off, __u32 *l4max)
{
	struct ipv6hdr *ip6 = data + *off;
	__u8 nh;
	int i;

	if ((void *)(ip6 + 1) > data_end)
		return ETSF_R_TRUNC_L2L3;
	if (ip6->version != 6)
		return ETSF_R_BAD_IP;
	p->family = 6;
	__builtin_memcpy(p->saddr, &ip6->saddr, 16);
	nh = ip6->nexthdr;
	*l4max = bpf_ntohs(ip6->payload_len);
	*off += sizeof(*ip6);
#pragma unroll
	for (i = 0; i < ETSF_V6_EXT_MAX; i++) {
		struct ipv6_opt_hdr *eh;
		__u32 elen;

		if (!etsf_ipv6_skippable(nh))
			break;
		eh = data + *off;
		if ((void *)(eh + 1) > data_end)
			return ETSF_R_TRUNC_L2L3;
		elen = (eh->hdrlen + 1) * 8;
		if (elen > *l4max)
			return ETSF_R_BAD_IP;
		nh = eh->nexthdr;
		*off += elen;
		*l4max -= elen;
	}
	if (nh == IPPROTO_FRAGMENT)
		return ETSF_R_FRAGMENT;
	if (etsf_ipv6_skippable(nh) || nh == IPPROTO_AH)
		return ETSF_R_IPV6_EXTHDR;
	p->l4proto = nh;
	return ETSF_R_OK;
}

static __always_inline void etsf_set_ports(struct etsf_pkt *p, __be16 source, __be16 dest)
{
	p->sport = bpf_ntohs(source);
	p->dport = bpf_ntohs(dest);
}

/* UDP: the datagram length, when smaller, bounds the payload */
static __always_inline __u32 etsf_parse_udp(void *data, void *data_end, struct etsf_pkt *p,
					    __u32 *off, __u32 *l4max)
{
	struct udphdr *uh = data + (*off & 0x3ff);
	__u32 ulen;

	if ((void *)(uh + 1) > data_end || *l4max < sizeof(*uh))
		return ETSF_R_TRUNC_L4;
	etsf_set_ports(p, uh->source, uh->dest);
	ulen = bpf_ntohs(uh->len);
	if (ulen >= sizeof(*uh) && ulen < *l4max)
		*l4max = ulen;
	*off += sizeof(*uh);
	*l4max -= sizeof(*uh);
	return ETSF_R_OK;
}

static __always_inline __u32 etsf_parse_tcp(void *data, void *data_end, struct etsf_pkt *p,
					    __u32 *off, __u32 *l4max)
{
	struct tcphdr *th = data + (*off & 0x3ff);
	__u32 doff;

	if ((void *)(th + 1) > data_end || *l4max < sizeof(*th))
		return ETSF_R_TRUNC_L4;
	etsf_set_ports(p, th->source, th->dest);
	doff = th->doff * 4;
	if (doff < sizeof(*th) || doff > *l4max)
		return ETSF_R_TRUNC_L4;
	*off += doff;
	*l4max -= doff;
	return ETSF_R_OK;
}

/*
 * Ethernet .. UDP/TCP; p->pkt_len set by the caller.  Returns ETSF_R_OK when
 * p describes a UDP/TCP packet (ports, payload offset and length), else the
 * pass reason.
 */
static __always_inline __u32 etsf_parse_hdrs(void *data, void *data_end, struct etsf_pkt *p)
{
	__u32 off = 0, l4max = 0, reason;
	__u16 proto = 0;

	reason = etsf_parse_eth(data, data_end, &off, &proto);
	if (reason != ETSF_R_OK)
		return reason;
	p->l3off = off;
	if (proto == bpf_htons(ETH_P_IP))
		reason = etsf_parse_ipv4(data, data_end, p, &off, &l4max);
	else if (proto == bpf_htons(ETH_P_IPV6))
		reason = etsf_parse_ipv6(data, data_end, p, &off, &l4max);
	else
		reason = ETSF_R_NOT_IP;
	if (reason != ETSF_R_OK)
		return reason;

	if (p->l4proto != IPPROTO_UDP && p->l4proto != IPPROTO_TCP)
		return ETSF_R_NOT_UDP_TCP;
	p->l4off = off;
	if (off > p->pkt_len)
		return ETSF_R_TRUNC_L4;
	if (p->l4proto == IPPROTO_UDP)
		reason = etsf_parse_udp(data, data_end, p, &off, &l4max);
	else
		reason = etsf_parse_tcp(data, data_end, p, &off, &l4max);
	if (reason != ETSF_R_OK)
		return reason;
	p->poff = off;
	/* payload present in the frame, bounded by what IP/UDP declare */
	if (off >= p->pkt_len)
		p->plen = 0;
	else
		p->plen = p->pkt_len - off < l4max ? p->pkt_len - off : l4max;
	return ETSF_R_OK;
}

#endif /* ETSF_PARSE_H */
