// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * tc_fastpath - eTSF fast path, TC clsact INGRESS (direct action).
 *
 * Attached on the uplink (client side) and on the host end of every
 * backend's veth.  Per packet:
 *   1. etsf_ctl: bypass / dead-man -> TC_ACT_OK (fallback, counted)
 *   2. Ethernet/IPv4/IPv6/UDP/TCP (fragments -> fallback)
 *   3. FORWARD: destination is a service VIP:port of the live policy slot.
 *      UDP: SIP parsed, Call-ID hash -> affinity LRU (a dialog stays on its
 *      backend while that backend is in the service, even when it is marked
 *      down) or else the service's Maglev table (new dialogs skip down
 *      backends).  TCP: per connection (4-tuple hash, pinned at SYN).
 *      Destination address/port rewritten (IPv4 header + L4 checksums
 *      incrementally), MACs set, bpf_redirect_peer() into the backend's
 *      namespace (or bpf_fib_lookup + bpf_redirect / bpf_redirect_neigh when
 *      the agent did not resolve the backend's veth).
 *   4. RETURN: source is a backend and destination a client seen in (3)
 *      (flow LRU): source rewritten to the VIP:port, bpf_fib_lookup +
 *      bpf_redirect (MACs from the FIB) or bpf_redirect_neigh; when the FIB
 *      cannot route it the reply goes back the way the request came
 *      (interface + MACs remembered with the flow).
 * Nothing here touches netfilter: redirected packets skip the bridge,
 * PREROUTING/DNAT and conntrack of this namespace.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "etsf_ctx_skb.h"
#include "etsf.h"
#include "etsf_kernel.h"
#include "etsf_maps.h"
#include "etsf_fp_maps.h"
#include "etsf_failsafe.h"
#include "etsf_parse.h"
#include "etsf_classify.h"
#include "etsf_fastpath.h"

struct etsf_fp_ctx {
	struct etsf_pkt p;
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 slot;
	__u32 _pad;
	__u64 generation;
};

static __always_inline int etsf_fp_load_addrs(struct __sk_buff *skb, const struct etsf_pkt *p,
					 __u8 *saddr, __u8 *daddr)
{
	if (p->family == 4) {
		if (bpf_skb_load_bytes(skb, p->l3off + 12, saddr, 4) ||
		    bpf_skb_load_bytes(skb, p->l3off + 16, daddr, 4))
			return -1;
	} else {
		if (bpf_skb_load_bytes(skb, p->l3off + 8, saddr, 16) ||
		    bpf_skb_load_bytes(skb, p->l3off + 24, daddr, 16))
			return -1;
	}
	return 0;
}

static __always_inline int etsf_fp_addr_eq(const __u8 *a, const __u8 *b)
{
	__u64 x0, x1, y0, y1;

	__builtin_memcpy(&x0, a, 8);
	__builtin_memcpy(&x1, a + 8, 8);
	__builtin_memcpy(&y0, b, 8);
	__builtin_memcpy(&y1, b + 8, 8);
	return x0 == y0 && x1 == y1;
}

static __always_inline int etsf_fp_is_syn(struct __sk_buff *skb, const struct etsf_pkt *p)
{
	__u8 fl;

	if (bpf_skb_load_bytes(skb, p->l4off + 13, &fl, 1))
		return 0;
	return (fl & 0x12) == 0x02;      /* SYN without ACK */
}

static __noinline int etsf_fp_return(struct __sk_buff *skb, struct etsf_fp_ctx *c)
{
	struct etsf_pkt *p = &c->p;
	__u8 *saddr = c->saddr, *daddr = c->daddr;
	struct etsf_fp_flow_key fk = {};
	struct etsf_fp_flow *f;
	struct etsf_fp_scratch *sc;
	struct bpf_fib_lookup *fibp;
	struct etsf_fp_bstat *bs;
	__u32 len = skb->len, bid, zero = 0;
	__u8 vip[16] = {};
	__u16 vport;
	long rc;

	etsf_fp_flow_key_set(&fk, p, daddr, p->dport, saddr, p->sport, 1);
	f = bpf_map_lookup_elem(&etsf_fp_flow, &fk);
	if (!f)
		return -ETSF_FP_NOT_SERVICE;
	__builtin_memcpy(vip, f->vip, 16);
	vport = f->vport;
	bid = f->backend;

	sc = bpf_map_lookup_elem(&etsf_fp_scratch, &zero);
	if (!sc)
		return -ETSF_FP_INTERNAL;
	fibp = &sc->fib;
	rc = etsf_fp_fib(skb, fibp, p, vip, daddr, skb->ingress_ifindex);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH && !f->ifindex)
		return -ETSF_FP_FIB_FAIL;
	if (etsf_fp_rewrite(skb, p, 0, saddr, vip, p->sport, vport))
		return -ETSF_FP_INTERNAL;
	bs = bid < ETSF_FP_BACKENDS_MAX ? bpf_map_lookup_elem(&etsf_fp_bstats, &bid) : NULL;
	if (bs) {
		bs->ret_packets++;
		bs->ret_bytes += len;
	}
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (etsf_fp_set_macs(skb, fibp->dmac, fibp->smac))
			return -ETSF_FP_INTERNAL;
		etsf_fp_count(ETSF_FP_RET, len);
		return bpf_redirect(fibp->ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		etsf_fp_count(ETSF_FP_RET, len);
		return etsf_fp_redirect_neigh(fibp, p->family);
	}
	/* symmetric: back out where the request came in */
	f = bpf_map_lookup_elem(&etsf_fp_flow, &fk);
	if (!f)
		return -ETSF_FP_INTERNAL;
	if (etsf_fp_set_macs(skb, f->cmac, f->lmac))
		return -ETSF_FP_INTERNAL;
	etsf_fp_count(ETSF_FP_RET, len);
	return bpf_redirect(f->ifindex, 0);
}

