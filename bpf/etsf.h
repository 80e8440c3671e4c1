/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf.h - the ONE definition of every eTSF map key/value struct, enum and
 * constant shared by the kernel programs (bpf/*.bpf.c) and the host agent.
 *
 * src/etsf/layout.py mirrors this file with ctypes; tests/bpf/test_layout.py
 * proves the mirror equals the BTF of the compiled objects (sizes, offsets,
 * enum values).  Change both together.
 *
 * Rules: fixed-width types only, explicit padding (no implicit holes, no
 * implicit tail padding).  This header must compile both with vmlinux.h (BPF side) and with
 * <linux/types.h> (documentation / C tools).
 */
#ifndef ETSF_H
#define ETSF_H

#define ETSF_ABI_VERSION 1

/* ---- sizes -------------------------------------------------------------- */
#define ETSF_MAX_SIP_PORTS   8     /* UDP/TCP ports carrying cleartext SIP   */
#define ETSF_MAX_TLS_PORTS   4     /* SIP over TLS: counted, never parsed     */
#define ETSF_PARSE_BYTES     2048  /* SIP payload bytes examined at most      */
#define ETSF_POLICY_SLOTS    2     /* double-buffered policy (atomic swap)    */
#define ETSF_RL_CLASSES      4     /* rate-limit method classes               */
#define ETSF_OVERLOAD_LEVELS 4     /* overload level 0..3                     */
#define ETSF_PRIO_CLASSES    4     /* priority classes 0..3                   */
#define ETSF_HOOKS           2     /* XDP ingress, TC egress                  */
#define ETSF_VERDICTS        4
#define ETSF_REASONS         32
#define ETSF_ACL_MAX         16384 /* entries per LPM trie (both slots)       */
#define ETSF_RL_MAX          65536 /* rate-limit LRU entries                  */
#define ETSF_IF_MAX          64    /* interfaces counted                      */

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
	ETSF_REASONS_USED    = 27,
};

/* ---- hooks ---------------------------------------------------------------- */
enum etsf_hook {
	ETSF_HOOK_XDP       = 0,
	ETSF_HOOK_TC_EGRESS = 1,
};

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

/* ---- policy flags (struct etsf_policy.flags) -------------------------------- */
#define ETSF_POL_F_VALID   0x1u /* slot holds a complete policy             */
#define ETSF_POL_F_MARK    0x2u /* TC egress marks SIP with prio/DSCP       */

/*
 * Map etsf_ctl: ARRAY, 1 entry (key 0).  Run-time control written by the
 * agent (not by policy apply): bypass, overload level, heartbeat, which
 * policy slot is live.  Every program reads it first.
 */
struct etsf_ctl {
	__u32 bypass;           /* != 0: every program passes everything     */
	__u32 overload_level;   /* 0..3                                      */
	__u32 active_slot;      /* 0 or 1: index into etsf_policy            */
	__u32 flags;            /* ETSF_CTL_F_*                              */
	__u64 heartbeat_ns;     /* CLOCK_MONOTONIC ns of the last heartbeat  */
	__u64 deadman_ns;       /* 0 = dead-man switch off; else max age     */
	__u64 generation;       /* policy generation now live                */
};

/* token bucket parameters of one rate-limit class; rate 0 = unlimited */
struct etsf_rate {
	__u32 rate_pps;         /* sustained requests per second per source  */
	__u32 burst;            /* bucket depth in requests                  */
};

/*
 * Map etsf_policy: ARRAY, ETSF_POLICY_SLOTS entries.  The agent writes the
 * inactive slot (plus that slot's ACL entries), then flips
 * etsf_ctl.active_slot: no packet ever sees half a policy.
 */
