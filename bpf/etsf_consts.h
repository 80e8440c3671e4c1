/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_consts.h - sizes, enums and flag bits shared by the kernel programs and
 * the host agent (mirrored by src/etsf/layout/, checked against BTF by
 * tests/bpf/test_layout*.py through the test-only object etsf_alignchecker.c).
 * No structs here (etsf_structs.h), no maps (etsf_*maps.h).
 */
#ifndef ETSF_CONSTS_H
#define ETSF_CONSTS_H

#define ETSF_ABI_VERSION 1

/* ---- sizes -------------------------------------------------------------- */
#define ETSF_MAX_SIP_PORTS   8     /* UDP/TCP ports carrying cleartext SIP   */
#define ETSF_MAX_TLS_PORTS   4     /* SIP over TLS: counted, never parsed     */
#define ETSF_PARSE_BYTES     2048  /* SIP payload bytes examined at most      */
#define ETSF_POLICY_SLOTS    2     /* double-buffered policy (atomic swap)    */
#define ETSF_RL_CLASSES      4     /* rate-limit method classes               */
#define ETSF_OVERLOAD_LEVELS 4     /* overload level 0..3                     */
#define ETSF_PRIO_CLASSES    4     /* priority classes 0..3                   */
#define ETSF_HOOKS           3     /* XDP ingress, TC egress, TC ingress      */
#define ETSF_VERDICTS        4
#define ETSF_REASONS         32
#define ETSF_ACL_MAX         16384 /* entries per LPM trie (both slots)       */
#define ETSF_RL_MAX          65536 /* rate-limit LRU entries                  */
#define ETSF_IF_MAX          64    /* interfaces counted                      */
#define ETSF_ADMIT_TXN_MAX   65536 /* admission decisions remembered (1 MiB)  */
#define ETSF_ADMIT_SETS      (ETSF_ADMIT_TXN_MAX / ETSF_TM_WAYS) /* of ways, as telemetry's */
#define ETSF_ADMIT_TXN_NS    32000000000ULL /* decision lifetime: 64*T1      */
#define ETSF_RESP_MAX        1400  /* in-kernel response payload at most      */
#define ETSF_KA_ID_MAX       512   /* keep-alive identity keys (both slots)   */
#define ETSF_KA_HOST_LEN     64    /* Request-URI host bytes matched at most  */
#define ETSF_KA_USER_LEN     32    /* Request-URI user bytes matched at most  */
#define ETSF_KA_HDR_MAX      512   /* Allow/Accept/Supported/Server lines, bytes */

/* ---- SIP methods (index of every per-method array) ----------------------- */
enum etsf_method {
	ETSF_M_UNKNOWN   = 0,  /* not (yet) classified as SIP                  */
	ETSF_M_INVITE    = 1,
	ETSF_M_ACK       = 2,
	ETSF_M_BYE       = 3,
	ETSF_M_CANCEL    = 4,
	ETSF_M_REGISTER  = 5,
	ETSF_M_OPTIONS   = 6,
	ETSF_M_PRACK     = 7,
	ETSF_M_SUBSCRIBE = 8,
	ETSF_M_NOTIFY    = 9,
	ETSF_M_PUBLISH   = 10,
	ETSF_M_INFO      = 11,
	ETSF_M_REFER     = 12,
	ETSF_M_MESSAGE   = 13,
	ETSF_M_UPDATE    = 14,
	ETSF_M_OTHER     = 15, /* syntactically a request, unknown method     */
	ETSF_M_RESPONSE  = 16, /* "SIP/2.0 NNN ..." status line                */
	ETSF_METHODS     = 17,
};

/* ---- verdicts ------------------------------------------------------------ */
enum etsf_verdict {
	ETSF_V_PASS     = 0,  /* to the normal stack                           */
	ETSF_V_DROP     = 1,  /* dropped by policy (always with a reason)       */
	ETSF_V_REDIRECT = 2,  /* fast path (steered in kernel)                  */
	ETSF_V_MARK     = 3,  /* TC egress: passed and marked (prio/DSCP)       */
};

