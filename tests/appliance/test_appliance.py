"""The appliance of ``make appliance``: its artefacts, and its root filesystem booted with
``systemd-nspawn --boot`` on a lab segment of its own (lab/appliance.py: netns apl-box with the
appliance, apl-uac / apl-uas with sipp, 198.18.9.0/24).

First boot must: run preflight, compile the objects against the running kernel's BTF, attach
xdp_sip/tc_sip_egress to sip0, apply the seeded policy, start the exporter and fail-safe, and say
so in one console line; then a sipp call UAC -> box (Kamailio) -> UAS succeeds and eTSF counts it.
Every load is bounded (sipp -m, -r, -timeout) and every wait has a deadline.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import booted_box, sipp_calls_through_box
from lab import appliance as apl

#: the kernel's own view of the TC hooks (lab/tcview.py)
TCVIEW = Path(__file__).resolve().parents[2] / "lab" / "tcview.py"
CALLS = 10


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def test_artefacts_manifest_and_sums(appliance):
    out, m = appliance["out"], appliance["manifest"]
    for name in ("manifest.json", "SHA256SUMS", "build.log"):
        assert (out / name).is_file(), name
    assert set(m["artefacts"]) == {appliance["tarball"].name, appliance["image"].name}
    assert m["kernel"].startswith("6.1."), m["kernel"]
    assert m["etsf_version"] and m["packages"]["kamailio"].startswith("5.6")
    for pkg in ("linux-image-amd64", "clang", "bpftool", "grub-pc-bin", "grub-efi-amd64-bin"):
        assert pkg in m["packages"], pkg
    sums = dict(reversed(line.split("  ", 1)) for line in (out / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {appliance["tarball"].name, appliance["image"].name, "manifest.json", "build.log"}
    for name in (appliance["tarball"].name, "manifest.json"):
        assert _sha256(out / name) == sums[name], name
    assert "PLAY RECAP" in (out / "build.log").read_text() or "disk image" in (out / "build.log").read_text()


def test_disk_image_layout(appliance):
    """GPT with a BIOS boot partition (core.img), an ESP with BOOTX64.EFI, the seed and the root."""
    img = appliance["image"]
    table = subprocess.run(["sgdisk", "-p", str(img)], capture_output=True, text=True, check=True).stdout
    codes = [line.split()[5] for line in table.splitlines() if line.strip()[:1].isdigit()]
    assert codes == ["EF02", "EF00", "0700", "8304"], table
    with open(img, "rb") as fh:
        mbr = fh.read(512)
        assert mbr[510:512] == b"\x55\xaa"
        assert int.from_bytes(mbr[0x5C:0x64], "little") == 2048, "boot.img does not point at core.img"
        fh.seek(2048 * 512 + 500)
        assert int.from_bytes(fh.read(8), "little") == 2049, "core.img block list not patched"
    with tempfile.TemporaryDirectory() as tmp:
        esp = Path(tmp) / "esp.img"
        subprocess.run(["dd", f"if={img}", f"of={esp}", "bs=512", "skip=4096", "count=131072", "status=none"],
                       check=True)
        listing = subprocess.run(["mdir", "-i", str(esp), "-b", "::/EFI/BOOT"], capture_output=True,
                                 text=True, check=True).stdout
        assert "BOOTX64.EFI" in listing.upper(), listing


@pytest.fixture(scope="module")
def box(appliance):
    """The rootfs tarball extracted and booted in netns apl-box; torn down afterwards."""
    with booted_box(appliance, allow_bpf=True) as booted:
        yield booted


def test_firstboot_attaches_and_says_so(box):
    fb = box.firstboot
    assert fb["result"] == "ok", fb.get("reason")
    assert fb["preflight"]["ok"], fb["preflight"]["message"]
    assert fb["restore"]["attached"].get("sip0"), fb["restore"]
    assert fb["restore"]["policy_generation"], "the seeded policy was not applied"
    # the box's sip0 is a veth: the default hook (auto) is TC ingress there, and the line says so
    assert fb["restore"]["hooks"] == {"sip0": "tc"}, fb["restore"]
    line = "etsf-firstboot: OK attached tc_fastpath to sip0 (tc ingress)"
    assert line in fb["line"], fb["line"]
    # the line reached the console
    deadline = time.monotonic() + 10
    while line not in box.console_log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "first-boot line not on the console"
        time.sleep(0.5)


def test_units_and_attached_programs(box):
    def active(unit):
        return box.sh(["systemctl", "is-active", unit]).stdout.strip()

    # ssh: the box makes its host keys before sshd's own config test (the image has none)
    # the overload controller and the keep-alive prober: enabled by the policy role offline (the
    # example policy turns both on), started after the first boot attached the programs
    units = ("etsf-exporter.service", "etsf-failsafe.service", "etsf-overload.service", "etsf-keepalive.service",
             "kamailio.service", "ssh.service")
    deadline = time.monotonic() + 60
    while any(active(u) != "active" for u in units):
        assert time.monotonic() < deadline, {u: active(u) for u in units}
        time.sleep(1)
    assert active("etsf-firstboot.service") == "active"
    assert box.system_state == "running", box.system_state                # no unit failed
    # the boot-time restore was skipped: first boot did its work in this boot
    res = box.sh(["systemctl", "show", "-p", "ConditionResult", "etsf-restore.service"]).stdout.strip()
    assert res == "ConditionResult=no", res
    st = json.loads(box.sh(["/usr/local/bin/etsfctl", "status", "--json"]).stdout)
    row = st["interfaces"]["sip0"]
    assert row["hook"] == "tc" and row["tc_ingress_prog_name"] == "tc_fastpath", row
    assert row["xdp_prog_id"] is None, row
    assert row["tc_prog_name"] == "tc_sip_egress", row
    link = subprocess.run(["ip", "-n", apl.BOX, "-d", "link", "show", "dev", "sip0"], capture_output=True,
                          text=True, check=True).stdout
    assert "prog/xdp" not in link, link
    # as the kernel shows it (tcx links and clsact filters): the API the default (auto) chose
    view = json.loads(subprocess.run(["ip", "netns", "exec", apl.BOX, sys.executable, str(TCVIEW), "sip0"],
                                     capture_output=True, text=True, check=True).stdout)
    api = row["tc_api"]
    assert row["tc_api_requested"] == "auto" and api in ("tcx", "clsact"), row
    assert [p["name"] for p in view[api]["ingress"]] == ["tc_fastpath"], view
    assert [p["name"] for p in view[api]["egress"]] == ["tc_sip_egress"], view


def _scrape() -> str:
    code = ("import urllib.request;"
            "print(urllib.request.urlopen('http://127.0.0.1:9761/metrics', timeout=5).read().decode())")
    res = subprocess.run(["ip", "netns", "exec", apl.BOX, "python3", "-c", code], capture_output=True,
                         text=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _invites(metrics: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("etsf_sip_packets_total{") and 'hook="tc_ingress"' in line and 'method="INVITE"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_sipp_call_through_the_box_is_steered_and_counted(box, tmp_path):
    deadline = time.monotonic() + 60
    while True:  # the exporter answers once it started (ordered after first boot)
        try:
            before = _scrape()
            break
        except AssertionError:
            assert time.monotonic() < deadline, "exporter does not answer on 127.0.0.1:9761"
            time.sleep(1)
    assert "etsf_up 1.0" in before, before[:2000]
    invites_before = _invites(before)

    row, rc, log = sipp_calls_through_box(tmp_path, CALLS)
    assert rc == 0 and row["SuccessfulCall(C)"] == CALLS and row["FailedCall(C)"] == 0, (rc, row, log[-1500:])
    after = _scrape()
    assert _invites(after) - invites_before >= CALLS, (invites_before, _invites(after))
