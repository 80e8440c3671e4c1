"""eTSF fast path: in-kernel steering of SIP to local proxy backends.

Kernel side: ``bpf/tc_fastpath.bpf.c`` (TC clsact ingress, program
``tc_fastpath``) + ``bpf/etsf_fastpath.h``.  This module is the host side:

* services of the policy (validated by :mod:`etsf.policy`, the only owner of the
  schema) are compiled here into per-slot map entries -- service keys carry
  the policy slot byte, every service gets a Maglev table per slot, backends
  carry per-slot membership bits -- written into the INACTIVE slot by
  ``policy.apply`` before its single ``etsf_ctl`` flip (:func:`plan_slot`,
  :func:`write_slot`, :func:`release_slot`), so services swap atomically with
  the rest of the policy and a rejected policy changes nothing;
* each backend's egress is resolved (route -> bridge FDB port -> host end of
  its veth, MACs) so the kernel can ``bpf_redirect_peer`` straight into the
  backend's namespace; unresolved backends use ``bpf_fib_lookup`` /
  ``bpf_redirect_neigh`` in the kernel;
* health: SIP OPTIONS probe per backend (interval, threshold) sets
  ``etsf_fp_backends[id].up``; down backends get no new dialogs;
* attach/detach of the TC ingress program, counters.

Every BPF operation goes through :mod:`etsf.bpf`.

Layers: ``slots`` (constants, Maglev, compile/write/release/decode one policy slot) ->
``runtime`` (live backends, health, counters, prober) and ``loader`` (load, attach,
detach) -> ``commands`` (``etsfctl fastpath``).  This module re-exports the public names.
"""

from __future__ import annotations

from ..paths import pin_root
from .slots import (FP_MAPS, IPPROTO, MAP_AFF, MAP_BACKENDS, MAP_BSTATS, MAP_FLOW, MAP_RING, MAP_STATS,
                    MAP_SVC, OBJ, PROG, PROTO_NAME, SLOT_BITS, TC_HANDLE, TC_PRIO, addr_bytes, addr_str,
                    backend_ident, decode_slot, FastpathError, maglev, maps_present, plan_slot, read_backends,
                    release_slot, resolve_egress, slot_keys, svc_key, u32, write_slot)
from .runtime import backends, probe, reasons, run_prober, set_health, stats
from .loader import attach, detach, load, status
from .commands import add_cli

__all__ = [
    "FP_MAPS", "FastpathError", "IPPROTO", "MAP_AFF", "MAP_BACKENDS", "MAP_BSTATS", "MAP_FLOW",
    "MAP_RING", "MAP_STATS", "MAP_SVC", "OBJ", "PROG", "PROTO_NAME", "SLOT_BITS", "TC_HANDLE",
    "TC_PRIO", "add_cli", "addr_bytes", "addr_str", "attach", "backend_ident", "backends",
    "decode_slot", "detach", "load", "maglev", "maps_present", "pin_root", "plan_slot", "probe",
    "read_backends", "reasons", "release_slot", "resolve_egress", "run_prober", "set_health", "slot_keys", "stats",
    "status", "svc_key", "u32", "write_slot",
]
