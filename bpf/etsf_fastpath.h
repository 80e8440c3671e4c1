/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_fastpath.h - eTSF fast path: SIP to a service VIP:port is steered inside
 * the kernel straight to the local proxy backend that owns the dialog
 * (Maglev table keyed by the Call-ID hash), bypassing bridge, netfilter
 * (DNAT, conntrack) and userspace; replies get the VIP back as source and go
 * straight to the client side.  Layouts: etsf_structs.h ("fast path"
 * section); maps: etsf_fp_maps.h.  Only tc_fastpath.bpf.c includes this
 * header.
 *
 * Anything the fast path cannot handle is returned to the stack unchanged
 * (TC_ACT_OK) and counted in etsf_fp_stats by enum etsf_fp_reason.
 */
#ifndef ETSF_FASTPATH_H
#define ETSF_FASTPATH_H

#include "etsf.h"
#include "etsf_kernel.h"
#include "etsf_fp_maps.h"
#include "etsf_parse.h"

static __always_inline void etsf_fp_count(__u32 reason, __u32 bytes)
{
	__u32 idx = reason & (ETSF_FP_STATS_SLOTS - 1);
	struct etsf_counter *c = bpf_map_lookup_elem(&etsf_fp_stats, &idx);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline struct etsf_fp_backend *etsf_fp_backend(__u32 id)
{
	if (id >= ETSF_FP_BACKENDS_MAX)
		return NULL;
	return bpf_map_lookup_elem(&etsf_fp_backends, &id);
}

/* id when that backend is a member of the live slot's services (up or down), else NONE */
static __always_inline __u32 etsf_fp_member(__u32 id, __u32 slot)
{
	struct etsf_fp_backend *b = etsf_fp_backend(id);

	return b && (b->flags & ETSF_FP_B_SLOT(slot)) ? id : ETSF_FP_NONE;
}

/*
 * Maglev pick for a new dialog: bucket hash % RING; when that backend is
 * down, up to ETSF_FP_RETRIES further buckets chosen by independent re-hashes
 * (murmur3 finaliser of hash + i * golden ratio: Maglev tables are built
 * along arithmetic progressions, so stepping through the table would keep
 * hitting the same backend).  Returns a backend id or ETSF_FP_NONE.  A global
 * function: its nine probes are checked once, not once per caller path.
 */
__attribute__((noinline)) int etsf_fp_pick(const struct etsf_fp_ring *ring, __u64 h, __u32 slot)
{
	int i;

	if (!ring)
		return ETSF_FP_NONE;

#pragma unroll
	for (i = 0; i <= ETSF_FP_RETRIES; i++) {
		__u64 x = h;
		__u32 j, id;
		struct etsf_fp_backend *b;

		if (i) {
			x = h + (__u64)i * 0x9e3779b97f4a7c15ULL;
			x ^= x >> 33;
			x *= 0xff51afd7ed558ccdULL;
			x ^= x >> 33;
		}
		j = (__u32)(x % ETSF_FP_RING);
		asm volatile("" : "+r"(j));
		if (j >= ETSF_FP_RING)
			return ETSF_FP_NONE;
		id = ring->backend[j];
		if (id == ETSF_FP_NONE)
			continue;
		b = etsf_fp_backend(id);
		if (b && b->up && (b->flags & ETSF_FP_B_SLOT(slot)))
			return id;
	}
	return ETSF_FP_NONE;
}

/* 64-bit mix of a TCP 4-tuple (client side): the connection's "Call-ID" */
static __always_inline __u64 etsf_fp_flow_hash(const __u8 *addr, __u16 port)
{
	__u64 h = ETSF_FNV64_OFFSET;
	int i;

#pragma unroll
	for (i = 0; i < 16; i++) {
		h ^= addr[i];
		h *= ETSF_FNV64_PRIME;
	}
	h ^= port;
	h *= ETSF_FNV64_PRIME;
	return h;
}

/* checksum-correct address / port rewrite (which = 0: source, 1: destination) */
static __always_inline int etsf_fp_rewrite(struct __sk_buff *skb, const struct etsf_pkt *p, int which,
				      const __u8 *old_addr, const __u8 *new_addr, __u16 old_port,
				      __u16 new_port)
{
	__u32 l3 = p->l3off, l4 = p->l4off;
	__u32 aoff, csum_off, alen = p->family == 4 ? 4 : 16;
	__u64 mflag = p->l4proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__be16 op = bpf_htons(old_port), np = bpf_htons(new_port);
	__s64 diff;

	csum_off = l4 + (p->l4proto == IPPROTO_UDP ? 6 : 16);
	if (p->family == 4) {
		aoff = l3 + (which ? 16 : 12);
		diff = bpf_csum_diff((__be32 *)old_addr, 4, (__be32 *)new_addr, 4, 0);
		if (diff < 0)
			return -1;
		if (bpf_l3_csum_replace(skb, l3 + 10, 0, diff, 0))
			return -1;
	} else {
		aoff = l3 + (which ? 24 : 8);
		diff = bpf_csum_diff((__be32 *)old_addr, 16, (__be32 *)new_addr, 16, 0);
		if (diff < 0)
			return -1;
	}
	if (bpf_l4_csum_replace(skb, csum_off, 0, diff, BPF_F_PSEUDO_HDR | mflag))
		return -1;
	if (p->family == 4) {
		if (bpf_skb_store_bytes(skb, aoff, new_addr, 4, 0))
			return -1;
	} else {
		if (bpf_skb_store_bytes(skb, aoff, new_addr, 16, 0))
			return -1;
	}
	if (op != np) {
		if (bpf_l4_csum_replace(skb, csum_off, op, np, sizeof(np) | mflag))
			return -1;
		if (bpf_skb_store_bytes(skb, l4 + (which ? 2 : 0), &np, sizeof(np), 0))
			return -1;
	}
	(void)alen;
	return 0;
}

static __always_inline int etsf_fp_set_macs(struct __sk_buff *skb, const __u8 *dmac, const __u8 *smac)
{
	__u8 m[12];

	__builtin_memcpy(m, dmac, 6);
	__builtin_memcpy(m + 6, smac, 6);
	return bpf_skb_store_bytes(skb, 0, m, 12, 0) ? -1 : 0;
}

/* FIB lookup src -> dst as seen from ifindex; fills fib (ifindex, MACs) */
static __always_inline long etsf_fp_fib(struct __sk_buff *skb, struct bpf_fib_lookup *fib,
				   const struct etsf_pkt *p, const __u8 *src, const __u8 *dst,
				   __u32 ifindex)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->ifindex = ifindex;
	fib->l4_protocol = p->l4proto;
	if (p->family == 4) {
		fib->family = AF_INET;
		__builtin_memcpy(&fib->ipv4_src, src, 4);
		__builtin_memcpy(&fib->ipv4_dst, dst, 4);
		fib->tot_len = (__u16)(skb->len - p->l3off);
	} else {
		fib->family = AF_INET6;
		__builtin_memcpy(fib->ipv6_src, src, 16);
		__builtin_memcpy(fib->ipv6_dst, dst, 16);
		fib->tot_len = (__u16)(skb->len - p->l3off);
	}
	return bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
}

