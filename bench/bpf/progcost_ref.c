// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * progcost_ref - benchmark-only TC programs for bench/progcost.py: count every packet into a
 * private per-CPU array and hand it on (TC_ACT_UNSPEC: the next filter, eTSF's, still runs).
 * Their in-traffic ns per run is the floor any program pays on this hook when the packet
 * finds its code and map cold.  Not a *.bpf.c: `etsf.build.build` never compiles or ships it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define TC_ACT_UNSPEC (-1)

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} progcost_ref_count SEC(".maps");

static __always_inline int count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&progcost_ref_count, &idx);

	if (c)
		(*c)++;
	return TC_ACT_UNSPEC;
}

SEC("tc")
int pc_ref_ingress(struct __sk_buff *skb)
{
	return count(0);
}

SEC("tc")
int pc_ref_egress(struct __sk_buff *skb)
{
	return count(1);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
