"""The boot-time policy file: the one ``etsf-restore.service`` re-applies after a reboot.

The maps do not survive a reboot; this file does.  A policy made live on the host by any other
way (a rollback, an apply of another file) is gone after the next reboot unless this file holds
it too, so a rollback writes it and an apply says when it differs.
"""

from __future__ import annotations

import os

import yaml

from .. import paths
from ..errors import PolicyError
from .schema import load_file, validate

FIELD = "boot file"


def boot_file_holds(path: str, doc: dict) -> tuple[bool, str]:
    """(True, "") when the policy in *path* validates to the same document as *doc*; otherwise
    (False, why: missing, unreadable, invalid or different)."""
    if not os.path.exists(path):
        return False, f"{path} does not exist"
    try:
        pol, _text = load_file(path)
    except PolicyError as exc:
        return False, f"{path} is not a valid policy ({exc})"
    if pol.to_dict() != validate(doc).to_dict():
        return False, f"{path} holds a different policy"
    return True, ""


def write_boot_file(path: str, doc: dict, rollback_to: int, check: bool = False) -> bool:
    """Make *path* hold the rolled-back document *doc*; True when the file changes (in check
    mode: would change).  A file that already holds the same policy is left as it is."""
    same, _why = boot_file_holds(path, doc)
    if same:
        return False
    if check:
        return True
    text = (f"# eTSF SIP policy: rolled back to kept generation {rollback_to} (etsfctl policy history)\n"
            + yaml.safe_dump(doc, sort_keys=True, default_flow_style=False))
    try:
        paths.write_atomic(path, text, sync=True)
    except OSError as exc:
        raise PolicyError(FIELD, f"cannot write {path}: {exc.strerror}") from None
    return True
