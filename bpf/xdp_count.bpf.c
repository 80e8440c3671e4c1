// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * xdp_count - baseline for the datapath microbenchmark: count every packet
 * into a private per-CPU array, then XDP_PASS.  Not used in production.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64[2]);
} etsf_count_only SEC(".maps");

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *c = bpf_map_lookup_elem(&etsf_count_only, &zero);

	if (c) {
		c[0]++;
		c[1] += ctx->data_end - ctx->data;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
