"""ctypes mirrors of bpf/etsf.h (etsf_consts.h + etsf_structs.h) - the one definition of
every eTSF map layout, one module per feature as in bpf/: ``core`` (control block, policy,
ACL, rate limiter, counters), ``telemetry`` (transaction tracker, histograms) and
``fastpath`` (services, backends, affinity, flows).  Every name is re-exported here, so
``layout.Ctl`` and ``layout.FpSvc`` work alike.

tests/bpf/test_layout*.py prove these equal the BTF of the test-only layout object
bpf/etsf_alignchecker.c, built from the same headers and flags as the programs (sizes,
member names and offsets, enum values), and that the program objects use those same
structs.  Change both together.
"""
from __future__ import annotations

from .core import (ABI_VERSION, ACL_MAX, APPEND_ONLY, Admit, admit_get, admit_key, admit_slot, ADMIT_SETS,
                   ADMIT_TXN_MAX, ADMIT_TXN_NS, AdmitSet, AdmitTxn, mix64, set_key, set_slot, SET_WAYS, way_find,
                   way_place,
                   CB_OWN_ANSWER, CTL_F_ADMIT_SILENT, CTL_F_OC, resp_tag, RESP_MAX, AclAction, AclV4Key, AclV6Key, AclValue,
                   CORE_ENUMS, CORE_STRUCTS,
                   Counter, Ctl, CTL_F_RECORD, fnv1a64, FNV64_OFFSET, FNV64_PRIME, Hook, HOOKS, IF_MAX,
                   IF_F_CLASSIFY, IF_F_STEER, IF_F_XDP, IF_TM_KNOWN, IfCfg, IfStat, META_F_CALLID, META_MAGIC, Meta,
                   ParseStat, ParseState, POL_F_NO_ACL4, POL_F_NO_ACL6, POL_F_TM_OFF, MAX_SIP_PORTS, MAX_TLS_PORTS, Method, METHODS, OC_RESULTS, OcResult,
                   OVERLOAD_LEVELS, PARSE_BYTES, POL_F_KA, POL_F_MARK, POL_F_NAT_DROP, POL_F_VALID, Policy,
                   POLICY_SLOTS, Prio, PRIO_CLASSES, Rate, Reason, REASONS,
                   REASONS_USED, RL_CLASSES, RL_MAX, RlClass, RlKey, RlState, SipInfo, stats_idx, STATS_SLOTS,
                   stats_unidx, Struct, Verdict, VERDICTS)
from .telemetry import (TM_BUCKETS, tm_code_idx, TM_CODE_METHODS, TM_CODE_MIN, TM_CODES, TM_ENUMS, TM_EVENTS,
                        tm_find, tm_get, tm_hash, tm_hist_idx, tm_open, tm_open_in, tm_place, tm_set_key, tm_slot, TM_SETS,
                        TM_STAGES, TM_STRUCTS, TM_TXN_LIFE_NS, TM_TXN_MAX, TM_WAYS, TmDir, TmEvent, TmHist,
                        TmIfCfg, TmSet, TmStage, TmTxn, TmTxnKey)
from .keepalive import (KA_HDR_MAX, KA_HOST_LEN, KA_ID_ALIAS, KA_ID_MAX, KA_ID_PRIMARY, ka_host_fold, ka_id_key,
                        KA_STRUCTS, KA_USER_LEN, KaCfg, KaIdKey, KaStats)
from .fastpath import (FP_AFF_MAX, FP_B_L2, FP_B_PEER, fp_b_slot, FP_BACKENDS_MAX, FP_ENUMS, FP_FLOW_MAX,
                       FP_NAME_LEN, FP_NONE, FP_REASONS, FP_RETRIES, FP_RING, FP_S_CALLID, FP_STATS_SLOTS,
                       FP_STRUCTS, FP_SVC_MAX, FpAff, FpAffKey, FpBackend, FpBstat, FpFlow, FpFlowKey,
                       FpReason, FpRing, FpSvc, FpSvcKey)

