/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf_failsafe.h - what every program does first: read etsf_ctl and pass
 * everything while the bypass flag is set or the agent's heartbeat is older
 * than the dead-man timeout.
 */
#ifndef ETSF_FAILSAFE_H
#define ETSF_FAILSAFE_H

#include "etsf.h"
#include "etsf_maps.h"

/* returns a reason (BYPASS/DEADMAN) when the program must pass everything, else 0 */
static __always_inline __u32 etsf_failsafe(const struct etsf_ctl *ctl)
{
	if (ctl->bypass)
		return ETSF_R_BYPASS;
	if (ctl->deadman_ns) {
		__u64 now = bpf_ktime_get_ns();

		/* unsigned: a heartbeat "from the future" (never written by a
		 * correct agent, same clock) also counts as dead: fail-safe */
		if (now - ctl->heartbeat_ns > ctl->deadman_ns)
			return ETSF_R_DEADMAN;
	}
	return 0;
}

/* the live policy slot of ctl: *pol (NULL when missing), *valid when it holds a valid policy */
static __always_inline void etsf_live_policy(const struct etsf_ctl *ctl,
					     const struct etsf_policy **pol, int *valid)
{
	__u32 slot = ctl->active_slot & 1;

	*pol = bpf_map_lookup_elem(&etsf_policy, &slot);
	*valid = *pol && ((*pol)->flags & ETSF_POL_F_VALID);
}

/*
 * Prologue shared by every classifier program: the control block, the fail-safe
 * (bypass / dead-man, read first) and the live policy slot.  Returns ETSF_R_OK to go
 * on, else the reason to pass the packet with (INTERNAL, BYPASS, DEADMAN).
 */
static __always_inline __u32 etsf_prologue(struct etsf_ctl **ctl, const struct etsf_policy **pol,
					   int *valid)
{
	__u32 zero = 0, reason;

	*ctl = bpf_map_lookup_elem(&etsf_ctl, &zero);
	if (!*ctl)
		return ETSF_R_INTERNAL;
	reason = etsf_failsafe(*ctl);
	if (reason)
		return reason;
	etsf_live_policy(*ctl, pol, valid);
	return ETSF_R_OK;
}

#endif /* ETSF_FAILSAFE_H */
