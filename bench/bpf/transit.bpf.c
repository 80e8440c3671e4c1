// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * transit - benchmark-only TC programs: a kernel timestamp of every SIP datagram at the
 * node's two edges, for the node transit time of `make bench-path` (bench/path.py).
 *
 * Attached (clsact, direct action, never changing the packet: always TC_ACT_OK) at the
 * UAC's veth (egress: a request leaves for the node; ingress: a response arrives back) and
 * at the pod's interface (ingress: the request arrives; egress: a response leaves).  The
 * node only rewrites headers (DNAT, SNAT, the eTSF fast path), never the UDP payload, so
 * a hash of the whole payload names the same datagram at both edges; that hash covers the
 * first line (method or status), Via branch, Call-ID and CSeq, so it tells apart every
 * message of a call.  The first sighting per (hash, point) keeps its time; later ones
 * (retransmissions) only count, and user space drops such ambiguous keys.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define SIP_PORT 5060
#define CHUNK 32
#define MAX_CHUNKS 48          /* 1536 bytes: more than any datagram on a 1500-byte veth */
#define TC_ACT_OK 0
#define ETH_P_IP 0x0800

struct tkey {
	__u64 hash;
	__u32 point;
	__u32 pad;
};

struct tval {
	__u64 ts;
	__u32 seen;
	__u32 len;
	char head[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct tkey);
	__type(value, struct tval);
} transit_events SEC(".maps");

/* [0] events recorded, [1] map full, [2] SIP datagrams seen */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} transit_counts SEC(".maps");

static __always_inline void count(__u32 i)
{
	__u64 *v = bpf_map_lookup_elem(&transit_counts, &i);

	if (v)
		*v += 1;
}

static __always_inline __u64 fnv(__u64 h, const unsigned char *b, int n)
{
	for (int i = 0; i < CHUNK; i++) {
		if (i >= n)
			break;
		h ^= b[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static __always_inline int stamp(struct __sk_buff *skb, __u32 point)
{
	__u64 ts = bpf_ktime_get_ns();
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
	unsigned char buf[CHUNK];

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) || eth.h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, sizeof(eth), &ip, sizeof(ip)) || ip.protocol != IPPROTO_UDP)
		return TC_ACT_OK;
	__u32 l4 = sizeof(eth) + ip.ihl * 4;

	if (bpf_skb_load_bytes(skb, l4, &udp, sizeof(udp)))
		return TC_ACT_OK;
	if (udp.source != bpf_htons(SIP_PORT) && udp.dest != bpf_htons(SIP_PORT))
		return TC_ACT_OK;
	count(2);
	__u32 off = l4 + sizeof(udp);
	__u32 len = bpf_ntohs(udp.len);

	if (len <= sizeof(udp) || off + (len - sizeof(udp)) > skb->len)
		return TC_ACT_OK;
	len -= sizeof(udp);
	struct tval v = {.ts = ts, .seen = 1, .len = len};
	__u64 h = 0xcbf29ce484222325ULL;

	for (int c = 0; c < MAX_CHUNKS; c++) {
		__u32 left = len - c * CHUNK;

		if (c * CHUNK >= len)
			break;
		if (left >= CHUNK) {
			if (bpf_skb_load_bytes(skb, off + c * CHUNK, buf, CHUNK))
				return TC_ACT_OK;
			h = fnv(h, buf, CHUNK);
		} else {
			/* 1..31 bytes left: the mask is hidden from the compiler (which knows
			 * left < CHUNK and would drop it) so the verifier sees the bound */
			__u32 n = left - 1;

			asm volatile("%0 &= 31" : "+r"(n));
			n += 1;
			if (bpf_skb_load_bytes(skb, off + c * CHUNK, buf, n))
				return TC_ACT_OK;
			left = n;
			h = fnv(h, buf, left);
		}
		if (c == 0)
			__builtin_memcpy(v.head, buf, sizeof(v.head));
	}
	/* a departure is stamped after the hashing above, an arrival before it, so the
	 * transit between the two excludes this program's own work */
	if (point == 0 || point == 2)
		v.ts = bpf_ktime_get_ns();
	struct tkey k = {.hash = h ^ len, .point = point};
	struct tval *old = bpf_map_lookup_elem(&transit_events, &k);

	if (old) {
		__sync_fetch_and_add(&old->seen, 1);
		return TC_ACT_OK;
	}
	if (bpf_map_update_elem(&transit_events, &k, &v, BPF_NOEXIST))
		count(1);
	else
		count(0);
	return TC_ACT_OK;
}

/* points: 0 UAC egress (request leaves), 1 pod ingress (request arrives),
 *         2 pod egress (response leaves), 3 UAC ingress (response arrives) */
SEC("tc")
int transit_uac_egress(struct __sk_buff *skb) { return stamp(skb, 0); }

SEC("tc")
int transit_pod_ingress(struct __sk_buff *skb) { return stamp(skb, 1); }

SEC("tc")
int transit_pod_egress(struct __sk_buff *skb) { return stamp(skb, 2); }

SEC("tc")
int transit_uac_ingress(struct __sk_buff *skb) { return stamp(skb, 3); }

char LICENSE[] SEC("license") = "Dual BSD/GPL";