static __noinline int etsf_fp_forward(struct __sk_buff *skb, struct etsf_fp_ctx *c,
				 const struct etsf_fp_svc *svc)
{
	struct etsf_pkt *p = &c->p;
	__u8 *saddr = c->saddr, *daddr = c->daddr;
	__u32 slot = c->slot;
	struct etsf_sip_result r = {};
	struct etsf_fp_flow_key fk = {};
	struct etsf_fp_flow *f, *fvp;
	struct etsf_fp_backend *b;
	struct etsf_fp_bstat *bs;
	const struct etsf_fp_ring *ring;
	struct etsf_fp_scratch *sc;
	struct bpf_fib_lookup *fibp;
	__u32 len = skb->len, bid = ETSF_FP_NONE, ridx = svc->ring, new_dialog = 0, zero = 0;
	__u8 baddr[16] = {}, eth[12];
	__u16 bport;
	long rc = BPF_FIB_LKUP_RET_SUCCESS;
	int peer = 0, l2 = 0;

	if (ridx >= ETSF_POLICY_SLOTS * ETSF_FP_SVC_MAX)
		return -ETSF_FP_INTERNAL;
	ring = bpf_map_lookup_elem(&etsf_fp_ring, &ridx);
	if (!ring)
		return -ETSF_FP_INTERNAL;
	sc = bpf_map_lookup_elem(&etsf_fp_scratch, &zero);
	if (!sc)
		return -ETSF_FP_INTERNAL;
	fibp = &sc->fib;
	fvp = &sc->fv;

	if (p->l4proto == IPPROTO_UDP) {
		struct etsf_fp_aff_key ak = {};
		struct etsf_fp_aff *a;

		etsf_parse_payload(skb, ETSF_HOOK_TC_INGRESS, p, &r);
		if (r.reason != ETSF_R_OK || !r.has_callid)
			return -ETSF_FP_NOT_SIP;
		ak.callid_hash = r.callid_hash;
		__builtin_memcpy(ak.vip, daddr, 16);
		ak.vport = p->dport;
		ak.family = p->family;
		ak.proto = p->l4proto;
		a = bpf_map_lookup_elem(&etsf_fp_aff, &ak);
		/* stays while the backend is in the live service, up or down */
		if (a)
			bid = etsf_fp_member(a->backend, slot);
		if (bid == ETSF_FP_NONE) {
			struct etsf_fp_aff av = {};

			bid = etsf_fp_pick(ring, r.callid_hash, slot);
			if (bid == ETSF_FP_NONE)
				return -ETSF_FP_NO_BACKEND;
			av.backend = bid;
			av.generation = c->generation;
			bpf_map_update_elem(&etsf_fp_aff, &ak, &av, BPF_ANY);
			new_dialog = 1;
		}
	} else {
		etsf_fp_flow_key_set(&fk, p, saddr, p->sport, daddr, p->dport, 0);
		f = bpf_map_lookup_elem(&etsf_fp_flow, &fk);
		if (f)
			bid = etsf_fp_member(f->backend, slot);
		if (bid == ETSF_FP_NONE) {
			if (!etsf_fp_is_syn(skb, p))
				return -ETSF_FP_TCP_NO_FLOW;
			bid = etsf_fp_pick(ring, etsf_fp_flow_hash(saddr, p->sport), slot);
			if (bid == ETSF_FP_NONE)
				return -ETSF_FP_NO_BACKEND;
			__builtin_memset(fvp, 0, sizeof(*fvp));
			fvp->backend = bid;
			fvp->generation = c->generation;
			bpf_map_update_elem(&etsf_fp_flow, &fk, fvp, BPF_ANY);
			new_dialog = 1;
		}
	}

	b = etsf_fp_backend(bid);
	if (!b)
		return -ETSF_FP_INTERNAL;
	__builtin_memcpy(baddr, b->addr, 16);
	bport = b->port;
	peer = b->flags & ETSF_FP_B_PEER;
	l2 = b->flags & ETSF_FP_B_L2;
	if (l2) {
		__builtin_memcpy(eth, b->mac, 6);
		__builtin_memcpy(eth + 6, b->smac, 6);
		fibp->ifindex = b->ifindex;
	} else {
		rc = etsf_fp_fib(skb, fibp, p, saddr, baddr, skb->ingress_ifindex);
		if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
			return -ETSF_FP_FIB_FAIL;
		__builtin_memcpy(eth, fibp->dmac, 6);
		__builtin_memcpy(eth + 6, fibp->smac, 6);
	}

	/* return-path flow: client <- backend gets the VIP back */
	__builtin_memset(&fk, 0, sizeof(fk));
	etsf_fp_flow_key_set(&fk, p, saddr, p->sport, baddr, bport, 1);
	f = bpf_map_lookup_elem(&etsf_fp_flow, &fk);
	if (!f || f->backend != bid || f->vport != p->dport ||
	    !etsf_fp_addr_eq(f->vip, daddr) || f->ifindex != skb->ingress_ifindex) {
		__builtin_memset(fvp, 0, sizeof(*fvp));
		__builtin_memcpy(fvp->vip, daddr, 16);
		fvp->vport = p->dport;
		fvp->backend = bid;
		fvp->ifindex = skb->ingress_ifindex;
		fvp->generation = c->generation;
		if (bpf_skb_load_bytes(skb, 6, fvp->cmac, 6) || bpf_skb_load_bytes(skb, 0, fvp->lmac, 6))
			return -ETSF_FP_INTERNAL;
		bpf_map_update_elem(&etsf_fp_flow, &fk, fvp, BPF_ANY);
	}

	if (etsf_fp_rewrite(skb, p, 1, daddr, baddr, p->dport, bport))
		return -ETSF_FP_INTERNAL;
	if (rc == BPF_FIB_LKUP_RET_SUCCESS && bpf_skb_store_bytes(skb, 0, eth, 12, 0))
		return -ETSF_FP_INTERNAL;

	bs = bpf_map_lookup_elem(&etsf_fp_bstats, &bid);
	if (bs) {
		bs->packets++;
		bs->bytes += len;
		bs->dialogs += new_dialog;
	}
	etsf_fp_count(ETSF_FP_FWD, len);
	if (l2)
		return peer ? bpf_redirect_peer(fibp->ifindex, 0) : bpf_redirect(fibp->ifindex, 0);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return etsf_fp_redirect_neigh(fibp, p->family);
	return bpf_redirect(fibp->ifindex, 0);
}