/* ---- reasons: every verdict is counted with exactly one ------------------ */
enum etsf_reason {
	ETSF_R_OK            = 0,  /* classified SIP, policy allowed          */
	ETSF_R_BYPASS        = 1,  /* global bypass flag set                  */
	ETSF_R_DEADMAN       = 2,  /* agent heartbeat older than timeout      */
	ETSF_R_NOT_IP        = 3,  /* ethertype not IPv4/IPv6                 */
	ETSF_R_VLAN_NESTED   = 4,  /* more than one VLAN tag                  */
	ETSF_R_TRUNC_L2L3    = 5,  /* frame too short for eth/vlan/ip header  */
	ETSF_R_BAD_IP        = 6,  /* IPv4 ihl < 5, bad version, ...          */
	ETSF_R_IPV6_EXTHDR   = 7,  /* IPv6 extension header chain not parsed  */
	ETSF_R_NOT_UDP_TCP   = 8,  /* other L4 protocol                       */
	ETSF_R_NOT_SIP_PORT  = 9,  /* UDP/TCP but not a SIP/TLS port          */
	ETSF_R_FRAGMENT      = 10, /* IP fragment (first or later)            */
	ETSF_R_TRUNC_L4      = 11, /* too short for the UDP/TCP header        */
	ETSF_R_TLS           = 12, /* SIP-over-TLS port: counted, not parsed  */
	ETSF_R_TCP_CONT      = 13, /* TCP segment not starting a SIP message  */
	ETSF_R_NOT_SIP       = 14, /* payload on a SIP port is not SIP        */
	ETSF_R_SIP_TRUNC     = 15, /* start line / headers cut short          */
	ETSF_R_NO_CALLID     = 16, /* SIP message without a Call-ID           */
	ETSF_R_NO_CSEQ       = 17, /* SIP message without a valid CSeq        */
	ETSF_R_PARSE_LIMIT   = 18, /* header block longer than ETSF_PARSE_BYTES */
	ETSF_R_TRUSTED       = 19, /* source in the trust list: no limits     */
	ETSF_R_DENY          = 20, /* DROP: source in the deny list           */
	ETSF_R_RATE_LIMIT    = 21, /* DROP: per-source token bucket empty     */
	ETSF_R_OVERLOAD      = 22, /* DROP: shed by overload level            */
	ETSF_R_PROTECTED     = 23, /* would be shed/limited but is a response,
	                            * ACK/BYE/CANCEL or in-dialog: passed     */
	ETSF_R_NO_POLICY     = 24, /* no policy applied yet: pass everything  */
	ETSF_R_INTERNAL      = 25, /* helper/map failure: fail open           */
	ETSF_R_EMPTY         = 26, /* zero-length L4 payload (keepalive)      */
	ETSF_R_ADMISSION     = 27, /* DROP: new INVITE refused by admission   */
	ETSF_R_ADMIT_503     = 28, /* DROP: refused by admission and answered
	                            * with an in-kernel 503 (XDP_TX)          */
	ETSF_R_KA_ANSWERED   = 29, /* REDIRECT: OPTIONS keep-alive answered in
	                            * the kernel with a 200 (XDP_TX)        */
	ETSF_R_NAT_KEEPALIVE = 30, /* DROP: NAT keep-alive (CRLF / zeros) on a
	                            * SIP port, dropped by policy            */
	ETSF_R_ADMIT_ACK     = 31, /* DROP: the ACK of an in-kernel 503: its
	                            * INVITE was refused, the proxy never saw
	                            * that transaction                       */
	ETSF_REASONS_USED    = 32,
};

/* ---- RFC 7339 rewrite at TC egress (index of etsf_oc_stats) ------------- */
enum etsf_oc_result {
	ETSF_OC_REWRITTEN   = 0, /* top Via oc parameters written            */
	ETSF_OC_TOO_LONG    = 1, /* payload over ETSF_PARSE_BYTES, or the result
	                          * over it or over the device MTU: untouched */
	ETSF_OC_UNSUPPORTED = 2, /* folded or unterminated top Via, bytes after
	                          * the UDP payload: untouched                */
	ETSF_OC_ERROR       = 3, /* helper or map failure: untouched          */
};
#define ETSF_OC_RESULTS 4

/* ---- hooks ---------------------------------------------------------------- */
enum etsf_hook {
	ETSF_HOOK_XDP       = 0,
	ETSF_HOOK_TC_EGRESS = 1,
	ETSF_HOOK_TC_INGRESS = 2, /* appended: counter indices of the first two stay */
};

/*
 * ---- per-interface hook choice (etsf_if_cfg, keyed by ifindex) ---------------
 * No entry: steering only, what the TC ingress program did before it could
 * classify.
 */
#define ETSF_IF_F_CLASSIFY 0x1u /* TC ingress classifies here (datapath hook tc) */
#define ETSF_IF_F_STEER    0x2u /* fast-path steering interface                  */
#define ETSF_IF_F_XDP      0x4u /* xdp_sip classifies here and hands its result
                                 * to TC ingress in XDP metadata               */
/*
 * struct etsf_if_cfg.tm: the interface's telemetry direction (enum
 * etsf_tm_dir) with ETSF_IF_TM_KNOWN, kept there by the agent from
 * etsf_tm_ifcfg, so TC ingress takes it from the lookup it does anyway instead
 * of up to two hash lookups of etsf_tm_ifcfg per request.  0 (an entry written
 * by an older agent): not known, etsf_tm_ifcfg is looked up as before.
 */
#define ETSF_IF_TM_KNOWN   0x80u

