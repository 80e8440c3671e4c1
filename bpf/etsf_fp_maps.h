/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_fp_maps.h - the fast-path maps (see etsf_fastpath.h), pinned by name
 * next to the core maps, plus the fast path's private per-CPU scratch.
 * Layouts in etsf_structs.h (struct etsf_fp_*).
 */
#ifndef ETSF_FP_MAPS_H
#define ETSF_FP_MAPS_H

#include "etsf.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ETSF_POLICY_SLOTS * ETSF_FP_SVC_MAX);
	__type(key, struct etsf_fp_svc_key);
	__type(value, struct etsf_fp_svc);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_fp_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ETSF_POLICY_SLOTS * ETSF_FP_SVC_MAX);
	__type(key, __u32);
	__type(value, struct etsf_fp_ring);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_fp_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ETSF_FP_BACKENDS_MAX);
	__type(key, __u32);
	__type(value, struct etsf_fp_backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_fp_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ETSF_FP_BACKENDS_MAX);
	__type(key, __u32);
	__type(value, struct etsf_fp_bstat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_fp_bstats SEC(".maps");

/*
 * The affinity and flow LRUs keep one LRU list per CPU (BPF_F_NO_COMMON_LRU):
 * the table is shared (an entry added on one CPU is found from every other),
 * only the eviction bookkeeping is per CPU, so inserts on different CPUs do
 * not contend on one list lock.  Each CPU's free list holds max_entries / CPUs
 * and a CPU evicts from its own list only, so the sizes are twice the entries
 * a 2-CPU host must hold when one CPU does every insert.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, ETSF_FP_AFF_MAX);
	__type(key, struct etsf_fp_aff_key);
	__type(value, struct etsf_fp_aff);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_fp_aff SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, ETSF_FP_FLOW_MAX);
	__type(key, struct etsf_fp_flow_key);
	__type(value, struct etsf_fp_flow);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_fp_flow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ETSF_FP_STATS_SLOTS);
	__type(key, __u32);
	__type(value, struct etsf_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_fp_stats SEC(".maps");

/* per-CPU scratch for the bigger temporaries (keeps the stack < 512 bytes) */
struct etsf_fp_scratch {
	struct bpf_fib_lookup fib;
	struct etsf_fp_flow fv;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct etsf_fp_scratch);
} etsf_fp_scratch SEC(".maps");

#endif /* ETSF_FP_MAPS_H */
