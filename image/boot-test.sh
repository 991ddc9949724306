#!/usr/bin/env bash
# Boot the x86-64 disk image in QEMU with UEFI firmware (OVMF) and watch its serial console:
# GRUB picks slot A, the read-only root comes up, esignbox-tls makes the box certificate and
# esignbox-health marks the slot good through RAUC. Uses KVM when /dev/kvm works, else TCG.
#   image/boot-test.sh            (after image/make-disk.sh amd64)
# Runs on a copy of the disk (the built image stays pristine). The VM has no network device.
source "$(dirname "$0")/lib.sh"
# The whole script is one function, parsed before it runs: editing the file meanwhile is safe.
main() {
OUT=$BUILD_DIR/amd64
DISK=$OUT/esignbox-amd64.img
[ -f "$DISK" ] || die "no $DISK: run image/make-disk.sh amd64 first"
host_packages qemu-system-x86 ovmf
TIMEOUT=${BOOT_TIMEOUT:-600}
RUN=$OUT/boot-test
rm -rf "$RUN"; mkdir -p "$RUN"
cp --sparse=always "$DISK" "$RUN/disk.img"
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$RUN/vars.fd"
# KVM when it works here (a paused VM that stays up for 3 s), else software emulation.
accel=(-accel tcg -cpu max)
if [ -w /dev/kvm ]; then
    rc=0
    timeout 3 qemu-system-x86_64 -accel kvm -cpu host -machine q35 -S -nographic -monitor none -serial none \
        -display none </dev/null >/dev/null 2>&1 || rc=$?
    [ $rc -eq 124 ] && accel=(-accel kvm -cpu host)
fi
SERIAL=$RUN/serial.log
log "boot test: qemu-system-x86_64 ${accel[*]}, OVMF, serial log $SERIAL"
start=$SECONDS
qemu-system-x86_64 "${accel[@]}" -machine q35 -smp 2 -m 1536 -nographic -no-reboot \
    -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,unit=1,file="$RUN/vars.fd" \
    -drive file="$RUN/disk.img",format=raw,if=virtio \
    -device i6300esb -nic none \
    -serial file:"$SERIAL" -monitor none </dev/null >/dev/null 2>&1 &
QEMU=$!
trap 'kill $QEMU 2>/dev/null || true' EXIT
result=1
while [ $((SECONDS - start)) -lt "$TIMEOUT" ]; do
    if grep -q 'esignbox-health: slot A marked good' "$SERIAL" 2>/dev/null; then result=0; break; fi
    kill -0 $QEMU 2>/dev/null || break
    sleep 2
done
kill $QEMU 2>/dev/null || true
wait $QEMU 2>/dev/null || true
elapsed=$((SECONDS - start))
tr -d '\r' < "$SERIAL" | grep -aE 'esignbox|Reached target|FAILED|Kernel panic|Emergency|rauc' | sed 's/\x1b\[[0-9;]*m//g' | tail -30
if [ $result -eq 0 ]; then
    log "boot test passed: slot A booted and marked good after $elapsed s"
else
    tail -40 "$SERIAL" >&2
    die "boot test failed after $elapsed s (serial log: $SERIAL)"
fi
}
main "$@"
