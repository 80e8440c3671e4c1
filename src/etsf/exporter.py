"""``etsf.exporter`` -- the exporter's public names; the code lives in :mod:`etsf.telemetry`."""

from __future__ import annotations

from . import telemetry as _telemetry
from .telemetry import *  # noqa: F401,F403  pylint: disable=wildcard-import,unused-wildcard-import

__all__ = list(_telemetry.__all__)
