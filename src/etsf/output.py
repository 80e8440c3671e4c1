"""How every etsfctl command prints its result (shared by the CLI and the domain modules
that register their own sub-commands)."""
from __future__ import annotations

import json
import sys

# etsfctl exit codes: success, a user-facing error (one line on stderr), bad usage
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def emit(args, data, text=None):
    """Print a command's result: one JSON document with --json, else text or a plain rendering."""
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write((text if text is not None else human(data)) + "\n")


def human(data, indent=0) -> str:
    """Indented key: value text for a JSON-like value."""
    pad = "  " * indent
    lines = []
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                lines.append(human(v, indent + 1))
            else:
                lines.append(f"{pad}{k}: {v}")
    elif isinstance(data, list):
        for v in data:
            if isinstance(v, dict):
                lines.append(f"{pad}- " + ", ".join(f"{k}={x}" for k, x in v.items()))
            else:
                lines.append(f"{pad}- {v}")
    else:
        lines.append(f"{pad}{data}")
    return "\n".join(lines)
