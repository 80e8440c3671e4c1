/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_common.h - header parsing (Ethernet/VLAN/IPv4/IPv6/UDP/TCP), counters,
 * ACL / GCRA / overload policy.  Shared by xdp_sip.bpf.c and tc_sip.bpf.c.
 * Every packet access is preceded by an explicit bounds check against
 * data_end.
 */
#ifndef ETSF_COMMON_H
#define ETSF_COMMON_H

#include "etsf.h"
#include "etsf_maps.h"
#include "sip_parse.h"

#define ETH_P_IP_     0x0800
#define ETH_P_IPV6_   0x86DD
#define ETH_P_8021Q_  0x8100
#define ETH_P_8021AD_ 0x88A8
#define IPPROTO_UDP_  17
#define IPPROTO_TCP_  6
#define NEXTHDR_HOP_     0
#define NEXTHDR_ROUTING_ 43
#define NEXTHDR_FRAG_    44
#define NEXTHDR_DEST_    60
#define ETSF_V6_EXT_MAX  3      /* HBH / routing / dest-opts headers walked */

#define ETSF_DEFAULT_SIP_PORT 5060
#define ETSF_DEFAULT_TLS_PORT 5061

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
	__u8  _pad[2];
	__u8  saddr[16];
};

/* ---- counters -------------------------------------------------------------- */
static __always_inline void etsf_count(__u32 hook, __u32 method, __u32 verdict,
				       __u32 reason, __u32 bytes)
{
	__u32 idx;
	struct etsf_counter *ctr;

	if (method >= ETSF_METHODS)
		method = ETSF_M_UNKNOWN;
	idx = ETSF_STATS_IDX(hook & 1, method, verdict & 3, reason & (ETSF_REASONS - 1));
	ctr = bpf_map_lookup_elem(&etsf_stats, &idx);
	if (ctr) {
		ctr->packets++;
		ctr->bytes += bytes;
	}
}

static __always_inline struct etsf_ifstat *etsf_ifstat_get(__u32 ifindex)
{
	struct etsf_ifstat *s = bpf_map_lookup_elem(&etsf_ifstats, &ifindex);

	if (!s) {
		struct etsf_ifstat zero = {};

		bpf_map_update_elem(&etsf_ifstats, &ifindex, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&etsf_ifstats, &ifindex);
	}
	return s;
}

static __always_inline void etsf_record(const struct etsf_ctl *ctl, const struct sip_result *r,
					const struct etsf_pkt *p, __u32 verdict, __u32 reason)
{
	__u32 zero = 0;
	struct etsf_sip_info *li;

	if (!ctl || !(ctl->flags & ETSF_CTL_F_RECORD))
		return;
	li = bpf_map_lookup_elem(&etsf_last, &zero);
	if (!li)
		return;
	li->callid_hash = r->callid_hash;
	li->cseq = r->cseq;
	li->status = r->status;
	li->method = r->method;
	li->cseq_method = r->cseq_method;
	li->has_callid = r->has_callid;
	li->has_to_tag = r->has_to_tag;
	li->verdict = verdict;
	li->reason = reason;
	li->family = p->family;
	li->l4proto = p->l4proto;
	li->payload_len = p->plen > 0xffff ? 0xffff : p->plen;
}

/* ---- fail-safe: bypass / dead-man ------------------------------------------ */
/* returns a reason (BYPASS/DEADMAN) when the program must pass everything, else 0 */
static __always_inline __u32 etsf_failsafe(const struct etsf_ctl *ctl)
{
	if (ctl->bypass)
		return ETSF_R_BYPASS;
	if (ctl->deadman_ns) {
		__u64 now = bpf_ktime_get_ns();

		/* unsigned: a heartbeat "from the future" (never written by a
		 * correct agent, same clock) also counts as dead: fail-safe */
		if (now - ctl->heartbeat_ns > ctl->deadman_ns)
			return ETSF_R_DEADMAN;
	}
	return 0;
}

