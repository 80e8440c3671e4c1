"""Policy constants: limits mirrored from bpf/etsf.h (through etsf.layout), map names, defaults."""

from __future__ import annotations

from .. import layout

SCHEMA_VERSION = 1

# limits of the kernel side, from the one Python mirror of bpf/etsf.h
MAX_SIP_PORTS = layout.MAX_SIP_PORTS
MAX_TLS_PORTS = layout.MAX_TLS_PORTS
POLICY_SLOTS = layout.POLICY_SLOTS
RL_CLASSES = layout.RL_CLASSES
OVERLOAD_LEVELS = layout.OVERLOAD_LEVELS
ACL_MAX = layout.ACL_MAX
METHODS = layout.METHODS
POL_F_VALID = layout.POL_F_VALID
POL_F_MARK = layout.POL_F_MARK
POL_F_KA = layout.POL_F_KA
POL_F_NAT_DROP = layout.POL_F_NAT_DROP
POL_F_TM_OFF = layout.POL_F_TM_OFF
POL_F_NO_ACL4 = layout.POL_F_NO_ACL4
POL_F_NO_ACL6 = layout.POL_F_NO_ACL6
ACL_DENY = int(layout.AclAction.DENY)
ACL_TRUST = int(layout.AclAction.TRUST)

# one policy must fit next to the other slot's entries during the swap
ACL_PER_SLOT = ACL_MAX // POLICY_SLOTS

MAP_CTL = "etsf_ctl"
MAP_POLICY = "etsf_policy"
MAP_ACL_V4 = "etsf_acl_v4"
MAP_ACL_V6 = "etsf_acl_v6"

PRIO_NAMES = ("low", "normal", "high", "critical")  # index == enum etsf_prio
RL_CLASS_NAMES = ("register", "options", "invite", "other")  # == enum etsf_rl_class

# settable method priorities: every SIP method of enum etsf_method except UNKNOWN
METHOD_NAMES = [m.name for m in sorted(layout.Method, key=int)
                if m.name not in ("UNKNOWN",) and int(m) < METHODS]
PRIO_DEFAULTS: dict[str, str] = {}
for _m in METHOD_NAMES:
    PRIO_DEFAULTS[_m] = "normal"
PRIO_DEFAULTS.update({
    "INVITE": "high",
    "ACK": "critical", "BYE": "critical", "CANCEL": "critical",
    "PRACK": "critical", "UPDATE": "critical", "RESPONSE": "critical",
    "REGISTER": "low", "OPTIONS": "low", "SUBSCRIBE": "low", "PUBLISH": "low",
})
PRIO_DEFAULTS = {k: v for k, v in PRIO_DEFAULTS.items() if k in METHOD_NAMES}

SHED_DEFAULTS = ["low", "normal", "high", "critical"]  # level L sheds prio < [L]

# RFC 4594 / RFC 2474 DSCP names
DSCP_NAMES: dict[str, int] = {"DF": 0, "BE": 0, "EF": 46, "VA": 44, "LE": 1}
for _i in range(8):
    DSCP_NAMES[f"CS{_i}"] = 8 * _i
for _c in range(1, 5):
    for _d in range(1, 4):
        DSCP_NAMES[f"AF{_c}{_d}"] = 8 * _c + 2 * _d
DSCP_DEFAULT = "CS3"  # RFC 4594 "Signaling" service class

# trust/deny prefixes shorter than these cover (almost) everything: one typo would drop
# every SIP packet (deny) or lift every limit (trust). acl_guard in the policy moves them
# or, with allow_broad: true, switches the guard off.
ACL_MIN_PREFIX_V4 = 8
ACL_MIN_PREFIX_V6 = 16
ROOT = "policy"

# fast-path services: compiled to maps by etsf.fastpath
FP_SVC_MAX = layout.FP_SVC_MAX
FP_BACKENDS_PER_POLICY = layout.FP_BACKENDS_MAX // POLICY_SLOTS
FP_PROTOCOLS = ("udp", "tcp")
FP_AFFINITIES = ("call-id",)
FP_WEIGHT_MAX = 1000

# keep-alive answers: compiled to etsf_ka_cfg / etsf_ka_id per slot (etsf.policy.image)
MAP_KA_CFG = "etsf_ka_cfg"
MAP_KA_ID = "etsf_ka_id"
KA_HDR_MAX = layout.KA_HDR_MAX
KA_HOST_LEN = layout.KA_HOST_LEN
KA_USER_LEN = layout.KA_USER_LEN
# an IPv6 identity takes two keys (compressed and expanded text); one slot gets half the map
KA_IDENTITIES_MAX = 64
