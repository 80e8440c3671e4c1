/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_tm_maps.h - the telemetry maps (SIP transaction latency, see
 * etsf_telemetry.h), pinned by name next to the core maps.  Layouts in
 * etsf_structs.h (struct etsf_tm_*).
 */
#ifndef ETSF_TM_MAPS_H
#define ETSF_TM_MAPS_H

#include "etsf.h"
#include "etsf_maps.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ETSF_IF_MAX + 1);
	__type(key, __u32);
	__type(value, struct etsf_tm_ifcfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_tm_ifcfg SEC(".maps");

/*
 * Open transactions, set-associative: a request's insert and a response's
 * lookup touch one 64-byte set (etsf_tm_hash picks it), with no lock and no
 * list to keep.  An LRU hash took a bucket, a free node and the nodes its
 * list rotation scans, every one a cache miss in traffic (~500 ns per new
 * INVITE).  A full set gives its oldest transaction's way to the new one:
 * eviction by age within the set, where the LRU evicted by age in the table.
 * BPF_F_MMAPABLE: the array's data starts on a page, so each set is exactly
 * one cache line.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, ETSF_TM_SETS);
	__type(key, __u32);
	__type(value, struct etsf_tm_set);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_tm_txn SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ETSF_METHODS * ETSF_TM_STAGES);
	__type(key, __u32);
	__type(value, struct etsf_tm_hist);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_tm_hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ETSF_TM_CODE_METHODS * ETSF_TM_CODES);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_tm_codes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ETSF_TM_EVENTS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_tm_events SEC(".maps");

/*
 * Transaction telemetry is on unless the live policy turns it off
 * (ETSF_POL_F_TM_OFF); without a valid policy it stays on, as before the
 * flag existed.
 */
static __always_inline int etsf_tm_enabled(const struct etsf_policy *pol, int valid)
{
	return !(valid && pol && (pol->flags & ETSF_POL_F_TM_OFF));
}

/* the interface's direction (enum etsf_tm_dir): its entry, else key 0, else TOWARD */
static __always_inline __u32 etsf_tm_dir(__u32 ifindex)
{
	struct etsf_tm_ifcfg *cfg;
	__u32 key = ifindex;

	cfg = bpf_map_lookup_elem(&etsf_tm_ifcfg, &key);
	if (!cfg) {
		key = 0;
		cfg = bpf_map_lookup_elem(&etsf_tm_ifcfg, &key);
	}
	return cfg ? cfg->dir : ETSF_TM_TOWARD;
}

/* p->tm's encoding is struct etsf_if_cfg.tm's: TC ingress copies it from there */
#define ETSF_PKT_TM_KNOWN ETSF_IF_TM_KNOWN

/*
 * The interface's direction from the copy the agent keeps in its etsf_if_cfg
 * entry (one lookup that finds the entry of every interface eTSF is attached
 * to), else etsf_tm_dir (an entry of an older agent, or none).
 */
static __always_inline __u32 etsf_if_tm_dir(__u32 ifindex)
{
	struct etsf_if_cfg *cfg = bpf_map_lookup_elem(&etsf_if_cfg, &ifindex);

	if (cfg && (cfg->tm & ETSF_IF_TM_KNOWN))
		return cfg->tm & 3;
	return etsf_tm_dir(ifindex);
}

/*
 * The direction of the interface p entered on, looked up once per packet and
 * kept in p->tm: an interface without an entry of its own costs two hash
 * lookups, and an INVITE asks twice (admission's note, then telemetry).
 */
static __always_inline __u32 etsf_pkt_tm_dir(struct etsf_pkt *p)
{
	__u32 d;

	if (p->tm & ETSF_PKT_TM_KNOWN)
		return p->tm & 3;
	d = etsf_if_tm_dir(p->ifindex);
	if (d > ETSF_TM_OFF)
		d = ETSF_TM_OFF;
	p->tm = ETSF_PKT_TM_KNOWN | d;
	return d;
}

/*
 * Does telemetry insert an entry for a request that passes an ingress hook?
 * (etsf_tm_observe's condition for a request seen entering.)
 */
static __always_inline int etsf_tm_records_request_in(const struct etsf_policy *pol, int valid,
						      struct etsf_pkt *p)
{
	return etsf_tm_enabled(pol, valid) && etsf_pkt_tm_dir(p) == ETSF_TM_TOWARD;
}

/*
 * The etsf_tm_txn key of a transaction: the one place it is built, so what
 * admission looks up (etsf_tm_request_seen) is what telemetry writes.
 */
static __always_inline void etsf_tm_key(struct etsf_tm_txn_key *k, __u64 callid_hash, __u32 cseq,
					__u32 ifindex, __u32 method)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->callid_hash = callid_hash;
	k->cseq = cseq;
	k->ifindex = ifindex;
	k->method = method;
}

/*
 * The last steps of splitmix64's finalizer: every input bit moves the low
 * bits (a set) and the high 32 (a tag).  etsf.layout.mix64 is the same.
 */
static __always_inline __u64 etsf_mix64(__u64 h)
{
	h ^= h >> 31;
	h *= 0xbf58476d1ce4e5b9ULL;
	h ^= h >> 29;
	return h;
}

