"""``python -m lab``: bring the eTSF lab up/down, inspect it, reach its hosts."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from lab import hosts, inventory, net, rootfs, sipproxy
from lab.common import (APT_ARCHIVES, HOSTS_DIR, NAME_PREFIX, PEERS, PROXY_PORT,
                        SIP_NET, STATE_DIR, STATE_FILE, SWITCH_MGMT_ADDR, SWITCH_NS, LabError,
                        all_pids, kill, load_state, locked, log, proc_cmdline, require_root,
                        save_state)


def _prefix_hosts(state: dict, prefix: str | None) -> list[dict]:
    return [h for h in state["hosts"].values() if prefix is None or h["prefix"] == prefix]


# ---------------------------------------------------------------- up
def cmd_up(args) -> int:
    t0 = time.monotonic()
    names = hosts.host_names(args.prefix, args.hosts)
    # round robin: host N boots suites[(N - 1) % len(suites)]
    suites = rootfs.parse_suites(args.suites)
    with locked():
        state = load_state()
        for d in (STATE_DIR, HOSTS_DIR, APT_ARCHIVES / "partial"):
            d.mkdir(parents=True, exist_ok=True)
        hosts.ensure_ssh_key()
        running = [h for h in state["hosts"].values()
                   if hosts.is_supervisor(h.get("supervisor_pid"), h["name"])]
        built = {}
        for suite in dict.fromkeys(suites):
            in_use = any(hosts.host_suite(h) == suite for h in running)
            built[suite] = rootfs.ensure_base(suite, in_use=in_use)
        state["rootfs"] = "built" if "built" in built.values() else "reused"
        state["rootfs_suites"] = built
        state["rootfs_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        # hosts recorded but whose supervisor is gone (crash, reboot of the machine): reset
        for h in list(state["hosts"].values()):
            if not hosts.is_supervisor(h.get("supervisor_pid"), h["name"]):
                log(f"{h['name']}: stale (supervisor gone), cleaning up")
                hosts.teardown_host(h)
                del state["hosts"][h["name"]]
        save_state(state)
        if net.ensure_switch():
            log(f"switch netns {SWITCH_NS} created (bridges br-mgmt, br-sip)")
        net.ensure_peers()
        hosts.ensure_proxy(state)
        save_state(state)
        started = []
        for idx, name in enumerate(names, start=1):
            rec = state["hosts"].get(name)
            suite = suites[(idx - 1) % len(suites)]
            if rec and hosts.is_supervisor(rec.get("supervisor_pid"), name):
                log(f"{name}: already running ({hosts.host_suite(rec)}, "
                    f"supervisor pid {rec['supervisor_pid']})")
                started.append(rec)
                continue
            octet = hosts.allocate_octet(state, name, args.prefix, idx)
            rec = hosts.host_record(name, args.prefix, octet, suite)
            state["hosts"][name] = rec
            save_state(state)
            net.ensure_host_net(name, octet)
            hosts.ensure_overlay(name, suite)
            hosts.provision(name)
            rec["supervisor_pid"] = hosts.start_supervisor(name)
            save_state(state)
            log(f"{name}: booting {suite} (mgmt {rec['mgmt_address']}, sip {rec['sip_address']}, "
                f"supervisor pid {rec['supervisor_pid']})")
            started.append(rec)
        hosts.wait_ready(started, timeout=args.timeout)
        path = inventory.write(_prefix_hosts(state, args.prefix), args.prefix)
        log(f"inventory written: {path}")
        state["last_up"] = {"prefix": args.prefix, "rootfs": state["rootfs"],
                            "seconds": round(time.monotonic() - t0, 1)}
        save_state(state)
    if args.sip_proxy:
        sipproxy.setup([r["name"] for r in started], path)
    log(f"lab up: {len(started)} host(s) ready in {time.monotonic() - t0:.1f}s "
        f"(rootfs {state['rootfs']})")
    return 0


# ---------------------------------------------------------------- down
def _sweep_all() -> None:
    """Remove whatever the lab may have left behind, found by name (crash recovery)."""
    # supervisors and proxies of ours (identified by their module name in argv)
    for pid in all_pids():
        cl = proc_cmdline(pid)
        if len(cl) > 2 and cl[1] == "-m" and cl[2] in ("lab.supervisor", "lab.proxy"):
            kill(pid, 9)
    for ns in net.lab_netns():
        if ns in (SWITCH_NS, *(f"{NAME_PREFIX}{p}" for p in PEERS)):
            continue
        name = ns[len(NAME_PREFIX):]
        hosts.teardown_host({"name": name})
    if HOSTS_DIR.exists():
        hosts.unmount_tree(HOSTS_DIR)
        for d in HOSTS_DIR.iterdir():
            hosts.teardown_host({"name": d.name})
    net.delete_switch_and_peers()


def cmd_down(args) -> int:
    t0 = time.monotonic()
    with locked():
        state = load_state()
        prefix = None if args.all else args.prefix
        victims = _prefix_hosts(state, prefix)
        hosts.stop_hosts(victims)
        for h in victims:
            hosts.teardown_host(h)
            del state["hosts"][h["name"]]
            log(f"{h['name']}: removed")
        if prefix is None:
            for p in {h["prefix"] for h in victims} | {""}:
                inventory.remove(p)
        else:
            inventory.remove(prefix)
        save_state(state)
        if not state["hosts"]:
            hosts.stop_proxy(state)
            _sweep_all()
            try:
                STATE_FILE.unlink()
            except OSError:
                pass
            log("no hosts left: switch, peers and apt proxy removed")
        else:
            log(f"{len(state['hosts'])} host(s) of other prefixes still running; "
                "switch and proxy kept")
    log(f"lab down done in {time.monotonic() - t0:.1f}s")
    return 0


# ---------------------------------------------------------------- status
def _status(state: dict, prefix: str | None) -> dict:
    out = {"switch_netns": SWITCH_NS if SWITCH_NS in net.list_netns() else None,
           "proxy": {"pid": state.get("proxy_pid"),
                     "running": hosts.proxy_running(state.get("proxy_pid")),
                     "listen": f"{SWITCH_MGMT_ADDR}:{PROXY_PORT}"},
           "rootfs": state.get("rootfs"), "last_up": state.get("last_up"),
           "peers": {p: {"netns": f"{NAME_PREFIX}{p}", "address": f"{SIP_NET}.{o}"}
                     for p, o in PEERS.items()},
           "hosts": []}
    for h in sorted(_prefix_hosts(state, prefix), key=lambda h: h["octet"]):
        alive = hosts.is_supervisor(h.get("supervisor_pid"), h["name"])
        out["hosts"].append({
            "name": h["name"], "prefix": h["prefix"], "suite": hosts.host_suite(h),
            "mgmt_address": h["mgmt_address"],
            "sip_address": h["sip_address"], "netns": h["netns"],
            "supervisor_pid": h.get("supervisor_pid") if alive else None,
            "nspawn_pid": hosts.nspawn_pid(h["name"]) if alive else None,
            "pid1": hosts.container_pid1(h["name"]) if alive else None,
            "systemd": hosts.systemd_state(h["name"]) if alive else "down",
        })
    return out


def cmd_status(args) -> int:
    state = load_state()
    st = _status(state, None if args.prefix is None else args.prefix)
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"switch netns: {st['switch_netns'] or '-'}   apt proxy: "
          f"{'pid %s on %s' % (st['proxy']['pid'], st['proxy']['listen']) if st['proxy']['running'] else 'stopped'}")
    print(f"{'HOST':<14}{'SUITE':<10}{'MGMT':<16}{'SIP':<16}{'SUPERVISOR':>11}{'NSPAWN':>8}"
          f"{'PID1':>8}  SYSTEMD")
    for h in st["hosts"]:
        print(f"{h['name']:<14}{h['suite']:<10}{h['mgmt_address']:<16}{h['sip_address']:<16}"
              f"{h['supervisor_pid'] or '-':>11}{h['nspawn_pid'] or '-':>8}{h['pid1'] or '-':>8}"
              f"  {h['systemd']}")
    if not st["hosts"]:
        print("(no hosts)")
    return 0


# ---------------------------------------------------------------- ssh / reboot / inventory
def _host(state: dict, name: str) -> dict:
    if name not in state["hosts"]:
        raise LabError(f"unknown host {name!r} (known: {', '.join(sorted(state['hosts'])) or 'none'})")
    return state["hosts"][name]


def cmd_ssh(args) -> int:
    state = load_state()
    h = _host(state, args.host)
    argv = hosts.ssh_argv(h["mgmt_address"], args.cmd or None, batch=bool(args.cmd))
    if not args.cmd and sys.stdin.isatty():
        argv.insert(1, "-t")
    return subprocess.call(argv)


def cmd_reboot(args) -> int:
    state = load_state()
    h = _host(state, args.host)
    old = hosts.boot_id(h["name"])
    if old is None:
        raise LabError(f"{h['name']} is not running")
    log(f"{h['name']}: systemctl reboot (boot id {old})")
    t0 = time.monotonic()
    hosts.nsenter(h["name"], ["systemctl", "reboot"], timeout=30)
    hosts.wait_ready([h], timeout=args.timeout, old_boot_ids={h["name"]: old})
    new = hosts.boot_id(h["name"])
    log(f"{h['name']}: back after {time.monotonic() - t0:.1f}s (boot id {new})")
    return 0


def cmd_inventory(args) -> int:
    state = load_state()
    recs = _prefix_hosts(state, args.prefix)
    if args.format == "molecule":
        print(json.dumps(inventory.molecule_instance_config(recs), indent=2))
        return 0
    path = inventory.write(recs, args.prefix, args.output)
    log(f"inventory written: {path} ({len(recs)} host(s))")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    def prefix_arg(p, default=""):
        p.add_argument("--prefix", default=default,
                       help="host name prefix (default: none -> sbc1..sbcN); e.g. 'mol-'")

    p = sub.add_parser("up", help="build/reuse the rootfs, boot hosts, write the inventory")
    p.add_argument("--hosts", type=int, default=3)
    prefix_arg(p)
    p.add_argument("--suites", default=rootfs.DEFAULT_SUITE,
                   help=f"Debian suites the hosts boot, comma-separated, given out round robin "
                        f"(one of {', '.join(rootfs.SUITES)}; default {rootfs.DEFAULT_SUITE})")
    p.add_argument("--timeout", type=float, default=hosts.BOOT_TIMEOUT)
    p.add_argument("--no-sip-proxy", dest="sip_proxy", action="store_false",
                   help="do not install and start Kamailio on the hosts")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="power hosts off and remove everything the lab created")
    prefix_arg(p)
    p.add_argument("--all", action="store_true", help="all hosts, whatever their prefix")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="hosts, pids, addresses")
    p.add_argument("--prefix", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("ssh", help="run a command (or a shell) on a host over the lab ssh path")
    p.add_argument("host")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_ssh)

    p = sub.add_parser("reboot", help="reboot a host and wait until systemd is back")
    p.add_argument("host")
    p.add_argument("--timeout", type=float, default=hosts.BOOT_TIMEOUT)
    p.set_defaults(func=cmd_reboot)

    p = sub.add_parser("inventory", help="(re)write the Ansible inventory")
    prefix_arg(p)
    p.add_argument("--output", type=lambda s: __import__("pathlib").Path(s), default=None)
    p.add_argument("--format", choices=["ansible", "molecule"], default="ansible",
                   help="molecule: print Molecule instance config (JSON) to stdout")
    p.set_defaults(func=cmd_inventory)

    args = ap.parse_args(argv)
    try:
        require_root()
        if args.command == "ssh" and args.cmd and args.cmd[0] == "--":
            args.cmd = args.cmd[1:]
        return args.func(args)
    except LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