/*
 * Prologue shared by every classifier program: the control block, the fail-safe
 * (bypass / dead-man, read first) and the live policy slot.  Returns ETSF_R_OK to go
 * on, else the reason to pass the packet with (INTERNAL, BYPASS, DEADMAN).
 */
static __always_inline __u32 etsf_prologue(struct etsf_ctl **ctl, const struct etsf_policy **pol,
					   int *valid)
{
	__u32 zero = 0, slot, reason;

	*ctl = bpf_map_lookup_elem(&etsf_ctl, &zero);
	if (!*ctl)
		return ETSF_R_INTERNAL;
	reason = etsf_failsafe(*ctl);
	if (reason)
		return reason;
	slot = (*ctl)->active_slot & 1;
	*pol = bpf_map_lookup_elem(&etsf_policy, &slot);
	*valid = *pol && ((*pol)->flags & ETSF_POL_F_VALID);
	return ETSF_R_OK;
}

/* a TCP segment whose payload does not start a SIP message is a continuation */
static __always_inline void etsf_tcp_continuation(const struct etsf_pkt *p, struct sip_result *r)
{
	if (p->l4proto == IPPROTO_TCP_ &&
	    (r->reason == ETSF_R_NOT_SIP || r->reason == ETSF_R_SIP_TRUNC ||
	     r->reason == ETSF_R_PARSE_LIMIT) &&
	    r->method == ETSF_M_UNKNOWN)
		r->reason = ETSF_R_TCP_CONT;
}

/* ---- L2..L4 ---------------------------------------------------------------- */
/* returns ETSF_R_OK when p describes a UDP/TCP packet, else the pass reason */
static __always_inline __u32 etsf_parse_hdrs(void *data, void *data_end, struct etsf_pkt *p)
{
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth);
	__u32 l4max;        /* L4 bytes according to the IP header */
	__u16 proto;

	if ((void *)(eth + 1) > data_end)
		return ETSF_R_TRUNC_L2L3;
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_)) {
		struct vlan_hdr *vh = data + off;

		if ((void *)(vh + 1) > data_end)
			return ETSF_R_TRUNC_L2L3;
		proto = vh->h_vlan_encapsulated_proto;
		off += sizeof(*vh);
		if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_))
			return ETSF_R_VLAN_NESTED;
	}
	p->l3off = off;

	if (proto == bpf_htons(ETH_P_IP_)) {
		struct iphdr *ip = data + off;
		__u32 ihl, tot;

		if ((void *)(ip + 1) > data_end)
			return ETSF_R_TRUNC_L2L3;
		if (ip->version != 4 || ip->ihl < 5)
			return ETSF_R_BAD_IP;
		ihl = ip->ihl * 4;
		tot = bpf_ntohs(ip->tot_len);
		if (tot < ihl)
			return ETSF_R_BAD_IP;
		if (data + off + ihl > data_end)
			return ETSF_R_TRUNC_L2L3;
		p->family = 4;
		__builtin_memcpy(p->saddr, &ip->saddr, 4);
		if (ip->frag_off & bpf_htons(0x3fff))   /* MF or offset */
			return ETSF_R_FRAGMENT;
		p->l4proto = ip->protocol;
		off += ihl;
		l4max = tot - ihl;
	} else if (proto == bpf_htons(ETH_P_IPV6_)) {
		struct ipv6hdr *ip6 = data + off;
		__u8 nh;
		int i;

		if ((void *)(ip6 + 1) > data_end)
			return ETSF_R_TRUNC_L2L3;
		if (ip6->version != 6)
			return ETSF_R_BAD_IP;
		p->family = 6;
		__builtin_memcpy(p->saddr, &ip6->saddr, 16);
		nh = ip6->nexthdr;
		l4max = bpf_ntohs(ip6->payload_len);
		off += sizeof(*ip6);
#pragma unroll
		for (i = 0; i < ETSF_V6_EXT_MAX; i++) {
			struct ipv6_opt_hdr *eh;
			__u32 elen;

			if (nh != NEXTHDR_HOP_ && nh != NEXTHDR_ROUTING_ && nh != NEXTHDR_DEST_)
				break;
			eh = data + off;
			if ((void *)(eh + 1) > data_end)
				return ETSF_R_TRUNC_L2L3;
			elen = (eh->hdrlen + 1) * 8;
			if (elen > l4max)
				return ETSF_R_BAD_IP;
			nh = eh->nexthdr;
			off += elen;
			l4max -= elen;
		}
		if (nh == NEXTHDR_FRAG_)
			return ETSF_R_FRAGMENT;
		if (nh == NEXTHDR_HOP_ || nh == NEXTHDR_ROUTING_ || nh == NEXTHDR_DEST_ ||
		    nh == 51 /* AH */)
			return ETSF_R_IPV6_EXTHDR;
		p->l4proto = nh;
	} else {
		return ETSF_R_NOT_IP;
	}

	if (p->l4proto != IPPROTO_UDP_ && p->l4proto != IPPROTO_TCP_)
		return ETSF_R_NOT_UDP_TCP;
	p->l4off = off;
	if (off > p->pkt_len)
		return ETSF_R_TRUNC_L4;

	if (p->l4proto == IPPROTO_UDP_) {
		struct udphdr *uh = data + (off & 0x3ff);
		__u32 ulen;

		if ((void *)(uh + 1) > data_end || l4max < sizeof(*uh))
			return ETSF_R_TRUNC_L4;
		p->sport = bpf_ntohs(uh->source);
		p->dport = bpf_ntohs(uh->dest);
		ulen = bpf_ntohs(uh->len);
		if (ulen >= sizeof(*uh) && ulen < l4max)
			l4max = ulen;
		off += sizeof(*uh);
		l4max -= sizeof(*uh);
	} else {
		struct tcphdr *th = data + (off & 0x3ff);
		__u32 doff;

		if ((void *)(th + 1) > data_end || l4max < sizeof(*th))
			return ETSF_R_TRUNC_L4;
		p->sport = bpf_ntohs(th->source);
		p->dport = bpf_ntohs(th->dest);
		doff = th->doff * 4;
		if (doff < sizeof(*th) || doff > l4max)
			return ETSF_R_TRUNC_L4;
		off += doff;
		l4max -= doff;
	}
	p->poff = off;
	/* payload present in the frame, bounded by what IP/UDP declare */
	if (off >= p->pkt_len)
		p->plen = 0;
	else
		p->plen = p->pkt_len - off < l4max ? p->pkt_len - off : l4max;
	return ETSF_R_OK;
}

