#!/usr/bin/env bash
# Make the bootable disk image and the RAUC update bundle from a built root filesystem.
#
#   image/make-disk.sh amd64   -> build/amd64/esignbox-amd64.img   (GPT, UEFI, GRUB A/B)
#   image/make-disk.sh arm64   -> build/arm64/esignbox-rpi-arm64.img (MBR, Pi boot firmware A/B)
#   and build/<arch>/esignbox-<arch>-<version>.raucb, signed with the dev key (image/dev-keys.sh)
#
# No loop devices or mounts: file systems are made from directories (mkfs.ext4 -d, mkfs.vfat +
# mtools) and written into the disk file at the partition offsets sfdisk chose.
#
# x86-64 layout (GPT)                        Raspberry Pi 4 layout (MBR, disk id $RPI_DISKID)
#   1 esp           FAT32  GRUB + grubenv      1 config  FAT32  autoboot.txt (tryboot A/B)
#   2 rootfs-a      ext4   slot A (ro root)    2 boot-a  FAT32  firmware, kernel, DTBs (slot A)
#   3 rootfs-b      ext4   slot B              3 boot-b  FAT32  (slot B)
#   4 esignbox-data ext4   /var/lib/esignbox   5 rootfs-a, 6 rootfs-b ext4; 7 data ext4
# Sizes: SLOT_MB (1536), DATA_MB (512), ESP_MB (64), BOOT_MB (256) in the environment.
source "$(dirname "$0")/lib.sh"
# The whole script is one function, parsed before it runs: editing the file meanwhile is safe.
main() {

ARCH=${1:-amd64}
check_arch "$ARCH"
need_root
OUT=$BUILD_DIR/$ARCH
ROOT=$OUT/rootfs
SLOT_MB=${SLOT_MB:-1536}
DATA_MB=${DATA_MB:-512}
ESP_MB=${ESP_MB:-64}
BOOT_MB=${BOOT_MB:-256}
[ -x "$ROOT/opt/esignbox/venv/bin/esignbox" ] || die "no rootfs at $ROOT: run image/build-rootfs.sh $ARCH first"
VERSION=$(cat "$OUT/version")
umount_chroot "$ROOT"
host_packages e2fsprogs dosfstools mtools fdisk rauc squashfs-tools
export MTOOLS_SKIP_CHECK=1
WORK=$OUT/disk-work
rm -rf "$WORK"; mkdir -p "$WORK"
trap 'umount_chroot "$ROOT"' EXIT

# ext4 image of a directory, sized to its content + 25 % (+ 64 MiB), rounded up to 4 MiB.
mkext4() {  # mkext4 DIR IMAGE LABEL MAX_MB
    local dir=$1 img=$2 label=$3 max=$4 mb
    mb=$(du -sm --apparent-size --one-file-system "$dir" | cut -f1)
    mb=$(( (mb * 5 / 4 + 64 + 3) / 4 * 4 ))
    [ "$mb" -le "$max" ] || die "$dir needs ${mb} MiB, more than the ${max} MiB partition (raise SLOT_MB)"
    rm -f "$img"; truncate -s "${mb}M" "$img"
    mkfs.ext4 -q -F -L "$label" -d "$dir" -E root_owner=0:0 -O ^orphan_file "$img" 2>/dev/null \
        || mkfs.ext4 -q -F -L "$label" -d "$dir" -E root_owner=0:0 "$img"
    echo "$mb"
}

# Write IMAGE into partition N of DISK (offsets from sfdisk).
write_part() {  # write_part DISK N IMAGE
    local disk=$1 n=$2 img=$3 start size
    read -r start size < <(sfdisk -J "$disk" | python3 -c '
import json, sys
p = json.load(sys.stdin)["partitiontable"]["partitions"][int(sys.argv[1]) - 1]
print(p["start"], p["size"])' "$((n))")
    [ $(( $(stat -c %s "$img") / 512 )) -le "$size" ] || die "$(basename "$img") does not fit partition $n"
    dd if="$img" of="$disk" bs=512 seek="$start" conv=notrunc,sparse status=none
}

log "slot image: rootfs.ext4 from $ROOT"
rootfs_mb=$(mkext4 "$ROOT" "$OUT/rootfs.ext4" rootfs "$SLOT_MB")
mkdir -p "$WORK/data"
mkdir -m 0700 "$WORK/data/tls" "$WORK/data/rauc"
rm -f "$WORK/data.ext4"; truncate -s "${DATA_MB}M" "$WORK/data.ext4"
mkfs.ext4 -q -F -L esignbox-data -d "$WORK/data" -E root_owner=0:0 "$WORK/data.ext4"

case $ARCH in
amd64)
    DISK=$OUT/esignbox-amd64.img
    log "ESP: GRUB (x86_64-efi) from the rootfs's grub-efi-amd64-bin, A/B grub.cfg, grubenv"
    mount_chroot "$ROOT"
    in_root "$ROOT" grub-mkimage -O x86_64-efi -p /EFI/BOOT -o /tmp/BOOTX64.EFI \
        part_gpt part_msdos fat ext2 normal linux boot configfile loadenv test regexp probe echo \
        all_video efi_gop gzio sleep reboot halt search search_label search_fs_uuid minicmd cat ls \
        serial terminal
    cp "$ROOT/tmp/BOOTX64.EFI" "$WORK/BOOTX64.EFI"
    in_root "$ROOT" grub-editenv /tmp/grubenv create
    in_root "$ROOT" grub-editenv /tmp/grubenv set ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0
    cp "$ROOT/tmp/grubenv" "$WORK/grubenv"
    umount_chroot "$ROOT"
    rm -f "$WORK/esp.vfat"; truncate -s "${ESP_MB}M" "$WORK/esp.vfat"
    mkfs.vfat -F 32 -n ESP "$WORK/esp.vfat" >/dev/null
    mmd -i "$WORK/esp.vfat" ::/EFI ::/EFI/BOOT
    mcopy -i "$WORK/esp.vfat" "$WORK/BOOTX64.EFI" "$IMAGE_DIR/grub.cfg" "$WORK/grubenv" ::/EFI/BOOT/

    log "disk: GPT esp ${ESP_MB}M, rootfs-a/-b ${SLOT_MB}M each (rootfs ${rootfs_mb}M), data ${DATA_MB}M"
    rm -f "$DISK"; truncate -s "$((1 + ESP_MB + 2 * SLOT_MB + DATA_MB + 1))M" "$DISK"
    sfdisk -q "$DISK" <<EOF
label: gpt
start=1MiB, size=${ESP_MB}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="esp"
size=${SLOT_MB}MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="rootfs-a"
size=${SLOT_MB}MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="rootfs-b"
type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="esignbox-data"
EOF
    write_part "$DISK" 1 "$WORK/esp.vfat"
    write_part "$DISK" 2 "$OUT/rootfs.ext4"
    write_part "$DISK" 4 "$WORK/data.ext4"
    BUNDLE_IMAGES=("rootfs.ext4")
    ;;
arm64)
    DISK=$OUT/esignbox-rpi-arm64.img
    kver=$(basename "$(readlink -f "$ROOT/boot/vmlinuz")"); kver=${kver#vmlinuz-}
    log "boot partition: Pi firmware (raspi-firmware), kernel $kver, device trees, config.txt, cmdline.txt"
    BOOT=$WORK/boot
    mkdir -p "$BOOT"
    cp -r "$ROOT/boot/firmware/." "$BOOT/"
    rm -f "$BOOT"/config.txt "$BOOT"/cmdline.txt "$BOOT"/vmlinuz* "$BOOT"/initrd.img*
    cp "$ROOT/boot/vmlinuz-$kver" "$BOOT/vmlinuz"
    cp "$ROOT/boot/initrd.img-$kver" "$BOOT/initrd.img"
    # The Pi 4 device trees (Debian's kernel ships the upstream ones).
    cp "$ROOT"/usr/lib/linux-image-"$kver"/broadcom/bcm2711-rpi-*.dtb "$BOOT/" 2>/dev/null || true
    ls "$BOOT"/bcm2711-rpi-4-b.dtb >/dev/null 2>&1 || die "no bcm2711-rpi-4-b.dtb for kernel $kver"
    cat > "$BOOT/config.txt" <<EOF
# E-signature Box, Raspberry Pi 4 (arm64, Debian kernel $kver, upstream device trees).
arm_64bit=1
upstream_kernel=1
enable_uart=1
kernel=vmlinuz
initramfs initrd.img followkernel
disable_overscan=1
EOF
    echo "console=serial0,115200 console=tty1 root=PARTUUID=$RPI_DISKID-05 rootfstype=ext4 ro rootwait rauc.slot=A panic=10 systemd.gpt_auto=0" \
        > "$BOOT/cmdline.txt"
    boot_mb=$(( $(du -sm "$BOOT" | cut -f1) + 16 ))
    [ "$boot_mb" -le "$BOOT_MB" ] || die "boot files need ${boot_mb} MiB (BOOT_MB=$BOOT_MB)"
    rm -f "$OUT/boot.vfat"; truncate -s "${BOOT_MB}M" "$OUT/boot.vfat"
    mkfs.vfat -F 32 -n BOOT "$OUT/boot.vfat" >/dev/null
    mcopy -s -i "$OUT/boot.vfat" "$BOOT"/* ::/
    printf '[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=2\n' > "$WORK/autoboot.txt"
    rm -f "$WORK/config.vfat"; truncate -s 64M "$WORK/config.vfat"
    mkfs.vfat -F 32 -n CONFIG "$WORK/config.vfat" >/dev/null
    mcopy -i "$WORK/config.vfat" "$WORK/autoboot.txt" ::/

    log "disk: MBR config 64M, boot-a/-b ${BOOT_MB}M, rootfs-a/-b ${SLOT_MB}M (rootfs ${rootfs_mb}M), data ${DATA_MB}M"
    ext_start=$((4 + 64 + 2 * BOOT_MB)); ext_size=$((2 * SLOT_MB + DATA_MB + 8))   # + EBR gaps
    rm -f "$DISK"; truncate -s "$((ext_start + ext_size))M" "$DISK"
    sfdisk -q "$DISK" <<EOF
label: dos
label-id: 0x$RPI_DISKID
start=4MiB, size=64MiB, type=c
size=${BOOT_MB}MiB, type=c
size=${BOOT_MB}MiB, type=c
start=${ext_start}MiB, size=${ext_size}MiB, type=5
size=${SLOT_MB}MiB, type=83
size=${SLOT_MB}MiB, type=83
type=83
EOF
    write_part "$DISK" 1 "$WORK/config.vfat"
    write_part "$DISK" 2 "$OUT/boot.vfat"
    write_part "$DISK" 5 "$OUT/rootfs.ext4"
    write_part "$DISK" 7 "$WORK/data.ext4"
    BUNDLE_IMAGES=("rootfs.ext4" "boot.vfat")
    ;;
esac

# ---------------------------------------------------------------- RAUC bundle
KEYS=$("$IMAGE_DIR/dev-keys.sh")
CERT=${RAUC_CERT:-$KEYS/signer.cert.pem}
KEY=${RAUC_KEY:-$KEYS/signer.key.pem}
KEYRING=${RAUC_KEYRING:-$KEYS/ca.cert.pem}
COMPATIBLE=$(sed -n 's/^compatible=//p' "$ROOT/etc/rauc/system.conf")
BUNDLE=$OUT/esignbox-$ARCH-$VERSION.raucb
log "RAUC bundle: $(basename "$BUNDLE") ($COMPATIBLE, verity format, signed by $(openssl x509 -in "$CERT" -noout -subject | sed 's/^subject=//'))"
rm -rf "$WORK/bundle"; mkdir -p "$WORK/bundle"
for img in "${BUNDLE_IMAGES[@]}"; do ln "$OUT/$img" "$WORK/bundle/$img" 2>/dev/null || cp "$OUT/$img" "$WORK/bundle/"; done
{
    printf '[update]\ncompatible=%s\nversion=%s\ndescription=E-signature Box firmware and OS (%s)\n\n' "$COMPATIBLE" "$VERSION" "$ARCH"
    printf '[bundle]\nformat=verity\n\n'
    printf '[image.rootfs]\nfilename=rootfs.ext4\n'
    [ "$ARCH" = arm64 ] && printf '\n[image.boot]\nfilename=boot.vfat\n'
} > "$WORK/bundle/manifest.raucm"
rm -f "$OUT"/esignbox-"$ARCH"-*.raucb
rauc --cert="$CERT" --key="$KEY" --keyring="$KEYRING" bundle "$WORK/bundle" "$BUNDLE" >"$OUT/rauc-bundle.log" 2>&1 \
    || { cat "$OUT/rauc-bundle.log" >&2; die "rauc bundle failed"; }
rauc info --keyring="$KEYRING" "$BUNDLE" >"$OUT/rauc-info.txt" 2>&1 \
    || { cat "$OUT/rauc-info.txt" >&2; die "rauc info: the new bundle does not verify against the keyring"; }
rm -rf "$WORK"

log "disk image: $DISK ($(du -h --apparent-size "$DISK" | cut -f1) apparent, $(du -h "$DISK" | cut -f1) allocated)"
log "slot image: $OUT/rootfs.ext4 (${rootfs_mb} MiB); bundle: $BUNDLE ($(du -h "$BUNDLE" | cut -f1))"
}
main "$@"
