/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_respond.h - stateless in-kernel SIP responses built from a request.
 *
 * The request payload is already in the per-CPU parse scratch (etsf_scratch,
 * copied by etsf_parse_payload); the response is built into another per-CPU
 * buffer (etsf_resp) by a state machine under bpf_loop() with a fixed budget,
 * and the hook's own code (etsf_xdp_reply in xdp_sip, etsf_skb_reply at TC)
 * puts it on the wire.  A step takes a run of up to ETSF_RESP_RUN_WORDS
 * 8-byte words (skipped, or copied a word at a time) up to the next byte that
 * needs looking at (SWAR scans: a line end, in the top Via ',' and 't', in
 * the request line the URI's delimiters), or one such byte; the inserted
 * strings are prepared once per packet, with word stores where they are
 * fixed.  Built: the status line (503 or 200), then every Via / From /
 * To / Call-ID / CSeq header of the request in request order, copied
 * verbatim (long or compact names, folded lines kept as they are), with
 *   - ";received=<source address>" appended to the first value of the top
 *     Via and a value-less "rport" there filled with the source port
 *     (RFC 3261 18.2.1, RFC 3581); IPv6 addresses as eight hex groups;
 *   - ";tag=<16 hex>" appended to To when it has none: a function of the
 *     Call-ID hash and etsf_ctl.node_secret, so retransmissions get the same
 *     tag (etsf_resp_tag);
 * then the caller's extra header lines (the keep-alive 200's Allow / Accept /
 * Supported / Server), "Retry-After: <s>" (503, when not 0), "Content-Length:
 * 0" and the blank line.  On the way the pass notes what a keep-alive answer
 * depends on: the Request-URI's user and host offsets, a Max-Forwards of 0,
 * a Require or Proxy-Require header (etsf_keepalive.h decides).  Commas
 * inside quoted Via parameters are not recognised (the top Via value ends at
 * the first ','); such requests are not expected from a UA refused with a
 * 503 or pinging with OPTIONS.  A response over ETSF_RESP_MAX bytes, or a header block that
 * does not end inside the copied bytes, is refused (the caller falls back).
 */
#ifndef ETSF_RESPOND_H
#define ETSF_RESPOND_H

#include "etsf.h"
#include "etsf_maps.h"
#include "etsf_parse.h"
#include "etsf_sip_parse.h"

#define ETSF_RESP_BYTES 2048            /* output buffer, power of two > ETSF_RESP_MAX */
#define ETSF_RESP_MASK  (ETSF_RESP_BYTES - 1)
#define ETSF_RESP_STR   64              /* each prepared string at most               */
#define ETSF_RESP_STR_MASK (ETSF_RESP_STR - 1)
#define ETSF_RESP_L2L4  72              /* Ethernet + VLAN + IPv6 + UDP = 66, rounded */
#define ETSF_RESP_STATUS_503 "SIP/2.0 503 Service Unavailable\r\n"
#define ETSF_RESP_STATUS_200 "SIP/2.0 200 OK\r\n"

/* headers copied into a response */
enum {
	ETSF_RH_NONE = 0,
	ETSF_RH_VIA,
	ETSF_RH_FROM,
	ETSF_RH_TO,
	ETSF_RH_CALLID,
	ETSF_RH_CSEQ,           /* last copied kind                            */
	ETSF_RH_MAXFWD,         /* noted, not copied                           */
	ETSF_RH_REQUIRE,        /* Require or Proxy-Require: noted, not copied */
};

/* builder states */
enum {
	ETSF_RS_RLINE = 0,      /* request line: skipped                       */
	ETSF_RS_LINE,           /* at the start of a header line               */
	ETSF_RS_COPY,           /* inside a copied header                      */
	ETSF_RS_SKIP,           /* inside a header not copied                  */
};

#define ETSF_RF_TOPVIA  0x01u   /* inside the first value of the top Via  */
#define ETSF_RF_VIADONE 0x02u   /* the top Via has been seen              */
#define ETSF_RF_END     0x04u   /* empty line: end of the header block    */
#define ETSF_RF_FAIL    0x08u   /* does not fit                           */
#define ETSF_RF_ADDTAG  0x10u   /* To has no tag: add ours                */
#define ETSF_RF_REQUIRE 0x20u   /* a Require / Proxy-Require header       */
#define ETSF_RF_MFZERO  0x40u   /* Max-Forwards without a non-zero digit  */

/* Request-URI scan (u_flags) */
#define ETSF_RU_SP      0x01u   /* past the method's SP                   */
#define ETSF_RU_DONE    0x02u   /* past the URI's SP                      */
#define ETSF_RU_BRACKET 0x04u   /* inside [...] (IPv6 reference)          */

