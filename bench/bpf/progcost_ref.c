// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * progcost_ref - benchmark-only TC programs for bench/progcost.py.  Not a *.bpf.c:
 * `etsf.build.build` never compiles or ships it.
 *
 * pc_ref_*: count every packet into a private per-CPU array and hand it on (TC_ACT_UNSPEC: the
 * next filter, eTSF's, still runs).  Their in-traffic ns per run is the floor any program pays on
 * this hook when the packet finds its code and map cold.
 *
 * pc_floor_*: the least a Call-ID-aware classifier has to do with a message, written as tight as
 * we can, so that eTSF's cost can be read against what the job itself costs on this machine:
 * count the packet, check Ethernet/IPv4 (no options)/UDP and the SIP port, read the start line,
 * find the Call-ID header (a SWAR search for line ends over 8-byte words read in place), hash
 * its value a word at a time, and touch one 64-byte line of a 512 KiB table at the hash (a
 * request at ingress writes it, anything else reads it: where a transaction is noted and found).  Everything
 * a real classifier also needs is left out on purpose (CSeq, To, compact and case-folded header
 * names, folding, IP options, IPv6, VLANs, policy, fail-safe, per-reason counters), so what it
 * costs is a lower bound: a program doing the whole job cannot cost less on the same packets.
 * pc_parse_* do the same without the table.  The result (found or not, the hash, the table word)
 * goes to pc_floor_last, which the tests read.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TC_ACT_UNSPEC (-1)
#define ETH_P_IPV4    0x0800

#define FLOOR_PORT     5060
#define FLOOR_PAYLOAD  42          /* Ethernet 14 + IPv4 without options 20 + UDP 8 */
#define FLOOR_WORDS    128         /* 1 KB of the message searched for Call-ID */
#define FLOOR_VALUE_W  16          /* up to 128 bytes of Call-ID value hashed */
#define FLOOR_SETS     8192        /* 8,192 lines of 64 bytes: eTSF's transaction table size */
#define FNV_OFFSET     0xcbf29ce484222325ULL
#define FNV_PRIME      0x100000001b3ULL
#define ONES           0x0101010101010101ULL
#define HIGHS          0x8080808080808080ULL
/* "Call-ID:" as a little-endian word */
#define CALLID_WORD    0x3a44492d6c6c6143ULL
#define SIP20_WORD     0x20302e322f504953ULL   /* "SIP/2.0 " */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} pc_ref_count SEC(".maps");

struct floor_line {
	__u64 w[8];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FLOOR_SETS);
	__type(key, __u32);
	__type(value, struct floor_line);
} pc_floor_txn SEC(".maps");

struct floor_last {
	__u64 hash;
	__u64 table;        /* the line's first word after the write / at the read */
	__u32 found;        /* 1: the Call-ID was found and hashed */
	__u32 response;     /* 1: the start line is "SIP/2.0 " */
	__u32 value_off;    /* payload offset of the Call-ID value */
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct floor_last);
} pc_floor_last SEC(".maps");

static __always_inline int count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&pc_ref_count, &idx);

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

/* bytes of w equal to c flagged in their top bit (the lowest flag is exact) */
static __always_inline __u64 has_byte(__u64 w, __u64 c)
{
	__u64 x = w ^ (ONES * c);

	return (x - ONES) & ~x & HIGHS;
}

/* index of the lowest flagged byte, without a branch */
static __always_inline __u32 low_byte_index(__u64 m)
{
	/* m has only top bits of bytes set; (m & -m) is 0x80 << 8k; the bits below it are 8k + 7
	 * ones, and their count / 8 is k */
	__u64 below = (m & (~m + 1)) - 1;

	below = below - ((below >> 1) & 0x5555555555555555ULL);
	below = (below & 0x3333333333333333ULL) + ((below >> 2) & 0x3333333333333333ULL);
	below = (below + (below >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (__u32)((below * ONES) >> 56) >> 3;
}

static __always_inline int floor_run(struct __sk_buff *skb, __u32 idx, int table, int write)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct floor_last *last;
	struct floor_line *line;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + 14;
	struct udphdr *udp = data + 34;
	__u64 h = FNV_OFFSET, w;
	__u32 off = FLOOR_PAYLOAD, v = 0, vstart = FLOOR_PAYLOAD, zero = 0, set;
	int i, found = 0, response;

	count(idx);
	if (data + FLOOR_PAYLOAD + 8 > end)
		return TC_ACT_UNSPEC;
	if (eth->h_proto != bpf_htons(ETH_P_IPV4) || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return TC_ACT_UNSPEC;
	if (udp->dest != bpf_htons(FLOOR_PORT) && udp->source != bpf_htons(FLOOR_PORT))
		return TC_ACT_UNSPEC;
	response = *(__u64 *)(data + FLOOR_PAYLOAD) == SIP20_WORD;

	/* a stride of 8 and the first line end in each word: header lines are longer than 8 bytes,
	 * so no line start is missed before the end of the header block */
#pragma clang loop unroll(disable)
	for (i = 0; i < FLOOR_WORDS; i++) {
		__u64 m;
		__u32 k;

		if (data + off + 8 > end)
			break;
		w = *(__u64 *)(data + off);
		m = has_byte(w, '\n');
		if (m) {
			k = low_byte_index(m);
			if (data + off + k + 1 + 8 > end)
				break;
			if (*(__u64 *)(data + off + k + 1) == CALLID_WORD) {
				v = off + k + 1 + 8;
				found = 1;
				break;
			}
		}
		off += 8;
	}
	if (found) {
		/* skip the one SP of "Call-ID: value" */
		if (data + v + 1 > end)
			return TC_ACT_UNSPEC;
		if (*(__u8 *)(data + v) == ' ')
			v++;
		vstart = v;
#pragma clang loop unroll(disable)
		for (i = 0; i < FLOOR_VALUE_W; i++) {
			__u64 m;

			if (data + v + 8 > end)
				break;
			w = *(__u64 *)(data + v);
			m = has_byte(w, ' ') | has_byte(w, '\r') | has_byte(w, '\n');
			if (m) {
				__u32 k = low_byte_index(m);

				w &= k ? (~0ULL >> (64 - 8 * k)) : 0;
				h = (h ^ w) * FNV_PRIME;
				break;
			}
			h = (h ^ w) * FNV_PRIME;
			v += 8;
		}
	}
	last = bpf_map_lookup_elem(&pc_floor_last, &zero);
	if (!last)
		return TC_ACT_UNSPEC;
	last->table = 0;
	if (table) {
		set = (__u32)(h ^ (h >> 32)) & (FLOOR_SETS - 1);
		line = bpf_map_lookup_elem(&pc_floor_txn, &set);
		if (!line)
			return TC_ACT_UNSPEC;
		if (found && write && !response) {
			line->w[0] = h;
			line->w[1] = skb->len;
		}
		last->table = line->w[0];
	}
	last->hash = h;
	last->found = found;
	last->response = response;
	last->value_off = vstart - FLOOR_PAYLOAD;
	return TC_ACT_UNSPEC;
}

SEC("tc")
int pc_floor_ingress(struct __sk_buff *skb)
{
	return floor_run(skb, 2, 1, 1);
}

SEC("tc")
int pc_floor_egress(struct __sk_buff *skb)
{
	return floor_run(skb, 3, 1, 0);
}

/* the same without the table: what the line of the table costs is floor - parse */
SEC("tc")
int pc_parse_ingress(struct __sk_buff *skb)
{
	return floor_run(skb, 2, 0, 0);
}

SEC("tc")
int pc_parse_egress(struct __sk_buff *skb)
{
	return floor_run(skb, 3, 0, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