/* struct etsf_meta.magic: XDP metadata written by xdp_sip ('ETSF') */
#define ETSF_META_MAGIC    0x46535445u
/*
 * skb->cb[0] of an answer (503 / keep-alive 200) TC ingress sends out of the
 * interface, cb[1] = its length: TC egress lets it go uncounted and
 * unparsed, as it never sees an XDP_TX answer (its own 503s in the response
 * code counters would feed the overload controller's 5xx signal).
 */
#define ETSF_CB_OWN_ANSWER 0x41535445u

/* struct etsf_meta.flags */
#define ETSF_META_F_CALLID 0x1u /* callid_hash is valid                        */

/* ---- rate-limit classes ----------------------------------------------------- */
enum etsf_rl_class {
	ETSF_RL_REGISTER = 0,
	ETSF_RL_OPTIONS  = 1,
	ETSF_RL_INVITE   = 2,
	ETSF_RL_OTHER    = 3,
};

/* ---- priority classes (higher = more important) --------------------------- */
enum etsf_prio {
	ETSF_PRIO_LOW      = 0, /* default: REGISTER, OPTIONS, SUBSCRIBE, ...   */
	ETSF_PRIO_NORMAL   = 1,
	ETSF_PRIO_HIGH     = 2, /* default: INVITE                              */
	ETSF_PRIO_CRITICAL = 3, /* never shed by level <= 3                     */
};

/* ---- ACL actions (LPM value) ----------------------------------------------- */
enum etsf_acl_action {
	ETSF_ACL_DENY  = 1,
	ETSF_ACL_TRUST = 2,
};

/* ---- control flags (struct etsf_ctl.flags) ---------------------------------- */
#define ETSF_CTL_F_RECORD  0x1u /* write every parse result to etsf_last   */
#define ETSF_CTL_F_ADMIT_SILENT 0x2u /* admission drops refused INVITEs, no 503 */
#define ETSF_CTL_F_OC      0x4u /* RFC 7339 oc parameters in responses to oc peers */

/* ---- policy flags (struct etsf_policy.flags) -------------------------------- */
#define ETSF_POL_F_VALID   0x1u /* slot holds a complete policy             */
#define ETSF_POL_F_MARK    0x2u /* TC egress marks SIP with prio/DSCP       */
#define ETSF_POL_F_KA      0x4u /* answer keep-alive OPTIONS in the kernel   */
#define ETSF_POL_F_NAT_DROP 0x8u /* drop NAT keep-alives at XDP              */
#define ETSF_POL_F_TM_OFF  0x10u /* no transaction-latency telemetry inserts  */
/*
 * The slot has no ACL entry for IPv4 / IPv6 sources: no trie lookup (an empty
 * LPM trie still costs a helper call per packet).  Set only by an agent that
 * wrote the slot's ACL; a policy without them is looked up as always.
 */
#define ETSF_POL_F_NO_ACL4 0x20u
#define ETSF_POL_F_NO_ACL6 0x40u

/* value of an etsf_ka_id entry */
#define ETSF_KA_ID_PRIMARY 0x1u /* the identity as written in the policy     */
#define ETSF_KA_ID_ALIAS   0x2u /* another text form of it (IPv6 expanded)   */

#define ETSF_STATS_SLOTS (ETSF_HOOKS * ETSF_METHODS * ETSF_VERDICTS * ETSF_REASONS)
#define ETSF_STATS_IDX(hook, method, verdict, reason) \
	((((hook) * ETSF_METHODS + (method)) * ETSF_VERDICTS + (verdict)) * ETSF_REASONS + (reason))

/* ---- telemetry: SIP transaction latency (etsf_telemetry.h) ---------------- */
#define ETSF_TM_TXN_MAX     32768 /* transactions tracked (512 KiB of sets)       */
#define ETSF_TM_WAYS        4     /* entries per set: one 64-byte cache line     */
#define ETSF_TM_SETS        (ETSF_TM_TXN_MAX / ETSF_TM_WAYS) /* a power of two   */
#define ETSF_TM_TXN_LIFE_NS (32ULL * 1000000000ULL) /* 64 x T1: a transaction's life */
#define ETSF_TM_BUCKETS     32    /* log2 buckets: b counts latency < 2^b us     */
#define ETSF_TM_CODE_MIN    100   /* response codes counted: 100..699           */
#define ETSF_TM_CODES       600
#define ETSF_TM_CODE_METHODS 2    /* per-code counters: 0 = INVITE, 1 = REGISTER */

