/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_oc.h - RFC 7339 loss-based overload control advertised at TC egress.
 *
 * A SIP response over UDP leaving the node whose top Via carries the `oc`
 * parameter (the client's own Via: the client said it takes part) gets, in
 * the first value of that Via, the parameter replaced by
 *   oc=<reduction>;oc-validity=<ms>;oc-seq=<s>.<ms>;oc-algo="loss"
 * from etsf_ctl (RFC 7339 sections 5.2 and 9: oc-seq is 1*12DIGIT "." 1*5DIGIT,
 * written here as etsf_ctl.oc_seq / 1000 "." the remainder as 3 digits).
 * Every oc-validity / oc-seq / oc-algo already in that Via value (from an
 * earlier hop or the client's own oc-algo list) is removed; the new string
 * takes the place of the first `oc`; everything else is kept byte for byte.
 *
 * The payload in the parse scratch (the whole message, at most
 * ETSF_PARSE_BYTES) is scanned up to the end of the top Via's first value
 * by a byte-wise state machine under bpf_loop(); the rewritten value is
 * built into etsf_oc_buf with the bytes before it and after it loaded from
 * the packet.  The packet is then resized (bpf_skb_change_tail), the payload
 * stored, and IP total length / IPv6 payload length, UDP length and the UDP
 * checksum fixed (checksum by difference of the old and new payload sums,
 * plus the length in the pseudo header and the UDP header, so a checksum
 * the device completes later stays right too).
 *
 * Never dropped: whatever cannot be rewritten (longer than ETSF_OC_MAX or
 * the device MTU, a folded top Via, bytes after the UDP payload, a helper
 * failure) leaves the packet as it was and is counted in etsf_oc_stats
 * under enum etsf_oc_result.  Not recognised (left untouched, not counted):
 * whitespace between ';' and the parameter name.
 */
#ifndef ETSF_OC_H
#define ETSF_OC_H

#include "etsf.h"
#include "etsf_maps.h"
#include "etsf_parse.h"
#include "etsf_sip_parse.h"

#define ETSF_OC_MAX       ETSF_PARSE_BYTES  /* rewritten payload at most     */
#define ETSF_OC_MASK      (ETSF_OC_MAX - 1)
#define ETSF_OC_INS       128               /* the inserted string at most   */
#define ETSF_OC_OUT_BYTES (2 * ETSF_OC_MAX + ETSF_OC_INS)

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ETSF_OC_RESULTS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} etsf_oc_stats SEC(".maps");

/* scanner states */
enum {
	ETSF_OC_S_SLINE = 0,    /* status line                               */
	ETSF_OC_S_LSTART,       /* at the start of a header line             */
	ETSF_OC_S_SKIP,         /* inside a header that is not the top Via   */
	ETSF_OC_S_NAME,         /* Via name, up to its ':'                   */
	ETSF_OC_S_VALUE,        /* the first value of the top Via            */
};

/* scanner outcome */
enum {
	ETSF_OC_O_RUN = 0,
	ETSF_OC_O_NONE,         /* no Via, or no oc in its first value       */
	ETSF_OC_O_REWRITE,      /* oc found: the value is rebuilt in out     */
	ETSF_OC_O_LONG,         /* does not fit                              */
	ETSF_OC_O_UNSUP,        /* folded or unterminated top Via            */
};

#define ETSF_OC_F_QUOTE 0x1u    /* inside a quoted string                */
#define ETSF_OC_F_ESC   0x2u    /* after a backslash in a quoted string  */
#define ETSF_OC_F_DROP  0x4u    /* inside an oc* parameter: not copied   */
#define ETSF_OC_F_OC    0x8u    /* the new oc string has been written    */

/* oc* parameter names */
enum {
	ETSF_OC_P_OTHER = 0,
	ETSF_OC_P_OC,
	ETSF_OC_P_REST,         /* oc-validity, oc-seq, oc-algo              */
};

struct etsf_oc_state {
	__u32 len;              /* payload bytes in the parse scratch        */
	__u32 pos;              /* next payload byte                         */
	__u32 state;
	__u32 outcome;
	__u32 flags;
	__u32 out;              /* next byte of the new payload              */
	__u32 val_start;        /* first byte of the top Via value           */
	__u32 val_end;          /* its end (',' or the line end)             */
	__u32 ins_len;
	__u32 _pad;
};

struct etsf_oc_buf {
	struct etsf_oc_state st;
	__u8 ins[ETSF_OC_INS];  /* ";oc=...;oc-algo=\"loss\"" (8-byte aligned) */
	/* the new payload; + room for a tail load past a bounded offset */
	__u8 out[ETSF_OC_OUT_BYTES + 8];
};

/* not pinned: private per object, no state across packets */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct etsf_oc_buf);
} etsf_oc_buf SEC(".maps");

