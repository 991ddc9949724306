#!/usr/bin/env bash
# `make image`: for each architecture (default: amd64 arm64) build the root filesystem, the
# bootable disk image and the signed RAUC bundle; then boot each in QEMU (boot-test.sh: x86-64
# with OVMF, the Pi image's kernel and root in `virt` with AAVMF; BOOT_TEST=0 skips that). Goes on with the next architecture when one fails, and says which.
source "$(dirname "$0")/lib.sh"
# The whole script is one function, parsed before it runs: editing the file meanwhile is safe.
main() {
need_root
ARCHS=("$@"); [ ${#ARCHS[@]} -gt 0 ] || ARCHS=(amd64 arm64)
declare -A result
status=0
for arch in "${ARCHS[@]}"; do
    start=$SECONDS
    if "$IMAGE_DIR/build-rootfs.sh" "$arch" && "$IMAGE_DIR/make-disk.sh" "$arch"; then
        result[$arch]="built in $((SECONDS - start)) s"
        if [ "${BOOT_TEST:-1}" != 0 ]; then
            if "$IMAGE_DIR/boot-test.sh" "$arch"; then result[$arch]+=", boots in QEMU (slot A marked good, screen and mDNS checked)"
            else result[$arch]+=", BOOT TEST FAILED"; status=1; fi
        fi
    else
        result[$arch]="FAILED after $((SECONDS - start)) s (see the messages above)"
        status=1
    fi
done
echo
for arch in "${ARCHS[@]}"; do
    echo "image $arch: ${result[$arch]}"
    ls -l "$BUILD_DIR/$arch"/*.img "$BUILD_DIR/$arch"/*.raucb 2>/dev/null | awk '{ print "    " $5 "  " $9 }'
done
exit $status
}
main "$@"
