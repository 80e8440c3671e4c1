"""First boot of an eTSF appliance (``etsfctl firstboot``, ``etsf-firstboot.service``).

On the machine the image landed on -- not the one it was built on -- this:

1. takes ``policy.yml`` from a NoCloud-style seed partition (file system label
   ``ETSFSEED`` by default) when one is present and valid, else keeps the policy seeded
   at build time (``/etc/etsf/policy.yml``);
2. runs the preflight checks against this kernel and the configured interfaces
   (``/etc/etsf/datapath.yml``);
3. when they pass, does what ``etsfctl restore`` does at every boot: compiles the objects
   against this machine's ``/sys/kernel/btf/vmlinux``, attaches them and applies the
   policy; then the exporter and fail-safe units start (they are ordered after this one);
4. when preflight (or the attach) fails, writes ``/var/lib/etsf/disabled`` with the reason:
   the eTSF units then skip (their condition), SIP is served on the normal network path
   and the reason is on the console, in the journal and in the stamp file.

The result is one line on stdout (the unit sends it to the console and the journal) and a
JSON stamp ``/var/lib/etsf/firstboot.json``; a stamp present means first boot is over
(``--force`` runs it again, e.g. after fixing what preflight reported).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from . import inputs, paths
from .output import emit

STAMP = "/var/lib/etsf/firstboot.json"
DISABLED = "/var/lib/etsf/disabled"
ATTACHED_MARK = "/run/etsf/firstboot-attached"
DEFAULT_CONFIG = paths.DEFAULT_DATAPATH_CONFIG
DEFAULT_POLICY = "/etc/etsf/policy.yml"
SEED_LABEL = "ETSFSEED"
UNITS_AFTER = ("etsf-exporter.service", "etsf-failsafe.service")
PREFIX = "etsf-firstboot:"


def _seed_device(label: str) -> str | None:
    dev = Path("/dev/disk/by-label") / label
    if dev.exists():
        return str(dev.resolve())
    try:  # no udev links (early boot, containers): ask blkid
        out = subprocess.run(["blkid", "-L", label], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def apply_seed(label: str = SEED_LABEL, policy_path: str = DEFAULT_POLICY) -> dict[str, Any]:
    """Copy policy.yml from the seed partition when it is there and validates."""
    dev = _seed_device(label) if label else None
    if not dev:
        return {"found": False, "policy": None}
    from . import policy as _policy
    mnt = tempfile.mkdtemp(prefix="etsf-seed-")
    try:
        res = subprocess.run(["mount", "-o", "ro", dev, mnt], capture_output=True, text=True,
                             timeout=30, check=False)
        if res.returncode != 0:
            return {"found": True, "device": dev, "policy": None,
                    "error": f"cannot mount {dev}: {res.stderr.strip()}"}
        try:
            src = Path(mnt) / "policy.yml"
            if not src.is_file():
                return {"found": True, "device": dev, "policy": None}
            try:
                _policy.load_file(str(src))
            except Exception as exc:  # noqa: BLE001 - any invalid seed keeps the built-in policy
                return {"found": True, "device": dev, "policy": None,
                        "error": f"seed policy.yml rejected, keeping {policy_path}: {exc}"}
            tmp = policy_path + ".seed"
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, policy_path)
            return {"found": True, "device": dev, "policy": policy_path}
        finally:
            subprocess.run(["umount", mnt], capture_output=True, timeout=30, check=False)
    finally:
        try:
            os.rmdir(mnt)
        except OSError:
            pass


def seed_note(seed: dict[str, Any], label: str) -> str:
    """Where the applied policy came from, for the console line: '' for the built-in one,
    ' from seed LABEL', or why the seed's policy was not used (it never stops the boot)."""
    if seed.get("policy"):
        return f" from seed {label}"
    if seed.get("error"):
        return f" (built-in; {seed['error'].splitlines()[0]})"
    return ""


def _start_units(units) -> list[str]:
    """Queue the units without waiting (they are ordered after etsf-firstboot.service)."""
    if not os.path.isdir("/run/systemd/system"):
        return []
    started = []
    for unit in units:
        res = subprocess.run(["systemctl", "--no-block", "start", unit], capture_output=True,
                             timeout=30, check=False)
        if res.returncode == 0:
            started.append(unit)
    return started