static __always_inline void etsf_oc_count(__u32 result)
{
	__u64 *v = bpf_map_lookup_elem(&etsf_oc_stats, &result);

	if (v)
		*v += 1;
}

/* *n in the map value: the verifier sees one unknown index, not one per path */
static __always_inline void etsf_oc_ch(__u8 *dst, __u32 *n, __u8 b)
{
	__u32 v;

	asm volatile("" ::: "memory");
	v = *n;
	dst[v & (ETSF_OC_INS - 1)] = b;
	*n = v + 1;
}

/* decimal of v < 10^digits, no leading zeros unless pad */
static __always_inline void etsf_oc_dec(__u8 *dst, __u32 *n, __u64 v, int pad)
{
	__u8 d[12];
	int i, k = pad - 1;

#pragma unroll
	for (i = 0; i < 12; i++) {
		d[i] = '0' + v % 10;
		v /= 10;
		if (v && i + 1 > k)
			k = i + 1;
	}
#pragma unroll
	for (i = 11; i >= 0; i--)
		if (i <= k)
			etsf_oc_ch(dst, n, d[i]);
}

#define ETSF_OC_LIT(dst, n, lit)                                         \
	do {                                                             \
		int __i;                                                 \
		_Pragma("unroll")                                        \
		for (__i = 0; __i < (int)sizeof(lit) - 1; __i++)         \
			etsf_oc_ch(dst, n, (lit)[__i]);                  \
	} while (0)

/* the parameters this node advertises, from the control block */
static __always_inline void etsf_oc_prepare(struct etsf_oc_buf *o, const struct etsf_ctl *ctl)
{
	__u32 *n = &o->st.ins_len;
	__u32 red = ctl->oc_reduction_pct;
	__u64 seq = ctl->oc_seq;

	*n = 0;
	ETSF_OC_LIT(o->ins, n, ";oc=");
	etsf_oc_dec(o->ins, n, red > 100 ? 100 : red, 1);
	ETSF_OC_LIT(o->ins, n, ";oc-validity=");
	etsf_oc_dec(o->ins, n, ctl->oc_validity_ms, 1);
	ETSF_OC_LIT(o->ins, n, ";oc-seq=");
	/* at most 12 digits before the point (RFC 7339 section 9) */
	etsf_oc_dec(o->ins, n, (seq / 1000) % 1000000000000ULL, 1);
	etsf_oc_ch(o->ins, n, '.');
	etsf_oc_dec(o->ins, n, seq % 1000, 3);
	ETSF_OC_LIT(o->ins, n, ";oc-algo=\"loss\"");
}

static __always_inline int etsf_oc_delim(__u8 b)
{
	return b == '=' || b == ';' || b == ',' || b == '\r' || b == '\n' || b == ' ' || b == '\t';
}

/*
 * n name bytes at q equal to lc (lower case), letters compared without
 * case (fold: 0x20 at the letter positions), then a delimiter or the end.
 */