struct etsf_resp_state {
	__u32 in_len;           /* request bytes in the parse scratch        */
	__u32 pos;              /* next request byte                         */
	__u32 out;              /* response bytes built                      */
	__u32 state;
	__u32 hdr;              /* ETSF_RH_* of the current header           */
	__u32 flags;
	__u32 recv_len;
	__u32 port_len;
	__u32 tag_len;
	__u32 trail_len;
	/* Request-URI "sip:[user[:password]@]host[:port][;params]": offsets */
	__u32 u_start;          /* after "sip:"; 0 = no sip: URI              */
	__u32 u_at;             /* the '@'; 0 = none                          */
	__u32 u_uend;           /* first ':' of the user info; 0 = none       */
	__u32 u_hend;           /* end of the host                            */
	__u32 u_flags;          /* ETSF_RU_*                                  */
	__u32 _pad;
	__u8  recv[ETSF_RESP_STR];  /* ";received=<addr>" (8-byte aligned)  */
	__u8  port[ETSF_RESP_STR];  /* "=<port>"                             */
	__u8  tag[ETSF_RESP_STR];   /* ";tag=<hex>"                          */
	__u8  trail[ETSF_RESP_STR]; /* Retry-After, Content-Length, blank line */
};

struct etsf_resp {
	struct etsf_resp_state st;
	/* + room for the last 64-byte etsf_resp_put and the checksum padding */
	__u8 buf[ETSF_RESP_BYTES + ETSF_RESP_STR + 8];
	struct etsf_ka_id_key ka_key;   /* keep-alive identity lookup (off the stack) */
	__u8 l2l4[ETSF_RESP_L2L4];      /* the frame's headers while it grows at the head */
};

/* not pinned: private per object, no state across packets */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct etsf_resp);
} etsf_resp SEC(".maps");

/* the To-tag of a response: mixes the Call-ID hash with the node secret */
/* An answer goes back to the hop it came from: source and destination MACs swap. */
static __always_inline void etsf_resp_swap_macs(struct ethhdr *eth)
{
	__u8 mac[ETH_ALEN];

	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
}

static __always_inline __u64 etsf_resp_tag(__u64 callid_hash, __u64 secret)
{
	__u64 h = callid_hash ^ secret;

	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return h;
}

/*
 * *n lives in the map value: the verifier sees an unknown (masked) index at
 * every write instead of one exact value per path through the digit loops,
 * so the paths converge.
 */
static __always_inline void etsf_resp_ch(__u8 *dst, __u32 *n, __u8 b)
{
	__u32 v;

	asm volatile("" ::: "memory");  /* reload *n: the verifier then sees no constant */
	v = *n;
	dst[v & ETSF_RESP_STR_MASK] = b;
	*n = v + 1;
}

/* v / 10 for any 32-bit v, by multiplication: a BPF division is a hardware divide per digit */
static __always_inline __u32 etsf_resp_div10(__u32 v)
{
	return (__u32)(((__u64)v * 0xcccccccdULL) >> 35);
}

/* 1 if v is not 0, by arithmetic: a compare would be a branch, and a path per digit count */
static __always_inline __u32 etsf_resp_nz(__u32 v)
{
	__u64 t = (__u64)v + 0xffffffffULL;

	asm volatile("" : "+r"(t));     /* keep clang from making it a compare again */
	return (__u32)(t >> 32);
}

/*
 * Append the last len of the w digits d[0..w-1] (most significant first)
 * without a branch per digit: digit j goes to *n + max(0, j - (w - len)), so
 * the leading zeros all land on the first position and the first digit kept
 * overwrites them.  One path for the verifier whatever the digit count.
 */
static __always_inline void etsf_resp_digits(__u8 *dst, __u32 *n, const __u8 *d, int w, __u32 len)
{
	__u32 v;
	__s32 x, neg;
	int j;

	asm volatile("" ::: "memory");  /* reload *n: the verifier then sees no constant */
	v = *n;
#pragma unroll
	for (j = 0; j < w; j++) {
		x = j - (w - (__s32)len);
		neg = x >> 31;
		asm volatile("" : "+r"(neg));   /* else clang makes max(x, 0) a branch */
		dst[(v + (x & ~neg)) & ETSF_RESP_STR_MASK] = d[j];
	}
	*n = v + len;
}

/* decimal of v < 10^w, no leading zeros */
static __always_inline void etsf_resp_dec(__u8 *dst, __u32 *n, __u32 v, int w)
{
	__u8 d[10];
	__u32 q, len = 1;
	int i;

#pragma unroll
	for (i = 0; i < w; i++) {
		q = etsf_resp_div10(v);
		d[w - 1 - i] = '0' + (v - q * 10);
		v = q;
		if (i < w - 1)
			len += etsf_resp_nz(v);   /* the non-zero quotients come first */
	}
	etsf_resp_digits(dst, n, d, w, len);
}