/* flow key of the packet's family and protocol: a:aport -> b:bport, direction dir */
static __always_inline void etsf_fp_flow_key_set(struct etsf_fp_flow_key *fk,
						 const struct etsf_pkt *p, const __u8 *a,
						 __u16 aport, const __u8 *b, __u16 bport,
						 __u8 dir)
{
	__builtin_memcpy(fk->a, a, 16);
	__builtin_memcpy(fk->b, b, 16);
	fk->aport = aport;
	fk->bport = bport;
	fk->family = p->family;
	fk->proto = p->l4proto;
	fk->dir = dir;
}

/* out through ifindex to the next hop the FIB lookup named, neighbour resolved by the kernel */
static __always_inline long etsf_fp_redirect_neigh(const struct bpf_fib_lookup *fib, __u8 family)
{
	struct bpf_redir_neigh nh = {};

	if (family == 4) {
		nh.nh_family = AF_INET;
		__builtin_memcpy(&nh.ipv4_nh, &fib->ipv4_dst, 4);
	} else {
		nh.nh_family = AF_INET6;
		__builtin_memcpy(nh.ipv6_nh, fib->ipv6_dst, 16);
	}
	return bpf_redirect_neigh(fib->ifindex, &nh, sizeof(nh), 0);
}

#endif /* ETSF_FASTPATH_H */
