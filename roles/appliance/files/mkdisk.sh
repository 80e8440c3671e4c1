#!/usr/bin/env bash
# Raw GPT disk image of an eTSF appliance root filesystem, bootable with BIOS and UEFI,
# built without loop devices (mke2fs -d, mkfs.vfat + mtools, sgdisk, dd conv=notrunc):
#
#   LBA 2048   1 MiB  BIOS boot (EF02)   GRUB core.img (i386-pc); boot.img in the protective MBR
#   2 MiB     64 MiB  EFI system (EF00)  \EFI\BOOT\BOOTX64.EFI (GRUB x86_64-efi)
#   66 MiB    16 MiB  seed (0700, FAT)   label $SEED_LABEL: a policy.yml here replaces the built-in one
#   82 MiB    rest    root (8304, ext4)  label etsf-root
#
# Both GRUB images embed a config that finds the root file system by UUID and reads
# /boot/grub/grub.cfg from it (serial + VGA console).  GRUB's tools and modules come from the
# image itself (grub-pc-bin, grub-efi-amd64-bin), run with chroot.
#
# usage: mkdisk.sh ROOT IMAGE SIZE SEED_LABEL SEED_DIR CMDLINE
set -euo pipefail

root=$1 img=$2 size=$3 seed_label=$4 seed_dir=$5 cmdline=$6
log() { printf '[mkdisk %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

[ -x "$root/usr/bin/grub-mkimage" ] || { echo "mkdisk: $root has no grub-mkimage (grub-pc-bin)" >&2; exit 1; }
kver=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sed 's/^vmlinuz-//' | sort -V | tail -n1)
[ -n "$kver" ] || { echo "mkdisk: no kernel in $root/boot" >&2; exit 1; }
[ -f "$root/boot/initrd.img-$kver" ] || { echo "mkdisk: no initrd for $kver" >&2; exit 1; }

