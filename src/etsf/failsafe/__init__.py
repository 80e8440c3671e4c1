"""eTSF fail-safe watchdog (``etsfctl failsafe``, ``etsf-failsafe.service``).

Each tick (``interval_s``, bounded work) the watchdog

1. writes the dead-man heartbeat into ``etsf_ctl`` (it is "the agent": if it
   dies, every program passes traffic untouched once ``deadman.timeout_ms`` of
   the policy has elapsed, counted as PASS/DEADMAN);
2. takes one counters snapshot (``etsf.exporter.snapshot`` when available,
   else ``etsf.datapath.stats``) and evaluates the anomaly rules on the deltas
   between snapshots inside each rule's window (``time.monotonic()``);
3. drives the state machine::

       engaged --trip--> bypassed --detach_after_s--> detached
          ^                  |                            |
          +---- reengage (auto: cooldown + hysteresis, or manual: ``failsafe ack``)

Every transition is appended to ``$ETSF_STATE_DIR/failsafe-audit.jsonl``
(rule, the numbers that tripped it, a counters snapshot) and logged as one
line on stderr with a ``<N>`` syslog priority prefix (journald under systemd).
The current state is written atomically to ``$ETSF_STATE_DIR/failsafe.json``
for the exporter.

Layers: ``config`` (names, defaults, the validator) -> ``audit`` (state file, audit
trail) and ``rules`` (snapshot, anomaly rules) -> ``watchdog`` (state machine, run, ack)
-> ``commands`` (``etsfctl failsafe``).  This module re-exports the public names.
"""

from __future__ import annotations

from .config import (ACK_FILE, AUDIT_FILE, BYPASSED, DEFAULT_CONFIG, DEFAULTS, DETACHED, ENGAGED, MAX_HISTORY,
                     MAX_ITERATIONS, REASONS_NOT_SIP, RULES, STATE_CODES, STATE_FILE, FailsafeError,
                     load_config, validate)
from .audit import audit, read_audit, read_state, running, state_path, write_state
from .rules import (FP_OWN_FALLBACKS, check_attachments, counters_summary, learn_ser, rule_drop_ratio,
                    rule_fastpath_fallback, rule_heartbeat, rule_map_pressure, rule_ser, take_snapshot)
from .watchdog import ack, run, status, Watchdog
from .commands import add_cli

__all__ = [
    "ACK_FILE", "AUDIT_FILE", "BYPASSED", "DEFAULTS", "DEFAULT_CONFIG", "DETACHED", "ENGAGED",
    "FP_OWN_FALLBACKS", "FailsafeError", "MAX_HISTORY", "MAX_ITERATIONS", "REASONS_NOT_SIP", "RULES",
    "STATE_CODES", "STATE_FILE", "Watchdog", "ack", "add_cli", "audit", "check_attachments",
    "counters_summary", "learn_ser", "load_config", "read_audit", "read_state", "rule_drop_ratio",
    "rule_fastpath_fallback", "rule_heartbeat", "rule_map_pressure", "rule_ser", "run", "running", "state_path",
    "status", "take_snapshot", "validate", "write_state",
]
