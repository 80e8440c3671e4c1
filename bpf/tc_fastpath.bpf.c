// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * tc_fastpath - eTSF TC clsact INGRESS (direct action): the one ingress
 * program of an interface, classifying and steering from one parse.
 *
 * What it does on an interface is etsf_if_cfg[ingress ifindex]:
 *   CLASSIFY  the SIP classifier (the datapath hook `tc`): the same checks,
 *             verdicts, reasons and counters as xdp_sip, counted at
 *             ETSF_HOOK_TC_INGRESS; DROP = TC_ACT_SHOT; the in-kernel 503 /
 *             keep-alive 200 goes back out of the interface (bpf_redirect)
 *   STEER     the fast path (below); no entry = STEER only
 *   XDP       xdp_sip classified the packet already and left its result in
 *             front of it (struct etsf_meta): the Call-ID hash is taken from
 *             there, the payload is parsed only when it is missing
 * Per packet:
 *   1. etsf_ctl: bypass / dead-man -> TC_ACT_OK (fallback, counted)
 *   2. Ethernet/IPv4/IPv6/UDP/TCP (fragments -> fallback)
 *   3. RETURN (STEER): source is a backend and destination a client seen in
 *      (5) (flow LRU): source rewritten to the VIP:port, bpf_fib_lookup +
 *      bpf_redirect (MACs from the FIB) or bpf_redirect_neigh; when the FIB
 *      cannot route it the reply goes back the way the request came
 *      (interface + MACs remembered with the flow).  Never parsed here: the
 *      egress program parses replies once.
 *   4. CLASSIFY: SIP port, payload parse, policy; a dropped or answered
 *      packet ends here
 *   5. FORWARD (STEER): destination is a service VIP:port of the live policy
 *      slot.  UDP: Call-ID hash (from the parse of 4, from XDP metadata, or
 *      parsed here) -> affinity LRU (a dialog stays on its backend while that
 *      backend is in the service, even when it is marked down) or else the
 *      service's Maglev table (new dialogs skip down backends).  TCP: per
 *      connection (4-tuple hash, pinned at SYN).  Destination address/port
 *      rewritten (IPv4 header + L4 checksums incrementally), MACs set,
 *      bpf_redirect_peer() into the backend's namespace (or bpf_fib_lookup +
 *      bpf_redirect / bpf_redirect_neigh when the agent did not resolve the
 *      backend's veth).
 * So a packet is parsed at most once here.  Nothing here touches netfilter:
 * redirected packets skip the bridge, PREROUTING/DNAT and conntrack of this
 * namespace.
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
#include "etsf_stats.h"
#include "etsf_telemetry.h"
#include "etsf_ingress.h"
#include "etsf_reply_skb.h"
#include "etsf_fastpath.h"

/*
 * Everything the program knows of a packet, passed by pointer to the global
 * functions below (each is verified once, on its own).
 */
struct etsf_fp_ctx {
	struct etsf_pkt p;
	struct etsf_sip_result r;
	__u8 saddr[16];
	__u8 daddr[16];
	__u64 generation;
	__u64 meta_hash;    /* XDP metadata: Call-ID hash                       */
	__u32 slot;
	__u32 ring;         /* FORWARD: the service's Maglev table               */
	__u32 reason;       /* fail-safe / L2..L4 reason, ETSF_R_OK to go on     */
	__u32 parsed;       /* r holds this packet's parse result                */
	__u32 meta;         /* XDP metadata: 0 none, else 1 + its flags          */
	__u32 verdict;      /* classifier: verdict and reason of the packet      */
	__u32 vreason;
	__u32 _pad;
};

/*
 * Per-CPU home of the packet's etsf_fp_ctx: on the stack it would not fit
 * next to the deepest global function's frame (512 bytes for the chain).
 * Not pinned: private to the object, holds nothing across packets.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct etsf_fp_ctx);
} etsf_fp_pctx SEC(".maps");

#define ETSF_TC_GO (-1)     /* etsf_tc_classify: not consumed, steer it on   */

/*
 * Build the in-kernel answer (code 503 or 200) into etsf_resp.  Returns 1
 * when it is to be put on the wire (etsf_ingress_build).  A global
 * function: the builder is verified once, on its own.
 */
__attribute__((noinline)) int etsf_tc_build(struct etsf_fp_ctx *c, const struct etsf_ctl *ctl,
					    __u32 code)
{
	const struct etsf_ka_cfg *kc = NULL;

	if (!c || !ctl)
		return 0;
	if (code == 200) {
		__u32 slot = ctl->active_slot & 1;

		kc = bpf_map_lookup_elem(&etsf_ka_cfg, &slot);
		if (!kc)
			return 0;
	}
	return etsf_ingress_build(ctl, &c->p, &c->r, code, kc);
}

