#!/usr/bin/env bash
# `make image`: for each architecture (default: amd64 arm64) build the root filesystem, the
# bootable disk image and the signed RAUC bundle; then boot the x86-64 image in QEMU + OVMF
# (BOOT_TEST=0 skips that). Goes on with the next architecture when one fails, and says which.
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
        if [ "$arch" = amd64 ] && [ "${BOOT_TEST:-1}" != 0 ]; then
            if "$IMAGE_DIR/boot-test.sh"; then result[$arch]+=", boots (QEMU/OVMF: slot A marked good)"
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
