/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_sip_parse.h - bounded SIP message parser shared by the XDP and TC programs.
 *
 * The caller copies at most ETSF_PARSE_BYTES of L4 payload into the per-CPU
 * scratch buffer (etsf_scratch) and calls etsf_sip_parse().  The parser never
 * touches packet memory: every read is buf[pos & ETSF_SCRATCH_MASK] (8-byte
 * word reads stay inside the ETSF_SCRATCH_SLACK tail), and every read is also
 * checked against the copied length.  The state machine runs under bpf_loop()
 * with a fixed budget (ETSF_PARSE_CALLS calls of ETSF_STEPS_PER_CALL steps;
 * every step consumes >= 1 byte except LWS/fold transitions, so the budget
 * covers ETSF_PARSE_BYTES), and the parser state lives in the per-CPU map
 * value, so the verifier checks one callback body that converges quickly.
 * A step runs a line's states in order (etsf_sip_step): a SWAR scan of up to
 * 96 bytes for the line end, the next header name, then its value (up to 48
 * bytes of Call-ID hashed, "CSeq: <digits> <method>" at once, the To value's
 * delimiters four words apart), and the request line of a known method is
 * matched before the loop.
 *
 * What is extracted: start line (request method or response status), Call-ID
 * (long "Call-ID" or compact "i"), CSeq number + method, To (or compact "t")
 * ";tag=" presence.  Header names are case-insensitive, whitespace around ':'
 * is optional, LWS folding (CRLF + SP/HT) between ':' and the value and inside
 * the To value is handled.  The Call-ID hash is FNV-1a 64 over the value with
 * leading and trailing LWS trimmed (the value ends at the first SP/HT/CR/LF:
 * a valid Call-ID contains no whitespace).
 */
#ifndef ETSF_SIP_PARSE_H
#define ETSF_SIP_PARSE_H

#include "etsf.h"
#include "etsf_maps.h"

/* parser states */
enum {
	ETSF_PS_METHOD = 0,  /* request-line method token                       */
	ETSF_PS_RLINE,       /* rest of the request line up to LF               */
	ETSF_PS_LINE,        /* at the start of a header line                   */
	ETSF_PS_SKIP,        /* skip to the end of the line                     */
	ETSF_PS_NAME_WS,     /* between header name and ':'                      */
	ETSF_PS_LWS,         /* LWS before a value (c->next = value state)      */
	ETSF_PS_LWS_NL,      /* LF seen inside LWS: folding or end of header    */
	ETSF_PS_CALLID,
	ETSF_PS_CSEQ_NUM,
	ETSF_PS_CSEQ_METHOD,
	ETSF_PS_TO,
	ETSF_PS_TO_NL,       /* LF inside the To value: folding or end          */
	ETSF_PS_TO_PARAM,    /* after ';' in the To value                        */
};

/* c->flags */
#define ETSF_PF_START   0x001u /* start line understood                          */
#define ETSF_PF_CALLID  0x002u
#define ETSF_PF_CSEQ    0x004u
#define ETSF_PF_TO      0x008u /* To header complete                             */
#define ETSF_PF_TOTAG   0x010u
#define ETSF_PF_END     0x020u /* empty line: end of the header block            */
#define ETSF_PF_NOTSIP  0x040u /* start line is not SIP                          */
#define ETSF_PF_QUOTE   0x080u /* To: inside "..."                               */
#define ETSF_PF_ANGLE   0x100u /* To: inside <...>                               */
#define ETSF_PF_ALL     (ETSF_PF_CALLID | ETSF_PF_CSEQ | ETSF_PF_TO)

struct etsf_sip_result {
	__u64 callid_hash;
	__u32 cseq;
	__u16 status;
	__u8  method;
	__u8  cseq_method;
	__u8  has_callid;
	__u8  has_to_tag;
	__u8  reason;       /* ETSF_R_OK or why the message was not classified */
	__u8  _pad;
};

/* little-endian 8-byte constant from characters */
#define ETSF_SIP_C8(a, b, c, d, e, f, g, h)                                        \
	((__u64)(a) | (__u64)(b) << 8 | (__u64)(c) << 16 | (__u64)(d) << 24 |   \
	 (__u64)(e) << 32 | (__u64)(f) << 40 | (__u64)(g) << 48 | (__u64)(h) << 56)
#define ETSF_SIP_LOWER64 0x2020202020202020ULL

/* the asm barrier keeps clang from dropping the mask when it "knows" the range
 * from a check the verifier tracked on another register */
static __always_inline __u32 etsf_sip_idx(__u32 pos)
{
	asm volatile("" : "+r"(pos));
	return pos & ETSF_SCRATCH_MASK;
}

static __always_inline __u8 etsf_sip_byte(const __u8 *buf, __u32 pos)
{
	return buf[etsf_sip_idx(pos)];
}

/* 8 bytes from pos (masked); bytes at or beyond len are stale, callers mask */
static __always_inline __u64 etsf_sip_word(const __u8 *buf, __u32 pos)
{
	return *(const __u64 *)(buf + etsf_sip_idx(pos));
}

static __always_inline __u64 etsf_sip_mask(__u32 n)
{
	return n >= 8 ? ~0ULL : ((1ULL << (n * 8)) - 1);
}