/*
 * The policy verdict (c->verdict, c->vreason) and the answer due (returned:
 * 503, 200 or 0) of a parsed packet.  A global function: verified once.
 */
__attribute__((noinline)) int etsf_tc_decide(struct etsf_fp_ctx *c, const struct etsf_ctl *ctl,
					     const struct etsf_policy *pol, int valid)
{
	const struct etsf_ka_cfg *kc = NULL;

	if (!c || !ctl)
		return 0;
	return etsf_ingress_decide(ctl, pol, valid, &c->p, &c->r, &c->verdict, &c->vreason, &kc);
}

/*
 * The classifier at TC ingress: xdp_sip's checks, verdicts and counters
 * (etsf_ingress.h) at ETSF_HOOK_TC_INGRESS, on the headers main parsed.
 * c->reason is main's fail-safe and header outcome: ETSF_R_OK means the
 * bypass and dead-man checks passed for this packet, so they are not repeated.
 * Returns TC_ACT_SHOT (dropped), TC_ACT_REDIRECT (answered) or ETSF_TC_GO.
 * A global function: verified once, with unknown arguments.
 */
__attribute__((noinline)) int etsf_tc_classify(struct __sk_buff *skb, struct etsf_fp_ctx *c)
{
	const struct etsf_policy *pol = NULL;
	struct etsf_ctl *ctl = NULL;
	struct etsf_sip_result *r;
	struct etsf_pkt *p;
	__u32 reason, verdict = ETSF_V_PASS, code, pc, zero = 0;
	struct etsf_early e = {};
	int valid = 0, tx = 0, sip = 0;

	if (!skb || !c)
		return ETSF_TC_GO;
	p = &c->p;
	r = &c->r;
	reason = c->reason;
	if (reason != ETSF_R_OK) {
		ctl = bpf_map_lookup_elem(&etsf_ctl, &zero);
		goto out;
	}
	/* the caller ran the fail-safe on this packet already: a second clock read decides nothing */
	ctl = bpf_map_lookup_elem(&etsf_ctl, &zero);
	if (!ctl) {
		reason = ETSF_R_INTERNAL;
		goto out;
	}
	etsf_live_policy(ctl, &pol, &valid);
	pc = etsf_port_class(pol, valid, p->sport, p->dport);
	if (pc == ETSF_PORT_NONE) {
		reason = ETSF_R_NOT_SIP_PORT;
		goto out;
	}
	e.hook = ETSF_HOOK_TC_INGRESS;
	e.pc = pc;
	if (valid && pol && etsf_classify_early(skb, p, r, &e)) {
		verdict = e.verdict;
		reason = e.reason;
		sip = r->method != ETSF_M_UNKNOWN;
		goto out;
	}
	etsf_classify_sip(skb, ETSF_HOOK_TC_INGRESS, p, pc, r);
	c->parsed = pc == ETSF_PORT_SIP;
	sip = r->reason == ETSF_R_OK;
	c->verdict = ETSF_V_PASS;
	c->vreason = ETSF_R_OK;
	code = etsf_tc_decide(c, ctl, pol, valid);
	verdict = c->verdict & 3;
	reason = c->vreason;
	if (code) {
		/* the answer leaves out of the ingress interface (etsf_reply_skb.h) */
		int tried = etsf_tc_build(c, ctl, code);
		int rc = tried ? etsf_skb_reply(skb, p->l3off, p->l4off, p->family, p->pkt_len) : -1;

		tx = etsf_ingress_answered(code, tried, rc, &verdict, &reason);
	}
	if (r->reason == ETSF_R_OK && verdict != ETSF_V_DROP && !tx && etsf_tm_enabled(pol, valid))
		etsf_tm_observe(ETSF_HOOK_TC_INGRESS, p->ifindex, etsf_pkt_tm_dir(p), r);

out:
	etsf_ifstat_rx(skb->ingress_ifindex, p->pkt_len, sip, verdict == ETSF_V_DROP);
	etsf_count(ETSF_HOOK_TC_INGRESS, r->method, verdict, reason, p->pkt_len);
	etsf_record(ctl, r, p, verdict, reason);
	if (tx) {
		skb->cb[0] = ETSF_CB_OWN_ANSWER;
		skb->cb[1] = skb->len;
		return bpf_redirect(skb->ifindex, 0);
	}
	return verdict == ETSF_V_DROP ? TC_ACT_SHOT : ETSF_TC_GO;
}

