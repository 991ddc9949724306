#!/usr/bin/env bash
# Build the appliance root filesystem for one architecture into image/build/<arch>/rootfs.
#
#   image/build-rootfs.sh amd64|arm64
#
# Stages:
#   1. base    debootstrap of Debian $SUITE (minbase) + the appliance's Debian packages.
#              Cached as build/cache/base-<arch>-<key>.tar.zst; the key covers the suite, mirror
#              and package list, so a rerun with the same inputs only unpacks the tarball.
#              arm64 on an x86-64 host: debootstrap --foreign + qemu-user-static (binfmt_misc).
#   2. overlay image/rootfs (+ image/rootfs-<arch>): units, nginx, udev, tmpfiles, RAUC, scripts;
#              *.in files are rendered with the values below.
#   3. venv    the firmware wheel built from this checkout, pip-installed into /opt/esignbox/venv
#              inside the rootfs (dependencies from PyPI; wheel cache in build/cache/pip-<arch>).
#   4. finish  system users, unit enablement, and what a read-only root needs (empty machine-id,
#              resolv.conf pointing into /run, no apt lists/caches).
source "$(dirname "$0")/lib.sh"
# The whole script is one function, parsed before it runs: editing the file meanwhile is safe.
main() {

ARCH=${1:-amd64}
check_arch "$ARCH"
need_root

OUT=$BUILD_DIR/$ARCH
ROOT=$OUT/rootfs
MIRROR=$(detect_mirror)
SECURITY_MIRROR=$(detect_security_mirror)
API_PORT=${ESIGNBOX_API_PORT:-8080}
MAX_PDF_MB=${ESIGNBOX_MAX_PDF_MB:-64}

COMMON_PACKAGES=(
    systemd systemd-sysv systemd-timesyncd systemd-resolved udev dbus
    libpam-systemd kmod iproute2 procps util-linux e2fsprogs dosfstools mtools
    python3 python3-venv
    softhsm2 opensc
    nginx-light openssl ca-certificates curl
    slapd
    rauc rauc-service
    initramfs-tools zstd
)
case $ARCH in
    amd64)
        ARCH_PACKAGES=(linux-image-amd64 grub-common grub-efi-amd64-bin)
        COMPONENTS=main
        COMPATIBLE=esignbox-x86_64-efi
        ;;
    arm64)
        ARCH_PACKAGES=(linux-image-arm64 raspi-firmware)
        COMPONENTS=main,non-free-firmware
        COMPATIBLE=esignbox-rpi-arm64
        ;;
esac
PACKAGES=("${COMMON_PACKAGES[@]}" "${ARCH_PACKAGES[@]}")

cleanup() { umount_chroot "$ROOT"; }
trap cleanup EXIT

# ---------------------------------------------------------------- 1. base
host_packages debootstrap zstd
if [ "$ARCH" = arm64 ] && [ "$(dpkg --print-architecture)" != arm64 ]; then
    host_packages qemu-user-static binfmt-support
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || die "binfmt_misc has no qemu-aarch64 entry: cannot run arm64 code here"
fi

BASE_KEY=$(printf '%s\n' v1 "$SUITE" "$ARCH" "$MIRROR" "$SECURITY_MIRROR" "$COMPONENTS" "${PACKAGES[@]}" \
    | sha256sum | cut -c1-12)
BASE_TAR=$CACHE_DIR/base-$ARCH-$BASE_KEY.tar.zst
mkdir -p "$CACHE_DIR/apt-$ARCH" "$CACHE_DIR/debootstrap-$ARCH" "$CACHE_DIR/pip-$ARCH" "$OUT"

umount_chroot "$ROOT"
rm -rf "$ROOT"
mkdir -p "$ROOT"

