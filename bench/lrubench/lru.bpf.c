// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * lru - benchmark-only XDP programs for BPF_PROG_TEST_RUN (bench/lrubench.py): what an LRU
 * insert + lookup costs with one common LRU list and with one list per CPU
 * (BPF_F_NO_COMMON_LRU), both at the size of the datapath's LRUs.  Every run inserts a key
 * never seen before ({CPU, per-CPU sequence number}), so once a map is full every insert
 * evicts, as the transaction LRUs do in steady traffic, then looks the key up again.
 * Never attached to an interface; always XDP_PASS.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define LRU_ENTRIES 65536

struct lkey {
	__u32 cpu;
	__u32 pad;
	__u64 seq;
};

struct lval {
	__u64 ts;
	__u64 seen;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LRU_ENTRIES);
	__type(key, struct lkey);
	__type(value, struct lval);
} lru_common SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, LRU_ENTRIES);
	__type(key, struct lkey);
	__type(value, struct lval);
} lru_percpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lru_seq SEC(".maps");

/* counts of failed inserts and missed lookups: the benchmark checks both stay 0 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} lru_errs SEC(".maps");

static __always_inline void err(__u32 i)
{
	__u64 *e = bpf_map_lookup_elem(&lru_errs, &i);

	if (e)
		*e += 1;
}

static __always_inline int insert_lookup(void *map)
{
	__u32 zero = 0;
	__u64 *seq = bpf_map_lookup_elem(&lru_seq, &zero);
	struct lkey k = {};
	struct lval v = {};
	struct lval *got;

	if (!seq)
		return XDP_PASS;
	k.cpu = bpf_get_smp_processor_id();
	k.seq = ++*seq;
	v.ts = k.seq;
	if (bpf_map_update_elem(map, &k, &v, BPF_NOEXIST))
		err(0);
	got = bpf_map_lookup_elem(map, &k);
	if (!got)
		err(1);
	else
		got->seen++;
	return XDP_PASS;
}

SEC("xdp")
int lru_common_op(struct xdp_md *ctx)
{
	return insert_lookup(&lru_common);
}

SEC("xdp")
int lru_percpu_op(struct xdp_md *ctx)
{
	return insert_lookup(&lru_percpu);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