/* the addresses straight from the linear headers (main pulled them in), the helper otherwise */
static __always_inline int etsf_fp_load_addrs(struct __sk_buff *skb, const struct etsf_pkt *p,
					 __u8 *saddr, __u8 *daddr)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 l3 = p->l3off;
	__u8 *h;

	if (l3 <= ETSF_L3_OFF_MAX) {
		h = data + l3;
		if (p->family == 4 && (void *)(h + 20) <= data_end) {
			__builtin_memcpy(saddr, h + 12, 4);
			__builtin_memcpy(daddr, h + 16, 4);
			return 0;
		}
		if (p->family == 6 && (void *)(h + 40) <= data_end) {
			__builtin_memcpy(saddr, h + 8, 16);
			__builtin_memcpy(daddr, h + 24, 16);
			return 0;
		}
	}
	if (p->family == 4) {
		if (bpf_skb_load_bytes(skb, l3 + 12, saddr, 4) ||
		    bpf_skb_load_bytes(skb, l3 + 16, daddr, 4))
			return -1;
	} else {
		if (bpf_skb_load_bytes(skb, l3 + 8, saddr, 16) ||
		    bpf_skb_load_bytes(skb, l3 + 24, daddr, 16))
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

/* RETURN: a global function (verified once); -ETSF_FP_NOT_SERVICE when no flow matches */
__attribute__((noinline)) int etsf_fp_return(struct __sk_buff *skb, struct etsf_fp_ctx *c)
{
	struct etsf_pkt *p;
	__u8 *saddr, *daddr;
	struct etsf_fp_flow_key fk = {};
	struct etsf_fp_flow *f;
	struct etsf_fp_scratch *sc;
	struct bpf_fib_lookup *fibp;
	struct etsf_fp_bstat *bs;
	__u32 len = skb->len, bid, zero = 0;
	__u8 vip[16] = {};
	__u16 vport;
	long rc;

	if (!skb || !c)
		return -ETSF_FP_INTERNAL;
	p = &c->p;
	saddr = c->saddr;
	daddr = c->daddr;
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

/* FORWARD to a backend of the service c->ring: a global function (verified once) */
__attribute__((noinline)) int etsf_fp_forward(struct __sk_buff *skb, struct etsf_fp_ctx *c)
{
	struct etsf_pkt *p;
	__u8 *saddr, *daddr;
	struct etsf_sip_result *r;
	struct etsf_fp_flow_key fk = {};
	struct etsf_fp_flow *f, *fvp;
	struct etsf_fp_backend *b;
	struct etsf_fp_bstat *bs;
	const struct etsf_fp_ring *ring;
	struct etsf_fp_scratch *sc;
	struct bpf_fib_lookup *fibp;
	__u32 len, bid = ETSF_FP_NONE, ridx, new_dialog = 0, zero = 0, slot;
	__u8 baddr[16] = {}, eth[12];
	__u16 bport;
	long rc = BPF_FIB_LKUP_RET_SUCCESS;
	int peer = 0, l2 = 0;

	if (!skb || !c)
		return -ETSF_FP_INTERNAL;
	p = &c->p;
	r = &c->r;
	saddr = c->saddr;
	daddr = c->daddr;
	slot = c->slot & 1;
	ridx = c->ring;
	len = skb->len;
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

		/* no second parse: the classifier's or xdp_sip's result when there is one */
		if (!c->parsed) {
			etsf_parse_payload(skb, ETSF_HOOK_TC_INGRESS, p, r);
			c->parsed = 1;
		}
		if (r->reason != ETSF_R_OK || !r->has_callid)
			return -ETSF_FP_NOT_SIP;
		ak.callid_hash = r->callid_hash;
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

			bid = etsf_fp_pick(ring, r->callid_hash, slot);
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

/* Call-ID from xdp_sip's metadata: what it parsed stands in for a parse here */
static __always_inline void etsf_fp_meta_use(struct etsf_fp_ctx *c)
{
	__u32 hook = ETSF_HOOK_TC_INGRESS;
	struct etsf_parse_stat *ps = bpf_map_lookup_elem(&etsf_parse_stats, &hook);

	if (!c->meta) {
		if (ps)
			ps->meta_missing++;
		return;         /* fail-open: etsf_fp_forward parses for the Call-ID */
	}
	if (ps)
		ps->meta_used++;
	c->parsed = 1;
	if ((c->meta - 1) & ETSF_META_F_CALLID) {
		c->r.reason = ETSF_R_OK;
		c->r.has_callid = 1;
		c->r.callid_hash = c->meta_hash;
	} else {
		c->r.reason = ETSF_R_NOT_SIP;
	}
}

SEC("tc")
int tc_fastpath(struct __sk_buff *skb)
{
	struct etsf_fp_ctx *c;
	struct etsf_fp_svc_key sk = {};
	struct etsf_fp_svc *svc = NULL;
	struct etsf_if_cfg *cfg;
	struct etsf_ctl *ctl;
	__u32 zero = 0, len = skb->len, ifindex = skb->ingress_ifindex, flags, lin;
	__u32 reason;
	int ret, steer;

	c = bpf_map_lookup_elem(&etsf_fp_pctx, &zero);
	if (!c)
		return TC_ACT_OK;
	__builtin_memset(c, 0, sizeof(*c));
	cfg = bpf_map_lookup_elem(&etsf_if_cfg, &ifindex);
	flags = cfg ? cfg->flags : ETSF_IF_F_STEER;
	/* the telemetry direction the agent keeps with the flags (0: looked up when needed) */
	c->p.tm = cfg ? cfg->tm & (ETSF_IF_TM_KNOWN | 3) : 0;
	steer = flags & ETSF_IF_F_STEER;
	if ((flags & (ETSF_IF_F_CLASSIFY | ETSF_IF_F_XDP)) == ETSF_IF_F_XDP && steer) {
		struct etsf_meta *m = (void *)(long)skb->data_meta;

		if ((void *)(m + 1) <= (void *)(long)skb->data && m->magic == ETSF_META_MAGIC) {
			c->meta = 1 + m->flags;
			c->meta_hash = m->callid_hash;
		}
	}

	c->p.pkt_len = len;
	c->p.ifindex = ifindex;
	ctl = bpf_map_lookup_elem(&etsf_ctl, &zero);
	if (!ctl) {
		c->reason = ETSF_R_INTERNAL;
		reason = ETSF_FP_INTERNAL;
		goto pass;
	}
	c->reason = etsf_failsafe(ctl);
	if (c->reason) {
		reason = c->reason == ETSF_R_BYPASS ? ETSF_FP_BYPASS : ETSF_FP_DEADMAN;
		goto pass;
	}
	c->slot = ctl->active_slot & 1;
	c->generation = ctl->generation;

	/* headers must be linear for direct access; the helper call only when they are not */
	lin = len < 256 ? len : 256;
	if ((long)skb->data + lin > (long)skb->data_end)
		bpf_skb_pull_data(skb, lin);
	c->reason = etsf_hdrs(skb, &c->p);
	if (c->reason != ETSF_R_OK) {
		reason = c->reason == ETSF_R_FRAGMENT ? ETSF_FP_FRAGMENT : ETSF_FP_NOT_L4;
		goto pass;
	}
	if (steer && etsf_fp_load_addrs(skb, &c->p, c->saddr, c->daddr)) {
		etsf_fp_count(ETSF_FP_NOT_L4, len);
		steer = 0;
	}
	if (steer) {
		sk.slot = c->slot;
		sk.family = c->p.family;
		sk.proto = c->p.l4proto;
		sk.port = c->p.dport;
		__builtin_memcpy(sk.addr, c->daddr, 16);
		svc = bpf_map_lookup_elem(&etsf_fp_svc, &sk);
		if (!svc) {
			ret = etsf_fp_return(skb, c);
			if (ret >= 0)
				return ret;
			if (ret != -ETSF_FP_NOT_SERVICE) {
				/* a reply of a steered flow that cannot go back the fast way */
				etsf_fp_count((__u32)(-ret), len);
				return TC_ACT_OK;
			}
		} else {
			c->ring = svc->ring;
		}
	}
	if (flags & ETSF_IF_F_CLASSIFY) {
		ret = etsf_tc_classify(skb, c);
		if (ret != ETSF_TC_GO)
			return ret;
	}
	if (!steer)
		return TC_ACT_OK;
	if (!svc) {
		etsf_fp_count(ETSF_FP_NOT_SERVICE, len);
		return TC_ACT_OK;
	}
	if ((flags & (ETSF_IF_F_CLASSIFY | ETSF_IF_F_XDP)) == ETSF_IF_F_XDP &&
	    c->p.l4proto == IPPROTO_UDP)
		etsf_fp_meta_use(c);
	ret = etsf_fp_forward(skb, c);
	if (ret >= 0)
		return ret;
	etsf_fp_count((__u32)(-ret), len);
	return TC_ACT_OK;

pass:
	if (flags & ETSF_IF_F_CLASSIFY)
		etsf_tc_classify(skb, c);
	if (steer)
		etsf_fp_count(reason, len);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