static __always_inline int etsf_oc_name(const __u8 *buf, __u32 q, __u32 len, __u32 n, __u64 lc,
					__u64 fold)
{
	if (q + n > len || ((etsf_sip_word(buf, q) | fold) & etsf_sip_mask(n)) != lc)
		return 0;
	return q + n == len || etsf_oc_delim(etsf_sip_byte(buf, q + n));
}

#define ETSF_OC_FOLD2 ETSF_SIP_C8(0x20, 0x20, 0, 0, 0, 0, 0, 0)
#define ETSF_OC_FOLD8 ETSF_SIP_C8(0x20, 0x20, 0, 0x20, 0x20, 0x20, 0x20, 0x20)

/* the parameter whose name starts at q (after its ';') */
static __always_inline __u32 etsf_oc_param(const __u8 *buf, __u32 q, __u32 len)
{
	if (etsf_oc_name(buf, q, len, 2, ETSF_SIP_C8('o', 'c', 0, 0, 0, 0, 0, 0), ETSF_OC_FOLD2))
		return ETSF_OC_P_OC;
	if (etsf_oc_name(buf, q, len, 6, ETSF_SIP_C8('o', 'c', '-', 's', 'e', 'q', 0, 0),
			 ETSF_OC_FOLD8) ||
	    etsf_oc_name(buf, q, len, 7, ETSF_SIP_C8('o', 'c', '-', 'a', 'l', 'g', 'o', 0),
			 ETSF_OC_FOLD8))
		return ETSF_OC_P_REST;
	/* "oc-valid" + "ity" */
	if (q + 11 <= len &&
	    (etsf_sip_word(buf, q) | ETSF_OC_FOLD8) ==
	    ETSF_SIP_C8('o', 'c', '-', 'v', 'a', 'l', 'i', 'd') &&
	    etsf_oc_name(buf, q + 8, len, 3, ETSF_SIP_C8('i', 't', 'y', 0, 0, 0, 0, 0),
			 ETSF_SIP_C8(0x20, 0x20, 0x20, 0, 0, 0, 0, 0)))
		return ETSF_OC_P_REST;
	return ETSF_OC_P_OTHER;
}

/* Via or v at the start of a line? */
static __always_inline int etsf_oc_is_via(const __u8 *buf, __u32 pos, __u32 len)
{
	__u64 lw = etsf_sip_word(buf, pos) | ETSF_SIP_LOWER64;

	if (pos + 1 < len && etsf_sip_name_end(etsf_sip_byte(buf, pos + 1)) && (lw & 0xff) == 'v')
		return 1;
	return pos + 3 < len && etsf_sip_name_end(etsf_sip_byte(buf, pos + 3)) &&
	       (lw & etsf_sip_mask(3)) == ETSF_SIP_C8('v', 'i', 'a', 0, 0, 0, 0, 0);
}

/* one byte to the new payload; 1 = does not fit */
static __always_inline int etsf_oc_out(struct etsf_oc_buf *o, __u8 b)
{
	__u32 out = o->st.out;

	if (out >= ETSF_OC_MAX) {
		o->st.outcome = ETSF_OC_O_LONG;
		return 1;
	}
	o->out[out & ETSF_OC_MASK] = b;
	o->st.out = out + 1;
	return 0;
}

/* the prepared string: always ETSF_OC_INS bytes copied, the length advanced by ins_len */
static __always_inline int etsf_oc_put_ins(struct etsf_oc_buf *o)
{
	const __u64 *s = (const __u64 *)o->ins;
	__u32 out = o->st.out, len = o->st.ins_len;
	__u64 *d;
	int i;

	if (len > ETSF_OC_INS || out + len > ETSF_OC_MAX) {
		o->st.outcome = ETSF_OC_O_LONG;
		return 1;
	}
	d = (__u64 *)(o->out + (out & ETSF_OC_MASK));
#pragma unroll
	for (i = 0; i < ETSF_OC_INS / 8; i++)
		d[i] = s[i];
	o->st.out = out + len;
	return 0;
}