SEC("tc")
int tc_fastpath(struct __sk_buff *skb)
{
	struct etsf_fp_ctx c = {};
	struct etsf_fp_svc_key sk = {};
	struct etsf_fp_svc *svc;
	struct etsf_ctl *ctl;
	__u32 zero = 0, len = skb->len;
	void *data, *data_end;
	__u32 reason;
	int ret;

	ctl = bpf_map_lookup_elem(&etsf_ctl, &zero);
	if (!ctl) {
		reason = ETSF_FP_INTERNAL;
		goto pass;
	}
	reason = etsf_failsafe(ctl);
	if (reason) {
		reason = reason == ETSF_R_BYPASS ? ETSF_FP_BYPASS : ETSF_FP_DEADMAN;
		goto pass;
	}
	c.slot = ctl->active_slot & 1;
	c.generation = ctl->generation;

	/* headers must be linear for direct access (no-op when they are) */
	bpf_skb_pull_data(skb, len < 256 ? len : 256);
	etsf_ctx_bounds(skb, &data, &data_end);
	c.p.pkt_len = len;
	reason = etsf_parse_hdrs(data, data_end, &c.p);
	if (reason != ETSF_R_OK) {
		reason = reason == ETSF_R_FRAGMENT ? ETSF_FP_FRAGMENT : ETSF_FP_NOT_L4;
		goto pass;
	}
	if (etsf_fp_load_addrs(skb, &c.p, c.saddr, c.daddr)) {
		reason = ETSF_FP_NOT_L4;
		goto pass;
	}

	sk.slot = c.slot;
	sk.family = c.p.family;
	sk.proto = c.p.l4proto;
	sk.port = c.p.dport;
	__builtin_memcpy(sk.addr, c.daddr, 16);
	svc = bpf_map_lookup_elem(&etsf_fp_svc, &sk);
	if (svc)
		ret = etsf_fp_forward(skb, &c, svc);
	else
		ret = etsf_fp_return(skb, &c);
	if (ret >= 0)
		return ret;
	reason = (__u32)(-ret);
pass:
	etsf_fp_count(reason, len);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
