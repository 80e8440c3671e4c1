/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_maps.h - the core maps: control, policy, ACL, rate limit, counters,
 * last parse result and the private per-CPU parse scratch.  Telemetry maps
 * are in etsf_tm_maps.h, fast-path maps in etsf_fp_maps.h; every map is
 * defined in exactly one header.  Shared maps are pinned by name
 * (LIBBPF_PIN_BY_NAME) so every object uses the same maps and an upgraded
 * object re-uses the pinned maps with their state (counters, rate-limit
 * buckets, policy).
 */
#ifndef ETSF_MAPS_H
#define ETSF_MAPS_H

#include "etsf.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct etsf_ctl);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ETSF_POLICY_SLOTS);
	__type(key, __u32);
	__type(value, struct etsf_policy);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, ETSF_ACL_MAX);
	__type(key, struct etsf_acl_v4_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_acl_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, ETSF_ACL_MAX);
	__type(key, struct etsf_acl_v6_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_acl_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ETSF_RL_MAX);
	__type(key, struct etsf_rl_key);
	__type(value, struct etsf_rl_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_rl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ETSF_STATS_SLOTS);
	__type(key, __u32);
	__type(value, struct etsf_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, ETSF_IF_MAX);
	__type(key, __u32);
	__type(value, struct etsf_ifstat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_ifstats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct etsf_sip_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_last SEC(".maps");

/*
 * Per-CPU scratch: the L4 payload (at most ETSF_PARSE_BYTES) is copied here
 * and parsed from here.  ETSF_SCRATCH_SLACK bytes after the copy let the
 * parser read 8-byte words at any masked index without a bounds check: the
 * widest read from one masked base is a line-end scan of ETSF_SKIP_WORDS words.
 * Not pinned: private to each object, holds no state across packets.
 */
#define ETSF_SCRATCH_MASK  (ETSF_PARSE_BYTES - 1)
#define ETSF_SCRATCH_SLACK 128

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ETSF_IF_MAX);
	__type(key, __u32);
	__type(value, struct etsf_if_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_if_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ETSF_HOOKS);
	__type(key, __u32);
	__type(value, struct etsf_parse_stat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_parse_stats SEC(".maps");

struct etsf_scratch {
	struct etsf_parse_state st;
	__u8 buf[ETSF_PARSE_BYTES + ETSF_SCRATCH_SLACK];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct etsf_scratch);
} etsf_scratch SEC(".maps");

#endif /* ETSF_MAPS_H */
