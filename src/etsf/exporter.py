"""``etsf.exporter`` -- the exporter's public names; the code lives in :mod:`etsf.telemetry`."""

from __future__ import annotations

from .telemetry.reader import (BUCKET_BOUNDS, DEFAULT_PORT, DEFAULT_WINDOW, NS_PER_S, OCCUPANCY_MAPS,
                               STAGE_LABEL, enum_name, ExporterError, invite_codes, open_counted, quantile,
                               Snapshot, snapshot)
from .telemetry.collector import EtsfCollector
from .telemetry.server import (PASSWORD_MAX, PBKDF2_ITERATIONS, PBKDF2_MAX_ITERATIONS, check_ctl_readable,
                               bcrypt_hash, check_password, ExporterServer, hash_password, load_users, parse_listen,
                               serve, write_heartbeat)
from .telemetry.admin import grant, set_direction
from .telemetry.commands import add_cli, argparse_suppress

__all__ = [
    "BUCKET_BOUNDS", "DEFAULT_PORT", "DEFAULT_WINDOW", "EtsfCollector", "ExporterError",
    "ExporterServer", "NS_PER_S", "OCCUPANCY_MAPS", "PASSWORD_MAX", "PBKDF2_ITERATIONS",
    "PBKDF2_MAX_ITERATIONS", "STAGE_LABEL", "Snapshot", "add_cli", "argparse_suppress", "bcrypt_hash",
    "check_ctl_readable", "check_password", "enum_name", "grant", "hash_password", "invite_codes",
    "load_users", "open_counted", "parse_listen", "quantile", "serve", "set_direction", "snapshot",
    "write_heartbeat",
]