/* ---- ports ------------------------------------------------------------------ */
#define ETSF_PORT_NONE 0
#define ETSF_PORT_SIP  1
#define ETSF_PORT_TLS  2

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

/* ---- payload -> scratch -> SIP parser ---------------------------------------- */
/*
 * LOAD(ctx, off, buf, n) is bpf_xdp_load_bytes or bpf_skb_load_bytes; n is
 * bounded to [1, ETSF_PARSE_BYTES] so the verifier can prove the copy fits.
 */
#define ETSF_PARSE_PAYLOAD(LOAD, ctx, p, r)                                        \
	do {                                                                       \
		__u32 __z = 0, __n = (p)->plen;                                    \
		struct etsf_scratch *__s;                                          \
		if (__n == 0) {                                                    \
			(r)->reason = ETSF_R_EMPTY;                                \
			break;                                                     \
		}                                                                  \
		__s = bpf_map_lookup_elem(&etsf_scratch, &__z);                    \
		if (!__s) {                                                        \
			(r)->reason = ETSF_R_INTERNAL;                             \
			break;                                                     \
		}                                                                  \
		if (__n > ETSF_PARSE_BYTES)                                        \
			__n = ETSF_PARSE_BYTES;                                    \
		__n -= 1;                                                          \
		asm volatile("" : "+r"(__n));                                      \
		__n &= ETSF_SCRATCH_MASK;                                          \
		__n += 1;                /* verifier: 1 <= __n <= PARSE_BYTES */  \
		if (LOAD(ctx, (p)->poff, __s->buf, __n)) {                         \
			(r)->reason = ETSF_R_INTERNAL;                             \
			break;                                                     \
		}                                                                  \
		etsf_sip_parse(__s, __n, (p)->plen, (r));                     \
	} while (0)

