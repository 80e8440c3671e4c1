/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_classify.h - the classifier body shared by xdp_sip and tc_sip_egress
 * (each program is a thin wrapper: what it does with the result differs per
 * hook) and the payload copy the fast path uses too.  Include etsf_ctx_xdp.h
 * or etsf_ctx_skb.h first: packet bytes are loaded through etsf_ctx_*.
 */
#ifndef ETSF_CLASSIFY_H
#define ETSF_CLASSIFY_H

#ifndef ETSF_CTX_H
#error "include etsf_ctx_xdp.h or etsf_ctx_skb.h before etsf_classify.h"
#endif

#include "etsf.h"
#include "etsf_maps.h"
#include "etsf_failsafe.h"
#include "etsf_parse.h"
#include "etsf_sip_parse.h"

#define ETSF_DEFAULT_SIP_PORT 5060
#define ETSF_DEFAULT_TLS_PORT 5061

#define ETSF_PORT_NONE 0
#define ETSF_PORT_SIP  1
#define ETSF_PORT_TLS  2

/* SIP or TLS port of the live policy, source or destination; 5060 / 5061 without a valid policy */
static __always_inline __u32 etsf_port_class(const struct etsf_policy *pol, int valid,
					     __u16 sport, __u16 dport)
{
	int i;

	if (!valid || !pol) {
		if (sport == ETSF_DEFAULT_SIP_PORT || dport == ETSF_DEFAULT_SIP_PORT)
			return ETSF_PORT_SIP;
		if (sport == ETSF_DEFAULT_TLS_PORT || dport == ETSF_DEFAULT_TLS_PORT)
			return ETSF_PORT_TLS;
		return ETSF_PORT_NONE;
	}
#pragma unroll
	for (i = 0; i < ETSF_MAX_SIP_PORTS; i++) {
		__u16 pt = pol->sip_ports[i];

		if (pt && (pt == sport || pt == dport))
			return ETSF_PORT_SIP;
	}
#pragma unroll
	for (i = 0; i < ETSF_MAX_TLS_PORTS; i++) {
		__u16 pt = pol->tls_ports[i];

		if (pt && (pt == sport || pt == dport))
			return ETSF_PORT_TLS;
	}
	return ETSF_PORT_NONE;
}

/*
 * L4 payload -> per-CPU scratch -> SIP parser.  The copy length is bounded
 * to [1, ETSF_PARSE_BYTES] in a way the verifier can follow, so it can prove
 * the copy fits the scratch buffer.
 */
static __always_inline void etsf_parse_payload(etsf_ctx_t *ctx, __u32 hook, const struct etsf_pkt *p,
					       struct etsf_sip_result *r)
{
	__u32 zero = 0, n = p->plen;
	struct etsf_scratch *s;
	struct etsf_parse_stat *ps;

	if (n == 0) {
		r->reason = ETSF_R_EMPTY;
		return;
	}
	s = bpf_map_lookup_elem(&etsf_scratch, &zero);
	if (!s) {
		r->reason = ETSF_R_INTERNAL;
		return;
	}
	if (n > ETSF_PARSE_BYTES)
		n = ETSF_PARSE_BYTES;
	n -= 1;
	asm volatile("" : "+r"(n));
	n &= ETSF_SCRATCH_MASK;
	n += 1;
	if (etsf_ctx_load_bytes(ctx, p->poff, s->buf, n)) {
		r->reason = ETSF_R_INTERNAL;
		return;
	}
	ps = bpf_map_lookup_elem(&etsf_parse_stats, &hook);
	if (ps)
		ps->sip_parses++;
	etsf_sip_parse(s, n, p->plen, r);
}

/*
 * L2..L4 of the packet into p (etsf_parse_hdrs).  A global function: its VLAN,
 * IPv6 extension header and L4 paths end here, so the caller goes on as one
 * path with the result in p instead of carrying each path's packet offsets
 * (the verifier then checks the rest of the program once, not once per header
 * shape).  The caller keeps no packet pointer across the call.
 */
__attribute__((noinline)) int etsf_hdrs(etsf_ctx_t *ctx, struct etsf_pkt *p)
{
	void *data, *data_end;

	if (!p)
		return ETSF_R_INTERNAL;
	etsf_ctx_bounds(ctx, &data, &data_end);
	return etsf_parse_hdrs(data, data_end, p);
}

/* a TCP segment whose payload does not start a SIP message is a continuation */
static __always_inline void etsf_tcp_continuation(const struct etsf_pkt *p, struct etsf_sip_result *r)
{
	if (p->l4proto == IPPROTO_TCP &&
	    (r->reason == ETSF_R_NOT_SIP || r->reason == ETSF_R_SIP_TRUNC ||
	     r->reason == ETSF_R_PARSE_LIMIT) &&
	    r->method == ETSF_M_UNKNOWN)
		r->reason = ETSF_R_TCP_CONT;
}

/*
 * Fail-safe prologue, L2..L4, port class.  p->pkt_len is set by the caller.
 * Returns ETSF_R_OK when the packet is on a SIP or TLS port (*pc says which),
 * else the reason to pass it with.  *ctl, *pol and *valid as etsf_prologue.
 */
static __always_inline __u32 etsf_classify_l4(etsf_ctx_t *ctx, struct etsf_pkt *p,
					      struct etsf_ctl **ctl, const struct etsf_policy **pol,
					      int *valid, __u32 *pc)
{
	__u32 reason;

	reason = etsf_prologue(ctl, pol, valid);
	if (reason != ETSF_R_OK)
		return reason;
	reason = etsf_hdrs(ctx, p);
	if (reason != ETSF_R_OK)
		return reason;
	*pc = etsf_port_class(*pol, *valid, p->sport, p->dport);
	if (*pc == ETSF_PORT_NONE)
		return ETSF_R_NOT_SIP_PORT;
	return ETSF_R_OK;
}

/* the SIP parse of a packet on a SIP port; TLS ports are counted, never parsed */
static __always_inline void etsf_classify_sip(etsf_ctx_t *ctx, __u32 hook, const struct etsf_pkt *p,
					      __u32 pc, struct etsf_sip_result *r)
{
	if (pc == ETSF_PORT_TLS) {
		r->reason = ETSF_R_TLS;
		return;
	}
	etsf_parse_payload(ctx, hook, p, r);
	etsf_tcp_continuation(p, r);
}

/*
 * Fail-safe prologue, L2..L4, port class, SIP parse.  Returns ETSF_R_OK when
 * the packet is on a SIP or TLS port (then r->reason is the parse reason, TLS
 * for a TLS port), else the reason to pass it with.
 */
static __always_inline __u32 etsf_classify(etsf_ctx_t *ctx, __u32 hook, struct etsf_pkt *p,
					   struct etsf_sip_result *r, struct etsf_ctl **ctl,
					   const struct etsf_policy **pol, int *valid)
{
	__u32 reason, pc = ETSF_PORT_NONE;

	reason = etsf_classify_l4(ctx, p, ctl, pol, valid, &pc);
	if (reason != ETSF_R_OK)
		return reason;
	etsf_classify_sip(ctx, hook, p, pc, r);
	return ETSF_R_OK;
}

#endif /* ETSF_CLASSIFY_H */
