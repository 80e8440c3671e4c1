"""eTSF datapath orchestration (the paper's "eBPF Program Loader").

Everything kernel-facing goes through :mod:`etsf.bpf`; this module decides
what to load, where to pin it, how to replace it atomically and what to
record in ``$ETSF_STATE_DIR/state.json``.

Pins (``PIN_ROOT`` = ``$ETSF_PIN_ROOT`` or ``/sys/fs/bpf/etsf``)::

    PIN_ROOT/maps/<map>            pinned by bpf.load_object (re-used on reload)
    PIN_ROOT/progs/xdp_sip         last loaded XDP ingress program
    PIN_ROOT/progs/tc_sip_egress   last loaded TC egress program
    PIN_ROOT/progs/tc_fastpath     last loaded TC ingress program (hook tc and the fast path)

The package is layered so the fast path can use it without a cycle: ``base`` (state,
build, ctl, counters) and ``loader`` (load/pin/attach) know nothing of the policy or the
fast path; ``ops`` (status, revert, restore) sits above both.  This module re-exports
the public names, so ``etsf.datapath.attach(...)`` keeps working.
"""

from __future__ import annotations

from ..paths import pin_root, state_dir
from .hooks import HOOKS
from .loader import attach, detach, forget, interface_status, pins
from .base import (MAP_CTL, MAP_IFSTATS, MAP_STATS, MODES, OUR_PROGS, TC_OBJ, TC_PROG, XDP_OBJ, XDP_PROG,
                   DatapathError, build, check_objects, ctl_dict, default_build_dir, default_src_dir, heartbeat, ifindex,
                   init_ctl, keepalive_gate, load_state, method_totals, object_path, prog_name, read_ctl, repin,
                   save_state, set_admission, set_bypass, set_keepalive_gate, set_oc, set_overload, stats,
                   admission_counters, keepalive_counters)
from .ops import REVERT_MODES, read_restore_config, restore, revert, status

__all__ = [
    "HOOKS", "MAP_CTL", "MAP_IFSTATS", "MAP_STATS", "MODES", "OUR_PROGS", "REVERT_MODES", "TC_OBJ", "TC_PROG",
    "XDP_OBJ", "XDP_PROG", "DatapathError", "attach", "build", "check_objects", "ctl_dict", "default_build_dir",
    "default_src_dir", "detach", "forget", "heartbeat", "ifindex", "init_ctl", "interface_status", "keepalive_gate",
    "load_state", "method_totals", "object_path", "pin_root", "pins", "prog_name", "read_ctl",
    "read_restore_config", "repin", "restore", "revert", "save_state", "set_admission", "set_bypass",
    "set_keepalive_gate", "set_oc", "set_overload", "admission_counters", "keepalive_counters",
    "state_dir", "stats", "status",
]
