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

#endif /* ETSF_TM_MAPS_H */
