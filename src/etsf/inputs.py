"""Bounded inputs: every file the agent reads and every ``etsfctl`` argument.

Files are read through :func:`read_text` with a size cap that is checked on the
open descriptor BEFORE anything is read or parsed (``fstat``), and again while
reading (files whose size ``fstat`` cannot tell, e.g. pipes or ``/proc``, are read
at most one byte past the cap), so a huge or endless file costs nothing.

Argument types (:func:`port`, :func:`positive_float`, ...) raise
``argparse.ArgumentTypeError``: the parser turns that into one usage line and exit
code 2 before any command runs, so no invalid value reaches a system call.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import sys

import yaml

KIB = 1024
MIB = 1024 * KIB

#: size caps (bytes) per kind of file; docs/policy.md lists them
CAPS = {
    "policy": 4 * MIB,          # 16384 ACL entries + services: well under 1 MiB
    "failsafe config": 256 * KIB,
    "datapath config": 64 * KIB,
    "basic auth file": 256 * KIB,
    "web config": 256 * KIB,
    "TLS file": 1 * MIB,
    "state": 4 * MIB,           # state.json, failsafe.json, firstboot stamp
    "audit log tail": 1 * MIB,  # failsafe-audit.jsonl grows: only its last MiB is read
    "build stamp": 4 * KIB,
    "build manifest": 4 * KIB,
    "kernel config": 4 * MIB,
}


#: deepest nesting of mappings/lists accepted in a YAML file (ours need 6)
YAML_MAX_DEPTH = 32


class BoundedLoader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
    """SafeLoader refusing documents nested deeper than YAML_MAX_DEPTH: PyYAML composes
    recursively, so '[[[[...' a few thousand deep would end in RecursionError."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > YAML_MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {YAML_MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str):
    """yaml.safe_load with the nesting bound (yaml.YAMLError on bad input)."""
    return yaml.load(text, Loader=BoundedLoader)  # noqa: S506 - a SafeLoader


class InputTooLarge(ValueError):
    """A file larger than its cap (one line naming the file and the cap)."""


def _human(n: int) -> str:
    if n % MIB == 0:
        return f"{n // MIB} MiB"
    if n % KIB == 0:
        return f"{n // KIB} KiB"
    return f"{n} bytes"


def check_size(fname: str, kind: str) -> None:
    """Refuse `fname` when it is larger than the cap of `kind` (for files a library opens
    itself, e.g. TLS certificates). OSError when it cannot be stat'ed."""
    cap = CAPS[kind]
    size = os.stat(fname).st_size
    if size > cap:
        raise InputTooLarge(f"{fname}: {kind} larger than the {_human(cap)} cap ({size} bytes)")


def read_bytes(fname: str, kind: str) -> bytes:
    """The whole file, refused with InputTooLarge past the cap of `kind` (OSError as usual).
    ``-`` is standard input, read at most one byte past the cap (a role pipes a rendered
    document to ``etsfctl ... --check -`` without writing it anywhere)."""
    cap = CAPS[kind]
    if fname == "-":
        data = sys.stdin.buffer.read(cap + 1)
        if len(data) > cap:
            raise InputTooLarge(f"standard input: {kind} larger than the {_human(cap)} cap")
        return data
    # O_NONBLOCK: a FIFO without a writer must not hang the agent (it reads as empty)
    fd = os.open(fname, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        size = os.fstat(fd).st_size
        if size > cap:
            raise InputTooLarge(f"{fname}: {kind} larger than the {_human(cap)} cap ({size} bytes)")
        chunks, got = [], 0
        while got <= cap:
            b = os.read(fd, min(cap + 1 - got, 1 * MIB))
            if not b:
                break
            chunks.append(b)
            got += len(b)
        if got > cap:
            raise InputTooLarge(f"{fname}: {kind} larger than the {_human(cap)} cap")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_tail(fname: str, kind: str) -> bytes:
    """At most the last cap-of-`kind` bytes of a file that grows (a log); OSError as usual."""
    cap = CAPS[kind]
    fd = os.open(fname, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        size = os.fstat(fd).st_size
        if size > cap:
            os.lseek(fd, size - cap, os.SEEK_SET)
        chunks, got = [], 0
        while got < cap:
            b = os.read(fd, cap - got)
            if not b:
                break
            chunks.append(b)
            got += len(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(fname: str, kind: str, encoding: str = "utf-8") -> str:
    """read_bytes decoded; UnicodeDecodeError (a ValueError) when it is not `encoding`."""
    return read_bytes(fname, kind).decode(encoding)


class InputError(ValueError):
    """A file that cannot be read as the document it should be (one line naming the file)."""


def load_yaml_file(fname: str, kind: str):
    """The YAML document in fname, read under kind's size cap; every way the file can be
    unreadable is one InputError line, so each caller only wraps it in its own error type."""
    try:
        return load_yaml(read_text(fname, kind))
    except OSError as exc:
        raise InputError(f"{fname}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{fname}: not UTF-8 text") from None
    except InputTooLarge as exc:
        raise InputError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise InputError(f"{fname}: not valid YAML ({str(exc).splitlines()[0]})") from None


def load_checked(fname: str, kind: str, validate, error: type[Exception]):
    """load_yaml_file, then validate(doc); either failure is one line of the caller's own error
    type, a validation error prefixed by the file's name."""
    try:
        doc = load_yaml_file(fname, kind)
    except InputError as exc:
        raise error(str(exc)) from None
    try:
        return validate(doc)
    except error as exc:
        raise error(f"{fname}: {exc}") from None


# ---------------------------------------------------------------------------
# argparse types
# ---------------------------------------------------------------------------

IFNAME_RE = re.compile(r"^[^/\s:\x00]{1,15}$")     # IFNAMSIZ - 1; no '/', ':' or whitespace
_GROUP_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$|^[0-9]{1,10}$")
_KVER_RE = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,3}){1,2}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9_.-]{0,16}$")    # vfat/ext4 labels; '' = none


