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

/* ---- telemetry: SIP transaction latency (bpf/telemetry.h) ------------------ */
#define ETSF_TM_TXN_MAX     32768 /* outstanding transactions tracked (LRU)      */
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
	ETSF_TM_EV_TXN_FULL     = 5, /* transaction insert failed              */
	ETSF_TM_EVENTS          = 6,
};

/* Map etsf_tm_ifcfg: HASH ifindex(__u32, 0 = default) -> struct etsf_tm_ifcfg */
struct etsf_tm_ifcfg {
	__u32 dir;              /* enum etsf_tm_dir                            */
	__u32 _pad;
};

/* Map etsf_tm_txn: LRU_HASH, ETSF_TM_TXN_MAX entries */
struct etsf_tm_txn_key {
	__u64 callid_hash;      /* FNV-1a 64 of the Call-ID                    */
	__u32 cseq;             /* CSeq number                                 */
	__u32 ifindex;          /* interface the request was seen on           */
	__u8  method;           /* enum etsf_method of the request / CSeq      */
	__u8  _pad[7];
};

struct etsf_tm_txn {
	__u64 start_ns;         /* bpf_ktime_get_ns() of the first request copy */
	__u32 seen;             /* bit per recorded stage / counted code       */
	__u32 _pad;
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

/* FNV-1a 64-bit parameters for the Call-ID hash (host side uses the same) */
#define ETSF_FNV64_OFFSET 0xcbf29ce484222325ULL
#define ETSF_FNV64_PRIME  0x100000001b3ULL

/* ---- fast path: in-kernel steering to local proxy backends (bpf/fastpath.h) -- */
#define ETSF_FP_SVC_MAX      16    /* services (VIP:port:proto) per policy slot   */
#define ETSF_FP_BACKENDS_MAX 256   /* backends, global ids (stable across slots)  */
#define ETSF_FP_RING         4093  /* Maglev table size per service (prime)       */
#define ETSF_FP_AFF_MAX      65536 /* Call-ID affinity LRU entries                */
#define ETSF_FP_FLOW_MAX     65536 /* return-path / TCP flow LRU entries          */
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

#define ETSF_FP_NAME_LEN 32

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

#endif /* ETSF_H */
