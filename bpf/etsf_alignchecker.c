// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * etsf_alignchecker.c - test-only object: puts every struct and enum the
 * host agent mirrors (src/etsf/layout/) into BTF, so tests/bpf/test_layout*
 * can compare sizes, member offsets and enum values with the mirror.  It is
 * built from the same headers and flags as the programs (etsf.build
 * build_layout_object), holds no program and is never loaded; keeping the
 * anchor here keeps it out of every production map.  A struct or enum added
 * to etsf_structs.h / etsf_consts.h belongs in etsf_layout_anchor too.
 */
#include "vmlinux.h"

#include "etsf.h"

struct etsf_layout_anchor {
	/* core */
	struct etsf_ctl         ctl;
	struct etsf_rate        rate;
	struct etsf_policy      policy;
	struct etsf_acl_v4_key  acl_v4_key;
	struct etsf_acl_v6_key  acl_v6_key;
	struct etsf_rl_key      rl_key;
	struct etsf_rl_state    rl_state;
	struct etsf_counter     counter;
	struct etsf_ifstat      ifstat;
	struct etsf_sip_info    sip_info;
	struct etsf_admit       admit;
	struct etsf_admit_txn   admit_txn;
	struct etsf_admit_set   admit_set;
	struct etsf_ka_cfg      ka_cfg;
	struct etsf_ka_id_key   ka_id_key;
	struct etsf_ka_stats    ka_stats;
	struct etsf_if_cfg      if_cfg;
	struct etsf_parse_stat  parse_stat;
	struct etsf_parse_state parse_state;
	struct etsf_meta        meta;
	enum etsf_method        method;
	enum etsf_verdict       verdict;
	enum etsf_reason        reason;
	enum etsf_hook          hook;
	enum etsf_rl_class      rl_class;
	enum etsf_prio          prio;
	enum etsf_acl_action    acl_action;
	enum etsf_oc_result     oc_result;
	/* telemetry */
	struct etsf_tm_ifcfg    tm_ifcfg;
	struct etsf_tm_txn_key  tm_txn_key;
	struct etsf_tm_txn      tm_txn;
	struct etsf_tm_set      tm_set;
	struct etsf_tm_hist     tm_hist;
	enum etsf_tm_stage      tm_stage;
	enum etsf_tm_dir        tm_dir;
	enum etsf_tm_event      tm_event;
	/* fast path */
	struct etsf_fp_svc_key  fp_svc_key;
	struct etsf_fp_svc      fp_svc;
	struct etsf_fp_ring     fp_ring;
	struct etsf_fp_backend  fp_backend;
	struct etsf_fp_bstat    fp_bstat;
	struct etsf_fp_aff_key  fp_aff_key;
	struct etsf_fp_aff      fp_aff;
	struct etsf_fp_flow_key fp_flow_key;
	struct etsf_fp_flow     fp_flow;
	enum etsf_fp_reason     fp_reason;
};

/* a global variable, so the compiler emits the type into BTF */
struct etsf_layout_anchor etsf_layout_anchor;