/* 8 lower-case hex digits of v, most significant first, as the bytes of a word */
static __always_inline __u64 etsf_resp_hex32(__u32 v)
{
	__u64 x = v, m;

	/* one nibble per byte, the lowest in byte 0; then the highest first */
	x = (x | x << 16) & 0x0000ffff0000ffffULL;
	x = (x | x << 8) & 0x00ff00ff00ff00ffULL;
	x = (x | x << 4) & 0x0f0f0f0f0f0f0f0fULL;
	x = __builtin_bswap64(x);
	/* '0' + d, and 'a' - '0' - 10 more where d > 9 */
	m = ((x + 0x0606060606060606ULL) >> 4) & 0x0101010101010101ULL;
	return x + 0x3030303030303030ULL + m * ('a' - '0' - 10);
}

/* the hex digit of v's low nibble, lower case, without a branch */
static __always_inline __u8 etsf_resp_hexd(__u32 v)
{
	v &= 0xf;
	return '0' + v + ((v + 6) >> 4) * ('a' - '0' - 10);
}

/* hex of a 16-bit group, no leading zeros (RFC 4291 text form) */
static __always_inline void etsf_resp_hex16(__u8 *dst, __u32 *n, __u32 v)
{
	__u8 d[4];

	d[0] = etsf_resp_hexd(v >> 12);
	d[1] = etsf_resp_hexd(v >> 8);
	d[2] = etsf_resp_hexd(v >> 4);
	d[3] = etsf_resp_hexd(v);
	etsf_resp_digits(dst, n, d, 4,
			 1 + etsf_resp_nz(v >> 4) + etsf_resp_nz(v >> 8) + etsf_resp_nz(v >> 12));
}

#define ETSF_RESP_LIT(dst, n, lit)                                       \
	do {                                                             \
		int __i;                                                 \
		_Pragma("unroll")                                        \
		for (__i = 0; __i < (int)sizeof(lit) - 1; __i++)         \
			etsf_resp_ch(dst, n, (lit)[__i]);                \
	} while (0)

/* the strings inserted into the copy, from the packet and the control block */
static __always_inline void etsf_resp_prepare(struct etsf_resp_state *c, const struct etsf_pkt *p,
					      const struct etsf_sip_result *r,
					      const struct etsf_ctl *ctl, __u32 retry_after)
{
	__u32 *n;
	__u64 tag, hi, lo;
	int i;

	n = &c->recv_len;
	/* the literals as whole words (little-endian byte order) */
	*(__u64 *)c->recv = ETSF_SIP_C8(';', 'r', 'e', 'c', 'e', 'i', 'v', 'e');
	*(__u64 *)(c->recv + 8) = ETSF_SIP_C8('d', '=', 0, 0, 0, 0, 0, 0);
	*n = 10;
	if (p->family == 4) {
#pragma unroll
		for (i = 0; i < 4; i++) {
			if (i)
				etsf_resp_ch(c->recv, n, '.');
			etsf_resp_dec(c->recv, n, p->saddr[i], 3);
		}
	} else {
#pragma unroll
		for (i = 0; i < 8; i++) {
			if (i)
				etsf_resp_ch(c->recv, n, ':');
			etsf_resp_hex16(c->recv, n,
					(__u32)p->saddr[2 * i] << 8 | p->saddr[2 * i + 1]);
		}
	}

	n = &c->port_len;
	*n = 0;
	etsf_resp_ch(c->port, n, '=');
	etsf_resp_dec(c->port, n, p->sport, 5);

	/* ";tag=" and 16 hex digits: 21 bytes */
	tag = etsf_resp_tag(r->callid_hash, ctl->node_secret);
	hi = etsf_resp_hex32((__u32)(tag >> 32));
	lo = etsf_resp_hex32((__u32)tag);
	*(__u64 *)c->tag = ETSF_SIP_C8(';', 't', 'a', 'g', '=', 0, 0, 0) | hi << 40;
	*(__u64 *)(c->tag + 8) = hi >> 24 | lo << 40;
	*(__u64 *)(c->tag + 16) = lo >> 24;
	c->tag_len = 21;

	n = &c->trail_len;
	if (!retry_after) {
		*(__u64 *)c->trail = ETSF_SIP_C8('C', 'o', 'n', 't', 'e', 'n', 't', '-');
		*(__u64 *)(c->trail + 8) = ETSF_SIP_C8('L', 'e', 'n', 'g', 't', 'h', ':', ' ');
		*(__u64 *)(c->trail + 16) = ETSF_SIP_C8('0', '\r', '\n', '\r', '\n', 0, 0, 0);
		*n = 21;
		return;
	}
	*n = 0;
	ETSF_RESP_LIT(c->trail, n, "Retry-After: ");
	etsf_resp_dec(c->trail, n, retry_after, 10);
	ETSF_RESP_LIT(c->trail, n, "\r\n");
	ETSF_RESP_LIT(c->trail, n, "Content-Length: 0\r\n\r\n");
}