def _err(msg: str):
    return argparse.ArgumentTypeError(msg)


def _number(text: str, cast):
    try:
        v = cast(text)
    except (TypeError, ValueError):
        raise _err(f"expected {'an integer' if cast is int else 'a number'}, got {text!r}") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise _err(f"expected a finite number, got {text!r}")
    return v


def int_range(lo: int, hi: int):
    """An integer in lo..hi."""
    def conv(text: str) -> int:
        v = _number(text, int)
        if not lo <= v <= hi:
            raise _err(f"must be in {lo}..{hi}, got {v}")
        return v
    conv.__name__ = f"integer {lo}..{hi}"
    conv.etsf_example = str(max(lo, 1) if hi >= 1 else lo)
    return conv


def float_range(lo: float, hi: float, lo_open: bool = True):
    """A finite number in (lo, hi] (or [lo, hi] with lo_open=False)."""
    def conv(text: str) -> float:
        v = _number(text, float)
        if (v <= lo if lo_open else v < lo) or v > hi:
            raise _err(f"must be {'>' if lo_open else '>='} {lo:g} and <= {hi:g}, got {text}")
        return v
    conv.__name__ = f"number {lo:g}..{hi:g}"
    conv.etsf_example = f"{hi:g}"
    return conv


def _validated(example: str):
    """Mark a type as checked (tests feed every etsfctl argument invalid values; `example`
    is a value it accepts)."""
    def mark(fn):
        fn.etsf_example = example
        return fn
    return mark


port = int_range(1, 65535)
listen_port = int_range(0, 65535)          # 0 = any free port (tests, --ready-file)
count = int_range(1, 10_000_000)
seconds = float_range(0, 86400)            # a positive interval
long_seconds = float_range(0, 366 * 86400)


@_validated("lo")
def iface(text: str) -> str:
    """A Linux interface name: 1..15 characters, no '/', ':' or whitespace."""
    if not IFNAME_RE.match(text) or text in (".", ".."):
        raise _err(f"not a valid interface name: {text!r} (1-15 characters, no '/', ':' or spaces)")
    return text


@_validated("/nonexistent/etsf")
def path(text: str) -> str:
    """A file or directory path: non-empty, no NUL byte, at most PATH_MAX."""
    if not text or "\0" in text or len(text.encode("utf-8", "surrogateescape")) >= 4096:
        raise _err(f"not a usable path: {text!r}")
    return text


@_validated("127.0.0.1")
def ip_address(text: str) -> str:
    """An IPv4/IPv6 address without a scope (a listen address)."""
    if "%" in text:
        raise _err(f"scoped IPv6 addresses are not supported: {text!r}")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _err(f"not an IPv4/IPv6 address: {text!r}") from None


def parsed_by(parse, name: str, example: str):
    """A type that checks the text with `parse` (the function the command itself uses,
    raising ValueError) and keeps the text."""
    def conv(text: str) -> str:
        try:
            parse(text)
        except ValueError as e:
            raise _err(str(e)) from None
        return text
    conv.__name__ = name
    conv.etsf_example = example
    return conv


def _matching(regex, name: str, example: str, refusal: str):
    """A type that keeps text matching `regex` and refuses the rest with `refusal`
    (formatted with the text's repr)."""
    def conv(text: str) -> str:
        if not regex.match(text):
            raise _err(refusal.format(repr(text)))
        return text
    conv.__name__ = name
    conv.etsf_example = example
    return conv


#: a group name or numeric gid
group = _matching(_GROUP_RE, "group", "etsf", "not a valid group name: {}")
#: MAJOR.MINOR[.PATCH]
kernel_version = _matching(_KVER_RE, "kernel version", "5.18", "expected a kernel version like 5.18, got {}")
#: a file system label (0..16 characters [A-Za-z0-9_.-]; '' = none)
fs_label = _matching(_LABEL_RE, "file system label", "ETSFSEED", "not a valid file system label: {}")
