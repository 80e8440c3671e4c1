/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_keepalive.h - keep-alive OPTIONS answered in the kernel, and NAT
 * keep-alives counted (and dropped when the policy says so).
 *
 * An OPTIONS over UDP that the policy let through (OK or TRUSTED: after the
 * deny list, shedding and the per-source limits) is answered with a 200 built
 * by etsf_respond() and sent back with XDP_TX when all of these hold:
 *   - the live slot has ETSF_POL_F_KA;
 *   - no To-tag (out of dialog);
 *   - bpf_ktime_get_ns() < etsf_ctl.proxy_alive_until_ns (the agent's probe
 *     of the proxy got a 200 recently; else counted passed_proxy_stale);
 *   - the Request-URI is sip:[user@]host with host (and user, when the
 *     identity names one) in etsf_ka_id for the live slot;
 *   - Max-Forwards absent or not 0, no Require / Proxy-Require header
 *     (else passed_not_matching);
 *   - not the 1-in-etsf_ctl.ka_sample_every sample of this CPU's
 *     answerable OPTIONS (passed_sampled).
 * Everything else goes to the proxy untouched.  TCP always goes to the proxy.
 */
#ifndef ETSF_KEEPALIVE_H
#define ETSF_KEEPALIVE_H

#include "etsf.h"
#include "etsf_maps.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ETSF_POLICY_SLOTS);
	__type(key, __u32);
	__type(value, struct etsf_ka_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_ka_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ETSF_KA_ID_MAX);
	__type(key, struct etsf_ka_id_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_ka_id SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct etsf_ka_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_ka_stats SEC(".maps");

static __always_inline struct etsf_ka_stats *etsf_ka_stats_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&etsf_ka_stats, &zero);
}

#endif /* ETSF_KEEPALIVE_H */
