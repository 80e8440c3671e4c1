"""Every etsfctl argument is checked by the parser: invalid values end in ONE usage line on
stderr and exit code 2, before any command runs (no traceback, nothing on stdout).

The commands are discovered from the parser, so a new subcommand or argument is covered
(and one whose values are not checked fails test_every_value_argument_is_checked).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from etsf import cli

SRC = Path(__file__).resolve().parents[2] / "src"

# values that some type refuses; each argument must refuse at least one of them
CANDIDATES = ["", "\0", "x", "-1", "0", "nan", "inf", "1e400", "70000", "99999999999",
              "a/b c", "x" * 300, "fe80::1%eth0", "300.1.1.1", "1.2.3.4:0", "[::1]:99999",
              "not-a-choice"]


def _commands(parser, path=()):
    """(command words, parser) for every parser that runs a command."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001
    if parser.get_default("func") is not None:
        yield path, parser
    for sp in subs:
        for name, child in sp.choices.items():
            yield from _commands(child, (*path, name))


def _value_actions(parser):
    return [a for a in parser._actions  # noqa: SLF001
            if not isinstance(a, (argparse._SubParsersAction, argparse._HelpAction,  # noqa: SLF001
                                  argparse._VersionAction))  # noqa: SLF001
            and a.nargs != 0]


COMMANDS = list(_commands(cli.build_parser()))
IDS = [" ".join(p) for p, _unused in COMMANDS]


def test_every_command_discovered():
    names = set(IDS)
    # the commands of the issue and of every add_cli: a missing one means discovery broke
    for want in ("exporter", "attach", "policy apply", "heartbeat", "health", "fastpath probe",
                 "fastpath health", "failsafe", "failsafe ack", "telemetry direction", "firstboot",
                 "top", "restore", "overload set"):
        assert want in names, sorted(names)
    assert len(names) >= 29


def _example(action) -> str:
    if action.choices is not None:
        return str(next(iter(action.choices)))
    return action.type.etsf_example


def _refuses(action, value) -> bool:
    if action.choices is not None and action.type is None:
        return value not in action.choices
    try:
        v = action.type(value) if action.type else value
    except (argparse.ArgumentTypeError, TypeError, ValueError):
        return True
    return action.choices is not None and v not in action.choices


def _required_args(parser, skip):
    """argv giving every required argument (and one member of required groups) a valid value."""
    argv = []
    for g in parser._mutually_exclusive_groups:  # noqa: SLF001
        if g.required and skip not in g._group_actions:  # noqa: SLF001
            a = g._group_actions[0]  # noqa: SLF001
            argv += [a.option_strings[0]] + ([] if a.nargs == 0 else [_example(a)])
    for a in _value_actions(parser):
        if a is skip or not a.required or a.option_strings == []:
            continue
        if any(a in g._group_actions for g in parser._mutually_exclusive_groups):  # noqa: SLF001
            continue
        argv += [f"{a.option_strings[0]}={_example(a)}"]
    return argv


def _positionals(parser, skip, bad):
    out = []
    for a in _value_actions(parser):
        if a.option_strings:
            continue
        out.append(bad if a is skip else _example(a))
    return out


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    cap = capsys.readouterr()
    return exc.value.code, cap.out, cap.err


@pytest.mark.parametrize(("words", "parser"), COMMANDS, ids=IDS)
def test_every_value_argument_is_checked(words, parser):
    """Each argument that takes a value has a checking type (etsf.inputs) or choices, and
    refuses at least one of the candidate values."""
    for a in _value_actions(parser):
        name = a.option_strings[0] if a.option_strings else a.dest
        assert a.choices is not None or hasattr(a.type, "etsf_example"), \
            f"etsfctl {' '.join(words)} {name}: no checking type"
        assert any(_refuses(a, v) for v in CANDIDATES), f"etsfctl {' '.join(words)} {name} accepts anything"
        assert not _refuses(a, _example(a)), f"{name}: its own example is refused"


@pytest.mark.parametrize(("words", "parser"), COMMANDS, ids=IDS)
def test_invalid_values_one_line_exit_2(words, parser, capsys):
    tried = 0
    for a in _value_actions(parser):
        name = a.option_strings[0] if a.option_strings else (a.metavar or a.dest)
        for bad in CANDIDATES:
            if not _refuses(a, bad):
                continue
            if a.option_strings:
                argv = [*words, *_required_args(parser, a), f"{name}={bad}", *_positionals(parser, None, None)]
            else:
                argv = [*words, *_required_args(parser, a), *_positionals(parser, a, bad)]
            code, out, err = _run(argv, capsys)
            tried += 1
            assert code == 2, (argv, code, err)
            assert out == "", argv
            assert err.count("\n") == 1 and err.startswith("etsfctl: error: argument "), (argv, err)
            assert "Traceback" not in err
            assert (a.metavar or name) in err or name in err, (argv, err)
    if _value_actions(parser):
        assert tried, words


@pytest.mark.parametrize(("words", "parser"), COMMANDS, ids=IDS)
def test_unknown_option_one_line_exit_2(words, parser, capsys):
    code, out, err = _run([*words, *_required_args(parser, None), *_positionals(parser, None, None),
                           "--no-such-option"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "unrecognized arguments: --no-such-option" in err


@pytest.mark.parametrize("argv", [
    ["exporter", "--port", "70000"],          # the traceback (OverflowError in bind)
    ["exporter", "--port", "-1"],
    ["exporter", "--listen", "fe80::1%eth0"],
    ["heartbeat", "--interval", "0"],
    ["health", "--iface", "lo", "--probe", "198.18.0.1:70000"],
    ["fastpath", "probe", "--timeout", "inf"],
])
def test_real_process_one_line(argv):
    env = dict(os.environ, PYTHONPATH=str(SRC))
    r = subprocess.run([sys.executable, "-m", "etsf", *argv], capture_output=True, text=True,
                       env=env, timeout=60, check=False)
    assert r.returncode == 2, r
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("etsfctl: error: argument "), r.stderr
