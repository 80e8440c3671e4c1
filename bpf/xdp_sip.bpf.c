// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * xdp_sip - eTSF XDP ingress SIP classifier.
 *
 * Order of checks (fail-open everywhere):
 *   1. etsf_ctl: bypass -> PASS/BYPASS; stale heartbeat -> PASS/DEADMAN
 *   2. Ethernet (+ one VLAN tag), IPv4/IPv6, UDP/TCP; fragments pass
 *   3. SIP port set of the active policy (5060/5061 without a valid policy);
 *      TLS ports are counted, never parsed
 *   4. payload copied to the per-CPU scratch buffer, SIP parsed (sip_parse.h)
 *   5. policy: deny (DROP) > not understood (PASS + reason) > no policy >
 *      trust > overload shedding > per-source GCRA rate limit > OK
 * Every packet is counted exactly once in etsf_stats at
 * ETSF_STATS_IDX(ETSF_HOOK_XDP, method, verdict, reason).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "etsf.h"
#include "etsf_maps.h"
#include "sip_parse.h"
#include "etsf_common.h"
#include "telemetry.h"

SEC("xdp")
int xdp_sip(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct etsf_pkt p = {};
	struct sip_result r = {};
	struct etsf_ifstat *ifs;
	const struct etsf_policy *pol = NULL;
	struct etsf_ctl *ctl = NULL;
	__u32 reason, verdict = ETSF_V_PASS, pc;
	int valid = 0;

	p.pkt_len = bpf_xdp_get_buff_len(ctx);
	ifs = etsf_ifstat_get(ctx->ingress_ifindex);
	if (ifs) {
		ifs->rx_packets++;
		ifs->rx_bytes += p.pkt_len;
	}

	reason = etsf_prologue(&ctl, &pol, &valid);
	if (reason != ETSF_R_OK)
		goto out;

	reason = etsf_parse_hdrs(data, data_end, &p);
	if (reason != ETSF_R_OK)
		goto out;

	pc = etsf_port_class(pol, valid, p.sport, p.dport);
	if (pc == ETSF_PORT_NONE) {
		reason = ETSF_R_NOT_SIP_PORT;
		goto out;
	}
	if (pc == ETSF_PORT_TLS) {
		r.reason = ETSF_R_TLS;
	} else {
		ETSF_PARSE_PAYLOAD(bpf_xdp_load_bytes, ctx, &p, &r);
		etsf_tcp_continuation(&p, &r);
	}
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
