#!/usr/bin/env bash
# A/B update test of the x86-64 image in QEMU + OVMF, on a copy of the disk:
#   boot 1  slot A (fresh disk)   health marks A good (not provisioned); a dev box is set up
#                                 (init-dev), esignbox.service and nginx serve it, one signature
#                                 through TLS; `rauc install` the bundle -> slot B; reboot
#   boot 2  slot B (trial)        GRUB set B_TRY=1; /v1/health 200 -> B marked good; the bundle is
#                                 installed again -> A, whose firmware is made not to start (the
#                                 test grub.cfg adds systemd.mask=esignbox.service to slot A); reboot
#   boot 3  slot A (trial)        no /v1/health: the health check marks A bad and reboots
#   boot 4  slot B                GRUB skips A (OK=0): back on B, health marks it good
# The VM is driven by systemd.run= on the kernel command line (in the copy's grub.cfg only),
# running update-test-vm.sh from the copy's data partition; the bundle is on a second disk.
#   image/update-test.sh          (after image/make-disk.sh amd64; 10-15 min under TCG)
source "$(dirname "$0")/lib.sh"
# The whole script is one function, parsed before it runs: editing the file meanwhile is safe.
main() {
need_root
OUT=$BUILD_DIR/amd64
DISK=$OUT/esignbox-amd64.img
BUNDLE=$(ls -t "$OUT"/esignbox-amd64-*.raucb 2>/dev/null | head -1)
[ -f "$DISK" ] && [ -n "$BUNDLE" ] || die "run image/make-disk.sh amd64 first"
host_packages qemu-system-x86 ovmf mtools e2fsprogs
export MTOOLS_SKIP_CHECK=1
TIMEOUT=${UPDATE_TEST_TIMEOUT:-1800}
RUN=$OUT/update-test
rm -rf "$RUN"; mkdir -p "$RUN/updates"
cp --sparse=always "$DISK" "$RUN/disk.img"
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$RUN/vars.fd"

# The bundle on a second disk.
cp "$BUNDLE" "$RUN/updates/update.raucb"
truncate -s $(( $(stat -c %s "$BUNDLE") / 1048576 + 64 ))M "$RUN/updates.img"
mkfs.ext4 -q -F -L UPDATES -d "$RUN/updates" "$RUN/updates.img"
rm -rf "$RUN/updates"

# The script the VM runs at every boot.
cp "$IMAGE_DIR/update-test-vm.sh" "$RUN/run.sh"

# The copy's grub.cfg: start the script at every boot, a short health-check time limit, and
# slot A's firmware masked once the script sets ESIGNBOX_TEST_BREAK_A=1 in grubenv.
start=$(sfdisk -J "$RUN/disk.img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][0]["start"])')
ESP="$RUN/disk.img@@$((start * 512))"
mtype -i "$ESP" ::/EFI/BOOT/grub.cfg | tr -d '\r' > "$RUN/grub.cfg"
# (No quotes inside the systemd.run= value: GRUB escapes them and systemd keeps the escapes. The
# script lives on the data partition, which local-fs.target waits for.)
# systemd.run= generates kernel-command-line.service; the image's default target (multi-user, set
# in /etc) wins over the generator's, so systemd.wants= pulls the service into the normal boot.
run_args='esignbox.health_timeout=45 "systemd.run=/bin/bash /var/lib/esignbox/update-test.sh" systemd.run_success_action=none systemd.run_failure_action=none systemd.wants=kernel-command-line.service systemd.journald.forward_to_console=1'
python3 - "$RUN/grub.cfg" "$run_args" <<'PY'
import sys, pathlib
path, run_args = pathlib.Path(sys.argv[1]), sys.argv[2]
text = path.read_text()
text = text.replace("regexp --set=1:bootdisk",
                    'if [ "$ESIGNBOX_TEST_BREAK_A" = "1" ]; then set break_a="systemd.mask=esignbox.service"; fi\n'
                    "regexp --set=1:bootdisk", 1)
text = text.replace("rauc.slot=A ${cmdline}", "rauc.slot=A ${cmdline} ${break_a} " + run_args)
text = text.replace("rauc.slot=B ${cmdline}", "rauc.slot=B ${cmdline} " + run_args)
assert text.count("systemd.run=") == 2 and "${break_a}" in text, "grub.cfg not patched"
path.write_text(text)
PY
mcopy -o -i "$ESP" "$RUN/grub.cfg" ::/EFI/BOOT/grub.cfg
read -r dstart dsize < <(sfdisk -J "$RUN/disk.img" | python3 -c 'import json,sys; p=json.load(sys.stdin)["partitiontable"]["partitions"][3]; print(p["start"], p["size"])')
dd if="$RUN/disk.img" of="$RUN/data.ext4" bs=512 skip="$dstart" count="$dsize" conv=sparse status=none
debugfs -w -R "write $RUN/run.sh update-test.sh" "$RUN/data.ext4" >/dev/null 2>&1
debugfs -R "stat update-test.sh" "$RUN/data.ext4" 2>/dev/null | grep -q 'Size:' || die "could not put the script on the data partition"
dd if="$RUN/data.ext4" of="$RUN/disk.img" bs=512 seek="$dstart" conv=notrunc,sparse status=none
rm -f "$RUN/data.ext4"

SERIAL=$RUN/serial.log
x86_accel
log "update test: 4 boots in qemu-system-x86_64, $QEMU_ACCEL_NOTE; serial log $SERIAL"
t0=$SECONDS
qemu-system-x86_64 "${QEMU_ACCEL[@]}" -machine q35 -smp 2 -m 1536 -nographic \
    -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,unit=1,file="$RUN/vars.fd" \
    -drive file="$RUN/disk.img",format=raw,if=virtio \
    -drive file="$RUN/updates.img",format=raw,if=virtio,readonly=on \
    -device i6300esb -nic none -serial file:"$SERIAL" -monitor none </dev/null >/dev/null 2>&1 &
QEMU=$!
trap 'kill $QEMU 2>/dev/null || true' EXIT
while kill -0 $QEMU 2>/dev/null && [ $((SECONDS - t0)) -lt "$TIMEOUT" ]; do
    grep -aqE 'UPDATE-TEST: (PASSED|FAIL)' "$SERIAL" 2>/dev/null && { sleep 5; break; }
    sleep 5
done
kill $QEMU 2>/dev/null || true; wait $QEMU 2>/dev/null || true
tr -d '\r' < "$SERIAL" | sed 's/\x1b\[[0-9;]*m//g' \
    | grep -aE 'UPDATE-TEST|esignbox-health|rauc-post-install|no slot left|Kernel panic' | sed 's/^\[ *[0-9.]*\] //'
if grep -aq 'UPDATE-TEST: PASSED' "$SERIAL"; then
    log "update test passed in $((SECONDS - t0)) s"
else
    die "update test failed after $((SECONDS - t0)) s (serial log: $SERIAL)"
fi
}
main "$@"
