# SPDX-License-Identifier: GPL-2.0-only
"""Which agent this is: its version and a fingerprint of its source.

The version string does not change with every change of the agent, so the collection's roles
compare the fingerprint of the agent installed on a host with that of the source the collection
ships (computed the same way on the controller): a host whose agent is another one (a role run
with --tags after the collection was upgraded) is stopped with a message before the role
installs units or policies that agent does not understand."""
from __future__ import annotations

import hashlib
import os

from . import __version__
from .output import emit


def source_fingerprint(root: str | None = None) -> str:
    """sha256 over the package's .py files (relative path and content, in path order); the
    wheel carries exactly these, so an installed agent and its source tree agree."""
    root = root or os.path.dirname(os.path.abspath(__file__))
    files = []
    for d, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        files += [os.path.join(d, n) for n in names if n.endswith(".py")]
    h = hashlib.sha256()
    for path in sorted(files, key=lambda p: os.path.relpath(p, root)):
        with open(path, "rb") as f:
            h.update(os.path.relpath(path, root).replace(os.sep, "/").encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()[:16]


def identity() -> dict[str, str]:
    return {"version": __version__, "source": source_fingerprint()}


def _cmd_version(args):
    ident = identity()
    emit(args, ident, f"etsfctl {ident['version']} (agent source {ident['source']})")


def add_cli(sub, common) -> None:
    """Register ``etsfctl version``."""
    v = sub.add_parser("version", parents=[common], help="the agent's version and source fingerprint")
    v.set_defaults(func=_cmd_version)