static __always_inline int etsf_resp_out(struct etsf_resp *o, __u8 b)
{
	__u32 out = o->st.out;

	if (out >= ETSF_RESP_MAX) {
		o->st.flags |= ETSF_RF_FAIL;
		return 1;
	}
	o->buf[out & ETSF_RESP_MASK] = b;
	o->st.out = out + 1;
	return 0;
}

/*
 * Append one of the prepared strings (src is one of the st arrays, 8-byte
 * aligned): always 64 bytes are copied, without a branch per byte; the
 * bytes past len are overwritten by what follows or lie past the end.
 */
static __always_inline int etsf_resp_put(struct etsf_resp *o, const __u8 *src, __u32 len)
{
	const __u64 *s = (const __u64 *)src;
	__u32 out = o->st.out;
	__u64 *d;

	if (len > ETSF_RESP_STR || out + len > ETSF_RESP_MAX) {
		o->st.flags |= ETSF_RF_FAIL;
		return 1;
	}
	d = (__u64 *)(o->buf + (out & ETSF_RESP_MASK));
	d[0] = s[0];
	d[1] = s[1];
	d[2] = s[2];
	d[3] = s[3];
	d[4] = s[4];
	d[5] = s[5];
	d[6] = s[6];
	d[7] = s[7];
	o->st.out = out + len;
	return 0;
}

/* header name at pos: which one do we copy? (case-insensitive, long or compact) */
static __always_inline __u32 etsf_resp_hdr(const __u8 *buf, __u32 pos, __u32 len)
{
	__u64 lw = etsf_sip_word(buf, pos) | ETSF_SIP_LOWER64;

	if (pos + 1 < len && etsf_sip_name_end(etsf_sip_byte(buf, pos + 1))) {
		switch (lw & 0xff) {
		case 'v': return ETSF_RH_VIA;
		case 'f': return ETSF_RH_FROM;
		case 't': return ETSF_RH_TO;
		case 'i': return ETSF_RH_CALLID;
		}
		return ETSF_RH_NONE;
	}
	if (pos + 2 < len && etsf_sip_name_end(etsf_sip_byte(buf, pos + 2)) &&
	    (lw & etsf_sip_mask(2)) == ETSF_SIP_C8('t', 'o', 0, 0, 0, 0, 0, 0))
		return ETSF_RH_TO;
	if (pos + 3 < len && etsf_sip_name_end(etsf_sip_byte(buf, pos + 3)) &&
	    (lw & etsf_sip_mask(3)) == ETSF_SIP_C8('v', 'i', 'a', 0, 0, 0, 0, 0))
		return ETSF_RH_VIA;
	if (pos + 4 < len && etsf_sip_name_end(etsf_sip_byte(buf, pos + 4))) {
		if ((lw & etsf_sip_mask(4)) == ETSF_SIP_C8('f', 'r', 'o', 'm', 0, 0, 0, 0))
			return ETSF_RH_FROM;
		if ((lw & etsf_sip_mask(4)) == ETSF_SIP_C8('c', 's', 'e', 'q', 0, 0, 0, 0))
			return ETSF_RH_CSEQ;
	}
	if (pos + 7 < len && etsf_sip_name_end(etsf_sip_byte(buf, pos + 7))) {
		if ((lw & etsf_sip_mask(7)) == ETSF_SIP_C8('c', 'a', 'l', 'l', '-', 'i', 'd', 0))
			return ETSF_RH_CALLID;
		if ((lw & etsf_sip_mask(7)) == ETSF_SIP_C8('r', 'e', 'q', 'u', 'i', 'r', 'e', 0))
			return ETSF_RH_REQUIRE;
	}
	if (pos + 12 < len && etsf_sip_name_end(etsf_sip_byte(buf, pos + 12)) &&
	    lw == ETSF_SIP_C8('m', 'a', 'x', '-', 'f', 'o', 'r', 'w') &&
	    ((etsf_sip_word(buf, pos + 8) | ETSF_SIP_LOWER64) & etsf_sip_mask(4)) ==
	    ETSF_SIP_C8('a', 'r', 'd', 's', 0, 0, 0, 0))
		return ETSF_RH_MAXFWD;
	if (pos + 13 < len && etsf_sip_name_end(etsf_sip_byte(buf, pos + 13)) &&
	    lw == ETSF_SIP_C8('p', 'r', 'o', 'x', 'y', '-', 'r', 'e') &&
	    ((etsf_sip_word(buf, pos + 8) | ETSF_SIP_LOWER64) & etsf_sip_mask(5)) ==
	    ETSF_SIP_C8('q', 'u', 'i', 'r', 'e', 0, 0, 0))
		return ETSF_RH_REQUIRE;
	return ETSF_RH_NONE;
}