write_sources() {
    local comps=${COMPONENTS//,/ }
    cat > "$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE $comps
deb $MIRROR $SUITE-updates $comps
deb $SECURITY_MIRROR $SUITE-security $comps
EOF
}

if [ -f "$BASE_TAR" ]; then
    log "base: unpacking cached $(basename "$BASE_TAR")"
    tar --zstd -xpf "$BASE_TAR" -C "$ROOT" --numeric-owner
else
    log "base: debootstrap $SUITE/$ARCH from $MIRROR"
    foreign=()
    [ "$ARCH" != "$(dpkg --print-architecture)" ] && foreign=(--foreign)
    debootstrap --variant=minbase --arch="$ARCH" --components="$COMPONENTS" "${foreign[@]}" \
        --cache-dir="$CACHE_DIR/debootstrap-$ARCH" "$SUITE" "$ROOT" "$MIRROR" >"$OUT/debootstrap.log" 2>&1 \
        || { tail -20 "$OUT/debootstrap.log" >&2; die "debootstrap failed (log: $OUT/debootstrap.log)"; }
    if [ ${#foreign[@]} -gt 0 ]; then
        log "base: debootstrap second stage under qemu-user"
        cp /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/" 2>/dev/null || true
        in_root "$ROOT" /debootstrap/debootstrap --second-stage >>"$OUT/debootstrap.log" 2>&1 \
            || { tail -20 "$OUT/debootstrap.log" >&2; die "debootstrap --second-stage failed"; }
    fi
    write_sources
    # No daemon may start inside the build chroot.
    printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"; chmod 755 "$ROOT/usr/sbin/policy-rc.d"
    cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
    mount_chroot "$ROOT"
    mount --bind "$CACHE_DIR/apt-$ARCH" "$ROOT/var/cache/apt/archives"
    # The initramfs must boot other machines than the build host: all storage drivers.
    mkdir -p "$ROOT/etc/initramfs-tools/conf.d"
    echo 'MODULES=most' > "$ROOT/etc/initramfs-tools/conf.d/esignbox"
    # One initramfs at the end instead of one per kernel/firmware/initramfs-tools trigger
    # (each takes minutes under qemu-user).
    mkdir -p "$ROOT/etc/initramfs-tools"
    echo 'update_initramfs=no' > "$ROOT/etc/initramfs-tools/update-initramfs.conf"
    log "base: apt-get install ${#PACKAGES[@]} packages"
    in_root "$ROOT" apt-get update -qq >>"$OUT/debootstrap.log" 2>&1
    in_root "$ROOT" apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef \
        -o Dpkg::Options::=--force-confold "${PACKAGES[@]}" >"$OUT/apt.log" 2>&1 \
        || { tail -30 "$OUT/apt.log" >&2; die "apt-get install in the rootfs failed (log: $OUT/apt.log)"; }
    conf=$ROOT/etc/initramfs-tools/update-initramfs.conf
    if [ -f "$conf.dpkg-dist" ]; then mv "$conf.dpkg-dist" "$conf"; else sed -i 's/^update_initramfs=no/update_initramfs=yes/' "$conf"; fi
    for k in "$ROOT"/boot/vmlinuz-*; do
        v=${k##*/vmlinuz-}
        [ -f "$ROOT/boot/initrd.img-$v" ] && continue
        log "base: initramfs for $v"
        in_root "$ROOT" update-initramfs -c -k "$v" >>"$OUT/apt.log" 2>&1 || die "update-initramfs failed (log: $OUT/apt.log)"
    done
    umount_chroot "$ROOT"
    rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin
    log "base: caching as $(basename "$BASE_TAR")"
    tar --zstd -cpf "$BASE_TAR.tmp" -C "$ROOT" --numeric-owner --one-file-system . && mv "$BASE_TAR.tmp" "$BASE_TAR"
fi

# ---------------------------------------------------------------- 2. overlay
VERSION=$(cd "$REPO_DIR" && python3 -c 'import tomllib;print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
GIT_REV=$(cd "$REPO_DIR" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$REPO_DIR" diff --quiet HEAD -- 2>/dev/null || GIT_REV="$GIT_REV.dirty"
IMAGE_VERSION="$VERSION+g$GIT_REV"
SOFTHSM_MODULE=$(in_root "$ROOT" sh -c 'ls /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so 2>/dev/null | head -1')
[ -n "$SOFTHSM_MODULE" ] || die "libsofthsm2.so not found in the rootfs"
MULTIARCH=$([ "$ARCH" = amd64 ] && echo x86_64-linux-gnu || echo aarch64-linux-gnu)

log "overlay: image/rootfs + image/rootfs-$ARCH"
for overlay in "$IMAGE_DIR/rootfs" "$IMAGE_DIR/rootfs-$ARCH"; do
    [ -d "$overlay" ] && cp -r --preserve=mode "$overlay/." "$ROOT/"
done
install -m 755 "$IMAGE_DIR/selftest.sh" "$ROOT/usr/lib/esignbox/selftest"
install -m 644 "$IMAGE_DIR/README.md" "$ROOT/usr/share/esignbox/README.md"
while IFS= read -r -d '' tmpl; do
    sed -e "s|@API_PORT@|$API_PORT|g" -e "s|@MAX_PDF_MB@|$MAX_PDF_MB|g" -e "s|@ARCH@|$ARCH|g" \
        -e "s|@COMPATIBLE@|$COMPATIBLE|g" -e "s|@VERSION@|$IMAGE_VERSION|g" -e "s|@VENV@|$VENV|g" \
        -e "s|@SOFTHSM_MODULE@|$SOFTHSM_MODULE|g" -e "s|@MULTIARCH@|$MULTIARCH|g" -e "s|@RPI_DISKID@|$RPI_DISKID|g" "$tmpl" > "${tmpl%.in}"
    chmod --reference="$tmpl" "${tmpl%.in}"
    rm "$tmpl"
done < <(find "$ROOT/etc" "$ROOT/usr/lib/esignbox" "$ROOT/usr/share/esignbox" -name '*.in' -print0)
grep -rlE '@[A-Z_]+@' "$ROOT/etc/esignbox" "$ROOT/etc/nginx" "$ROOT/etc/rauc" "$ROOT/etc/systemd/system" "$ROOT/usr/lib/esignbox" 2>/dev/null \
    && die "unrendered @VARIABLE@ left in the files above"

# The development RAUC keyring (image/build/keys); a field build passes its own CA with RAUC_KEYRING=.
"$IMAGE_DIR/dev-keys.sh" >/dev/null
install -D -m 644 "${RAUC_KEYRING:-$BUILD_DIR/keys/ca.cert.pem}" "$ROOT/etc/rauc/keyring.pem"
cat > "$ROOT/etc/esignbox/image-release" <<EOF
ESIGNBOX_IMAGE_VERSION=$IMAGE_VERSION
ESIGNBOX_IMAGE_ARCH=$ARCH
ESIGNBOX_IMAGE_COMPATIBLE=$COMPATIBLE
ESIGNBOX_IMAGE_SUITE=$SUITE
ESIGNBOX_IMAGE_BUILT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF

# Packages Debian does not carry (Yubico's yubihsm-shell/libyubihsm/yubihsm-pkcs11 .debs for the
# YubiHSM2 PKCS#11 module): put them in build/extra-debs/<arch>/ and they are installed here.
EXTRA_DEBS=$BUILD_DIR/extra-debs/$ARCH
if compgen -G "$EXTRA_DEBS/*.deb" >/dev/null; then
    log "extra packages: $(cd "$EXTRA_DEBS" && echo *.deb)"
    cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
    mount_chroot "$ROOT"
    mkdir -p "$ROOT/tmp/extra-debs"; cp "$EXTRA_DEBS"/*.deb "$ROOT/tmp/extra-debs/"
    printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"; chmod 755 "$ROOT/usr/sbin/policy-rc.d"
    in_root "$ROOT" apt-get update -qq >/dev/null
    in_root "$ROOT" sh -c 'apt-get install -y -q --no-install-recommends /tmp/extra-debs/*.deb' >"$OUT/extra-debs.log" 2>&1 \
        || { tail -20 "$OUT/extra-debs.log" >&2; die "installing build/extra-debs/$ARCH failed"; }
    umount_chroot "$ROOT"
else
    log "extra packages: none in build/extra-debs/$ARCH (YubiHSM2 PKCS#11 module not included)"
fi

# ---------------------------------------------------------------- 3. venv
log "venv: building the esignbox wheel from this checkout"
SRC=$(mktemp -d)
trap 'cleanup; rm -rf "$SRC"' EXIT
# The working tree as git sees it (tracked + untracked, minus ignored files).
(cd "$REPO_DIR" && git ls-files -z --cached --others --exclude-standard | grep -zv '^image/' \
    | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$SRC"
rm -rf "$OUT/dist"; mkdir -p "$OUT/dist"
python3 -m pip wheel -q --no-deps -w "$OUT/dist" "$SRC" >"$OUT/wheel.log" 2>&1 \
    || { tail -20 "$OUT/wheel.log" >&2; die "building the esignbox wheel failed"; }
WHEEL=$(ls "$OUT"/dist/esignbox-*.whl)

log "venv: pip install $(basename "$WHEEL") into $VENV (dependencies from PyPI)"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf.build"
rm -f "$ROOT/etc/resolv.conf"; cp "$ROOT/etc/resolv.conf.build" "$ROOT/etc/resolv.conf"
mount_chroot "$ROOT"
mkdir -p "$ROOT/var/cache/esignbox-pip" "$ROOT/tmp/dist"
mount --bind "$CACHE_DIR/pip-$ARCH" "$ROOT/var/cache/esignbox-pip"
cp "$WHEEL" "$ROOT/tmp/dist/"
# The build host's CA bundle, for this pip run only (a host behind a TLS-inspecting proxy has its
# CA there, and PIP_CERT/REQUESTS_CA_BUNDLE may point at it); the image keeps Debian's own.
cp -L "${PIP_CERT:-${REQUESTS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}}" "$ROOT/tmp/dist/host-ca.crt"
in_root "$ROOT" python3 -m venv "$VENV"
in_root "$ROOT" env PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=120 PIP_CERT=/tmp/dist/host-ca.crt \
    ${PIP_INDEX_URL:+PIP_INDEX_URL=$PIP_INDEX_URL} "$VENV/bin/pip" install -q \
    --cache-dir /var/cache/esignbox-pip "/tmp/dist/$(basename "$WHEEL")" >"$OUT/pip.log" 2>&1 \
    || { tail -30 "$OUT/pip.log" >&2; die "pip install into the rootfs venv failed (log: $OUT/pip.log)"; }
in_root "$ROOT" "$VENV/bin/pip" freeze --all > "$ROOT/usr/share/esignbox/venv-freeze.txt"
in_root "$ROOT" "$VENV/bin/esignbox" --help >/dev/null || die "esignbox does not start inside the rootfs"
umount_chroot "$ROOT"
rmdir "$ROOT/var/cache/esignbox-pip"

# ---------------------------------------------------------------- 4. finish
log "finish: users, units, read-only root"
mount_chroot "$ROOT"
in_root "$ROOT" systemd-sysusers
in_root "$ROOT" systemctl enable systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
    esignbox.service esignbox-network.service esignbox-tls.service esignbox-health.service nginx.service \
    esignbox-screen.service esignbox-screen.path esignbox-screen-watch.service systemd-networkd-wait-online.service >/dev/null 2>&1
# slapd is there for the firmware, which runs its own ([ldap]); Debian's would serve its own database.
in_root "$ROOT" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
    slapd.service >/dev/null 2>&1
in_root "$ROOT" systemctl set-default multi-user.target >/dev/null 2>&1
# A headless signing box needs no sound, cameras, Wi-Fi, Bluetooth, InfiniBand or GPU drivers
# (the firmware framebuffer is enough for a console): about a third of the kernel modules.
if [ "${ESIGNBOX_PRUNE_MODULES:-yes}" = yes ]; then
    for kdir in "$ROOT"/usr/lib/modules/*/kernel; do
        rm -rf "$kdir"/sound "$kdir"/drivers/media "$kdir"/drivers/net/wireless "$kdir"/drivers/infiniband \
            "$kdir"/drivers/staging "$kdir"/drivers/isdn "$kdir"/drivers/bluetooth "$kdir"/net/bluetooth \
            "$kdir"/net/mac80211 "$kdir"/net/wireless "$kdir"/drivers/gpu/drm/amd "$kdir"/drivers/gpu/drm/nouveau \
            "$kdir"/drivers/gpu/drm/radeon "$kdir"/drivers/gpu/drm/i915 "$kdir"/drivers/gpu/drm/xe
        in_root "$ROOT" depmod -a "$(basename "$(dirname "$kdir")")"
    done
fi
# The kernel and initrd at fixed names inside the slot: the bootloader loads /boot/vmlinuz.
kernel=$(cd "$ROOT/boot" && ls vmlinuz-* | sort -V | tail -1)
[ -n "$kernel" ] || die "no kernel in the rootfs"
ln -sf "$kernel" "$ROOT/boot/vmlinuz"
ln -sf "initrd.img-${kernel#vmlinuz-}" "$ROOT/boot/initrd.img"
[ -f "$ROOT/boot/initrd.img-${kernel#vmlinuz-}" ] || in_root "$ROOT" update-initramfs -c -k "${kernel#vmlinuz-}" >/dev/null
umount_chroot "$ROOT"

rm -f "$ROOT/etc/nginx/sites-enabled/default" "$ROOT/usr/sbin/policy-rc.d" "$ROOT/etc/resolv.conf.build"
ln -sf ../sites-available/esignbox.conf "$ROOT/etc/nginx/sites-enabled/esignbox.conf"
echo esignbox > "$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tesignbox esignbox.local\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$ROOT/etc/hosts"
: > "$ROOT/etc/machine-id"                      # empty + read-only root: systemd uses a transient id
rm -f "$ROOT/var/lib/dbus/machine-id"; ln -sf /etc/machine-id "$ROOT/var/lib/dbus/machine-id"
ln -sf ../run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf"
passwd -R "$ROOT" -l root >/dev/null              # no password login; the box is run over its API/console
mkdir -p "$ROOT/var/lib/esignbox" "$ROOT/boot/efi" "$ROOT/var/log/journal"
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
    "$ROOT"/var/cache/debconf/*-old "$ROOT"/var/lib/dpkg/*-old "$ROOT"/tmp/* "$ROOT"/var/tmp/* \
    "$ROOT"/usr/bin/qemu-aarch64-static
find "$ROOT/var/log" -type f -delete
echo "$IMAGE_VERSION" > "$OUT/version"
log "rootfs ready: $ROOT ($(du -sh --one-file-system "$ROOT" | cut -f1), $IMAGE_VERSION)"
}
main "$@"
