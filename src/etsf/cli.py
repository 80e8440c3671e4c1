"""``etsfctl`` -- the eTSF host agent command line.

Contract: ``--json`` prints one JSON document on stdout; any error exits
non-zero with ONE line on stderr (``etsfctl: error: ...``), no traceback for
user errors.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .output import EXIT_ERROR, EXIT_OK, EXIT_USAGE


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, usage exit code
        sys.stderr.write(f"etsfctl: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="etsfctl", description="eTSF host agent: eBPF SIP traffic steering")
    p.add_argument("--version", action="version", version=f"etsfctl {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    # every command group registers itself the same way: add_cli(sub, common)
    for register in registrars():
        register(sub, common)
    return p


def registrars():
    """Every command group's add_cli(sub, common), in the order etsfctl --help lists them."""
    from .agentid import add_cli as version_cli
    from .datapath.commands import add_cli as datapath_cli
    from .failsafe.commands import add_cli as failsafe_cli
    from .fastpath.commands import add_cli as fastpath_cli
    from .firstboot import add_cli as firstboot_cli
    from .health import add_cli as health_cli
    from .keepalive.commands import add_cli as keepalive_cli
    from .policy.commands import add_cli as policy_cli
    from .preflight_cli import add_cli as preflight_cli
    from .telemetry.commands import add_cli as telemetry_cli
    return (datapath_cli, policy_cli, preflight_cli, health_cli, telemetry_cli, fastpath_cli, failsafe_cli,
            keepalive_cli, firstboot_cli, version_cli)


def _user_errors():
    errs = [ValueError, OSError, ImportError]
    from .policy import PolicyError
    errs.append(PolicyError)
    from .datapath import DatapathError
    errs.append(DatapathError)
    from .health import HealthError
    errs.append(HealthError)
    try:
        from .bpf import BpfError
        errs.append(BpfError)
    except Exception:  # noqa: BLE001 - bpf module unavailable
        pass
    return tuple(errs)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        errors = _user_errors()
    except Exception as e:  # noqa: BLE001 - broken install
        sys.stderr.write(f"etsfctl: error: cannot import agent modules: {e}\n")
        return EXIT_ERROR
    try:
        args.func(args)
    except KeyboardInterrupt:
        sys.stderr.write("etsfctl: interrupted\n")
        return 130
    except errors as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        sys.stderr.write(f"etsfctl: error: {msg}\n")
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