/* ";rport" at pos (the ';') without a value? */
static __always_inline int etsf_resp_bare_rport(const __u8 *buf, __u32 pos, __u32 len)
{
	__u64 lw = etsf_sip_word(buf, pos + 1) | ETSF_SIP_LOWER64;
	__u8 nx;

	if (pos + 6 > len ||
	    (lw & etsf_sip_mask(5)) != ETSF_SIP_C8('r', 'p', 'o', 'r', 't', 0, 0, 0))
		return 0;
	if (pos + 6 == len)
		return 1;
	nx = etsf_sip_byte(buf, pos + 6);
	return nx == ';' || nx == ',' || nx == '\r' || nx == '\n';
}

/* inside a copied header */
static __always_inline int etsf_resp_copy(struct etsf_resp *o, const __u8 *buf, __u32 pos, __u8 b)
{
	struct etsf_resp_state *c = &o->st;
	__u32 nl, len = c->in_len;
	__u8 nx;

	if (b == '\n' || (b == '\r' && pos + 1 < len && etsf_sip_byte(buf, pos + 1) == '\n')) {
		nl = b == '\n' ? pos : pos + 1;
		nx = nl + 1 < len ? etsf_sip_byte(buf, nl + 1) : 0;
		if (!etsf_sip_is_ws(nx)) {
			/* end of the header: what goes at the end of its value */
			if (c->flags & ETSF_RF_TOPVIA) {
				c->flags &= ~ETSF_RF_TOPVIA;
				if (etsf_resp_put(o, c->recv, c->recv_len))
					return 1;
			}
			if (c->hdr == ETSF_RH_TO && (c->flags & ETSF_RF_ADDTAG)) {
				c->flags &= ~ETSF_RF_ADDTAG;
				if (etsf_resp_put(o, c->tag, c->tag_len))
					return 1;
			}
			c->state = ETSF_RS_LINE;
		}
		if (b == '\r' && etsf_resp_out(o, '\r'))
			return 1;
		if (etsf_resp_out(o, '\n'))
			return 1;
		c->pos = nl + 1;
		return 0;
	}
	if (c->flags & ETSF_RF_TOPVIA) {
		if (b == ',') {
			c->flags &= ~ETSF_RF_TOPVIA;
			if (etsf_resp_put(o, c->recv, c->recv_len))
				return 1;
		} else if ((b | 0x20) == 't' && pos >= 5 && etsf_resp_bare_rport(buf, pos - 5, len) &&
			   etsf_sip_byte(buf, pos - 5) == ';') {
			/* the last byte of a bare ";rport": the value follows it */
			if (etsf_resp_out(o, b) || etsf_resp_put(o, c->port, c->port_len))
				return 1;
			c->pos = pos + 1;
			return 0;
		}
	}
	if (etsf_resp_out(o, b))
		return 1;
	c->pos = pos + 1;
	return 0;
}

#define ETSF_RESP_ONES  0x0101010101010101ULL
#define ETSF_RESP_HIGHS 0x8080808080808080ULL

/* non-zero when one of the 8 bytes of w equals c (exact SWAR zero-byte test) */
static __always_inline __u64 etsf_resp_has(__u64 w, __u8 c)
{
	__u64 x = w ^ (ETSF_RESP_ONES * c);

	return ~(((x & ~ETSF_RESP_HIGHS) + ~ETSF_RESP_HIGHS) | x) & ETSF_RESP_HIGHS;
}

/* a masked output index (the asm keeps clang from dropping the mask after a bounds check) */
static __always_inline __u32 etsf_resp_idx(__u32 out)
{
	asm volatile("" : "+r"(out));
	return out & ETSF_RESP_MASK;
}

/* the bytes of w a byte step must see: line ends, and in the top Via ',' and 't'/'T' */
static __always_inline __u64 etsf_resp_stops(__u64 w, __u32 flags)
{
	__u64 m = etsf_resp_has(w, '\n') | etsf_resp_has(w, '\r');

	if (flags & ETSF_RF_TOPVIA)
		m |= etsf_resp_has(w, ',') | etsf_resp_has(w | ETSF_SIP_LOWER64, 't');
	return m;
}

#define ETSF_RESP_RUN_WORDS 4

/*
 * A run of up to ETSF_RESP_RUN_WORDS words of a header's bytes that need no
 * byte step (etsf_resp_stops): skipped, or copied word by word (the bytes of
 * the last word past the run are overwritten by what follows, or lie past
 * the end).  1 = done (pos, out moved), 0 = the byte at pos needs a byte step.
 */
static __always_inline int etsf_resp_run(struct etsf_resp *o, const __u8 *buf, __u32 pos, int copy)
{
	struct etsf_resp_state *c = &o->st;
	__u32 out = c->out, len = c->in_len, flags = c->flags, k = 0, n = 0;
	__u64 w, m;
	int i;

#pragma unroll
	for (i = 0; i < ETSF_RESP_RUN_WORDS; i++) {
		if (pos + 8 * i + 8 > len)
			break;
		if (copy && out + 8 * i + 8 > ETSF_RESP_MAX)
			break;
		w = etsf_sip_word(buf, pos + 8 * i);
		m = etsf_resp_stops(w, copy ? flags : 0);
		k = m ? etsf_sip_first_byte(m) : 8;
		if (copy)
			*(__u64 *)(o->buf + etsf_resp_idx(out + 8 * i)) = w;
		n = 8 * i + k;
		if (k < 8)
			break;
	}
	if (!n)
		return 0;
	if (copy)
		c->out = out + n;
	c->pos = pos + n;
	return 1;
}

