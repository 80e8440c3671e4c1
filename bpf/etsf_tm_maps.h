/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_tm_maps.h - the telemetry maps (SIP transaction latency, see
 * etsf_telemetry.h), pinned by name next to the core maps.  Layouts in
 * etsf_structs.h (struct etsf_tm_*).
 */
#ifndef ETSF_TM_MAPS_H
#define ETSF_TM_MAPS_H

#include "etsf.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ETSF_IF_MAX + 1);
	__type(key, __u32);
	__type(value, struct etsf_tm_ifcfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_tm_ifcfg SEC(".maps");

/*
 * One LRU list per CPU (BPF_F_NO_COMMON_LRU): every INVITE and BYE inserts, so
 * a shared list lock would be taken on every CPU for every transaction.  The
 * table stays shared (a response on another CPU finds its request); a CPU
 * evicts from its own list only, which at worst loses a latency sample.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, ETSF_TM_TXN_MAX);
	__type(key, struct etsf_tm_txn_key);
	__type(value, struct etsf_tm_txn);
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

/*
 * Does telemetry insert an entry for a request that passes an ingress hook
 * on ifindex?  (etsf_tm_observe's condition for a request seen entering.)
 */
static __always_inline int etsf_tm_records_request_in(const struct etsf_policy *pol, int valid,
						      __u32 ifindex)
{
	return etsf_tm_enabled(pol, valid) && etsf_tm_dir(ifindex) == ETSF_TM_TOWARD;
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

/* the request (Call-ID hash, CSeq, method) entered on ifindex less than max_age_ns ago */
static __always_inline int etsf_tm_request_seen(__u64 callid_hash, __u32 cseq, __u32 method,
						__u32 ifindex, __u64 now, __u64 max_age_ns)
{
	struct etsf_tm_txn_key k;
	struct etsf_tm_txn *t;

	etsf_tm_key(&k, callid_hash, cseq, ifindex, method);
	t = bpf_map_lookup_elem(&etsf_tm_txn, &k);
	return t && now - t->start_ns < max_age_ns;
}

#endif /* ETSF_TM_MAPS_H */