struct etsf_policy {
	__u64 generation;
	__u32 flags;                               /* ETSF_POL_F_*            */
	__u16 sip_ports[ETSF_MAX_SIP_PORTS];       /* host order, 0 = unused  */
	__u16 tls_ports[ETSF_MAX_TLS_PORTS];       /* host order, 0 = unused  */
	__u8  method_prio[ETSF_METHODS];           /* enum etsf_prio per method */
	__u8  shed_below[ETSF_OVERLOAD_LEVELS];    /* level L sheds prio < shed_below[L] */
	__u8  agg_prefix_v4;                       /* rate-limit key prefix, 1..32  */
	__u8  agg_prefix_v6;                       /* rate-limit key prefix, 1..128 */
	__u8  dscp;                                /* TC egress DSCP (0..63)  */
	__u8  _pad0[4];
	__u32 skb_priority;                        /* TC egress skb->priority */
	struct etsf_rate rate[ETSF_RL_CLASSES];    /* per rate-limit class    */
	__u32 _pad1;
};

/*
 * Maps etsf_acl_v4 / etsf_acl_v6: LPM_TRIE.  The first data byte is the
 * policy slot, so prefixlen = 8 + CIDR bits.  Value: enum etsf_acl_action.
 */
struct etsf_acl_v4_key {
	__u32 prefixlen;
	__u8  slot;
	__u8  addr[4];
	__u8  _pad[3];
};

struct etsf_acl_v6_key {
	__u32 prefixlen;
	__u8  slot;
	__u8  addr[16];
	__u8  _pad[3];
};

/*
 * Map etsf_rl: LRU_HASH, ETSF_RL_MAX entries.  Per-source (aggregated to the
 * policy's prefix) and per rate-limit class GCRA state.
 */
struct etsf_rl_key {
	__u8  family;           /* 4 or 6                                     */
	__u8  rl_class;         /* enum etsf_rl_class                         */
	__u8  prefix;           /* aggregation prefix used                    */
	__u8  _pad;
	__u8  addr[16];         /* IPv4 in the first 4 bytes, masked          */
};

struct etsf_rl_state {
	__u64 tat_ns;           /* GCRA theoretical arrival time              */
	__u64 passed;
	__u64 dropped;
};

/*
 * Map etsf_stats: PERCPU_ARRAY of ETSF_STATS_SLOTS counters indexed by
 * ETSF_STATS_IDX(hook, method, verdict, reason).
 */
struct etsf_counter {
	__u64 packets;
	__u64 bytes;
};

#define ETSF_STATS_SLOTS (ETSF_HOOKS * ETSF_METHODS * ETSF_VERDICTS * ETSF_REASONS)
#define ETSF_STATS_IDX(hook, method, verdict, reason) \
	((((hook) * ETSF_METHODS + (method)) * ETSF_VERDICTS + (verdict)) * ETSF_REASONS + (reason))

/* Map etsf_ifstats: PERCPU_HASH ifindex(__u32) -> struct etsf_ifstat */
struct etsf_ifstat {
	__u64 rx_packets;       /* every packet the XDP program saw           */
	__u64 rx_bytes;
	__u64 sip_packets;      /* classified as SIP                           */
	__u64 dropped;
	__u64 tx_marked;        /* TC egress packets marked                    */
	__u64 tx_bytes;
};

/*
 * Map etsf_last: ARRAY, 1 entry; written only when ETSF_CTL_F_RECORD is set
 * (tests, `etsfctl` debugging).  The parse result of the last packet.
 */
struct etsf_sip_info {
	__u64 callid_hash;      /* FNV-1a 64 of the Call-ID value, trimmed    */
	__u32 cseq;             /* CSeq number                                 */
	__u16 status;           /* response status code, 0 for requests       */
	__u8  method;           /* enum etsf_method (RESPONSE for responses)  */
	__u8  cseq_method;      /* enum etsf_method of the CSeq header        */
	__u8  has_callid;
	__u8  has_to_tag;       /* in-dialog                                   */
	__u8  verdict;          /* enum etsf_verdict                           */
	__u8  reason;           /* enum etsf_reason                            */
	__u8  family;           /* 4 or 6                                      */
	__u8  l4proto;          /* IPPROTO_UDP / IPPROTO_TCP                   */
	__u16 payload_len;      /* L4 payload bytes                           */
};

/* FNV-1a 64-bit parameters for the Call-ID hash (host side uses the same) */
#define ETSF_FNV64_OFFSET 0xcbf29ce484222325ULL
#define ETSF_FNV64_PRIME  0x100000001b3ULL

#endif /* ETSF_H */
