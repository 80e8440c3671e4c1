// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * xdp_sip - eTSF XDP ingress SIP classifier.
 *
 * Order of checks (fail-open everywhere):
 *   1. etsf_ctl: bypass -> PASS/BYPASS; stale heartbeat -> PASS/DEADMAN
 *   2. Ethernet (+ one VLAN tag), IPv4/IPv6, UDP/TCP; fragments pass
 *   3. SIP port set of the active policy (5060/5061 without a valid policy);
 *      TLS ports are counted, never parsed
 *   4. payload copied to the per-CPU scratch buffer, SIP parsed (etsf_sip_parse.h)
 *   5. policy: deny (DROP) > not understood (PASS + reason) > no policy >
 *      trust > overload shedding > per-source GCRA rate limit > OK
 * Every packet is counted exactly once in etsf_stats at
 * ETSF_STATS_IDX(ETSF_HOOK_XDP, method, verdict, reason).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "etsf_ctx_xdp.h"
#include "etsf.h"
#include "etsf_classify.h"
#include "etsf_policy.h"
#include "etsf_stats.h"
#include "etsf_telemetry.h"

SEC("xdp")
int xdp_sip(struct xdp_md *ctx)
{
	struct etsf_pkt p = {};
	struct etsf_sip_result r = {};
	struct etsf_ifstat *ifs;
	const struct etsf_policy *pol = NULL;
	struct etsf_ctl *ctl = NULL;
	__u32 reason, verdict = ETSF_V_PASS;
	int valid = 0;

	p.pkt_len = etsf_ctx_len(ctx);
	ifs = etsf_ifstat_get(ctx->ingress_ifindex);
	if (ifs) {
		ifs->rx_packets++;
		ifs->rx_bytes += p.pkt_len;
	}

	reason = etsf_classify(ctx, &p, &r, &ctl, &pol, &valid);
	if (reason != ETSF_R_OK)
		goto out;
	if (r.reason == ETSF_R_OK && ifs)
		ifs->sip_packets++;
	verdict = etsf_policy_verdict(ctl, pol, valid, &p, &r, r.reason, &reason);
	if (r.reason == ETSF_R_OK && verdict != ETSF_V_DROP)
		etsf_tm_observe(ETSF_HOOK_XDP, ctx->ingress_ifindex, &r);

out:
	if (verdict == ETSF_V_DROP && ifs)
		ifs->dropped++;
	etsf_count(ETSF_HOOK_XDP, r.method, verdict, reason, p.pkt_len);
	etsf_record(ctl, &r, &p, verdict, reason);
	return verdict == ETSF_V_DROP ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
