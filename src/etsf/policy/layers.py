"""Layered policy: fleet defaults, group and host documents deep-merged into one policy.

The ONE merge implementation: ``etsfctl policy apply --defaults F --group F FILE``, the
``etsf.sip.policy`` module's ``layers`` option and the collection's ``etsf.sip.policy_merge``
filter (which loads this file by path on the controller, so it imports nothing from etsf
and nothing outside the standard library).

Rules, applied layer by layer from the lowest (first) to the highest (last):

* mappings merge key by key, recursively;
* ``trust`` and ``deny`` (top level) are unions: entries of every layer are kept, in layer
  order, each once -- a group or host can add a peer or a scanner, never lose the fleet's;
* every other value, lists included (``sip_ports``, ``tls_ports``, ``overload.shed_below``,
  ``services``), is replaced whole by the higher layer.

The result is validated afterwards like any policy document; merging checks only shapes.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

try:
    from ..errors import PolicyError
except ImportError:     # loaded standalone by the controller-side filter
    class PolicyError(ValueError):     # type: ignore[no-redef]
        """Same shape as etsf.errors.PolicyError: ``path: message``."""

        def __init__(self, path: str, message: str):
            self.path = path
            self.message = message
            super().__init__(f"{path}: {message}")

UNION_KEYS = ("trust", "deny")
LAYER_NAMES = ("defaults", "group", "host")


def _type(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _merge(base: dict, top: dict, path: str, depth: int) -> dict:
    out = dict(base)
    for k, v in top.items():
        here = f"{path}.{k}"
        if depth == 0 and k in UNION_KEYS:
            if not isinstance(v, list):
                raise PolicyError(here, f"must be a list of CIDR prefixes (got {_type(v)})")
            merged = list(out.get(k) or [])
            for item in v:
                if item not in merged:
                    merged.append(item)
            out[k] = merged
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v, here, depth + 1)
        else:
            out[k] = copy.deepcopy(v)
    return out


def merge_layers(layers: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Deep-merge ``(name, document)`` pairs, lowest first; a None/empty layer is skipped.

    A layer that is not a mapping is rejected with one line naming it.
    """
    out: dict[str, Any] = {}
    for name, doc in layers:
        if doc is None or doc == {}:
            continue
        if not isinstance(doc, dict):
            raise PolicyError(name, f"must be a mapping (got {_type(doc)})")
        out = _merge(out, doc, name, 0)
    return out
