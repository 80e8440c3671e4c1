/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_ctx_skb.h - packet access for TC (sk_buff) programs.  A program
 * includes exactly one ctx header (this one or etsf_ctx_xdp.h) before the
 * shared program code, which then loads packet bytes through etsf_ctx_*
 * only.
 */
#ifndef ETSF_CTX_H
#define ETSF_CTX_H

/*
 * The shared code names the context etsf_ctx_t; the helpers below take the
 * kernel's own struct so that libbpf's CO-RE relocations of the context
 * fields name a type the kernel BTF has (a typedef would not resolve).
 */
typedef struct __sk_buff etsf_ctx_t;

static __always_inline void etsf_ctx_bounds(const struct __sk_buff *ctx, void **data, void **data_end)
{
	*data = (void *)(long)ctx->data;
	*data_end = (void *)(long)ctx->data_end;
}

static __always_inline __u32 etsf_ctx_len(struct __sk_buff *ctx)
{
	return ctx->len;
}

static __always_inline long etsf_ctx_load_bytes(struct __sk_buff *ctx, __u32 off, void *to, __u32 len)
{
	return bpf_skb_load_bytes(ctx, off, to, len);
}

#endif /* ETSF_CTX_H */
