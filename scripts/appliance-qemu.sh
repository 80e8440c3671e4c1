#!/usr/bin/env bash
# Boot the appliance's raw disk image under qemu-system-x86_64 with software emulation (TCG),
# once with BIOS (SeaBIOS) and once with UEFI (OVMF), until the serial console shows the eTSF
# first-boot result line ("etsf-firstboot: ..."), bounded by a timeout per boot.
# The image is never modified: each boot writes to a throw-away qcow2 overlay.
# The VM gets one virtio NIC (MAC 52:54:00:12:09:10, renamed sip0 by the image) on a qemu hub
# with no other port: no host networking, no addresses outside the VM.
#
# usage: scripts/appliance-qemu.sh IMAGE [bios|uefi|both] [TIMEOUT_S]
# Serial logs: qemu-<firmware>.log next to the image (path printed).
# APPLIANCE_QEMU_SEED=FILE: boot a sparse copy of the image whose seed partition (GPT name
# "seed", FAT) holds FILE as policy.yml, as an operator would provision the box; the first-boot
# line then says "from seed <label>" (or why the seed's policy was rejected).
set -euo pipefail

img=${1:?usage: appliance-qemu.sh IMAGE [bios|uefi|both] [TIMEOUT_S]}
which=${2:-both}
limit=${3:-${APPLIANCE_QEMU_TIMEOUT:-900}}
mac=${APPLIANCE_QEMU_MAC:-52:54:00:12:09:10}
outdir=${APPLIANCE_QEMU_LOGDIR:-$(cd "$(dirname "$img")" && pwd)}
ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.fd
ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd

[ -f "$img" ] || { echo "appliance-qemu: $img not found (make appliance)" >&2; exit 1; }
for t in qemu-system-x86_64 qemu-img; do
  command -v "$t" >/dev/null || { echo "appliance-qemu: $t missing (make setup: qemu-system-x86, qemu-utils)" >&2; exit 1; }
done

tmp=$(mktemp -d /tmp/etsf-apl-qemu.XXXXXX)
qpid=""
# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then kill "$qpid"; wait "$qpid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

seed=${APPLIANCE_QEMU_SEED:-}
if [ -n "$seed" ]; then
  [ -f "$seed" ] || { echo "appliance-qemu: APPLIANCE_QEMU_SEED: $seed is not a file" >&2; exit 2; }
  for t in sgdisk mcopy; do
    command -v "$t" >/dev/null || { echo "appliance-qemu: $t missing (make setup: gdisk, mtools)" >&2; exit 1; }
  done
  start=$(sgdisk -p "$img" | awk '$NF == "seed" && $1 ~ /^[0-9]+$/ {print $2}')
  [ -n "$start" ] || { echo "appliance-qemu: $img has no GPT partition named seed" >&2; exit 2; }
  cp --sparse=always "$img" "$tmp/seeded.img"
  mcopy -o -i "$tmp/seeded.img@@$((start * 512))" "$seed" ::/policy.yml
  echo "[appliance-qemu] seed: $seed -> policy.yml on the seed partition (sector $start) of a copy of the image"
  img=$tmp/seeded.img
fi

boot() {  # boot FIRMWARE: 0 when the first-boot line appeared in time
  local fw=$1 log="$outdir/qemu-$1.log" t0 fwargs=()
  qemu-img create -q -f qcow2 -F raw -b "$(realpath "$img")" "$tmp/disk-$fw.qcow2" || return 1
  if [ "$fw" = uefi ]; then
    [ -f "$ovmf_code" ] || { echo "appliance-qemu: $ovmf_code missing (package ovmf)" >&2; return 1; }
    cp "$ovmf_vars" "$tmp/vars.fd"
    fwargs=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$ovmf_code"
            -drive "if=pflash,format=raw,unit=1,file=$tmp/vars.fd")
  fi
  : > "$log"
  echo "[appliance-qemu] $fw: booting $img (TCG, timeout ${limit}s), serial console -> $log"
  t0=$(date +%s)
  nice -n 10 qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 1 -m 2048 \
    "${fwargs[@]}" \
    -drive "file=$tmp/disk-$fw.qcow2,format=qcow2,if=virtio" \
    -netdev hubport,id=n0,hubid=0 -device "virtio-net-pci,netdev=n0,mac=$mac" \
    -display none -monitor none -serial "file:$log" -no-reboot &
  qpid=$!
  while kill -0 "$qpid" 2>/dev/null; do
    if grep -q 'etsf-firstboot: ' "$log"; then
      sleep 2   # let the rest of the line arrive
      echo "[appliance-qemu] $fw: first-boot result after $(( $(date +%s) - t0 ))s:"
      grep -a 'etsf-firstboot: ' "$log" | sed 's/^/    /'
      kill "$qpid"; wait "$qpid" 2>/dev/null || true; qpid=""
      return 0
    fi
    if (( $(date +%s) - t0 > limit )); then
      echo "[appliance-qemu] $fw: no first-boot line within ${limit}s; last console lines:" >&2
      tail -n 15 "$log" | sed 's/^/    /' >&2
      kill "$qpid"; wait "$qpid" 2>/dev/null || true; qpid=""
      return 1
    fi
    sleep 2
  done
  qpid=""
  echo "[appliance-qemu] $fw: qemu exited before the first-boot line; last console lines:" >&2
  tail -n 15 "$log" | sed 's/^/    /' >&2
  return 1
}

rc=0
case $which in
  bios) boot bios || rc=1 ;;
  uefi) boot uefi || rc=1 ;;
  both) boot bios || rc=1; boot uefi || rc=1 ;;
  *) echo "appliance-qemu: firmware must be bios, uefi or both" >&2; exit 2 ;;
esac
exit $rc