#define ETSF_OC_ONES  0x0101010101010101ULL
#define ETSF_OC_HIGHS 0x8080808080808080ULL

/* non-zero when one of the 8 bytes of w equals c */
static __always_inline __u64 etsf_oc_has(__u64 w, __u8 c)
{
	__u64 x = w ^ (ETSF_OC_ONES * c);

	return ~(((x & ~ETSF_OC_HIGHS) + ~ETSF_OC_HIGHS) | x) & ETSF_OC_HIGHS;
}

/* 8 plain bytes at once (skipped, or copied unless dropped); 1 = done */
static __always_inline int etsf_oc_word(struct etsf_oc_buf *o, const __u8 *buf, __u32 pos, int value)
{
	struct etsf_oc_state *c = &o->st;
	__u32 out = c->out;
	__u64 w;

	if (pos + 8 > c->len)
		return 0;
	w = etsf_sip_word(buf, pos);
	if (etsf_oc_has(w, '\n') || etsf_oc_has(w, '\r'))
		return 0;
	if (value) {
		if (c->flags & (ETSF_OC_F_QUOTE | ETSF_OC_F_ESC))
			return 0;
		if (etsf_oc_has(w, ';') || etsf_oc_has(w, ',') || etsf_oc_has(w, '"'))
			return 0;
		if (!(c->flags & ETSF_OC_F_DROP)) {
			if (out + 8 > ETSF_OC_MAX)
				return 0;
			*(__u64 *)(o->out + (out & ETSF_OC_MASK)) = w;
			c->out = out + 8;
		}
	}
	c->pos = pos + 8;
	return 1;
}

/* one byte of the top Via value; 1 = stop */
static __always_inline int etsf_oc_value(struct etsf_oc_buf *o, const __u8 *buf, __u32 pos, __u8 b)
{
	struct etsf_oc_state *c = &o->st;
	__u32 nl, kind;
	__u8 nx;

	if (c->flags & ETSF_OC_F_ESC) {
		c->flags &= ~ETSF_OC_F_ESC;
	} else if (b == '\r' || b == '\n') {
		/* end of the line: a folded continuation is not rewritten */
		nl = (b == '\r' && pos + 1 < c->len && etsf_sip_byte(buf, pos + 1) == '\n') ? pos + 1 : pos;
		nx = nl + 1 < c->len ? etsf_sip_byte(buf, nl + 1) : 0;
		if (nl + 1 >= c->len || etsf_sip_is_ws(nx) || (c->flags & ETSF_OC_F_QUOTE)) {
			c->outcome = ETSF_OC_O_UNSUP;
			return 1;
		}
		c->val_end = pos;
		c->outcome = (c->flags & ETSF_OC_F_OC) ? ETSF_OC_O_REWRITE : ETSF_OC_O_NONE;
		return 1;
	} else if (c->flags & ETSF_OC_F_QUOTE) {
		if (b == '\\')
			c->flags |= ETSF_OC_F_ESC;
		else if (b == '"')
			c->flags &= ~ETSF_OC_F_QUOTE;
	} else if (b == '"') {
		c->flags |= ETSF_OC_F_QUOTE;
	} else if (b == ',') {
		c->val_end = pos;
		c->outcome = (c->flags & ETSF_OC_F_OC) ? ETSF_OC_O_REWRITE : ETSF_OC_O_NONE;
		return 1;
	} else if (b == ';') {
		kind = etsf_oc_param(buf, pos + 1, c->len);
		c->pos = pos + 1;
		if (kind == ETSF_OC_P_OTHER) {
			c->flags &= ~ETSF_OC_F_DROP;
			return etsf_oc_out(o, b);
		}
		c->flags |= ETSF_OC_F_DROP;
		if (kind == ETSF_OC_P_OC && !(c->flags & ETSF_OC_F_OC)) {
			c->flags |= ETSF_OC_F_OC;
			return etsf_oc_put_ins(o);
		}
		return 0;
	}
	c->pos = pos + 1;
	if (c->flags & ETSF_OC_F_DROP)
		return 0;
	return etsf_oc_out(o, b);
}