# C struct name -> mirror, C enum name -> (IntEnum, constant prefix), checked by tests/bpf/test_layout.py
STRUCTS = {**CORE_STRUCTS, **TM_STRUCTS, **KA_STRUCTS}
ENUMS = {**CORE_ENUMS, **TM_ENUMS}

__all__ = [
    "ABI_VERSION", "ACL_MAX", "Admit", "APPEND_ONLY", "admit_get", "admit_key", "admit_slot", "ADMIT_SETS",
    "ADMIT_TXN_MAX", "ADMIT_TXN_NS", "AdmitSet", "AdmitTxn", "mix64", "set_key", "set_slot", "SET_WAYS", "way_find",
    "way_place",
    "CB_OWN_ANSWER", "CTL_F_ADMIT_SILENT", "CTL_F_OC", "resp_tag", "RESP_MAX", "AclAction", "AclV4Key", "AclV6Key", "AclValue",
    "CORE_ENUMS", "CORE_STRUCTS",
    "Counter", "Ctl", "CTL_F_RECORD", "ENUMS", "fnv1a64", "FNV64_OFFSET", "FNV64_PRIME", "FP_AFF_MAX",
    "FP_B_L2", "FP_B_PEER", "fp_b_slot", "FP_BACKENDS_MAX", "FP_ENUMS", "FP_FLOW_MAX", "FP_NAME_LEN",
    "FP_NONE", "FP_REASONS", "FP_RETRIES", "FP_RING", "FP_S_CALLID", "FP_STATS_SLOTS", "FP_STRUCTS",
    "FP_SVC_MAX", "FpAff", "FpAffKey", "FpBackend", "FpBstat", "FpFlow", "FpFlowKey", "FpReason", "FpRing",
    "FpSvc", "FpSvcKey", "Hook", "HOOKS", "IF_F_CLASSIFY", "IF_F_STEER", "IF_F_XDP", "IF_MAX", "IF_TM_KNOWN", "IfCfg",
    "IfStat", "META_F_CALLID", "META_MAGIC", "Meta", "ParseStat", "ParseState", "POL_F_NO_ACL4", "POL_F_NO_ACL6",
    "POL_F_TM_OFF", "KA_HDR_MAX", "KA_HOST_LEN", "KA_ID_ALIAS",
    "KA_ID_MAX", "KA_ID_PRIMARY", "ka_host_fold", "ka_id_key", "KA_STRUCTS", "KA_USER_LEN", "KaCfg", "KaIdKey",
    "KaStats", "MAX_SIP_PORTS", "MAX_TLS_PORTS", "Method", "METHODS", "OC_RESULTS", "OcResult",
    "OVERLOAD_LEVELS", "PARSE_BYTES", "POL_F_KA", "POL_F_MARK", "POL_F_NAT_DROP", "POL_F_VALID", "Policy",
    "POLICY_SLOTS",
    "Prio", "PRIO_CLASSES", "Rate", "Reason", "REASONS", "REASONS_USED", "RL_CLASSES", "RL_MAX", "RlClass",
    "RlKey", "RlState", "SipInfo", "stats_idx", "STATS_SLOTS", "stats_unidx", "Struct", "STRUCTS",
    "TM_BUCKETS", "tm_code_idx", "TM_CODE_METHODS", "TM_CODE_MIN", "TM_CODES", "TM_ENUMS", "TM_EVENTS",
    "tm_find", "tm_get", "tm_hash", "tm_hist_idx", "tm_open", "tm_open_in", "tm_place", "tm_set_key", "tm_slot", "TM_SETS",
    "TM_STAGES", "TM_STRUCTS", "TM_TXN_LIFE_NS", "TM_TXN_MAX", "TM_WAYS", "TmDir", "TmEvent", "TmHist",
    "TmIfCfg", "TmSet", "TmStage", "TmTxn", "TmTxnKey", "Verdict", "VERDICTS"
]
