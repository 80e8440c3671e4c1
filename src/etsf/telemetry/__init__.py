"""``etsf.telemetry`` -- Prometheus exporter for the eTSF data path.

Reads the pinned maps (read-only, ``BPF_F_RDONLY``) and the pinned programs
under ``$ETSF_PIN_ROOT`` on every scrape and serves ``/metrics`` and
``/healthz`` (optional TLS and HTTP basic auth).  Every metric is listed in
docs/telemetry.md.

Cost of a scrape is bounded and independent of traffic: every array / hash
map is read with ``BPF_MAP_LOOKUP_BATCH`` (ceil(entries / 4096) + 1 calls per
map), never one syscall per entry; LPM tries (ACLs) are not walked.

Privileges: runs as an unprivileged user with only CAP_BPF (needed because
``kernel.unprivileged_bpf_disabled`` is set); read permission on the map pins
and read+write on the program pins (BPF_OBJ_GET of a program needs O_RDWR)
are granted to the exporter's group by ``etsfctl telemetry grant``.  No
CAP_SYS_ADMIN: programs are opened through their pins, never by id.

Layers: ``reader`` (one bounded snapshot of the maps) -> ``collector`` (metric families)
-> ``server`` (HTTP, TLS, auth); ``admin`` (direction, pin grants); ``commands``
(``etsfctl exporter`` / ``telemetry``).  This module re-exports the public names.
"""

from __future__ import annotations

from .reader import (BUCKET_BOUNDS, DEFAULT_PORT, DEFAULT_WINDOW, NS_PER_S, OCCUPANCY_MAPS, STAGE_LABEL,
                     enum_name, ExporterError, invite_codes, open_counted, quantile, Snapshot, snapshot)
from .collector import EtsfCollector
from .server import (PASSWORD_MAX, PBKDF2_ITERATIONS, PBKDF2_MAX_ITERATIONS, check_ctl_readable,
                     bcrypt_hash, check_password, ExporterServer, hash_password, load_users, parse_listen,
                     serve, write_heartbeat)
from .admin import grant, set_direction
from .commands import add_cli, argparse_suppress

__all__ = [
    "BUCKET_BOUNDS", "DEFAULT_PORT", "DEFAULT_WINDOW", "EtsfCollector", "ExporterError",
    "ExporterServer", "NS_PER_S", "OCCUPANCY_MAPS", "PASSWORD_MAX", "PBKDF2_ITERATIONS",
    "PBKDF2_MAX_ITERATIONS", "STAGE_LABEL", "Snapshot", "add_cli", "argparse_suppress", "bcrypt_hash",
    "check_ctl_readable", "check_password", "enum_name", "grant", "hash_password", "invite_codes",
    "load_users", "open_counted", "parse_listen", "quantile", "serve", "set_direction", "snapshot",
    "write_heartbeat",
]