/* one step of the scan; 1 = stop */
static __always_inline int etsf_oc_step(struct etsf_oc_buf *o, const __u8 *buf)
{
	struct etsf_oc_state *c = &o->st;
	__u32 pos = c->pos;
	__u8 b;

	if (c->outcome != ETSF_OC_O_RUN)
		return 1;
	if (pos >= c->len) {
		/* the header block or the top Via does not end in the scratch */
		c->outcome = c->state == ETSF_OC_S_VALUE ? ETSF_OC_O_UNSUP : ETSF_OC_O_NONE;
		return 1;
	}
	b = etsf_sip_byte(buf, pos);
	switch (c->state) {
	case ETSF_OC_S_SLINE:
	case ETSF_OC_S_SKIP:
		if (etsf_oc_word(o, buf, pos, 0))
			return 0;
		c->pos = pos + 1;
		if (b == '\n')
			c->state = ETSF_OC_S_LSTART;
		return 0;
	case ETSF_OC_S_LSTART:
		if (b == '\r' || b == '\n') {
			c->outcome = ETSF_OC_O_NONE;    /* no Via at all */
			return 1;
		}
		c->state = etsf_oc_is_via(buf, pos, c->len) ? ETSF_OC_S_NAME : ETSF_OC_S_SKIP;
		return 0;
	case ETSF_OC_S_NAME:
		c->pos = pos + 1;
		if (b == ':') {
			c->val_start = pos + 1;
			c->out = pos + 1;
			c->state = ETSF_OC_S_VALUE;
		} else if (b == '\r' || b == '\n') {
			c->outcome = ETSF_OC_O_UNSUP;
			return 1;
		}
		return 0;
	case ETSF_OC_S_VALUE:
		if (etsf_oc_word(o, buf, pos, 1))
			return 0;
		return etsf_oc_value(o, buf, pos, b);
	}
	return 1;
}

struct etsf_oc_ctx {
	struct etsf_oc_buf *o;
	struct etsf_scratch *s;
};

#define ETSF_OC_STEPS_PER_CALL 1
#define ETSF_OC_CALLS ((ETSF_PARSE_BYTES + 16) / ETSF_OC_STEPS_PER_CALL + 1)

static long etsf_oc_steps(__u64 idx, void *ctx)
{
	struct etsf_oc_ctx *oc = ctx;
	struct etsf_oc_buf *o = oc->o;
	struct etsf_scratch *s = oc->s;
	int i;

	if (!o || !s)
		return 1;
#pragma unroll
	for (i = 0; i < ETSF_OC_STEPS_PER_CALL; i++) {
		asm volatile("" ::: "memory");
		if (etsf_oc_step(o, s->buf))
			return 1;
	}
	return 0;
}

/* ones' complement sum of buf[0..n) (n <= ETSF_OC_MAX; 4 zero bytes at n are written) */
static __always_inline __s64 etsf_oc_sum(__u8 *buf, __u32 n)
{
	__u64 padded, off, sz;
	__s64 s = 0;
	int i;

	asm volatile("" : "+r"(n));
	if (n > ETSF_OC_MAX)
		return -1;
	*(__u32 *)(buf + n) = 0;        /* unaligned: fine for BPF map values */
	padded = (n + 3) & ~3u;
#pragma unroll
	for (i = 0; i < ETSF_OC_MAX / 512; i++) {
		off = i * 512;
		if (off >= padded)
			break;
		/* 64-bit: no zero-extended copy for the verifier to lose the bound on */
		sz = padded - off;
		asm volatile("" : "+r"(sz));
		if (sz > 512)
			sz = 512;
		s = bpf_csum_diff(NULL, 0, (__be32 *)(buf + off), sz, (__u32)s);
		if (s < 0)
			return -1;
	}
	return s;
}

