"""Build (once) and cache the Debian 12 base root filesystem every lab host boots from."""
from __future__ import annotations

import json
import os
import shutil
import time

from lab.common import BASE_ROOTFS, BASE_STAMP, CACHE_DIR, LabError, log, run

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ["python3", "systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2",
            "sudo", "ca-certificates", "procps"]
# bump when the way the base is built changes, so old caches are rebuilt
RECIPE_VERSION = 1


def _wanted_stamp() -> dict:
    return {"suite": SUITE, "mirror": MIRROR, "variant": "minbase",
            "packages": sorted(PACKAGES), "recipe": RECIPE_VERSION}


def cache_valid() -> bool:
    try:
        stamp = json.loads(BASE_STAMP.read_text())
    except (OSError, ValueError):
        return False
    want = _wanted_stamp()
    return (all(stamp.get(k) == v for k, v in want.items())
            and (BASE_ROOTFS / "usr/lib/systemd/systemd").exists()
            and (BASE_ROOTFS / "usr/sbin/sshd").exists())


def ensure_base(*, in_use: bool = False) -> str:
    """Return "reused" or "built"; prints which so callers/tests can tell."""
    if cache_valid():
        log(f"rootfs: reusing cached base {BASE_ROOTFS} (no debootstrap)")
        return "reused"
    if in_use:
        raise LabError("cached rootfs is stale but hosts are running on it: run `lab down --all` first")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = CACHE_DIR / f"rootfs-base.tmp-{os.getpid()}"
    # leftovers of interrupted builds
    for old in CACHE_DIR.glob("rootfs-base.tmp-*"):
        shutil.rmtree(old, ignore_errors=True)
    log(f"rootfs: running debootstrap {SUITE} (minbase) into {tmp} ...")
    t0 = time.monotonic()
    try:
        run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
             SUITE, str(tmp), MIRROR], timeout=900)
        _finish(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if BASE_ROOTFS.exists():
        old = CACHE_DIR / f"rootfs-base.old-{os.getpid()}"
        os.rename(BASE_ROOTFS, old)
        shutil.rmtree(old, ignore_errors=True)
    os.rename(tmp, BASE_ROOTFS)
    stamp = dict(_wanted_stamp(), built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 seconds=round(time.monotonic() - t0, 1))
    tmp_stamp = BASE_STAMP.with_suffix(".tmp")
    tmp_stamp.write_text(json.dumps(stamp, indent=2) + "\n")
    os.replace(tmp_stamp, BASE_STAMP)
    log(f"rootfs: debootstrap done in {stamp['seconds']}s, cached at {BASE_ROOTFS}")
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
    # units that cannot work in a container and only make systemd "degraded"
    for unit in ("systemd-timesyncd.service", "apt-daily.timer", "apt-daily-upgrade.timer",
                 "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer"):
        link = root / "etc/systemd/system" / unit
        if not link.exists() and not link.is_symlink():
            link.symlink_to("/dev/null")
