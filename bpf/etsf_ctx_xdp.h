/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_ctx_xdp.h - packet access for XDP programs.  A program includes
 * exactly one ctx header (this one or etsf_ctx_skb.h) before the shared
 * program code, which then loads packet bytes through etsf_ctx_* only
 *.
 */
#ifndef ETSF_CTX_H
#define ETSF_CTX_H

/*
 * The shared code names the context etsf_ctx_t; the helpers below take the
 * kernel's own struct so that libbpf's CO-RE relocations of the context
 * fields name a type the kernel BTF has (a typedef would not resolve).
 */
typedef struct xdp_md etsf_ctx_t;

static __always_inline void etsf_ctx_bounds(const struct xdp_md *ctx, void **data, void **data_end)
{
	*data = (void *)(long)ctx->data;
	*data_end = (void *)(long)ctx->data_end;
}

/* the whole frame, fragments of a multi-buffer frame included */
static __always_inline __u32 etsf_ctx_len(struct xdp_md *ctx)
{
	return bpf_xdp_get_buff_len(ctx);
}

static __always_inline long etsf_ctx_load_bytes(struct xdp_md *ctx, __u32 off, void *to, __u32 len)
{
	return bpf_xdp_load_bytes(ctx, off, to, len);
}

#endif /* ETSF_CTX_H */