/* n, known to be in [1, ETSF_OC_MAX], with bounds the verifier sees */
static __always_inline __u32 etsf_oc_len(__u32 n)
{
	n -= 1;
	asm volatile("" : "+r"(n));
	n &= ETSF_OC_MASK;
	return n + 1;
}

/* a 16-bit length field at off: from old to new, optionally fixing an IPv4 header checksum */
static __always_inline int etsf_oc_len16(struct __sk_buff *skb, __u32 off, __u16 oldv, __u16 newv,
					 __s64 l3csum)
{
	__be16 o = bpf_htons(oldv), n = bpf_htons(newv);

	if (l3csum >= 0 && bpf_l3_csum_replace(skb, (__u32)l3csum, o, n, 2))
		return -1;
	return bpf_skb_store_bytes(skb, off, &n, 2, 0) ? -1 : 0;
}

/*
 * The RFC 7339 rewrite of a UDP SIP response whose payload is in the parse
 * scratch.  Returns the enum etsf_oc_result to count, or -1 when the top Via
 * carries no oc (nothing done, nothing counted).  A global function: the
 * verifier checks it once, not once per state of the caller.
 */
__noinline int etsf_oc_rewrite_at(struct __sk_buff *skb, const struct etsf_ctl *ctl, __u64 offs,
				  __u32 plen, __u32 family)
{
	struct etsf_oc_ctx oc = {};
	struct etsf_oc_buf *o;
	struct etsf_oc_state *c;
	__u32 zero = 0, newlen, tail, head, oend, csum_off, mtu = 0;
	__u16 ulen, iplen;
	__s64 sold, snew;
	__u32 l3off = offs & 0xffff, l4off = (offs >> 16) & 0xffff, poff = offs >> 32;
	__s32 delta;
	__u64 diff;

	if (!skb || !ctl)
		return ETSF_OC_ERROR;
	csum_off = l4off + 6;
	oc.s = bpf_map_lookup_elem(&etsf_scratch, &zero);
	o = bpf_map_lookup_elem(&etsf_oc_buf, &zero);
	if (!oc.s || !o)
		return ETSF_OC_ERROR;
	oc.o = o;
	c = &o->st;
	c->len = plen < ETSF_PARSE_BYTES ? plen : ETSF_PARSE_BYTES;
	c->pos = 0;
	c->state = ETSF_OC_S_SLINE;
	c->outcome = ETSF_OC_O_RUN;
	c->flags = 0;
	c->out = 0;
	c->val_start = 0;
	c->val_end = 0;
	etsf_oc_prepare(o, ctl);

	bpf_loop(ETSF_OC_CALLS, etsf_oc_steps, &oc, 0);

	switch (c->outcome) {
	case ETSF_OC_O_REWRITE:
		break;
	case ETSF_OC_O_LONG:
		return ETSF_OC_TOO_LONG;
	case ETSF_OC_O_UNSUP:
		return ETSF_OC_UNSUPPORTED;
	default:
		return -1;
	}
	if (plen > ETSF_PARSE_BYTES)
		return ETSF_OC_TOO_LONG;
	/* the UDP payload must be the whole rest of the frame */
	if (poff + plen != skb->len)
		return ETSF_OC_UNSUPPORTED;
	if (bpf_skb_load_bytes(skb, l4off + 4, &ulen, 2))
		return ETSF_OC_ERROR;
	if (bpf_ntohs(ulen) != plen + 8)
		return ETSF_OC_UNSUPPORTED;

	head = c->val_start;
	oend = c->out;
	tail = plen - c->val_end;
	newlen = oend + tail;
	if (newlen > ETSF_OC_MAX)
		return ETSF_OC_TOO_LONG;
	if (head == 0 || head > ETSF_OC_MASK || oend > ETSF_OC_MASK || tail == 0 ||
	    tail > ETSF_OC_MAX)
		return ETSF_OC_ERROR;
	/* the checks above, in a form the verifier follows */
	head = etsf_oc_len(head);
	tail = etsf_oc_len(tail);
	newlen = etsf_oc_len(newlen);
	asm volatile("" : "+r"(oend));
	oend &= ETSF_OC_MASK;
	delta = (__s32)newlen - (__s32)plen;
	if (delta > 0 && bpf_check_mtu(skb, 0, &mtu, delta, 0))
		return ETSF_OC_TOO_LONG;

	/* the new payload: bytes before the Via value, the rebuilt value, the rest */
	if (bpf_skb_load_bytes(skb, poff, o->out, head) ||
	    bpf_skb_load_bytes(skb, poff + c->val_end, o->out + oend, tail))
		return ETSF_OC_ERROR;
	sold = etsf_oc_sum(oc.s->buf, plen);
	snew = etsf_oc_sum(o->out, newlen);
	if (sold < 0 || snew < 0)
		return ETSF_OC_ERROR;
	/* new - old in ones' complement arithmetic */
	diff = (__u64)(__u32)snew + (__u32)~(__u32)sold;
	diff = (diff & 0xffffffff) + (diff >> 32);

	/*
	 * Everything linear and writable first: once the length changed, a
	 * store that fails would leave a packet that is neither old nor new.
	 */
	if (bpf_skb_pull_data(skb, skb->len))
		return ETSF_OC_ERROR;
	if (delta && bpf_skb_change_tail(skb, skb->len + delta, 0))
		return ETSF_OC_ERROR;
	if (bpf_skb_store_bytes(skb, poff, o->out, newlen, 0))
		return ETSF_OC_ERROR;
	if (bpf_l4_csum_replace(skb, csum_off, 0, (__u32)diff, BPF_F_MARK_MANGLED_0))
		return ETSF_OC_ERROR;
	if (delta) {
		/* UDP length: in the UDP header and in the pseudo header */
		if (bpf_l4_csum_replace(skb, csum_off, bpf_htons(plen + 8), bpf_htons(newlen + 8),
					2 | BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0) ||
		    bpf_l4_csum_replace(skb, csum_off, bpf_htons(plen + 8), bpf_htons(newlen + 8),
					2 | BPF_F_MARK_MANGLED_0) ||
		    etsf_oc_len16(skb, l4off + 4, plen + 8, newlen + 8, -1))
			return ETSF_OC_ERROR;
		if (family == 4) {
			if (bpf_skb_load_bytes(skb, l3off + 2, &iplen, 2) ||
			    etsf_oc_len16(skb, l3off + 2, bpf_ntohs(iplen),
					  bpf_ntohs(iplen) + delta, l3off + 10))
				return ETSF_OC_ERROR;
		} else {
			if (bpf_skb_load_bytes(skb, l3off + 4, &iplen, 2) ||
			    etsf_oc_len16(skb, l3off + 4, bpf_ntohs(iplen),
					  bpf_ntohs(iplen) + delta, -1))
				return ETSF_OC_ERROR;
		}
	}
	return ETSF_OC_REWRITTEN;
}

/* the packet's offsets passed as scalars: a pointer to the caller's stack would cost it precision */
static __always_inline int etsf_oc_rewrite(struct __sk_buff *skb, const struct etsf_pkt *p,
					   const struct etsf_ctl *ctl)
{
	if (p->l4proto != IPPROTO_UDP)
		return -1;
	return etsf_oc_rewrite_at(skb, ctl, (__u64)p->poff << 32 | (p->l4off & 0xffff) << 16 |
				  (p->l3off & 0xffff), p->plen, p->family);
}

#endif /* ETSF_OC_H */