/*
 * The bytes of a Max-Forwards value up to the line end, a word at a time:
 * any non-zero digit makes it > 0.  1 = done, 0 = byte step.
 */
static __always_inline int etsf_resp_maxfwd(struct etsf_resp_state *c, const __u8 *buf, __u32 pos)
{
	__u64 w, m;
	__u32 k;
	__u8 b;
	int i;

	if (pos + 8 > c->in_len)
		return 0;
	w = etsf_sip_word(buf, pos);
	m = etsf_resp_stops(w, 0);
	k = m ? etsf_sip_first_byte(m) : 8;
	if (!k)
		return 0;
#pragma unroll
	for (i = 0; i < 8; i++) {
		b = (__u8)(w >> (8 * i));
		if ((__u32)i < k && b >= '1' && b <= '9')
			c->flags &= ~ETSF_RF_MFZERO;
	}
	c->pos = pos + k;
	return 1;
}

/* request-line bytes etsf_resp_uri() must see: SP, LF and, inside a sip: URI, its delimiters */
static __always_inline int etsf_resp_rline_run(struct etsf_resp_state *c, const __u8 *buf, __u32 pos)
{
	__u64 w, m;
	__u32 k;

	if (pos + 8 > c->in_len)
		return 0;
	w = etsf_sip_word(buf, pos);
	m = etsf_resp_has(w, '\n');
	if (!(c->u_flags & ETSF_RU_DONE)) {
		m |= etsf_resp_has(w, ' ');
		if (c->u_start)
			m |= etsf_resp_has(w, '[') | etsf_resp_has(w, ']') | etsf_resp_has(w, '@') |
			     etsf_resp_has(w, ':') | etsf_resp_has(w, ';') | etsf_resp_has(w, '?');
	}
	k = m ? etsf_sip_first_byte(m) : 8;
	if (!k)
		return 0;
	c->pos = pos + k;
	return 1;
}

/*
 * One byte of the request line: where the Request-URI's user info and host
 * are.  The host ends at ':' ';' '?' or the SP (not inside [...]); an '@'
 * starts it again after the user info.
 */
static __always_inline void etsf_resp_uri(struct etsf_resp_state *c, const __u8 *buf, __u32 pos,
					  __u8 b)
{
	__u32 uf = c->u_flags;

	if (uf & ETSF_RU_DONE)
		return;
	if (b == ' ') {
		if (uf & ETSF_RU_SP) {
			c->u_flags = uf | ETSF_RU_DONE;
			if (!c->u_hend)
				c->u_hend = pos;
			return;
		}
		c->u_flags = uf | ETSF_RU_SP;
		if (pos + 5 < c->in_len &&
		    ((etsf_sip_word(buf, pos + 1) | ETSF_SIP_LOWER64) & etsf_sip_mask(4)) ==
		    ETSF_SIP_C8('s', 'i', 'p', ':', 0, 0, 0, 0))
			c->u_start = pos + 5;
		return;
	}
	if (!c->u_start || pos < c->u_start)
		return;
	if (b == '[') {
		c->u_flags = uf | ETSF_RU_BRACKET;
	} else if (b == ']') {
		c->u_flags = uf & ~ETSF_RU_BRACKET;
	} else if (b == '@') {
		if (!c->u_at) {
			c->u_at = pos;
			c->u_hend = 0;
		}
	} else if ((b == ':' || b == ';' || b == '?') && !(uf & ETSF_RU_BRACKET)) {
		if (!c->u_hend)
			c->u_hend = pos;
		if (b == ':' && !c->u_at && !c->u_uend)
			c->u_uend = pos;
	}
}

