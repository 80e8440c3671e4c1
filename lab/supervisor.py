"""Tiny per-host supervisor: runs systemd-nspawn, relaunches it when the container reboots.

systemd-nspawn exits 133 when the container asked for a reboot; any other exit (poweroff,
halt, crash) or SIGTERM to this supervisor ends it.  On SIGTERM the supervisor forwards
SIGTERM to nspawn (which asks the container's systemd for an orderly shutdown) and, if that
does not finish within --stop-timeout seconds, SIGKILLs nspawn.
Usage: python -m lab.supervisor --name NAME --log FILE [--stop-timeout S] -- NSPAWN ARGV...
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

REBOOT_EXIT = 133
MAX_BOOTS = 200          # bounded: a crash-looping container cannot restart forever
MIN_UPTIME = 2.0         # faster consecutive exits than this count as a crash loop
MAX_FAST_EXITS = 5


def reset_nics(netns: str, ifaces: list[str], note) -> None:
    """A real reboot loses XDP/TC attachments; the host's netns outlives the container,
    so detach them here to make a lab reboot as faithful as a real one."""
    for dev in ifaces:
        for cmd in (["ip", "-n", netns, "link", "set", "dev", dev, "xdpgeneric", "off"],
                    ["ip", "-n", netns, "link", "set", "dev", dev, "xdpdrv", "off"],
                    ["tc", "-n", netns, "qdisc", "del", "dev", dev, "clsact"]):
            try:
                subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=10, check=False)
            except (OSError, subprocess.SubprocessError):
                pass
    note(f"reset XDP/TC state of {','.join(ifaces)} in {netns}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.supervisor")
    ap.add_argument("--name", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--pidfile", required=True, help="where the current nspawn pid is written")
    ap.add_argument("--stop-timeout", type=float, default=30.0)
    ap.add_argument("--netns", help="host netns whose NIC state is reset between boots")
    ap.add_argument("--ifaces", default="mgmt0,sip0")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    if not cmd:
        ap.error("missing nspawn command")

    stop = {"requested": False, "at": 0.0}
    child: dict[str, subprocess.Popen | None] = {"p": None}

    def on_term(signum, _frame):
        stop["requested"] = True
        stop["at"] = time.monotonic()
        p = child["p"]
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    logf = open(args.log, "ab", buffering=0)  # noqa: SIM115 - lives as long as we do

    def note(msg: str) -> None:
        logf.write(f"--- supervisor {time.strftime('%Y-%m-%dT%H:%M:%S')} {args.name}: {msg}\n".encode())

    fast_exits = 0
    rc = 0
    for boot in range(1, MAX_BOOTS + 1):
        if stop["requested"]:
            break
        if boot > 1 and args.netns:
            reset_nics(args.netns, args.ifaces.split(","), note)
        note(f"boot #{boot}: {' '.join(cmd)}")
        started = time.monotonic()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        child["p"] = p
        with open(args.pidfile + ".tmp", "w") as fh:
            fh.write(f"{p.pid}\n")
        os.replace(args.pidfile + ".tmp", args.pidfile)
        while True:
            try:
                rc = p.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                if stop["requested"] and time.monotonic() - stop["at"] > args.stop_timeout:
                    note("stop timeout: SIGKILL nspawn")
                    p.kill()
        child["p"] = None
        note(f"nspawn exited with {rc}")
        if stop["requested"] or rc != REBOOT_EXIT:
            break
        fast_exits = fast_exits + 1 if time.monotonic() - started < MIN_UPTIME else 0
        if fast_exits >= MAX_FAST_EXITS:
            note("crash loop: giving up")
            rc = 1
            break
    else:
        note(f"reached MAX_BOOTS={MAX_BOOTS}: giving up")
    try:
        os.unlink(args.pidfile)
    except OSError:
        pass
    note("exit")
    return 0 if stop["requested"] else rc


if __name__ == "__main__":
    sys.exit(main())