work=$(mktemp -d "$root/tmp/mkdisk.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
inroot=${work#"$root"}

SECTOR=512
BIOS_START=2048; BIOS_SECTORS=2048          # 1 MiB
ESP_START=4096;  ESP_SECTORS=131072         # 64 MiB
SEED_START=135168; SEED_SECTORS=32768       # 16 MiB
ROOT_START=167936                           # 82 MiB

rm -f "$img"
truncate -s "$size" "$img"
total=$(( $(stat -c %s "$img") / SECTOR ))
root_sectors=$(( total - 34 - ROOT_START ))  # the backup GPT takes the last 33 sectors
root_sectors=$(( root_sectors / 2048 * 2048 ))
(( root_sectors > 0 )) || { echo "mkdisk: image size $size is too small" >&2; exit 1; }
log "image $img: $size, kernel $kver"

sgdisk --clear \
  -n 1:$BIOS_START:+$BIOS_SECTORS -t 1:EF02 -c 1:bios-boot \
  -n 2:$ESP_START:+$ESP_SECTORS -t 2:EF00 -c 2:esp \
  -n 3:$SEED_START:+$SEED_SECTORS -t 3:0700 -c 3:seed \
  -n 4:$ROOT_START:+$root_sectors -t 4:8304 -c 4:root \
  "$img" >/dev/null
sgdisk -p "$img"

uuid=$(cat /proc/sys/kernel/random/uuid)

# grub.cfg inside the root file system (also useful in the tarball-less image only)
mkdir -p "$root/boot/grub"
cat > "$root/boot/grub/grub.cfg" <<EOF
# eTSF appliance (written by mkdisk.sh)
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=2
set default=0
menuentry "eTSF appliance (Debian 12, Linux $kver)" {
  search --no-floppy --fs-uuid --set=root $uuid
  linux /boot/vmlinuz-$kver root=UUID=$uuid rw $cmdline
  initrd /boot/initrd.img-$kver
}
EOF
cat > "$work/early.cfg" <<EOF
search --no-floppy --fs-uuid --set=root $uuid
set prefix=(\$root)/boot/grub
configfile (\$root)/boot/grub/grub.cfg
EOF
[ -f "$root/etc/fstab" ] && cp -p "$root/etc/fstab" "$work/fstab.orig"
cat > "$root/etc/fstab" <<EOF
# eTSF appliance: root file system of the disk image
UUID=$uuid / ext4 rw,errors=remount-ro 0 1
EOF

common_mods=(part_gpt ext2 search search_fs_uuid configfile normal linux echo serial terminal test gzio)
log "GRUB i386-pc core.img"
chroot "$root" grub-mkimage -O i386-pc -d /usr/lib/grub/i386-pc -p /boot/grub -c "$inroot/early.cfg" \
  -o "$inroot/core.img" biosdisk "${common_mods[@]}"
log "GRUB x86_64-efi BOOTX64.EFI"
chroot "$root" grub-mkimage -O x86_64-efi -d /usr/lib/grub/x86_64-efi -p /boot/grub -c "$inroot/early.cfg" \
  -o "$inroot/BOOTX64.EFI" fat efi_gop efi_uga "${common_mods[@]}"

core_bytes=$(stat -c %s "$work/core.img")
(( core_bytes <= BIOS_SECTORS * SECTOR )) || { echo "mkdisk: core.img ($core_bytes B) does not fit" >&2; exit 1; }

le64() {  # write 8 little-endian bytes of $1 to stdout
  local v=$1 i
  for i in 0 1 2 3 4 5 6 7; do
    # shellcheck disable=SC2059  # the format is a generated \ooo octal escape
    printf "\\$(printf '%03o' $(( (v >> (8 * i)) & 255 )))"
  done
}
# boot.img into the protective MBR: code only (bytes 0..439), the partition table stays
dd if="$root/usr/lib/grub/i386-pc/boot.img" of="$img" bs=440 count=1 conv=notrunc status=none
# boot.img's kernel sector (offset 0x5c): where core.img starts
le64 $BIOS_START | dd of="$img" bs=1 seek=$((0x5c)) conv=notrunc status=none
# core.img into the BIOS boot partition; its first sector (diskboot.img) ends with a block
# list (start LBA, sector count, segment) -- grub-mkimage filled the count, we set the start
dd if="$work/core.img" of="$img" bs=$SECTOR seek=$BIOS_START conv=notrunc status=none
le64 $((BIOS_START + 1)) | dd of="$img" bs=1 seek=$((BIOS_START * SECTOR + 500)) conv=notrunc status=none

log "ESP (FAT32, 64 MiB)"
rm -f "$work/esp.img"
mkfs.vfat -F 32 -n ESP -C "$work/esp.img" $((ESP_SECTORS / 2)) >/dev/null
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT
mcopy -i "$work/esp.img" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
dd if="$work/esp.img" of="$img" bs=$SECTOR seek=$ESP_START conv=notrunc status=none

log "seed partition (FAT, label ${seed_label:-none})"
rm -f "$work/seed.img"
mkfs.vfat -n "${seed_label:-SEED}" -C "$work/seed.img" $((SEED_SECTORS / 2)) >/dev/null
if [ -d "$seed_dir" ] && [ -n "$(ls -A "$seed_dir")" ]; then
  mcopy -s -i "$work/seed.img" "$seed_dir"/* ::/
fi
dd if="$work/seed.img" of="$img" bs=$SECTOR seek=$SEED_START conv=notrunc status=none

# the scratch files must not end up in the root file system
fstab_orig=$(mktemp)
if [ -f "$work/fstab.orig" ]; then cp -p "$work/fstab.orig" "$fstab_orig"; else rm -f "$fstab_orig"; fi
rm -rf "$work"
trap - EXIT
log "root file system (ext4 from the tree, $((root_sectors / 2048)) MiB)"
# GRUB 2.06 reads ext4 without the newest incompat features
mke2fs -q -F -t ext4 -L etsf-root -U "$uuid" -O ^metadata_csum_seed,^orphan_file \
  -E "offset=$((ROOT_START * SECTOR)),root_owner=0:0" -d "$root" "$img" "$((root_sectors / 2))k"
# the fstab above belongs to the disk image only
if [ -f "$fstab_orig" ]; then mv "$fstab_orig" "$root/etc/fstab"; else rm -f "$root/etc/fstab"; fi
log "done: $(du -h --apparent-size "$img" | cut -f1) apparent, $(du -h "$img" | cut -f1) allocated; root UUID $uuid"
