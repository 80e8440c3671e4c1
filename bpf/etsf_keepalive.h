/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_keepalive.h - keep-alive OPTIONS answered in the kernel, and NAT
 * keep-alives counted (and dropped when the policy says so).
 *
 * An OPTIONS over UDP that the policy let through (OK or TRUSTED: after the
 * deny list, shedding and the per-source limits) is answered with a 200 built
 * by etsf_respond() and sent back with XDP_TX when all of these hold:
 *   - the live slot has ETSF_POL_F_KA;
 *   - no To-tag (out of dialog);
 *   - bpf_ktime_get_ns() < etsf_ctl.proxy_alive_until_ns (the agent's probe
 *     of the proxy got a 200 recently; else counted passed_proxy_stale);
 *   - the Request-URI is sip:[user@]host with host (and user, when the
 *     identity names one) in etsf_ka_id for the live slot;
 *   - Max-Forwards absent or not 0, no Require / Proxy-Require header
 *     (else passed_not_matching);
 *   - not the 1-in-etsf_ctl.ka_sample_every sample of this CPU's
 *     answerable OPTIONS (passed_sampled).
 * Everything else goes to the proxy untouched.  TCP always goes to the proxy.
 */
#ifndef ETSF_KEEPALIVE_H
#define ETSF_KEEPALIVE_H

#include "etsf.h"
#include "etsf_maps.h"
#include "etsf_parse.h"
#include "etsf_sip_parse.h"
#include "etsf_respond.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ETSF_POLICY_SLOTS);
	__type(key, __u32);
	__type(value, struct etsf_ka_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_ka_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ETSF_KA_ID_MAX);
	__type(key, struct etsf_ka_id_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_ka_id SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct etsf_ka_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_ka_stats SEC(".maps");

static __always_inline struct etsf_ka_stats *etsf_ka_stats_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&etsf_ka_stats, &zero);
}

/* an OPTIONS the keep-alive responder looks at (verdict/reason: the policy's) */
static __always_inline int etsf_ka_candidate(const struct etsf_policy *pol, int valid,
					     const struct etsf_pkt *p,
					     const struct etsf_sip_result *r, __u32 verdict,
					     __u32 reason)
{
	return valid && pol && (pol->flags & ETSF_POL_F_KA) && verdict == ETSF_V_PASS &&
	       (reason == ETSF_R_OK || reason == ETSF_R_TRUSTED) &&
	       r->method == ETSF_M_OPTIONS && p->l4proto == IPPROTO_UDP;
}

/* bytes [from, from + n) of the scratch into dst (8-byte aligned, zeroed), folded or not */
static __always_inline void etsf_ka_copy(__u8 *dst, const __u8 *buf, __u32 from, __u32 n,
					 int words, __u64 fold)
{
	__u64 w;
	__u32 off;
	int i;

#pragma unroll
	for (i = 0; i < ETSF_KA_HOST_LEN / 8; i++) {
		if (i >= words)
			break;
		off = i * 8;
		if (off >= n)
			break;
		w = etsf_sip_word(buf, from + off) | fold;
		if (n - off < 8)
			w &= etsf_sip_mask(n - off);
		*(__u64 *)(dst + off) = w;
	}
}

/* the Request-URI noted by the builder names the node (etsf_ka_id of the slot)? */
static __always_inline int etsf_ka_identity(struct etsf_resp *o, const __u8 *buf, __u32 slot)
{
	const struct etsf_resp_state *c = &o->st;
	struct etsf_ka_id_key *k = &o->ka_key;
	__u32 hs, he, us, ue;

	if (!c->u_start || !(c->u_flags & ETSF_RU_DONE))
		return 0;
	hs = c->u_at ? c->u_at + 1 : c->u_start;
	he = c->u_hend;
	if (he <= hs || he - hs > ETSF_KA_HOST_LEN)
		return 0;
	__builtin_memset(k, 0, sizeof(*k));
	k->slot = slot;
	k->host_len = he - hs;
	etsf_ka_copy(k->host, buf, hs, he - hs, ETSF_KA_HOST_LEN / 8, ETSF_SIP_LOWER64);
	if (c->u_at) {
		us = c->u_start;
		ue = c->u_uend && c->u_uend < c->u_at ? c->u_uend : c->u_at;
		if (ue > us && ue - us <= ETSF_KA_USER_LEN) {
			k->user_len = ue - us;
			etsf_ka_copy(k->user, buf, us, ue - us, ETSF_KA_USER_LEN / 8, 0);
			if (bpf_map_lookup_elem(&etsf_ka_id, k))
				return 1;
			k->user_len = 0;
			__builtin_memset(k->user, 0, sizeof(k->user));
		}
	}
	return bpf_map_lookup_elem(&etsf_ka_id, k) != NULL;
}

#define ETSF_KA_ANSWER  0       /* build the 200 and send it              */
#define ETSF_KA_PASS    1       /* to the proxy (counted)                 */

/*
 * After etsf_respond(..., 200, ...) succeeded (o != NULL) or not: answer or
 * pass, and count why.  Returns ETSF_KA_ANSWER or ETSF_KA_PASS.
 */
static __always_inline int etsf_ka_decide(const struct etsf_ctl *ctl, struct etsf_resp *o,
					  const struct etsf_sip_result *r, __u32 slot,
					  struct etsf_ka_stats *st)
{
	struct etsf_scratch *s;
	__u32 zero = 0, every;
	__u64 seq;

	if (!st)
		return ETSF_KA_PASS;
	s = bpf_map_lookup_elem(&etsf_scratch, &zero);
	if (!o || !s || r->has_to_tag ||
	    (o->st.flags & (ETSF_RF_REQUIRE | ETSF_RF_MFZERO)) ||
	    !etsf_ka_identity(o, s->buf, slot)) {
		st->passed_not_matching++;
		return ETSF_KA_PASS;
	}
	if (bpf_ktime_get_ns() >= ctl->proxy_alive_until_ns) {
		st->passed_proxy_stale++;
		return ETSF_KA_PASS;
	}
	every = ctl->ka_sample_every;
	seq = ++st->sample_seq;
	if (every && seq % every == 0) {
		st->passed_sampled++;
		return ETSF_KA_PASS;
	}
	return ETSF_KA_ANSWER;
}

/* NAT keep-alive over UDP: CRLF, CRLFCRLF or four zero bytes (payload in the scratch) */
static __always_inline int etsf_ka_nat(const struct etsf_pkt *p, const struct etsf_sip_result *r)
{
	struct etsf_scratch *s;
	__u32 zero = 0, w;

	if (p->l4proto != IPPROTO_UDP || r->reason != ETSF_R_NOT_SIP ||
	    (p->plen != 2 && p->plen != 4))
		return 0;
	s = bpf_map_lookup_elem(&etsf_scratch, &zero);
	if (!s)
		return 0;
	w = (__u32)etsf_sip_word(s->buf, 0);
	if (p->plen == 2)
		return (w & 0xffff) == ('\r' | '\n' << 8);
	return w == 0 || w == ETSF_SIP_C8('\r', '\n', '\r', '\n', 0, 0, 0, 0);
}

#endif /* ETSF_KEEPALIVE_H */