/* one step: 1 = stop */
static __always_inline int etsf_resp_step(struct etsf_resp *o, const __u8 *buf)
{
	struct etsf_resp_state *c = &o->st;
	__u32 pos = c->pos, h;
	__u8 b;

	if (c->flags & (ETSF_RF_END | ETSF_RF_FAIL))
		return 1;
	if (pos >= c->in_len)
		return 1;
	b = etsf_sip_byte(buf, pos);
	switch (c->state) {
	case ETSF_RS_RLINE:
		if (etsf_resp_rline_run(c, buf, pos))
			return 0;
		c->pos = pos + 1;
		if (b == '\n')
			c->state = ETSF_RS_LINE;
		else
			etsf_resp_uri(c, buf, pos, b);
		return 0;
	case ETSF_RS_LINE:
		if (b == '\r' || b == '\n') {
			c->flags |= ETSF_RF_END;
			return 1;
		}
		if (etsf_sip_is_ws(b)) {
			/* folded line of the previous header */
			h = c->hdr;
			c->state = h && h <= ETSF_RH_CSEQ ? ETSF_RS_COPY : ETSF_RS_SKIP;
			return 0;
		}
		h = etsf_resp_hdr(buf, pos, c->in_len);
		c->hdr = h;
		if (h == ETSF_RH_VIA && !(c->flags & ETSF_RF_VIADONE))
			c->flags |= ETSF_RF_TOPVIA | ETSF_RF_VIADONE;
		else if (h == ETSF_RH_REQUIRE)
			c->flags |= ETSF_RF_REQUIRE;
		else if (h == ETSF_RH_MAXFWD)
			c->flags |= ETSF_RF_MFZERO;
		if (h && h <= ETSF_RH_CSEQ) {
			c->state = ETSF_RS_COPY;
			return 0;
		}
		c->state = ETSF_RS_SKIP;
		/* a skipped line's first run in the same step (Max-Forwards: its digits count) */
		if (h != ETSF_RH_MAXFWD)
			etsf_resp_run(o, buf, pos, 0);
		return 0;
	case ETSF_RS_SKIP:
		if (c->hdr == ETSF_RH_MAXFWD) {
			if (etsf_resp_maxfwd(c, buf, pos))
				return 0;
			/* byte by byte near the end: any non-zero digit makes it > 0 */
			if (b >= '1' && b <= '9')
				c->flags &= ~ETSF_RF_MFZERO;
		} else if (etsf_resp_run(o, buf, pos, 0)) {
			return 0;
		}
		if (b == '\r' && pos + 1 < c->in_len && etsf_sip_byte(buf, pos + 1) == '\n') {
			c->pos = pos + 2;
			c->state = ETSF_RS_LINE;
			return 0;
		}
		c->pos = pos + 1;
		if (b == '\n')
			c->state = ETSF_RS_LINE;
		return 0;
	case ETSF_RS_COPY:
		if (etsf_resp_run(o, buf, pos, 1))
			return 0;
		return etsf_resp_copy(o, buf, pos, b);
	}
	return 1;
}

struct etsf_resp_ctx {
	struct etsf_resp *o;
	struct etsf_scratch *s;
};

#define ETSF_RESP_STEPS_PER_CALL 1
#define ETSF_RESP_CALLS ((2 * ETSF_PARSE_BYTES + 16) / ETSF_RESP_STEPS_PER_CALL + 1)

static long etsf_resp_steps(__u64 idx, void *ctx)
{
	struct etsf_resp_ctx *rc = ctx;
	struct etsf_resp *o = rc->o;
	struct etsf_scratch *s = rc->s;
	int i;

	if (!o || !s)
		return 1;
#pragma unroll
	for (i = 0; i < ETSF_RESP_STEPS_PER_CALL; i++) {
		asm volatile("" ::: "memory");
		if (etsf_resp_step(o, s->buf))
			return 1;
	}
	return 0;
}

/* the extra header lines: up to ETSF_KA_HDR_MAX bytes in 64-byte puts */
static __always_inline int etsf_resp_extra(struct etsf_resp *o, const struct etsf_ka_cfg *x)
{
	__u32 len = x->hdr_len, off, n;
	int i;

	if (len > ETSF_KA_HDR_MAX)
		return 1;
#pragma unroll
	for (i = 0; i < ETSF_KA_HDR_MAX / ETSF_RESP_STR; i++) {
		off = i * ETSF_RESP_STR;
		if (off >= len)
			break;
		n = len - off;
		if (n > ETSF_RESP_STR)
			n = ETSF_RESP_STR;
		/* reload st.out: the verifier then bounds it at each put */
		asm volatile("" ::: "memory");
		if (etsf_resp_put(o, x->hdr + off, n))
			return 1;
	}
	return 0;
}

/*
 * Build "SIP/2.0 503 Service Unavailable" (code 503, with Retry-After from
 * etsf_ctl) or "SIP/2.0 200 OK" (any other code, with the header lines of x
 * when not NULL) for the request in the parse scratch into etsf_resp.
 * Returns 0 with the response in etsf_resp (o->st.out bytes in o->buf), -1
 * when it does not fit.
 */