/* stage of a response relative to its request (histogram index) */
enum etsf_tm_stage {
	ETSF_TM_TRYING   = 0,  /* first 100 Trying                              */
	ETSF_TM_RINGING  = 1,  /* first 180 / 183 (RFC 6076 SRD, post-dial delay) */
	ETSF_TM_FINAL_2XX = 2, /* first final response, by class                */
	ETSF_TM_FINAL_3XX = 3,
	ETSF_TM_FINAL_4XX = 4,
	ETSF_TM_FINAL_5XX = 5,
	ETSF_TM_FINAL_6XX = 6,
};
#define ETSF_TM_STAGES 7

/* where an interface sees requests (map etsf_tm_ifcfg; key 0 = default) */
enum etsf_tm_dir {
	ETSF_TM_TOWARD = 0,    /* requests at XDP ingress, responses at TC egress (default) */
	ETSF_TM_FROM   = 1,    /* requests at TC egress, responses at XDP ingress */
	ETSF_TM_OFF    = 2,    /* no latency tracking on this interface         */
};

/* Map etsf_tm_events: PERCPU_ARRAY, ETSF_TM_EVENTS entries of __u64 */
enum etsf_tm_event {
	ETSF_TM_EV_TXN_START    = 0, /* request began a tracked transaction    */
	ETSF_TM_EV_REQ_RETRANS  = 1, /* request for a transaction already seen */
	ETSF_TM_EV_RESP_MATCHED = 2, /* response recorded in a histogram       */
	ETSF_TM_EV_RESP_RETRANS = 3, /* response for a stage already recorded  */
	ETSF_TM_EV_RESP_NOMATCH = 4, /* response without a tracked request     */
	ETSF_TM_EV_TXN_FULL     = 5, /* a full set gave up an open transaction (no final, < 32 s) */
	ETSF_TM_EVENTS          = 6,
};

/* FNV-1a 64-bit parameters for the Call-ID hash (host side uses the same) */
#define ETSF_FNV64_OFFSET 0xcbf29ce484222325ULL
#define ETSF_FNV64_PRIME  0x100000001b3ULL

/* ---- fast path: in-kernel steering to local proxy backends (etsf_fastpath.h) */
#define ETSF_FP_SVC_MAX      16    /* services (VIP:port:proto) per policy slot   */
#define ETSF_FP_BACKENDS_MAX 256   /* backends, global ids (stable across slots)  */
#define ETSF_FP_RING         4093  /* Maglev table size per service (prime)       */
#define ETSF_FP_AFF_MAX      131072 /* Call-ID affinity LRU entries (per-CPU lists) */
#define ETSF_FP_FLOW_MAX     131072 /* return-path / TCP flow LRU entries (ditto)   */
#define ETSF_FP_RETRIES      8     /* ring probes past a down backend             */
#define ETSF_FP_NONE         0xffffu /* empty Maglev bucket                        */

/* fast-path outcome; map etsf_fp_stats is indexed by this (packets + bytes) */
enum etsf_fp_reason {
	ETSF_FP_FWD          = 0,  /* redirected client -> backend                */
	ETSF_FP_RET          = 1,  /* redirected backend -> client (source = VIP) */
	ETSF_FP_NOT_SERVICE  = 2,  /* fallback: no service VIP:port, no flow      */
	ETSF_FP_BYPASS       = 3,  /* fallback: global bypass flag                */
	ETSF_FP_DEADMAN      = 4,  /* fallback: heartbeat dead-man expired        */
	ETSF_FP_NOT_L4       = 5,  /* fallback: not IPv4/IPv6 UDP/TCP, truncated  */
	ETSF_FP_FRAGMENT     = 6,  /* fallback: IP fragment                       */
	ETSF_FP_NOT_SIP      = 7,  /* fallback: UDP payload not SIP / no Call-ID  */
	ETSF_FP_NO_BACKEND   = 8,  /* fallback: empty ring or all probed down     */
	ETSF_FP_FIB_FAIL     = 9,  /* fallback: next hop not resolvable           */
	ETSF_FP_INTERNAL     = 10, /* fallback: helper / map failure              */
	ETSF_FP_TCP_NO_FLOW  = 11, /* fallback: TCP segment of an unknown flow, not SYN */
	ETSF_FP_REASONS      = 12,
};
#define ETSF_FP_STATS_SLOTS 16

/* struct etsf_fp_backend.flags */
#define ETSF_FP_B_PEER  0x1u   /* ifindex is the host end of a veth: redirect_peer */
#define ETSF_FP_B_L2    0x2u   /* mac/smac valid (else FIB / redirect_neigh)       */
/* 0x10 << slot: the backend belongs to the service set of policy slot 0 / 1
 * affinity entries stay valid only while their backend is a member of the
 * live slot */
#define ETSF_FP_B_SLOT(s) (0x10u << ((s) & 1))

/* struct etsf_fp_svc.flags */
#define ETSF_FP_S_CALLID 0x1u  /* affinity: call-id                               */

#define ETSF_FP_NAME_LEN 32

#endif /* ETSF_CONSTS_H */