/* ---- policy ------------------------------------------------------------------ */
static __always_inline __u32 etsf_acl(__u32 slot, const struct etsf_pkt *p)
{
	__u32 *act;

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

static __always_inline __u32 etsf_rl_class(__u32 method)
{
	switch (method) {
	case ETSF_M_REGISTER: return ETSF_RL_REGISTER;
	case ETSF_M_OPTIONS:  return ETSF_RL_OPTIONS;
	case ETSF_M_INVITE:   return ETSF_RL_INVITE;
	}
	return ETSF_RL_OTHER;
}

static __always_inline void etsf_rl_key(struct etsf_rl_key *k, const struct etsf_pkt *p,
					const struct etsf_policy *pol, __u32 cls)
{
	__u32 plen, maxp = p->family == 4 ? 32 : 128;
	int i;

	plen = p->family == 4 ? pol->agg_prefix_v4 : pol->agg_prefix_v6;
	if (plen == 0 || plen > maxp)
		plen = maxp;
	k->family = p->family;
	k->rl_class = cls;
	k->prefix = plen;
#pragma unroll
	for (i = 0; i < 16; i++) {
		__u8 b = p->saddr[i];
		int bits = (int)plen - i * 8;

		if (i >= 4 && p->family == 4)
			b = 0;
		else if (bits <= 0)
			b = 0;
		else if (bits < 8)
			b &= (__u8)(0xff << (8 - bits));
		k->addr[i] = b;
	}
}

/*
 * GCRA: emission interval T = 1e9 / rate, tolerance tau = (burst - 1) * T.
 * A request at time t conforms when max(tat, t) - t <= tau; then tat =
 * max(tat, t) + T.  Burst N admits exactly N back-to-back requests.
 * consume = 0 only peeks (protected traffic): returns whether it would conform.
 * Returns 1 = conforming, 0 = over the limit.
 */
static __always_inline int etsf_gcra(const struct etsf_pkt *p, const struct etsf_policy *pol,
				     __u32 cls, const struct etsf_rate *rt, int consume)
{
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
		if (consume)
			__sync_fetch_and_add(&st->dropped, 1);
		return 0;
	}
	if (consume) {
		st->tat_ns = tat + T;
		__sync_fetch_and_add(&st->passed, 1);
	}
	return 1;
}

static __always_inline int etsf_protected(const struct sip_result *r)
{
	return r->method == ETSF_M_RESPONSE || r->method == ETSF_M_ACK ||
	       r->method == ETSF_M_BYE || r->method == ETSF_M_CANCEL || r->has_to_tag;
}

/*
 * Policy for a packet on a SIP/TLS port.  pr = the parse reason (OK when the
 * message was classified).  Returns the verdict, *reason set.
 */
static __always_inline __u32 etsf_policy_verdict(const struct etsf_ctl *ctl,
						 const struct etsf_policy *pol, int valid,
						 const struct etsf_pkt *p,
						 const struct sip_result *r, __u32 pr,
						 __u32 *reason)
{
	__u32 slot = ctl->active_slot & 1;
	__u32 acl = 0, level, prio, shed_below, cls;
	int prot, would;
	const struct etsf_rate *rt;

	if (valid && pol)
		acl = etsf_acl(slot, p);
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
			would = !etsf_gcra(p, pol, cls, rt, 0);
			*reason = would ? ETSF_R_PROTECTED : ETSF_R_OK;
			return ETSF_V_PASS;
		}
		if (!etsf_gcra(p, pol, cls, rt, 1)) {
			*reason = ETSF_R_RATE_LIMIT;
			return ETSF_V_DROP;
		}
	}
	*reason = ETSF_R_OK;
	return ETSF_V_PASS;
}

#endif /* ETSF_COMMON_H */
