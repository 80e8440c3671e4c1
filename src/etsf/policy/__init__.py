"""eTSF policy: the ONLY package that knows the policy schema.

YAML (``version: 1``) -> validated, normalised :class:`Policy` -> compiled
:class:`PolicyImage` (``struct etsf_policy`` bytes + ACL LPM entries for one
slot) -> applied to the pinned maps as a double-buffered swap:

1. take the policy lock (``$ETSF_RUN_DIR/policy.lock``, default ``/run/etsf``);
2. write the INACTIVE slot: delete its stale ACL entries, insert the new ones,
   write its ``etsf_policy`` struct (generation + 1, flags VALID|MARK);
3. flip ``etsf_ctl`` (active_slot, generation, overload level, deadman) with a
   single map update -- from here on packets see the new policy, never half;
4. delete the previously active slot's ACL entries.

Every validation error is a :class:`PolicyError` whose ``str()`` is one line
naming the field path, e.g.
``policy.rate_limits.register.rate: an integer 0..4294967295 expected (got -5)``
(the schema is :data:`POLICY`, declared once in ``schema`` with :mod:`etsf.schema` nodes).
Validation and compilation finish before any map is touched, so a rejected
policy changes nothing already applied.

Layers, each importing only those above it: ``consts`` (limits from etsf.layout, names,
defaults) -> ``schema`` (load + validate) -> ``image`` (compile/decode one slot) ->
``changes`` (diff) -> ``history`` (kept applied policies, audit) -> ``live`` (read the maps,
apply, rollback); ``layers`` (merge fleet/group/host documents) stands alone; ``bootfile`` (the policy file
etsf-restore.service re-applies at boot) reads it with ``schema``.  This module re-exports the public
names, so ``etsf.policy.apply(...)`` and friends keep working.
"""

from __future__ import annotations

from ..errors import PolicyError
from ..paths import lock, run_dir, state_dir
from .consts import (ACL_DENY, ACL_MAX, ACL_MIN_PREFIX_V4, ACL_MIN_PREFIX_V6, ACL_PER_SLOT,
                     ACL_TRUST, DSCP_DEFAULT, DSCP_NAMES, FP_AFFINITIES, FP_BACKENDS_PER_POLICY,
                     FP_PROTOCOLS, FP_SVC_MAX, FP_WEIGHT_MAX, MAP_ACL_V4, MAP_ACL_V6, MAP_CTL, MAP_POLICY,
                     MAX_SIP_PORTS, MAX_TLS_PORTS, METHOD_NAMES, METHODS, OVERLOAD_LEVELS, POL_F_MARK,
                     POL_F_VALID, POLICY_SLOTS, PRIO_DEFAULTS, PRIO_NAMES, RL_CLASS_NAMES, RL_CLASSES, ROOT,
                     SCHEMA_VERSION, SHED_DEFAULTS)
from .schema import (ACL_GUARD_KEYS, BACKEND_KEYS, fmt_value, load_file, load_text, POLICY, Policy, SERVICE_KEYS,
                     sort_cidrs, sort_services, TOP_KEYS, validate)
from .image import compile_policy, decode, decode_acl_key, decode_ctl, little_endian, PolicyImage, u32
from .changes import diff, format_diff
from .live import apply, Maps, maps_present, read_keepalive, read_live, resolve_pin_root, rollback
from .layers import merge_layers
from .bootfile import boot_file_holds, write_boot_file
from .history import entries as history_entries

__all__ = [
    "ACL_DENY", "ACL_GUARD_KEYS", "ACL_MAX", "ACL_MIN_PREFIX_V4", "ACL_MIN_PREFIX_V6", "ACL_PER_SLOT",
    "ACL_TRUST", "BACKEND_KEYS", "boot_file_holds", "DSCP_DEFAULT", "DSCP_NAMES", "FP_AFFINITIES",
    "FP_BACKENDS_PER_POLICY", "FP_PROTOCOLS", "FP_SVC_MAX", "FP_WEIGHT_MAX", "MAP_ACL_V4", "MAP_ACL_V6",
    "MAP_CTL", "MAP_POLICY", "MAX_SIP_PORTS", "MAX_TLS_PORTS", "METHODS", "METHOD_NAMES", "Maps",
    "OVERLOAD_LEVELS", "POLICY", "POLICY_SLOTS", "POL_F_MARK", "POL_F_VALID", "PRIO_DEFAULTS", "PRIO_NAMES",
    "Policy", "PolicyError", "PolicyImage", "RL_CLASSES", "RL_CLASS_NAMES", "ROOT", "SCHEMA_VERSION",
    "SERVICE_KEYS", "SHED_DEFAULTS", "TOP_KEYS", "apply", "compile_policy", "decode", "decode_acl_key",
    "decode_ctl", "diff", "fmt_value", "format_diff", "history_entries", "little_endian", "load_file",
    "load_text", "lock", "maps_present", "merge_layers", "read_keepalive", "read_live", "resolve_pin_root", "rollback", "run_dir",
    "sort_cidrs", "sort_services", "state_dir", "u32", "validate", "write_boot_file",
]