def _wait_for_interfaces(ifaces, timeout: float) -> float:
    """NICs appear (and get renamed by .link files) while udev settles: wait, bounded."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if all(os.path.exists(f"/sys/class/net/{i}") for i in ifaces):
            break
        time.sleep(0.5)
    return round(time.monotonic() - t0, 1)


def _write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
    os.replace(tmp, path)


def run(config: str = DEFAULT_CONFIG, *, seed_label: str = SEED_LABEL, min_kernel: str = "5.18",
        stamp: str = STAMP, force: bool = False, start_units: bool = True,
        iface_timeout: float = 30.0) -> dict[str, Any]:
    """Run first boot; returns the result (also written to `stamp`) with its one-line summary."""
    if os.path.exists(stamp) and not force:
        old = json.loads(inputs.read_text(stamp, "state"))
        if not isinstance(old, dict):
            raise ValueError(f"{stamp}: expected a JSON object")
        return dict(old, skipped=True,
                    line=f"{PREFIX} already done ({old.get('result', '?')}); `etsfctl firstboot --force` runs it again")
    from . import datapath, preflight
    t0 = time.monotonic()
    result: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "kernel": os.uname().release, "config": config}
    cfg = datapath.read_restore_config(config)
    ifaces = list(cfg["interfaces"])
    result["interfaces"] = ifaces
    result["waited_for_interfaces_s"] = _wait_for_interfaces(ifaces, iface_timeout)
    result["seed"] = apply_seed(seed_label, cfg.get("policy") or DEFAULT_POLICY)
    pre = preflight.run(ifaces, min_kernel=min_kernel)
    result["preflight"] = pre
    if not pre["ok"]:
        reason = f"preflight failed: {pre['message']}"
    else:
        try:
            res = datapath.restore(config)
        except Exception as exc:  # noqa: BLE001 - whatever fails, the box must still boot and say why
            reason = f"attach failed: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        else:
            reason = None
            result["restore"] = res
    if reason is None:
        try:
            os.unlink(DISABLED)
        except FileNotFoundError:
            pass
        os.makedirs(os.path.dirname(ATTACHED_MARK), exist_ok=True)
        Path(ATTACHED_MARK).write_text(result["started_at"] + "\n", encoding="utf-8")
        result["units_started"] = _start_units(UNITS_AFTER) if start_units else []
        mode = cfg.get("mode", "native")
        hooks = result["restore"].get("hooks") or {}
        where = ", ".join(f"tc_fastpath to {i} (tc ingress)" if hooks.get(i) == "tc" else f"xdp_sip to {i} ({mode})"
                          for i in ifaces)
        result["result"] = "ok"
        result["line"] = (f"{PREFIX} OK attached {where}, "
                          f"built against {os.uname().release} BTF, policy generation "
                          f"{result['restore'].get('policy_generation') or 'none'}"
                          f"{seed_note(result['seed'], seed_label)}; exporter and fail-safe started")
    else:
        os.makedirs(os.path.dirname(DISABLED), exist_ok=True)
        Path(DISABLED).write_text(reason + "\n", encoding="utf-8")
        result["result"] = "failed"
        result["reason"] = reason
        result["line"] = f"{PREFIX} {reason}; serving SIP on the standard path"
    result["seconds"] = round(time.monotonic() - t0, 1)
    _write_json(stamp, result)
    return result


def add_cli(sub, common) -> None:
    T = inputs  # pylint: disable=invalid-name
    s = sub.add_parser("firstboot", parents=[common],
                       help="appliance first boot: seed, preflight, build, attach, policy (once)")
    s.add_argument("--config", type=T.path, default=DEFAULT_CONFIG, metavar="FILE")
    s.add_argument("--seed-label", type=T.fs_label, default=SEED_LABEL, metavar="LABEL",
                   help="file system label of the seed partition ('' = none)")
    s.add_argument("--min-kernel", type=T.kernel_version, default="5.18", metavar="VER")
    s.add_argument("--stamp", type=T.path, default=STAMP, metavar="FILE")
    s.add_argument("--force", action="store_true", help="run again although the stamp exists")
    s.add_argument("--no-start", action="store_true", help="do not start the exporter and fail-safe units")

    def cmd(args):
        res = run(args.config, seed_label=args.seed_label, min_kernel=args.min_kernel,
                  stamp=args.stamp, force=args.force, start_units=not args.no_start)
        emit(args, res, res["line"])

    s.set_defaults(func=cmd)
