/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_policy.h - the XDP policy decision for a packet on a SIP/TLS port:
 * deny / trust ACL (LPM per policy slot), overload shedding by method
 * priority, per-source GCRA rate limit, protection of responses and
 * in-dialog requests.  Order and rules: bpf/README.md.
 */
#ifndef ETSF_POLICY_H
#define ETSF_POLICY_H

#include "etsf.h"
#include "etsf_maps.h"
#include "etsf_parse.h"
#include "etsf_sip_parse.h"
#include "etsf_admit.h"

static __always_inline __u32 etsf_acl(const struct etsf_policy *pol, __u32 slot,
				      const struct etsf_pkt *p)
{
	__u32 *act;

	if (pol->flags & (p->family == 4 ? ETSF_POL_F_NO_ACL4 : ETSF_POL_F_NO_ACL6))
		return 0;
	if (p->family == 4) {
		struct etsf_acl_v4_key k = {};

		k.prefixlen = 8 + 32;
		k.slot = slot;
		__builtin_memcpy(k.addr, p->saddr, 4);
		act = bpf_map_lookup_elem(&etsf_acl_v4, &k);
	} else {
		struct etsf_acl_v6_key k = {};

		k.prefixlen = 8 + 128;
		k.slot = slot;
		__builtin_memcpy(k.addr, p->saddr, 16);
		act = bpf_map_lookup_elem(&etsf_acl_v6, &k);
	}
	return act ? *act : 0;
}

/* etsf_pkt.acl: the ACL action is known (no second LPM lookup) */
#define ETSF_PKT_ACL_KNOWN 0x80

/* the ACL action for p's source in the live slot, looked up once per packet */
static __always_inline __u32 etsf_acl_of(const struct etsf_policy *pol, __u32 slot,
					 struct etsf_pkt *p)
{
	__u32 acl;

	if (p->acl & ETSF_PKT_ACL_KNOWN)
		return p->acl & 3;
	acl = etsf_acl(pol, slot, p);
	p->acl = ETSF_PKT_ACL_KNOWN | (acl & 3);
	return acl & 3;
}

static __always_inline __u32 etsf_rl_class(__u32 method)
{
	switch (method) {
	case ETSF_M_REGISTER: return ETSF_RL_REGISTER;
	case ETSF_M_OPTIONS:  return ETSF_RL_OPTIONS;
	case ETSF_M_INVITE:   return ETSF_RL_INVITE;
	}
	return ETSF_RL_OTHER;
}

/*
 * The mask of 32-bit word `word` (network order) of an address under a
 * prefix of plen bits.
 */
static __always_inline __u32 etsf_prefix_mask32(__u32 plen, __u32 word)
{
	__s32 bits = (__s32)plen - (__s32)(word * 32);

	if (bits <= 0)
		return 0;
	if (bits >= 32)
		return 0xffffffff;
	return bpf_htonl((__u32)(0xffffffff00000000ULL >> bits));
}

/*
 * The rate-limit key of the packet's source: its address under the policy's
 * aggregation prefix (IPv4's prefix is at most 32, so its words 1..3 are
 * zero).  Masked a word at a time: every packet with a rate check runs this
 * code, and a byte at a time it is ~380 instructions of straight-line code,
 * cold in traffic.  A global function, checked once instead of at every rate
 * check of each path.
 */
__attribute__((noinline)) int etsf_rl_key(struct etsf_rl_key *k, const struct etsf_pkt *p,
					  const struct etsf_policy *pol, __u32 cls)
{
	/* saddr is at a 4-byte boundary of struct etsf_pkt, addr at one of the
	 * key: whole-word loads and stores, not bytes */
	const __u32 *src = (const __u32 *)p->saddr;
	__u32 *dst = (__u32 *)k->addr;
	__u32 plen, maxp;
	int i;

	if (!k || !p || !pol)
		return -1;
	maxp = p->family == 4 ? 32 : 128;

	plen = p->family == 4 ? pol->agg_prefix_v4 : pol->agg_prefix_v6;
	if (plen == 0 || plen > maxp)
		plen = maxp;
	k->family = p->family;
	k->rl_class = cls;
	k->prefix = plen;
#pragma unroll
	for (i = 0; i < 4; i++)
		dst[i] = src[i] & etsf_prefix_mask32(plen, i);
	return 0;
}

/* etsf_gcra modes */
#define ETSF_GCRA_PEEK 0    /* protected traffic: would it conform? nothing changes   */
#define ETSF_GCRA_TAKE 1    /* conforming: takes its slot; over: counted as dropped   */
#define ETSF_GCRA_OVER 2    /* over: counted as dropped; conforming: nothing changes  */

/*
 * GCRA: emission interval T = 1e9 / rate, tolerance tau = (burst - 1) * T.
 * A request at time t conforms when max(tat, t) - t <= tau; then tat =
 * max(tat, t) + T.  Burst N admits exactly N back-to-back requests.
 * Returns 1 = conforming, 0 = over the limit.
 */
static __always_inline int etsf_gcra(const struct etsf_pkt *p, const struct etsf_policy *pol,
				     __u32 cls, const struct etsf_rate *rt, int mode)
{
	int consume = mode == ETSF_GCRA_TAKE;

	struct etsf_rl_key k = {};
	struct etsf_rl_state *st;
	__u64 now = bpf_ktime_get_ns();
	__u64 T, tau, tat;
	__u32 burst = rt->burst ? rt->burst : 1;

	T = 1000000000ULL / rt->rate_pps;
	if (T == 0)
		T = 1;
	tau = T * (burst - 1);
	etsf_rl_key(&k, p, pol, cls);
	st = bpf_map_lookup_elem(&etsf_rl, &k);
	if (!st) {
		struct etsf_rl_state ns = {};

		if (!consume)
			return 1;
		ns.tat_ns = now + T;
		ns.passed = 1;
		bpf_map_update_elem(&etsf_rl, &k, &ns, BPF_ANY);
		return 1;
	}
	tat = st->tat_ns > now ? st->tat_ns : now;
	if (tat - now > tau) {
		if (mode != ETSF_GCRA_PEEK)
			__sync_fetch_and_add(&st->dropped, 1);
		return 0;
	}
	if (consume) {
		st->tat_ns = tat + T;
		__sync_fetch_and_add(&st->passed, 1);
	}
	return 1;
}

