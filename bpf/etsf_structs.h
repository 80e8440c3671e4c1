/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_structs.h - every map key/value struct shared by the kernel programs
 * and the host agent.  src/etsf/layout/ mirrors this file with ctypes;
 * tests/bpf/test_layout*.py prove the mirror equals the BTF (sizes, offsets)
 * of the test-only object etsf_alignchecker.c, built from these headers.
 * Change both together.
 *
 * Rules: fixed-width types only, explicit padding (no implicit holes, no
 * implicit tail padding).  Compiles both with vmlinux.h (BPF side) and with
 * <linux/types.h> (documentation / C tools).
 */
#ifndef ETSF_STRUCTS_H
#define ETSF_STRUCTS_H

#include "etsf_consts.h"

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
	/*
	 * Admission of new INVITEs (out-of-dialog INVITE, no To-tag), a GCRA
	 * token bucket per CPU, checked after the overload level and the
	 * per-source limits.  rate 0 = unlimited (admission off); rate != 0
	 * and burst 0 = admit none.  A refused INVITE is answered in the
	 * kernel with a stateless 503 (unless ETSF_CTL_F_ADMIT_SILENT) and
	 * its retransmissions get the same answer (etsf_admit_txn).
	 */
	__u32 invite_admit_rate;  /* new INVITEs per second, per CPU          */
	__u32 invite_admit_burst; /* bucket depth per CPU                      */
	__u32 retry_after_s;      /* Retry-After of the 503; 0 = header left out */
	__u32 _pad0;
	__u64 node_secret;        /* mixed with the Call-ID hash into the To-tag
	                           * of in-kernel responses (stable per node)  */
	/*
	 * RFC 7339 loss-based overload control, advertised in the top Via of
	 * responses leaving the node to peers whose request Via carried `oc`,
	 * while ETSF_CTL_F_OC is set.  Written by the overload controller.
	 */
	__u32 oc_reduction_pct;   /* oc=<0..100>                               */
	__u32 oc_validity_ms;     /* oc-validity; 0 tells peers to stop        */
	__u64 oc_seq;             /* oc-seq; grows with every change           */
	/*
	 * Keep-alive answers: OPTIONS are answered in the kernel only while
	 * the agent's own probe of the proxy succeeded recently.
	 */
	__u64 proxy_alive_until_ns; /* CLOCK_MONOTONIC; 0 or past = pass all  */
	__u32 ka_sample_every;    /* 1 in N answerable OPTIONS still goes to the
	                           * proxy; 0 = none                          */
	__u32 _pad1;
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

/* Map etsf_ifstats: PERCPU_HASH ifindex(__u32) -> struct etsf_ifstat */
struct etsf_ifstat {
	__u64 rx_packets;       /* every packet the XDP program saw           */
	__u64 rx_bytes;
	__u64 sip_packets;      /* classified as SIP                           */
	__u64 dropped;
	__u64 tx_marked;        /* TC egress packets marked                    */
	__u64 tx_bytes;
};

/* Map etsf_if_cfg: HASH ifindex(__u32) -> struct etsf_if_cfg (ETSF_IF_F_*) */
struct etsf_if_cfg {
	__u32 flags;
	__u32 tm;               /* ETSF_IF_TM_KNOWN | enum etsf_tm_dir, or 0     */
};

/*
 * Map etsf_parse_stats: PERCPU_ARRAY, one entry per hook.  sip_parses counts
 * every SIP payload parse, so tests can prove one parse per packet per node.
 */
struct etsf_parse_stat {
	__u64 sip_parses;
	__u64 meta_used;        /* TC ingress took xdp_sip's result from metadata */
	__u64 meta_missing;     /* TC ingress expected metadata and found none    */
	__u64 early;            /* decided before any payload copy or parse      */
};

/*
 * XDP metadata (bpf_xdp_adjust_meta) xdp_sip leaves in front of a passed SIP
 * packet, read by TC ingress through skb->data_meta.  Size a multiple of 4.
 */