static __always_inline int etsf_sip_is_ws(__u8 b)
{
	return b == ' ' || b == '\t';
}

/* RFC 3261 token characters */
static __always_inline int etsf_sip_is_token(__u8 b)
{
	if ((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9'))
		return 1;
	switch (b) {
	case '-': case '.': case '!': case '%': case '*':
	case '_': case '+': case '`': case '\'': case '~':
		return 1;
	}
	return 0;
}

/*
 * method token of n bytes: w = its first 8 bytes (more are ignored), b8 its
 * ninth byte -> enum etsf_method (case-sensitive, RFC 3261).  A global
 * function: the comparisons are verified and emitted once for the request
 * line and the CSeq, not once per place that names a method.
 */
__attribute__((noinline)) __u32 etsf_sip_method_word(__u64 w, __u32 b8, __u32 n)
{
	if (n < 3 || n > 9)
		return ETSF_M_OTHER;
	w &= etsf_sip_mask(n);
	switch (n) {
	case 3:
		if (w == ETSF_SIP_C8('A', 'C', 'K', 0, 0, 0, 0, 0)) return ETSF_M_ACK;
		if (w == ETSF_SIP_C8('B', 'Y', 'E', 0, 0, 0, 0, 0)) return ETSF_M_BYE;
		break;
	case 4:
		if (w == ETSF_SIP_C8('I', 'N', 'F', 'O', 0, 0, 0, 0)) return ETSF_M_INFO;
		break;
	case 5:
		if (w == ETSF_SIP_C8('P', 'R', 'A', 'C', 'K', 0, 0, 0)) return ETSF_M_PRACK;
		if (w == ETSF_SIP_C8('R', 'E', 'F', 'E', 'R', 0, 0, 0)) return ETSF_M_REFER;
		break;
	case 6:
		if (w == ETSF_SIP_C8('I', 'N', 'V', 'I', 'T', 'E', 0, 0)) return ETSF_M_INVITE;
		if (w == ETSF_SIP_C8('C', 'A', 'N', 'C', 'E', 'L', 0, 0)) return ETSF_M_CANCEL;
		if (w == ETSF_SIP_C8('N', 'O', 'T', 'I', 'F', 'Y', 0, 0)) return ETSF_M_NOTIFY;
		if (w == ETSF_SIP_C8('U', 'P', 'D', 'A', 'T', 'E', 0, 0)) return ETSF_M_UPDATE;
		break;
	case 7:
		if (w == ETSF_SIP_C8('O', 'P', 'T', 'I', 'O', 'N', 'S', 0)) return ETSF_M_OPTIONS;
		if (w == ETSF_SIP_C8('P', 'U', 'B', 'L', 'I', 'S', 'H', 0)) return ETSF_M_PUBLISH;
		if (w == ETSF_SIP_C8('M', 'E', 'S', 'S', 'A', 'G', 'E', 0)) return ETSF_M_MESSAGE;
		break;
	case 8:
		if (w == ETSF_SIP_C8('R', 'E', 'G', 'I', 'S', 'T', 'E', 'R')) return ETSF_M_REGISTER;
		break;
	case 9:
		if (w == ETSF_SIP_C8('S', 'U', 'B', 'S', 'C', 'R', 'I', 'B') && b8 == 'E')
			return ETSF_M_SUBSCRIBE;
		break;
	}
	return ETSF_M_OTHER;
}

/* method token at [off, off+n) of the scratch buffer -> enum etsf_method */
static __always_inline __u32 etsf_sip_match_method(const __u8 *buf, __u32 off, __u32 n)
{
	if (n < 3 || n > 9)
		return ETSF_M_OTHER;
	return etsf_sip_method_word(etsf_sip_word(buf, off), n == 9 ? etsf_sip_byte(buf, off + 8) : 0, n);
}

/* header name at the start of a line: which header do we care about? */
#define ETSF_SIP_H_NONE   0
#define ETSF_SIP_H_CALLID 1
#define ETSF_SIP_H_CSEQ   2
#define ETSF_SIP_H_TO     3

static __always_inline int etsf_sip_name_end(__u8 b)
{
	return b == ':' || b == ' ' || b == '\t';
}

static __always_inline __u32 etsf_sip_header_name(struct etsf_parse_state *c, const __u8 *buf, __u32 *nlen)
{
	__u32 pos = c->pos, len = c->len;
	__u64 lw;

	if (pos + 2 > len)
		return ETSF_SIP_H_NONE;
	lw = etsf_sip_word(buf, pos) | ETSF_SIP_LOWER64;
	if (pos + 8 <= len &&
	    (lw & etsf_sip_mask(7)) == ETSF_SIP_C8('c', 'a', 'l', 'l', '-', 'i', 'd', 0) &&
	    etsf_sip_name_end(etsf_sip_byte(buf, pos + 7))) {
		*nlen = 7;
		return (c->flags & ETSF_PF_CALLID) ? ETSF_SIP_H_NONE : ETSF_SIP_H_CALLID;
	}
	if (pos + 5 <= len &&
	    (lw & etsf_sip_mask(4)) == ETSF_SIP_C8('c', 's', 'e', 'q', 0, 0, 0, 0) &&
	    etsf_sip_name_end(etsf_sip_byte(buf, pos + 4))) {
		*nlen = 4;
		return (c->flags & ETSF_PF_CSEQ) ? ETSF_SIP_H_NONE : ETSF_SIP_H_CSEQ;
	}
	if (pos + 3 <= len &&
	    (lw & etsf_sip_mask(2)) == ETSF_SIP_C8('t', 'o', 0, 0, 0, 0, 0, 0) &&
	    etsf_sip_name_end(etsf_sip_byte(buf, pos + 2))) {
		*nlen = 2;
		return (c->flags & ETSF_PF_TO) ? ETSF_SIP_H_NONE : ETSF_SIP_H_TO;
	}
	if (etsf_sip_name_end(etsf_sip_byte(buf, pos + 1))) {
		__u8 b = (__u8)(lw & 0xff);

		*nlen = 1;
		if (b == 'i')
			return (c->flags & ETSF_PF_CALLID) ? ETSF_SIP_H_NONE : ETSF_SIP_H_CALLID;
		if (b == 't')
			return (c->flags & ETSF_PF_TO) ? ETSF_SIP_H_NONE : ETSF_SIP_H_TO;
	}
	return ETSF_SIP_H_NONE;
}

/*
 * Compiler barrier after a value went to the map value: the next read comes
 * from memory, so the verifier sees an unknown scalar there and the many
 * paths through an unrolled scan merge (state pruning) instead of being
 * carried on as distinct constants.
 */
#define ETSF_SIP_SYNC() asm volatile("" ::: "memory")

#define ETSF_SIP_ONES  0x0101010101010101ULL
#define ETSF_SIP_HIGHS 0x8080808080808080ULL

/* word contains byte value ch? (SWAR zero-byte test on w ^ ch..ch) */
static __always_inline __u64 etsf_sip_has_byte(__u64 w, __u8 ch)
{
	__u64 x = w ^ (ETSF_SIP_ONES * ch);

	return (x - ETSF_SIP_ONES) & ~x & ETSF_SIP_HIGHS;
}

/*
 * Index (0..7) of the lowest flagged byte of a non-zero SWAR match mask, without a branch:
 * the lowest flag, moved to bit 8k, multiplied into the top byte of 0x0001020304050607 (whose
 * byte 7 - k is k).  A value the verifier tracks as unknown, so the paths after it converge.
 * For the inexact zero-byte test (etsf_sip_has_byte) the lowest flag is still exact.
 */
static __always_inline __u32 etsf_sip_first_byte(__u64 m)
{
	__u64 low = m & (~m + 1);

	return (__u32)(((low >> 7) * 0x0001020304050607ULL) >> 56);
}

/*
 * Advance c->pos over whole 8-byte words (up to ETSF_SKIP_WORDS) without an
 * LF; when a word holds one, stop exactly on the first LF (the lowest SWAR hit
 * is exact).  Returns 1 when c->pos reached the end of the copied bytes.
 * Twelve words cover most header lines in one step, a Via with its branch,
 * received and rport included: a step costs a bpf_loop call (a call and a
 * return through the return thunk), a word test a few instructions.
 */
#define ETSF_SKIP_WORDS 12

static __always_inline int etsf_sip_skip_words(struct etsf_parse_state *c, const __u8 *buf)
{
	__u32 pos = c->pos, len = c->len, n = 0;
	/* one masked base, the words at constant offsets from it, the words available counted
	 * once: a word test is a load and the SWAR arithmetic, no index or length reloads */
	const __u8 *base = buf + etsf_sip_idx(pos);
	__u32 words = len > pos ? (len - pos) >> 3 : 0;
	int i;

#pragma unroll
	for (i = 0; i < ETSF_SKIP_WORDS; i++) {
		__u64 m;

		if (i >= words)
			break;
		m = etsf_sip_has_byte(*(const __u64 *)(base + 8 * i), '\n');
		if (m) {
			n += etsf_sip_first_byte(m);
			break;
		}
		n += 8;
	}
	c->pos = pos + n;
	ETSF_SIP_SYNC();
	return c->pos >= c->len;
}

static __always_inline long etsf_sip_header_done(struct etsf_parse_state *c, __u32 flag)
{
	c->flags |= flag;
	c->state = ETSF_PS_SKIP;
	return (c->flags & ETSF_PF_ALL) == ETSF_PF_ALL;   /* everything found: stop early */
}

/* ---- one helper per parser state: consumes >= 0 bytes, returns 1 to stop -- */

/* request-line method token: up to the SP */
static __always_inline long etsf_sip_st_method(struct etsf_parse_state *c, const __u8 *buf,
					       __u32 pos, __u8 b)
{
	if (etsf_sip_is_token(b)) {
		c->pos = pos + 1;
		return 0;
	}
	if (b == ' ' && pos > 0) {
		c->method = etsf_sip_match_method(buf, 0, pos);
		c->pos = pos + 1;
		c->state = ETSF_PS_RLINE;
		return 0;
	}
	c->flags |= ETSF_PF_NOTSIP;
	return 1;
}

/* the request line ends at the LF at pos: it must end in " SIP/2.0" [CR] LF */
static __always_inline int etsf_sip_rline_ok(const __u8 *buf, __u32 pos)
{
	__u32 end = pos;
	__u64 lw;

	if (end > 0 && etsf_sip_byte(buf, end - 1) == '\r')
		end--;
	if (end < 9 + 2)
		return 0;
	lw = etsf_sip_word(buf, end - 7) | ETSF_SIP_LOWER64;
	return (lw & etsf_sip_mask(7)) == ETSF_SIP_C8('s', 'i', 'p', '/', '2', '.', '0', 0) &&
	       etsf_sip_byte(buf, end - 8) == ' ';
}

/*
 * The rest of the request line (ETSF_PS_RLINE) or of a header line
 * (ETSF_PS_SKIP), one word scan for both: at the LF the next line starts
 * (ETSF_PS_LINE); a request line must end in " SIP/2.0".
 */
static __always_inline long etsf_sip_st_skip(struct etsf_parse_state *c, const __u8 *buf)
{
	__u32 pos;

	if (etsf_sip_skip_words(c, buf))
		return 1;
	pos = c->pos;
	if (etsf_sip_byte(buf, pos) == '\n') {
		if (c->state == ETSF_PS_RLINE) {
			if (!etsf_sip_rline_ok(buf, pos)) {
				c->flags |= ETSF_PF_NOTSIP;
				return 1;
			}
			c->flags |= ETSF_PF_START;
		}
		c->state = ETSF_PS_LINE;
	}
	c->pos = pos + 1;
	return 0;
}

/* start of a header line: end of the block, a folded line, or a header name */
static __always_inline long etsf_sip_st_line(struct etsf_parse_state *c, const __u8 *buf,
					     __u32 pos, __u8 b)
{
	__u32 h, nlen = 0;

	if (b == '\r' || b == '\n') {
		c->flags |= ETSF_PF_END;
		return 1;
	}
	if (etsf_sip_is_ws(b)) {     /* folded continuation of a skipped header */
		c->state = ETSF_PS_SKIP;
		return 0;
	}
	h = etsf_sip_header_name(c, buf, &nlen);
	if (h == ETSF_SIP_H_NONE) {
		c->state = ETSF_PS_SKIP;
		c->pos = pos + 1;
		return 0;
	}
	c->next = h == ETSF_SIP_H_CALLID ? ETSF_PS_CALLID :
		  h == ETSF_SIP_H_CSEQ ? ETSF_PS_CSEQ_NUM : ETSF_PS_TO;
	/* common case "Name: value": straight to the value */
	if (pos + nlen + 3 <= c->len && etsf_sip_byte(buf, pos + nlen) == ':' &&
	    etsf_sip_byte(buf, pos + nlen + 1) == ' ') {
		__u8 v = etsf_sip_byte(buf, pos + nlen + 2);

		if (!etsf_sip_is_ws(v) && v != '\r' && v != '\n') {
			c->pos = pos + nlen + 2;
			c->tok = c->pos;
			c->state = c->next;
			return 0;
		}
	}
	c->pos = pos + nlen;
	c->state = ETSF_PS_NAME_WS;
	return 0;
}

/* between a header name and ':' */
static __always_inline long etsf_sip_st_name_ws(struct etsf_parse_state *c, const __u8 *buf,
						__u32 pos, __u8 b)
{
	if (etsf_sip_is_ws(b)) {
		c->pos = pos + 1;
	} else if (b == ':') {
		c->pos = pos + 1;
		c->state = ETSF_PS_LWS;
	} else {
		c->state = ETSF_PS_SKIP;
	}
	return 0;
}

/* LWS before a value; c->next is the value's state */
static __always_inline long etsf_sip_st_lws(struct etsf_parse_state *c, const __u8 *buf,
					    __u32 pos, __u8 b)
{
	if (etsf_sip_is_ws(b) || b == '\r') {
		c->pos = pos + 1;
	} else if (b == '\n') {
		c->pos = pos + 1;
		c->state = ETSF_PS_LWS_NL;
	} else {
		c->tok = pos;
		c->state = c->next;
	}
	return 0;
}

/* LF inside LWS: folding or an empty value */
static __always_inline long etsf_sip_st_lws_nl(struct etsf_parse_state *c, const __u8 *buf,
					       __u32 pos, __u8 b)
{
	if (etsf_sip_is_ws(b)) {     /* folding: the value continues */
		c->pos = pos + 1;
		c->state = ETSF_PS_LWS;
	} else {                /* empty value: header ignored */
		c->state = ETSF_PS_LINE;
	}
	return 0;
}

/*
 * Call-ID value: FNV-1a 64, up to ETSF_CALLID_WORDS words of 8 bytes a step
 * (a Call-ID of up to 48 bytes, a UUID with its host included, in one step).
 */
#define ETSF_CALLID_WORDS 6

/* FNV-1a 64 of the low nb bytes of w (nb <= 8) */
static __always_inline __u64 etsf_sip_fnv_bytes(__u64 h, __u64 w, __u32 nb)
{
	int j;

#pragma unroll
	for (j = 0; j < 8; j++) {
		if (j >= nb)
			break;
		h ^= (w >> (8 * j)) & 0xff;
		h *= ETSF_FNV64_PRIME;
	}
	return h;
}

static __always_inline long etsf_sip_st_callid(struct etsf_parse_state *c, const __u8 *buf,
					       __u32 pos, __u8 b)
{
	if (pos + 8 <= c->len) {
		__u64 h = c->hash, tail = 0;
		__u32 n = 0, nb = 8;
		int i, j;

		/* whole words of the value: eight bytes each, without a branch */
#pragma unroll
		for (i = 0; i < ETSF_CALLID_WORDS; i++) {
			__u64 w, m;

			if (pos + 8 > c->len)
				break;
			w = etsf_sip_word(buf, pos);
			m = etsf_sip_has_byte(w, ' ') | etsf_sip_has_byte(w, '\t') |
			    etsf_sip_has_byte(w, '\r') | etsf_sip_has_byte(w, '\n');
			if (m) {
				nb = etsf_sip_first_byte(m);   /* value bytes in w */
				tail = w;
				break;
			}
#pragma unroll
			for (j = 0; j < 8; j++) {
				h ^= (w >> (8 * j)) & 0xff;
				h *= ETSF_FNV64_PRIME;
			}
			n += 8;
			pos += 8;
		}
		/* the word holding the terminator */
		if (nb < 8) {
			h = etsf_sip_fnv_bytes(h, tail, nb);
			n += nb;
			pos += nb;
		}
		c->hash = h;
		c->hlen += n;
		c->pos = pos;
		c->tmp = nb;
		ETSF_SIP_SYNC();
		if (c->tmp >= 8)
			return 0;
		/* terminator at pos + n: the value is complete */
		if (c->hlen == 0) {
			c->state = ETSF_PS_SKIP;
			return 0;
		}
		return etsf_sip_header_done(c, ETSF_PF_CALLID);
	}
	if (etsf_sip_is_ws(b) || b == '\r' || b == '\n') {
		if (c->hlen == 0) {
			c->state = ETSF_PS_SKIP;
			return 0;
		}
		return etsf_sip_header_done(c, ETSF_PF_CALLID);
	}
	c->hash ^= b;
	c->hash *= ETSF_FNV64_PRIME;
	c->hlen++;
	c->pos = pos + 1;
	return 0;
}

/* CSeq number: up to 11 digits a step */
static __always_inline long etsf_sip_st_cseq_num(struct etsf_parse_state *c, const __u8 *buf,
						 __u32 pos, __u8 b)
{
	if (b >= '0' && b <= '9') {
		/* up to 11 digits in this step (more than 10 = invalid) */
		__u64 v = c->cseq;
		__u32 nd = c->ndig;
		int j;

#pragma unroll
		for (j = 0; j < 11; j++) {
			if (pos >= c->len || b < '0' || b > '9')
				break;
			v = v * 10 + (b - '0');
			nd++;
			pos++;
			b = etsf_sip_byte(buf, pos);
		}
		c->cseq = v;
		c->ndig = nd;
		c->pos = pos;
		if (nd > 10 || v > 0xffffffffULL) {
			c->state = ETSF_PS_SKIP;     /* overlarge: invalid */
			return 0;
		}
		/* common case "digits SP known-method" ending the value: done in this step */
		if (b == ' ' && pos + 10 <= c->len) {
			__u64 w = etsf_sip_word(buf, pos + 1);
			__u64 m = etsf_sip_has_byte(w, ' ') | etsf_sip_has_byte(w, '\t') |
				  etsf_sip_has_byte(w, '\r') | etsf_sip_has_byte(w, '\n');
			__u8 e = etsf_sip_byte(buf, pos + 9);
			__u32 n = m ? etsf_sip_first_byte(m) :
				  (etsf_sip_is_ws(e) || e == '\r' || e == '\n') ? 8 : 0;
			__u32 meth = n ? etsf_sip_method_word(w, 0, n) : ETSF_M_OTHER;

			if (meth != ETSF_M_OTHER) {
				c->cseq_method = meth;
				c->pos = pos + 1 + n;
				return etsf_sip_header_done(c, ETSF_PF_CSEQ);
			}
		}
		return 0;
	}
	if (c->ndig > 0 && (etsf_sip_is_ws(b) || b == '\r' || b == '\n')) {
		c->next = ETSF_PS_CSEQ_METHOD;
		c->state = ETSF_PS_LWS;
		return 0;
	}
	c->state = ETSF_PS_SKIP;
	return 0;
}

/* CSeq method token */
static __always_inline long etsf_sip_st_cseq_method(struct etsf_parse_state *c, const __u8 *buf,
						    __u32 pos, __u8 b)
{
	if (etsf_sip_is_token(b)) {
		int j;

#pragma unroll
		for (j = 0; j < 8; j++) {
			if (pos + 1 >= c->len || !etsf_sip_is_token(etsf_sip_byte(buf, pos + 1)))
				break;
			pos++;
		}
		c->pos = pos + 1;
		return 0;
	}
	if (pos > c->tok && (etsf_sip_is_ws(b) || b == '\r' || b == '\n')) {
		c->cseq_method = etsf_sip_match_method(buf, c->tok, pos - c->tok);
		return etsf_sip_header_done(c, ETSF_PF_CSEQ);
	}
	c->state = ETSF_PS_SKIP;
	return 0;
}

/*
 * The To header ended and the next line (not a continuation) starts at pos with
 * byte b.  A name that cannot be one the parser wants (its first letter is not
 * c, t or i in either case) and is not the end of the header block is skipped
 * from its second byte on, which is what ETSF_PS_LINE would decide for it in
 * the next step; any other line is left for ETSF_PS_LINE.
 */
static __always_inline void etsf_sip_to_ended(struct etsf_parse_state *c, __u32 pos, __u8 b)
{
	__u8 l = b | 0x20;

	c->flags |= ETSF_PF_TO;
	if (l != 'c' && l != 't' && l != 'i' && b != '\r' && b != '\n') {
		c->pos = pos + 1;
		c->state = ETSF_PS_SKIP;
	} else {
		c->pos = pos;
		c->state = ETSF_PS_LINE;
	}
}

/*
 * After the '<' of a To value (pos: the byte after it): inside <...> only '>',
 * '"' and LF change anything (';' and another '<' do not), so up to
 * ETSF_TO_ANGLE_WORDS words are scanned for those three in the same step.  At
 * '>' the URI is closed, and when CRLF and a line that does not continue the
 * value follow, the To header ends in this step too; when ";" and a parameter
 * name follow, the parameter is read as ETSF_PS_TO_PARAM reads it (";tag=").
 * Anything else is left at the hit, or after the words scanned, for the next
 * step: what the scan a delimiter a step would have reached there.
 */
#define ETSF_TO_ANGLE_WORDS 6

static __always_inline long etsf_sip_to_angle(struct etsf_parse_state *c, const __u8 *buf, __u32 pos)
{
	__u32 n = 0;
	int j;

#pragma unroll
	for (j = 0; j < ETSF_TO_ANGLE_WORDS; j++) {
		__u64 w, m;

		if (pos + n + 8 > c->len)
			break;
		w = etsf_sip_word(buf, pos + n);
		m = etsf_sip_has_byte(w, '>') | etsf_sip_has_byte(w, '"') | etsf_sip_has_byte(w, '\n');
		if (m) {
			n += etsf_sip_first_byte(m);
			break;
		}
		n += 8;
	}
	c->pos = pos + n;
	ETSF_SIP_SYNC();
	pos = c->pos;
	if (pos >= c->len || etsf_sip_byte(buf, pos) != '>')
		return 0;
	c->flags &= ~ETSF_PF_ANGLE;
	c->pos = pos + 1;
	if (pos + 3 < c->len && etsf_sip_byte(buf, pos + 1) == '\r' && etsf_sip_byte(buf, pos + 2) == '\n' &&
	    !etsf_sip_is_ws(etsf_sip_byte(buf, pos + 3))) {
		etsf_sip_to_ended(c, pos + 3, etsf_sip_byte(buf, pos + 3));
		return (c->flags & ETSF_PF_ALL) == ETSF_PF_ALL;
	}
	/* ";name": the ';' and the parameter's "tag" test of ETSF_PS_TO_PARAM, here */
	if (pos + 6 <= c->len && etsf_sip_byte(buf, pos + 1) == ';' &&
	    !etsf_sip_is_ws(etsf_sip_byte(buf, pos + 2))) {
		__u64 lw = etsf_sip_word(buf, pos + 2) | ETSF_SIP_LOWER64;
		__u8 e = etsf_sip_byte(buf, pos + 5);

		c->pos = pos + 2;
		if ((lw & etsf_sip_mask(3)) == ETSF_SIP_C8('t', 'a', 'g', 0, 0, 0, 0, 0) &&
		    (e == '=' || etsf_sip_is_ws(e))) {
			c->flags |= ETSF_PF_TOTAG;
			c->pos = pos + 5;
		}
	}
	return 0;
}

/* To value: quotes, <...> and the parameters after ';' */
static __always_inline long etsf_sip_st_to(struct etsf_parse_state *c, const __u8 *buf,
					   __u32 pos, __u8 b)
{
	if (!(c->flags & ETSF_PF_QUOTE)) {
		/* skip words holding nothing the To scanner reacts to */
		int j;

#pragma unroll
		for (j = 0; j < 4; j++) {
			__u64 w;

			if (pos + 8 > c->len)
				break;
			__u64 m;

			w = etsf_sip_word(buf, pos);
			m = etsf_sip_has_byte(w, '\n') | etsf_sip_has_byte(w, '"') |
			    etsf_sip_has_byte(w, '<') | etsf_sip_has_byte(w, '>') |
			    etsf_sip_has_byte(w, ';');
			if (m) {        /* lowest hit of the OR is exact */
				pos += etsf_sip_first_byte(m);
				break;
			}
			pos += 8;
		}
		c->pos = pos;
		ETSF_SIP_SYNC();
		pos = c->pos;
		if (pos >= c->len)
			return 1;
		b = etsf_sip_byte(buf, pos);
	}
	c->pos = pos + 1;
	if (b == '\n') {
		/* the next line's first byte, when copied, says folding or end */
		if (pos + 1 < c->len && !etsf_sip_is_ws(etsf_sip_byte(buf, pos + 1))) {
			etsf_sip_to_ended(c, pos + 1, etsf_sip_byte(buf, pos + 1));
			return (c->flags & ETSF_PF_ALL) == ETSF_PF_ALL;
		}
		c->state = ETSF_PS_TO_NL;
	} else if (c->flags & ETSF_PF_QUOTE) {
		if (b == '"')
			c->flags &= ~ETSF_PF_QUOTE;
		else if (b == '\\')
			c->pos = pos + 2;
	} else if (b == '"') {
		c->flags |= ETSF_PF_QUOTE;
	} else if (b == '<') {
		c->flags |= ETSF_PF_ANGLE;
		return etsf_sip_to_angle(c, buf, pos + 1);
	} else if (b == '>') {
		c->flags &= ~ETSF_PF_ANGLE;
	} else if (b == ';' && !(c->flags & ETSF_PF_ANGLE)) {
		c->state = ETSF_PS_TO_PARAM;
	}
	return 0;
}

/* LF inside the To value: folding or end of the header */
static __always_inline long etsf_sip_st_to_nl(struct etsf_parse_state *c, const __u8 *buf,
					      __u32 pos, __u8 b)
{
	if (etsf_sip_is_ws(b)) {
		c->state = ETSF_PS_TO;
		return 0;
	}
	c->flags |= ETSF_PF_TO;
	c->state = ETSF_PS_LINE;
	return (c->flags & ETSF_PF_ALL) == ETSF_PF_ALL;
}

/* a To parameter: is it "tag"? */
static __always_inline long etsf_sip_st_to_param(struct etsf_parse_state *c, const __u8 *buf,
						 __u32 pos, __u8 b)
{
	if (etsf_sip_is_ws(b)) {
		c->pos = pos + 1;
		return 0;
	}
	if (pos + 4 <= c->len) {
		__u64 lw = etsf_sip_word(buf, pos) | ETSF_SIP_LOWER64;
		__u8 e = etsf_sip_byte(buf, pos + 3);

		if ((lw & etsf_sip_mask(3)) == ETSF_SIP_C8('t', 'a', 'g', 0, 0, 0, 0, 0) &&
		    (e == '=' || etsf_sip_is_ws(e))) {
			c->flags |= ETSF_PF_TOTAG;
			c->pos = pos + 3;
		}
	}
	c->state = ETSF_PS_TO;
	return 0;
}

/*
 * One step: consumes >= 0 bytes; returns 1 to stop.  A step runs the states
 * of a line in order, each reading its position back from the map value:
 * the rest of the line (request line or skipped header) up to its LF, then
 * the next line's header name, then that header's value state.  A header
 * line of up to ETSF_SKIP_WORDS words costs one step, and a wanted header
 * starts its value in the step that names it.
 */
static __always_inline long etsf_sip_step(struct etsf_scratch *s)
{
	struct etsf_parse_state *c = &s->st;
	const __u8 *buf = s->buf;
	__u32 pos = c->pos;
	__u8 b;

	if (pos >= c->len || pos >= ETSF_PARSE_BYTES)
		return 1;
	if (c->state == ETSF_PS_SKIP || c->state == ETSF_PS_RLINE) {
		if (etsf_sip_st_skip(c, buf))
			return 1;
		if (c->state != ETSF_PS_LINE)
			return 0;
		ETSF_SIP_SYNC();
		pos = c->pos;
		if (pos >= c->len || pos >= ETSF_PARSE_BYTES)
			return 1;
	}
	b = etsf_sip_byte(buf, pos);
	if (c->state == ETSF_PS_LINE) {
		if (etsf_sip_st_line(c, buf, pos, b))
			return 1;
		ETSF_SIP_SYNC();
		pos = c->pos;
		if (pos >= c->len || pos >= ETSF_PARSE_BYTES)
			return 1;
		b = etsf_sip_byte(buf, pos);
	}

	switch (c->state) {
	case ETSF_PS_METHOD:
		return etsf_sip_st_method(c, buf, pos, b);
	case ETSF_PS_SKIP:          /* set by the header name: the next step skips */
		return 0;
	case ETSF_PS_NAME_WS:
		return etsf_sip_st_name_ws(c, buf, pos, b);
	case ETSF_PS_LWS:
		return etsf_sip_st_lws(c, buf, pos, b);
	case ETSF_PS_LWS_NL:
		return etsf_sip_st_lws_nl(c, buf, pos, b);
	case ETSF_PS_CALLID:
		return etsf_sip_st_callid(c, buf, pos, b);
	case ETSF_PS_CSEQ_NUM:
		return etsf_sip_st_cseq_num(c, buf, pos, b);
	case ETSF_PS_CSEQ_METHOD:
		return etsf_sip_st_cseq_method(c, buf, pos, b);
	case ETSF_PS_TO:
		return etsf_sip_st_to(c, buf, pos, b);
	case ETSF_PS_TO_NL:
		return etsf_sip_st_to_nl(c, buf, pos, b);
	case ETSF_PS_TO_PARAM:
		return etsf_sip_st_to_param(c, buf, pos, b);
	}
	return 1;
}

/*
 * bpf_loop callback: ETSF_STEPS_PER_CALL steps per call.  One step: every
 * further step is another inlined copy of the whole state machine (eight
 * made ~90 KB of JIT code).  Hot (PROG_TEST_RUN) more steps per call save
 * call/return thunks, but in traffic, where a packet finds the code cold,
 * one step measured cheaper than two or eight (bench/progcost.py,
 * docs/datapath.md "Per-packet cost").
 */
#define ETSF_STEPS_PER_CALL 1
#define ETSF_PARSE_CALLS    ((2 * ETSF_PARSE_BYTES + 16) / ETSF_STEPS_PER_CALL + 1)

static long etsf_sip_steps(__u64 idx, void *ctx)
{
	struct etsf_scratch *s = *(struct etsf_scratch **)ctx;
	int i;

	if (!s)
		return 1;
	s->st.iters++;
#pragma unroll
	for (i = 0; i < ETSF_STEPS_PER_CALL; i++) {
		/* reload the state from the map value in every step: the verifier
		 * then sees unknown scalars and prunes at each step boundary */
		asm volatile("" ::: "memory");
		if (etsf_sip_step(s))
			return 1;
	}
	return 0;
}

/*
 * Parse buf[0..len) (len <= ETSF_PARSE_BYTES).  payload_len is the full L4
 * payload length (to tell PARSE_LIMIT from SIP_TRUNC).  Returns 0; the
 * outcome is in *r.
 * A global function: the verifier checks the parser and its bpf_loop
 * callback once, with unknown arguments, instead of once for every caller
 * state that reaches the parse (most of xdp_sip's and tc_sip_egress's
 * verifier budget before).
 */
__attribute__((noinline)) int etsf_sip_parse(struct etsf_scratch *s, __u32 len, __u32 payload_len,
					     struct etsf_sip_result *r)
{
	struct etsf_parse_state *cp = &s->st;
	const __u8 *buf = s->buf;
	struct etsf_parse_state c = {};
	__u64 lw;

	if (!s || !r)
		return 0;
	c.len = len;
	c.hash = ETSF_FNV64_OFFSET;
	c.state = ETSF_PS_METHOD;

	if (len < 8) {
		r->reason = ETSF_R_NOT_SIP;
		return 0;
	}
	lw = etsf_sip_word(buf, 0) | ETSF_SIP_LOWER64;
	if (lw == ETSF_SIP_C8('s', 'i', 'p', '/', '2', '.', '0', ' ')) {
		__u8 d0, d1, d2, sp;

		if (len < 12) {
			r->reason = ETSF_R_SIP_TRUNC;
			return 0;
		}
		d0 = etsf_sip_byte(buf, 8);
		d1 = etsf_sip_byte(buf, 9);
		d2 = etsf_sip_byte(buf, 10);
		sp = etsf_sip_byte(buf, 11);
		if (d0 < '1' || d0 > '9' || d1 < '0' || d1 > '9' || d2 < '0' || d2 > '9' ||
		    !(sp == ' ' || sp == '\r' || sp == '\n')) {
			r->reason = ETSF_R_NOT_SIP;
			return 0;
		}
		r->status = (d0 - '0') * 100 + (d1 - '0') * 10 + (d2 - '0');
		c.method = ETSF_M_RESPONSE;
		c.flags = ETSF_PF_START;
		c.state = ETSF_PS_SKIP;
		c.pos = 11;
	}

	if (c.state == ETSF_PS_METHOD) {
		/* fast path: a known method followed by SP */
		__u32 n = 0, m;

		if (etsf_sip_byte(buf, 3) == ' ')
			n = 3;
		else if (etsf_sip_byte(buf, 4) == ' ')
			n = 4;
		else if (etsf_sip_byte(buf, 5) == ' ')
			n = 5;
		else if (etsf_sip_byte(buf, 6) == ' ')
			n = 6;
		else if (etsf_sip_byte(buf, 7) == ' ')
			n = 7;
		else if (len > 8 && etsf_sip_byte(buf, 8) == ' ')
			n = 8;
		else if (len > 9 && etsf_sip_byte(buf, 9) == ' ')
			n = 9;
		if (n) {
			m = etsf_sip_match_method(buf, 0, n);
			if (m != ETSF_M_OTHER) {
				c.method = m;
				c.pos = n + 1;
				c.state = ETSF_PS_RLINE;
			}
		}
	}

	*cp = c;
	bpf_loop(ETSF_PARSE_CALLS, etsf_sip_steps, &s, 0);
	c = *cp;

	r->method = c.method;
	r->cseq_method = c.cseq_method;
	if (c.flags & ETSF_PF_CALLID) {
		r->has_callid = 1;
		r->callid_hash = c.hash;
	}
	if (c.flags & ETSF_PF_CSEQ)
		r->cseq = (__u32)c.cseq;
	r->has_to_tag = !!(c.flags & ETSF_PF_TOTAG);

	if (c.flags & ETSF_PF_NOTSIP) {
		r->method = ETSF_M_UNKNOWN;
		r->reason = ETSF_R_NOT_SIP;
		return 0;
	}
	if (!(c.flags & ETSF_PF_START)) {
		r->method = ETSF_M_UNKNOWN;
		r->reason = payload_len > len ? ETSF_R_PARSE_LIMIT : ETSF_R_SIP_TRUNC;
		return 0;
	}
	if ((c.flags & ETSF_PF_ALL) == ETSF_PF_ALL || (c.flags & ETSF_PF_END)) {
		r->reason = !(c.flags & ETSF_PF_CALLID) ? ETSF_R_NO_CALLID :
			    !(c.flags & ETSF_PF_CSEQ) ? ETSF_R_NO_CSEQ : ETSF_R_OK;
		return 0;
	}
	/* ran out of bytes inside the header block */
	r->reason = payload_len > len ? ETSF_R_PARSE_LIMIT : ETSF_R_SIP_TRUNC;
	return 0;
}

#endif /* ETSF_SIP_PARSE_H */
