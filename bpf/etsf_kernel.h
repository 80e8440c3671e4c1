/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_kernel.h - kernel UAPI macros that vmlinux.h cannot carry: BTF holds
 * types and enums (IPPROTO_UDP, IPPROTO_TCP, IPPROTO_AH, BPF_FIB_LKUP_RET_*
 * come from vmlinux.h), not #defines, and the UAPI headers that hold these
 * redefine vmlinux.h's structs.  Same names and values as the kernel
 * headers named; each is guarded so a real kernel header included first wins.
 */
#ifndef ETSF_KERNEL_H
#define ETSF_KERNEL_H

/* <linux/if_ether.h> */
#ifndef ETH_ALEN
#define ETH_ALEN	6
#endif
#ifndef ETH_P_IP
#define ETH_P_IP	0x0800
#endif
#ifndef ETH_P_IPV6
#define ETH_P_IPV6	0x86DD
#endif
#ifndef ETH_P_8021Q
#define ETH_P_8021Q	0x8100
#endif
#ifndef ETH_P_8021AD
#define ETH_P_8021AD	0x88A8
#endif

/* <linux/in6.h>: IPv6 extension headers */
#ifndef IPPROTO_HOPOPTS
#define IPPROTO_HOPOPTS		0
#endif
#ifndef IPPROTO_ROUTING
#define IPPROTO_ROUTING		43
#endif
#ifndef IPPROTO_FRAGMENT
#define IPPROTO_FRAGMENT	44
#endif
#ifndef IPPROTO_DSTOPTS
#define IPPROTO_DSTOPTS		60
#endif

/* <linux/pkt_cls.h> */
#ifndef TC_ACT_OK
#define TC_ACT_OK	0
#endif
#ifndef TC_ACT_SHOT
#define TC_ACT_SHOT	2
#endif

/* <linux/socket.h> */
#ifndef AF_INET
#define AF_INET		2
#endif
#ifndef AF_INET6
#define AF_INET6	10
#endif

#endif /* ETSF_KERNEL_H */