__attribute__((noinline)) int etsf_resp_build(const struct etsf_pkt *p,
					       const struct etsf_sip_result *r,
					       const struct etsf_ctl *ctl, __u32 code,
					       const struct etsf_ka_cfg *x)
{
	struct etsf_resp_ctx rc = {};
	struct etsf_resp *o;
	__u32 zero = 0;

	if (!p || !r || !ctl)
		return -1;
	rc.s = bpf_map_lookup_elem(&etsf_scratch, &zero);
	o = bpf_map_lookup_elem(&etsf_resp, &zero);
	if (!rc.s || !o)
		return -1;
	rc.o = o;
	o->st.in_len = p->plen < ETSF_PARSE_BYTES ? p->plen : ETSF_PARSE_BYTES;
	o->st.pos = 0;
	o->st.state = ETSF_RS_RLINE;
	o->st.hdr = ETSF_RH_NONE;
	o->st.flags = r->has_to_tag ? 0 : ETSF_RF_ADDTAG;
	o->st.u_start = 0;
	o->st.u_at = 0;
	o->st.u_uend = 0;
	o->st.u_hend = 0;
	o->st.u_flags = 0;
	etsf_resp_prepare(&o->st, p, r, ctl, code == 503 ? ctl->retry_after_s : 0);
	o->st.out = 0;
	/* etsf_resp_ch masks to ETSF_RESP_STR: the status line must fit in it */
	_Static_assert(sizeof(ETSF_RESP_STATUS_503) - 1 <= ETSF_RESP_STR, "status line too long");
	if (code == 503) {
		ETSF_RESP_LIT(o->buf, &o->st.out, ETSF_RESP_STATUS_503);
	} else {
		_Static_assert(sizeof(ETSF_RESP_STATUS_200) - 1 == 16, "200 status line: two words");
		*(__u64 *)o->buf = ETSF_SIP_C8('S', 'I', 'P', '/', '2', '.', '0', ' ');
		*(__u64 *)(o->buf + 8) = ETSF_SIP_C8('2', '0', '0', ' ', 'O', 'K', '\r', '\n');
		o->st.out = 16;
	}

	bpf_loop(ETSF_RESP_CALLS, etsf_resp_steps, &rc, 0);

	if ((o->st.flags & (ETSF_RF_END | ETSF_RF_FAIL)) != ETSF_RF_END)
		return -1;
	if (x && etsf_resp_extra(o, x))
		return -1;
	if (etsf_resp_put(o, o->st.trail, o->st.trail_len))
		return -1;
	return 0;
}

/*
 * The response in etsf_resp, or NULL when it does not fit.  The builder is a
 * global function: the verifier checks it once, on its own, not once per path
 * of each caller that answers (it is most of an answering program's code).
 */
static __always_inline struct etsf_resp *etsf_respond(const struct etsf_pkt *p,
						      const struct etsf_sip_result *r,
						      const struct etsf_ctl *ctl, __u32 code,
						      const struct etsf_ka_cfg *x)
{
	__u32 zero = 0;

	if (etsf_resp_build(p, r, ctl, code, x))
		return NULL;
	return bpf_map_lookup_elem(&etsf_resp, &zero);
}

/* ones' complement sum of buf[0..n) (n <= ETSF_RESP_MAX), zero-padded to 4 */
static __always_inline __s64 etsf_resp_csum(struct etsf_resp *o, __u32 n, __u32 seed)
{
	__u32 padded, off, sz;
	__s64 s = seed;
	int i;

	if (n > ETSF_RESP_MAX)
		return -1;
#pragma unroll
	for (i = 0; i < 4; i++)
		o->buf[(n + i) & ETSF_RESP_MASK] = 0;
	padded = (n + 3) & ~3u;
#pragma unroll
	for (i = 0; i < (ETSF_RESP_MAX + 511) / 512; i++) {
		off = i * 512;
		if (off >= padded)
			break;
		sz = padded - off;
		if (sz > 512)
			sz = 512;
		asm volatile("" : "+r"(sz));
		sz &= 0x3fc;    /* keeps the bound through the 32-bit subtraction */
		s = bpf_csum_diff(NULL, 0, (__be32 *)(o->buf + off), sz, (__u32)s);
		if (s < 0)
			return -1;
	}
	return s;
}

static __always_inline __u16 etsf_csum_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/*
 * The request's IP header turned into the answer's (both answer builders:
 * XDP in the frame, TC in a copy of the headers): addresses swapped, length
 * for a UDP datagram of ulen bytes, no fragment, TTL 64, checksum.  -1 on a
 * helper failure.
 */
static __always_inline int etsf_resp_ip4(struct iphdr *ip, __u32 ulen)
{
	__be32 a = ip->saddr;
	__s64 sum;

	ip->saddr = ip->daddr;
	ip->daddr = a;
	ip->tot_len = bpf_htons(sizeof(*ip) + ulen);
	ip->id = 0;
	ip->frag_off = 0;
	ip->ttl = 64;
	ip->check = 0;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)ip, sizeof(*ip), 0);
	if (sum < 0)
		return -1;
	ip->check = etsf_csum_fold(sum);
	return 0;
}

/* the same for IPv6 (no extension headers): addresses swapped, length, hop limit 64 */
static __always_inline void etsf_resp_ip6(struct ipv6hdr *ip6, __u32 ulen)
{
	struct in6_addr a = ip6->saddr;

	ip6->saddr = ip6->daddr;
	ip6->daddr = a;
	ip6->payload_len = bpf_htons(ulen);
	ip6->hop_limit = 64;
}

#endif /* ETSF_RESPOND_H */
