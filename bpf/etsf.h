/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * etsf.h - the ABI between the kernel programs and the host agent: every
 * constant and enum (etsf_consts.h) and every map key/value struct
 * (etsf_structs.h).  The maps themselves are in etsf_maps.h (core),
 * etsf_tm_maps.h (telemetry) and etsf_fp_maps.h (fast path).
 */
#ifndef ETSF_H
#define ETSF_H

#include "etsf_consts.h"
#include "etsf_structs.h"

#endif /* ETSF_H */