/*
 * Responses, ACK, BYE, CANCEL and requests inside a dialog (To-tag).  A
 * REGISTER is never inside a dialog (RFC 3261 10.2: its To-tag means
 * nothing), so a To-tag does not protect it: else a flood could pass its
 * limit by adding one, and the limit can be applied before the parse.
 */
static __always_inline int etsf_protected(const struct etsf_sip_result *r)
{
	return r->method == ETSF_M_RESPONSE || r->method == ETSF_M_ACK ||
	       r->method == ETSF_M_BYE || r->method == ETSF_M_CANCEL ||
	       (r->has_to_tag && r->method != ETSF_M_REGISTER);
}

/*
 * A REGISTER over UDP, before its payload is copied or parsed (valid policy,
 * a source neither denied nor trusted): the overload level sheds it, or its
 * source is over its limit.  Nothing later in a REGISTER can protect it.
 * Returns the drop reason, or 0 to go on to the parse and
 * etsf_policy_verdict, where a conforming REGISTER takes its slot.
 */
static __always_inline __u32 etsf_policy_register_early(const struct etsf_ctl *ctl,
							const struct etsf_policy *pol,
							const struct etsf_pkt *p)
{
	const struct etsf_rate *rt;
	__u32 level;

	level = ctl->overload_level;
	if (level > ETSF_OVERLOAD_LEVELS - 1)
		level = ETSF_OVERLOAD_LEVELS - 1;
	if (pol->method_prio[ETSF_M_REGISTER] < pol->shed_below[level & 3])
		return ETSF_R_OVERLOAD;
	rt = &pol->rate[ETSF_RL_REGISTER];
	if (rt->rate_pps && !etsf_gcra(p, pol, ETSF_RL_REGISTER, rt, ETSF_GCRA_OVER))
		return ETSF_R_RATE_LIMIT;
	return 0;
}

/*
 * Policy for a packet on a SIP/TLS port.  pr = the parse reason (OK when the
 * message was classified).  Returns the verdict, *reason set.
 */
static __always_inline __u32 etsf_policy_verdict(const struct etsf_ctl *ctl,
						 const struct etsf_policy *pol, int valid,
						 struct etsf_pkt *p,
						 const struct etsf_sip_result *r, __u32 pr,
						 __u32 *reason)
{
	__u32 slot = ctl->active_slot & 1;
	__u32 acl = 0, level, prio, shed_below, cls;
	int prot, would;
	const struct etsf_rate *rt;

	if (valid && pol)
		acl = etsf_acl_of(pol, slot, p);
	if (acl == ETSF_ACL_DENY) {
		*reason = ETSF_R_DENY;
		return ETSF_V_DROP;
	}
	if (pr != ETSF_R_OK) {
		*reason = pr;
		return ETSF_V_PASS;
	}
	if (!valid || !pol) {
		*reason = ETSF_R_NO_POLICY;
		return ETSF_V_PASS;
	}
	if (acl == ETSF_ACL_TRUST) {
		*reason = ETSF_R_TRUSTED;
		return ETSF_V_PASS;
	}
	if (r->method == ETSF_M_ACK && r->has_callid && etsf_admit_refused_ack(p, r)) {
		*reason = ETSF_R_ADMIT_ACK;
		return ETSF_V_DROP;
	}
	prot = etsf_protected(r);

	level = ctl->overload_level;
	if (level > ETSF_OVERLOAD_LEVELS - 1)
		level = ETSF_OVERLOAD_LEVELS - 1;
	shed_below = pol->shed_below[level & 3];
	prio = 0;
	if (r->method < ETSF_METHODS) {
		__u32 m = r->method;

		asm volatile("" : "+r"(m));
		prio = pol->method_prio[m & 0x1f];  /* mask keeps the verifier in the value */
	}
	if (prio < shed_below) {
		if (prot) {
			*reason = ETSF_R_PROTECTED;
			return ETSF_V_PASS;
		}
		*reason = ETSF_R_OVERLOAD;
		return ETSF_V_DROP;
	}

	cls = etsf_rl_class(r->method);
	rt = &pol->rate[cls & 3];
	if (rt->rate_pps) {
		if (prot) {
			would = !etsf_gcra(p, pol, cls, rt, ETSF_GCRA_PEEK);
			*reason = would ? ETSF_R_PROTECTED : ETSF_R_OK;
			return ETSF_V_PASS;
		}
		if (!etsf_gcra(p, pol, cls, rt, ETSF_GCRA_TAKE)) {
			*reason = ETSF_R_RATE_LIMIT;
			return ETSF_V_DROP;
		}
	}
	if (r->method == ETSF_M_INVITE && !prot && r->has_callid) {
		if (!ctl->invite_admit_rate) {
			etsf_admit_note(pol, valid, p, r);
		} else if (!etsf_admit_invite(ctl, p, r)) {
			*reason = ETSF_R_ADMISSION;
			return ETSF_V_DROP;
		}
	}
	*reason = ETSF_R_OK;
	return ETSF_V_PASS;
}

#endif /* ETSF_POLICY_H */
