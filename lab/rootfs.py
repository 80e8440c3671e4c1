"""Build (once) and cache the Debian base root filesystems the lab hosts boot from: one per
supported suite (Debian 12 bookworm, Debian 13 trixie), each reused until its recipe changes."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from lab.common import CACHE_DIR, LabError, log, run

# Debian suites a lab host can boot; the first is the default.
SUITES = ("bookworm", "trixie")
DEFAULT_SUITE = SUITES[0]
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ["python3", "systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2",
            "sudo", "ca-certificates", "procps"]
# per suite: bump when the way that base is built changes, so its old cache is rebuilt
RECIPE_VERSION = {"bookworm": 1, "trixie": 2}


def base_dir(suite: str = DEFAULT_SUITE) -> Path:
    """The cached tree of `suite`; the default suite keeps the name it always had, so an
    existing cache stays valid."""
    return CACHE_DIR / ("rootfs-base" if suite == DEFAULT_SUITE else f"rootfs-base-{suite}")


def stamp_path(suite: str = DEFAULT_SUITE) -> Path:
    return base_dir(suite).with_name(base_dir(suite).name + ".stamp.json")


def parse_suites(text: str) -> list[str]:
    """`bookworm,trixie` -> ['bookworm', 'trixie']; one line naming the bad entry otherwise."""
    suites = [s.strip() for s in text.split(",")]
    for s in suites:
        if s not in SUITES:
            raise LabError(f"bad --suites entry {s!r}: expected one of {', '.join(SUITES)}")
    return suites


def _wanted_stamp(suite: str) -> dict:
    return {"suite": suite, "mirror": MIRROR, "variant": "minbase",
            "packages": sorted(PACKAGES), "recipe": RECIPE_VERSION[suite]}


def cache_valid(suite: str = DEFAULT_SUITE) -> bool:
    try:
        stamp = json.loads(stamp_path(suite).read_text())
    except (OSError, ValueError):
        return False
    want = _wanted_stamp(suite)
    root = base_dir(suite)
    return (all(stamp.get(k) == v for k, v in want.items())
            and (root / "usr/lib/systemd/systemd").exists()
            and (root / "usr/sbin/sshd").exists())


def ensure_base(suite: str = DEFAULT_SUITE, *, in_use: bool = False) -> str:
    """Return "reused" or "built"; prints which so callers/tests can tell."""
    if suite not in SUITES:
        raise LabError(f"unsupported suite {suite!r}: expected one of {', '.join(SUITES)}")
    root = base_dir(suite)
    if cache_valid(suite):
        log(f"rootfs: reusing cached base {root} ({suite}, no debootstrap)")
        return "reused"
    if in_use:
        raise LabError(f"cached {suite} rootfs is stale but hosts are running on it: "
                       "run `lab down` for them first")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = CACHE_DIR / f"{root.name}.tmp-{os.getpid()}"
    # leftovers of interrupted builds
    for old in CACHE_DIR.glob(f"{root.name}.tmp-*"):
        shutil.rmtree(old, ignore_errors=True)
    log(f"rootfs: running debootstrap {suite} (minbase) into {tmp} ...")
    t0 = time.monotonic()
    try:
        run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
             suite, str(tmp), MIRROR], timeout=900)
        _finish(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if root.exists():
        old = CACHE_DIR / f"{root.name}.old-{os.getpid()}"
        os.rename(root, old)
        shutil.rmtree(old, ignore_errors=True)
    os.rename(tmp, root)
    stamp = dict(_wanted_stamp(suite),
                 built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 seconds=round(time.monotonic() - t0, 1))
    tmp_stamp = stamp_path(suite).with_suffix(".tmp")
    tmp_stamp.write_text(json.dumps(stamp, indent=2) + "\n")
    os.replace(tmp_stamp, stamp_path(suite))
    log(f"rootfs: debootstrap {suite} done in {stamp['seconds']}s, cached at {root}")
    return "built"


def _finish(root) -> None:
    """Generic (not host-specific) tweaks of the base image."""
    # downloaded .debs from debootstrap are not needed in the image
    arch = root / "var/cache/apt/archives"
    for deb in arch.glob("*.deb"):
        deb.unlink()
    # host identity is per host (written into each host's overlay layer)
    (root / "etc/machine-id").write_text("")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/hostname").write_text("localhost\n")
    # units that cannot work in a container and only make systemd "degraded" (trixie's
    # systemd-modules-load fails where libkmod finds no modules of the running kernel;
    # bookworm's lets it pass)
    for unit in ("systemd-timesyncd.service", "apt-daily.timer", "apt-daily-upgrade.timer",
                 "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer",
                 "systemd-modules-load.service"):
        link = root / "etc/systemd/system" / unit
        if not link.exists() and not link.is_symlink():
            link.symlink_to("/dev/null")