struct etsf_meta {
	__u32 magic;            /* ETSF_META_MAGIC                               */
	__u8  method;
	__u8  verdict;
	__u8  reason;
	__u8  flags;            /* ETSF_META_F_*                                 */
	__u64 callid_hash;
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

/*
 * Map etsf_admit: PERCPU_ARRAY, 1 entry.  Admission bucket of this CPU and
 * its counters (sum over CPUs for totals).
 */
struct etsf_admit {
	__u64 tat_ns;           /* GCRA theoretical arrival time of this CPU   */
	__u64 admitted;         /* new INVITEs that took a token               */
	__u64 rejected;         /* new INVITEs refused (no token)              */
	__u64 retrans_admitted; /* retransmissions of an admitted INVITE       */
	__u64 retrans_rejected; /* retransmissions of a refused INVITE         */
	__u64 replied;          /* 503 sent back (XDP_TX)                      */
	__u64 reply_unfit;      /* refused, 503 did not fit: dropped silently  */
};

/*
 * Map etsf_admit_txn: ARRAY (BPF_F_MMAPABLE) of ETSF_ADMIT_SETS sets of
 * ETSF_TM_WAYS decisions, one 64-byte cache line each, shared by all CPUs.
 * The set and the tag of a decision come from etsf_admit_key(Call-ID hash,
 * CSeq number) mixed (etsf_mix64).  The decision for a new INVITE, so its
 * retransmissions get the same one without a token.  Decisions older than
 * ETSF_ADMIT_TXN_NS are treated as absent.  A way is laid out as telemetry's
 * (struct etsf_tm_txn: time, tag, one word), so both tables find and replace
 * ways with the same branch-free steps (etsf_tm_maps.h).
 */
struct etsf_admit_txn {
	__u64 ts_ns;            /* bpf_ktime_get_ns() of the decision          */
	__u32 tag;              /* etsf_tm_tag() of the mixed key; 0 = free    */
	__u32 admitted;         /* 1 admitted, 0 refused                       */
};

struct etsf_admit_set {
	struct etsf_admit_txn way[ETSF_TM_WAYS];
};

/* ---- keep-alive answers (etsf_keepalive.h) ------------------------------ */

/*
 * Map etsf_ka_cfg: ARRAY, ETSF_POLICY_SLOTS entries, written with the policy
 * slot.  hdr: the "Allow: ...\r\n" etc. lines of the 200, hdr_len bytes.
 * The probe_* fields are the agent's proxy prober settings (the kernel does
 * not read them; kept here so the live policy decodes from the maps).
 */
struct etsf_ka_cfg {
	__u32 hdr_len;
	__u32 probe_interval_ms;  /* OPTIONS to the proxy every ...            */
	__u32 probe_timeout_ms;   /* a probe without a 200 within this failed  */
	__u32 probe_alive_ms;     /* a 200 keeps answers on for this long      */
	__u8  probe_addr[16];     /* proxy address; IPv4 in the first 4 bytes  */
	__u16 probe_port;         /* host order                                */
	__u8  probe_family;       /* 4 or 6                                    */
	__u8  _pad[5];
	__u8  hdr[ETSF_KA_HDR_MAX];
};

/*
 * Map etsf_ka_id: HASH, ETSF_KA_ID_MAX entries, value __u32 ETSF_KA_ID_*.
 * The Request-URI identities of the node per policy slot: host bytes with
 * every byte OR 0x20 (case-insensitive; '[' ']' of an IPv6 reference fold
 * to '{' '}'), zero padded; user bytes as they are (user_len 0: any user).
 */
struct etsf_ka_id_key {
	__u8  slot;
	__u8  host_len;
	__u8  user_len;
	__u8  _pad[5];
	__u8  host[ETSF_KA_HOST_LEN];
	__u8  user[ETSF_KA_USER_LEN];
};

/* Map etsf_ka_stats: PERCPU_ARRAY, 1 entry (sum over CPUs for totals) */
struct etsf_ka_stats {
	__u64 answered;           /* OPTIONS answered with a 200 (XDP_TX)       */
	__u64 passed_proxy_stale; /* answerable, passed: proxy probe stale      */
	__u64 passed_sampled;     /* answerable, passed: the 1-in-N sample       */
	__u64 passed_not_matching; /* OPTIONS passed: not for the node, Max-Forwards
	                           * 0, Require / Proxy-Require, or does not fit */
	__u64 nat_keepalive_seen; /* CRLF / CRLFCRLF / 4 zero bytes on a SIP port */
	__u64 nat_keepalive_dropped;
	__u64 sample_seq;         /* answerable OPTIONS seen by this CPU         */
};

/* ---- telemetry ----------------------------------------------------------- */

/* Map etsf_tm_ifcfg: HASH ifindex(__u32, 0 = default) -> struct etsf_tm_ifcfg */
struct etsf_tm_ifcfg {
	__u32 dir;              /* enum etsf_tm_dir                            */
	__u32 _pad;
};

/*
 * A transaction's identity; etsf_tm_hash() of it picks the set of etsf_tm_txn
 * and the tag that stands for it there.
 */
struct etsf_tm_txn_key {
	__u64 callid_hash;      /* FNV-1a 64 of the Call-ID                    */
	__u32 cseq;             /* CSeq number                                 */
	__u32 ifindex;          /* interface the request was seen on           */
	__u8  method;           /* enum etsf_method of the request / CSeq      */
	__u8  _pad[7];
};

/* one way of a set: a transaction (tag 0 = free) */
struct etsf_tm_txn {
	__u64 start_ns;         /* bpf_ktime_get_ns() of the first request copy */
	__u32 tag;              /* etsf_tm_hash() >> 32, never 0               */
	__u32 seen;             /* bit per recorded stage / counted code       */
};

/*
 * Map etsf_tm_txn: ARRAY of ETSF_TM_SETS sets, index etsf_tm_hash() &
 * (ETSF_TM_SETS - 1): ETSF_TM_WAYS transactions per 64-byte set.
 */
struct etsf_tm_set {
	struct etsf_tm_txn way[ETSF_TM_WAYS];
};

/*
 * Map etsf_tm_hist: PERCPU_ARRAY, ETSF_METHODS * ETSF_TM_STAGES entries,
 * index method * ETSF_TM_STAGES + stage.  slot[b]: latencies in
 * [2^(b-1), 2^b) microseconds (slot 0: < 1 us, last slot: everything above).
 */
struct etsf_tm_hist {
	__u64 count;
	__u64 sum_ns;
	__u64 slot[ETSF_TM_BUCKETS];
};

/* Map etsf_tm_codes: PERCPU_ARRAY of __u64, ETSF_TM_CODE_METHODS * ETSF_TM_CODES,
 * index m * ETSF_TM_CODES + (code - ETSF_TM_CODE_MIN) */

/* ---- fast path ----------------------------------------------------------- */

/*
 * Map etsf_fp_svc: HASH.  The first byte is the policy slot: the agent writes
 * the inactive slot's services + rings, then the etsf_ctl flip makes them
 * live together with the rest of the policy.
 */
struct etsf_fp_svc_key {
	__u8  slot;
	__u8  family;           /* 4 or 6                                      */
	__u8  proto;            /* IPPROTO_UDP / IPPROTO_TCP                   */
	__u8  _pad;
	__u16 port;             /* host order                                  */
	__u16 _pad1;
	__u8  addr[16];         /* VIP; IPv4 in the first 4 bytes              */
};

struct etsf_fp_svc {
	__u32 ring;             /* index into etsf_fp_ring (slot * SVC_MAX + n)  */
	__u32 flags;            /* ETSF_FP_S_*                                 */
	__u32 n_backends;
	__u32 _pad;
	char  name[ETSF_FP_NAME_LEN]; /* policy name (agent only), NUL padded */
};

/* Map etsf_fp_ring: ARRAY, ETSF_POLICY_SLOTS * ETSF_FP_SVC_MAX entries */
struct etsf_fp_ring {
	__u16 backend[ETSF_FP_RING];   /* backend id, ETSF_FP_NONE = empty     */
	__u16 _pad[3];
};

/* Map etsf_fp_backends: ARRAY, ETSF_FP_BACKENDS_MAX entries, by backend id */
struct etsf_fp_backend {
	__u8  addr[16];         /* IPv4 in the first 4 bytes                   */
	__u16 port;             /* host order                                  */
	__u8  family;
	__u8  flags;            /* ETSF_FP_B_*                                 */
	__u32 ifindex;          /* egress (host end of the backend's veth)     */
	__u8  mac[6];           /* backend MAC (destination)                   */
	__u8  smac[6];          /* host-end MAC (source)                       */
	__u32 up;               /* health: 1 up, 0 down (agent prober)         */
	__u16 weight[ETSF_POLICY_SLOTS]; /* per slot (agent only: decode/diff)   */
	__u8  svc[ETSF_POLICY_SLOTS];    /* service index per slot (agent only)  */
	__u8  _pad[2];
};

/* Map etsf_fp_bstats: PERCPU_ARRAY, ETSF_FP_BACKENDS_MAX entries, by backend id */
struct etsf_fp_bstat {
	__u64 packets;          /* client -> backend redirected                */
	__u64 bytes;
	__u64 dialogs;          /* new affinity entries (first message of a Call-ID) */
	__u64 ret_packets;      /* backend -> client redirected                */
	__u64 ret_bytes;
};

/* Map etsf_fp_aff: LRU_HASH, Call-ID affinity (first message pins the backend) */
struct etsf_fp_aff_key {
	__u64 callid_hash;      /* FNV-1a 64 of the Call-ID                    */
	__u8  vip[16];
	__u16 vport;
	__u8  family;
	__u8  proto;
	__u32 _pad;
};

struct etsf_fp_aff {
	__u32 backend;          /* backend id                                  */
	__u32 _pad;
	__u64 generation;       /* policy generation that chose it (informational:
	                         * validity = backend still a member of the live slot) */
};

/*
 * Map etsf_fp_flow: LRU_HASH.  dir 1 (return): a = client, b = backend, value
 * says which VIP to restore.  dir 0 (TCP forward): a = client, b = VIP, value
 * says which backend the connection is pinned to.
 */
struct etsf_fp_flow_key {
	__u8  a[16];
	__u8  b[16];
	__u16 aport;
	__u16 bport;
	__u8  family;
	__u8  proto;
	__u8  dir;
	__u8  _pad;
};

struct etsf_fp_flow {
	__u8  vip[16];
	__u16 vport;
	__u16 _pad;
	__u32 backend;          /* backend id                                  */
	__u32 ifindex;          /* where the client's packets came in          */
	__u8  cmac[6];          /* client-side next hop MAC (source of the request) */
	__u8  lmac[6];          /* our MAC on that interface                   */
	__u64 generation;       /* policy generation that created it (informational) */
};

/*
 * Parser state lives in the map value, not on the stack: the verifier then
 * treats it as unknown scalars in every bpf_loop iteration and the callback
 * converges after a few passes instead of tracking every position.  At the
 * start of the per-CPU etsf_scratch value (etsf_maps.h).
 */
struct etsf_parse_state {
	__u32 len;          /* valid bytes in buf (<= ETSF_PARSE_BYTES)        */
	__u32 pos;
	__u32 state;
	__u32 next;         /* state after the LWS state                       */
	__u32 flags;
	__u32 tok;          /* start of the current token                      */
	__u32 ndig;
	__u32 hlen;         /* Call-ID bytes hashed                            */
	__u64 cseq;
	__u64 hash;
	__u32 method;
	__u32 cseq_method;
	__u32 iters;        /* bpf_loop callback calls of the last parse (bench) */
	__u32 tmp;          /* step-local value passed through memory          */
};

#endif /* ETSF_STRUCTS_H */