/*
 * 64-bit mix of a transaction key's four fields, so that every one of them
 * moves the set.  Low bits: the set; high 32 bits: the tag (a different part
 * of the mix, so two keys of one set rarely share it).  The agent computes the
 * same (etsf.layout.tm_hash).
 */
static __always_inline __u64 etsf_tm_hash(const struct etsf_tm_txn_key *k)
{
	__u64 h = k->callid_hash;

	h ^= ((__u64)k->cseq << 32 | k->ifindex) * 0x9e3779b97f4a7c15ULL;
	h ^= (__u64)k->method * 0xc2b2ae3d27d4eb4fULL;
	return etsf_mix64(h);
}

static __always_inline __u32 etsf_tm_tag(__u64 h)
{
	return (__u32)(h >> 32) | 1;    /* 0 marks a free way */
}

static __always_inline struct etsf_tm_set *etsf_tm_set_of(__u64 h)
{
	__u32 i = (__u32)h & (ETSF_TM_SETS - 1);

	return bpf_map_lookup_elem(&etsf_tm_txn, &i);
}

/* 1 when a == b, else 0, by arithmetic: (a ^ b) - 1 borrows out of 64 bits only for 0 */
static __always_inline __u64 etsf_tm_eq(__u32 a, __u32 b)
{
	__u64 x = (__u64)(a ^ b) - 1;

	asm volatile("" : "+r"(x));
	return x >> 63;
}

/* a < b for a, b < 2^63 (clock readings, 0 for a free way), by arithmetic */
static __always_inline __u64 etsf_tm_lt(__u64 a, __u64 b)
{
	__u64 x = a - b;

	asm volatile("" : "+r"(x));
	return x >> 63;
}

/*
 * Which of a set's four tags t0..t3 is tag: its index (0 when none), and
 * *hit 1 or 0.  Without a branch per way: the caller goes on with one
 * pointer (a masked offset into the set), so the verifier walks one path,
 * not one per way.  Telemetry's transactions and admission's decisions are
 * sets of this shape.
 */
static __always_inline __u32 etsf_way_match(__u32 t0, __u32 t1, __u32 t2, __u32 t3, __u32 tag,
					    __u64 *hit)
{
	__u64 h1 = etsf_tm_eq(t1, tag), h2 = etsf_tm_eq(t2, tag), h3 = etsf_tm_eq(t3, tag);

	*hit = etsf_tm_eq(t0, tag) | h1 | h2 | h3;
	return (__u32)(h1 | h2 << 1 | h3 * 3);
}

/*
 * The way a new entry takes among four with times s0..s3: a free one (time
 * 0) or else the oldest.  A tournament without branches (one verifier path,
 * not four).
 */
static __always_inline __u32 etsf_way_oldest(__u64 s0, __u64 s1, __u64 s2, __u64 s3)
{
	__u64 c1 = etsf_tm_lt(s1, s0), c3 = etsf_tm_lt(s3, s2), c;
	__u64 m01 = s0 - c1 * (s0 - s1), m23 = s2 - c3 * (s2 - s3);
	__u32 i01 = (__u32)c1, i23 = 2 + (__u32)c3, i;

	c = etsf_tm_lt(m23, m01);
	i = i01 + (__u32)c * (i23 - i01);
	asm volatile("" : "+r"(i));
	return i & (ETSF_TM_WAYS - 1);
}

/*
 * The way of set s holding tag, or NULL: for any set of ETSF_TM_WAYS ways
 * with a tag each (a macro, so each table keeps its own way type).
 */
#define ETSF_SET_WAY(s, tag) ({								\
	__u64 hit_;									\
	__u32 i_ = etsf_way_match((s)->way[0].tag, (s)->way[1].tag, (s)->way[2].tag,	\
				  (s)->way[3].tag, (tag), &hit_);			\
	asm volatile("" : "+r"(i_));							\
	hit_ ? &(s)->way[i_ & (ETSF_TM_WAYS - 1)] : NULL;				\
})

/* the transaction of s holding tag, or NULL */
static __always_inline struct etsf_tm_txn *etsf_tm_way(struct etsf_tm_set *s, __u32 tag)
{
	return ETSF_SET_WAY(s, tag);
}

/* the request (Call-ID hash, CSeq, method) entered on ifindex less than max_age_ns ago */
static __always_inline int etsf_tm_request_seen(__u64 callid_hash, __u32 cseq, __u32 method,
						__u32 ifindex, __u64 now, __u64 max_age_ns)
{
	struct etsf_tm_txn_key k;
	struct etsf_tm_set *s;
	struct etsf_tm_txn *t;
	__u64 h;

	etsf_tm_key(&k, callid_hash, cseq, ifindex, method);
	h = etsf_tm_hash(&k);
	s = etsf_tm_set_of(h);
	if (!s)
		return 0;
	t = etsf_tm_way(s, etsf_tm_tag(h));
	return t && now - t->start_ns < max_age_ns;
}

#endif /* ETSF_TM_MAPS_H */
