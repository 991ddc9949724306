#!/usr/bin/env bash
# Boot a disk image in QEMU as a person would a box fresh from the image, and check what they
# would see:
#   1. the slot A root comes up read-only, esignbox-tls makes the box certificate and
#      esignbox-health marks slot A good through RAUC (on a box not set up yet);
#   2. the screen (the serial console here; tty1 shows the same) shows the box's address (QEMU's
#      user network gives it 10.0.2.15 by DHCP), its .local name (answered over mDNS), its state,
#      the console's address and the one-time set-up code, and follows the addresses when the
#      LAN cable is pulled and put back;
#   3. the first hour (first-hour.py, headless Chromium): the console's certificate chains to the
#      CA whose fingerprint the screen shows; the screen's code opens the set-up, which ends in a
#      signing service; a hash signed through nginx on 443, whose certificate is the screen's;
#      the screen then says the box is ready and shows no code;
#   4. after a clean power-off, the fingerprints on the screen are those of the files on the box's
#      data partition (read from the disk with debugfs).
#
#   image/boot-test.sh [amd64]   the x86-64 disk: q35 + OVMF, GRUB's A/B choice, as a PC boots it.
#                                KVM when a guest really runs under it (x86_accel in lib.sh), else TCG.
#   image/boot-test.sh arm64     the Raspberry Pi disk's userspace: QEMU `virt` (Cortex-A72, as in
#                                the Pi 4) with UEFI (AAVMF), booting the kernel, initrd and
#                                cmdline.txt from the disk's boot-a partition (handed to AAVMF by
#                                QEMU's -kernel; console ttyAMA0 instead of the Pi's serial0).
#                                The Pi's own boot firmware cannot run in QEMU: its part
#                                (autoboot.txt, config.txt) is not tested here. Always TCG: slow.
# Runs on a copy of the disk (the built image stays pristine). The VM's console port and
# HTTPS port are forwarded to 127.0.0.1 (printed). A second network card sits on a tap device
# of the host (address 169.254.213.1, no DHCP): the box gives itself a link-local address there,
# and the host asks for esignbox.local over mDNS on it (mdns-query.py), which QEMU's user
# network cannot carry (no multicast).
source "$(dirname "$0")/lib.sh"
# The whole script is one function, parsed before it runs: editing the file meanwhile is safe.
main() {
need_root
ARCH=${1:-amd64}
check_arch "$ARCH"
OUT=$BUILD_DIR/$ARCH
DISK=$OUT/$([ "$ARCH" = amd64 ] && echo esignbox-amd64.img || echo esignbox-rpi-arm64.img)
[ -f "$DISK" ] || die "no $DISK: run image/make-disk.sh $ARCH first"
RUN=$OUT/boot-test
rm -rf "$RUN"; mkdir -p "$RUN"
cp --sparse=always "$DISK" "$RUN/disk.img"
read -r MONITOR_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(1)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
SERIAL=$RUN/serial.log
# The box's ports 8443 and 443 on a loopback address of their own, at the same port numbers: the
# console answers only to its own names on its own port (Host and Origin), so the checks call it
# https://esignbox.local:8443/ and resolve that name to $BOX.
BOX=127.0.0.2
# Byte offset of the disk's partition number $1.
part_offset() {
    sfdisk -J "$RUN/disk.img" | python3 -c '
import json, sys
table = json.load(sys.stdin)["partitiontable"]
print(next(p["start"] for p in table["partitions"] if p["node"].endswith(sys.argv[1])) * table.get("sectorsize", 512))' "$1"
}
case $ARCH in
amd64)
    host_packages qemu-system-x86 ovmf e2fsprogs fdisk
    TIMEOUT=${BOOT_TIMEOUT:-600}
    DATA_PART=4
    cp /usr/share/OVMF/OVMF_VARS_4M.fd "$RUN/vars.fd"
    x86_accel
    # shellcheck disable=SC2054  # the commas are QEMU's
    QEMU_CMD=(qemu-system-x86_64 "${QEMU_ACCEL[@]}" -machine q35 -smp 2 -m 1536
        -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd
        -drive if=pflash,format=raw,unit=1,file="$RUN/vars.fd"
        -device i6300esb)
    ;;
arm64)
    host_packages qemu-system-arm qemu-efi-aarch64 e2fsprogs fdisk mtools
    TIMEOUT=${BOOT_TIMEOUT:-1800}
    DATA_PART=7
    QEMU_ACCEL_NOTE="TCG (arm64 on $(uname -m))"
    boot="$RUN/disk.img@@$(part_offset 2)"
    MTOOLS_SKIP_CHECK=1 mcopy -n -i "$boot" ::vmlinuz ::initrd.img ::cmdline.txt "$RUN/" \
        || die "no vmlinuz, initrd.img, cmdline.txt on the boot-a partition"
    cmdline=$(sed -e 's/console=serial0,[0-9]*/console=ttyAMA0,115200/' -e 's/console=tty1 //' "$RUN/cmdline.txt")
    cp /usr/share/AAVMF/AAVMF_VARS.fd "$RUN/vars.fd"
    # shellcheck disable=SC2054
    QEMU_CMD=(qemu-system-aarch64 -accel tcg -machine virt -cpu cortex-a72 -smp 2 -m 1536
        -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd
        -drive if=pflash,format=raw,unit=1,file="$RUN/vars.fd"
        -kernel "$RUN/vmlinuz" -initrd "$RUN/initrd.img" -append "$cmdline")
    ;;
esac
TAP=esbt$$
HOST_LL=169.254.213.1
if ! { ip tuntap add dev "$TAP" mode tap && ip addr add "$HOST_LL/16" dev "$TAP" && ip link set "$TAP" up; }; then
    die "cannot make the tap device $TAP"
fi
QEMU=""
cleanup() {  # (set -e holds in traps too: nothing here may fail)
    [ -z "$QEMU" ] || kill "$QEMU" 2>/dev/null || true
    ip link del "$TAP" 2>/dev/null || true
}
trap cleanup EXIT
log "boot test $ARCH: ${QEMU_CMD[0]}, $QEMU_ACCEL_NOTE; serial log $SERIAL"
log "boot test $ARCH: the VM's console and API on $BOX:8443 and $BOX:443 (esignbox.local for the checks)"
start=$SECONDS
"${QEMU_CMD[@]}" -display none -no-reboot \
    -drive file="$RUN/disk.img",format=raw,if=virtio \
    -nic user,model=virtio-net-pci,hostfwd=tcp:"$BOX":8443-:8443,hostfwd=tcp:"$BOX":443-:443 \
    -netdev tap,id=lan,ifname="$TAP",script=no,downscript=no -device virtio-net-pci,netdev=lan \
    -serial file:"$SERIAL" -monitor tcp:127.0.0.1:"$MONITOR_PORT",server,nowait </dev/null >"$RUN/qemu.log" 2>&1 &
QEMU=$!

# The last screen agetty printed: from its last heading on, without escape sequences.
screen() {
    tr -d '\r' < "$SERIAL" | sed 's/\x1b\[[0-9;?=]*[A-Za-z]//g' \
        | awk '/^E-signature Box [^ ,]+ +\(image / { buf = "" } { buf = buf $0 "\n" } END { printf "%s", buf }'
}
screen_has() { screen | grep -qE "$1"; }
not_on_screen() { screen | grep -q '^Addresses:' && ! screen | grep -qF "$1"; }
until_seen() {  # until_seen WHAT COMMAND...: wait (up to the time limit) until COMMAND succeeds
    local what=$1; shift
    until "$@"; do
        [ $((SECONDS - start)) -lt "$TIMEOUT" ] || { tail -40 "$SERIAL" >&2; die "no $what after $((SECONDS - start)) s (serial log: $SERIAL)"; }
        kill -0 $QEMU 2>/dev/null || { tail -40 "$SERIAL" >&2; die "QEMU stopped before $what (serial log: $SERIAL)"; }
        sleep 2
    done
}
until_seen "'slot A marked good'" grep -qs 'esignbox-health: slot A marked good' "$SERIAL"
good_s=$((SECONDS - start))
log "boot test: slot A marked good after $good_s s"
until_seen "screen with the box's address" screen_has '^Addresses: 10\.0\.2\.15'
until_seen "the console's address and the set-up code on the screen" screen_has '^Set-up code: '
screen_s=$((SECONDS - start))
console_status=$(curl -s -k -o /dev/null -w '%{http_code}' --max-time 20 --resolve "esignbox.local:8443:$BOX" \
    https://esignbox.local:8443/ || true)
SCREEN=$(screen)
mdns_address=$(python3 "$IMAGE_DIR/mdns-query.py" esignbox.local "$HOST_LL" 120 2>&1) || mdns_address=""

# The screen follows the addresses: the LAN cable out (QEMU's set_link), then in again.
monitor() { exec 3<>/dev/tcp/127.0.0.1/"$MONITOR_PORT" && printf '%s\n' "$1" >&3 && sleep 1; exec 3>&-; }
follows=no
if [[ $mdns_address == 169.254.* ]]; then
    monitor 'set_link lan off'
    until_seen "screen without $mdns_address (cable out)" not_on_screen "$mdns_address"
    monitor 'set_link lan on'
    until_seen "screen with a 169.254 address again (cable in)" screen_has '^Addresses: .*169\.254\.'
    follows=yes
fi

# The first hour: the console's set-up in Chromium with what the screen shows, then a signature
# (first-hour.py; FIRST_HOUR=0 skips it). The screen then says the box is ready.
first_hour=skipped
if [ "${FIRST_HOUR:-1}" != 0 ]; then
    fact() { sed -n "s/^$1: *//p" <<<"$SCREEN" | head -1; }
    log "boot test: the console's set-up in headless Chromium, then a signature (screenshots in $RUN/shots)"
    if (cd "$REPO_DIR" && PYTHONPATH=$REPO_DIR "${FIRST_HOUR_PYTHON:-$REPO_DIR/.venv/bin/python}" "$IMAGE_DIR/first-hour.py" \
            --box "$BOX" --code "$(fact 'Set-up code')" --console-ca "$(fact 'Console CA SHA-256')" \
            --api-cert "$(fact 'API cert SHA-256')" --shots "$RUN/shots") >"$RUN/first-hour.log" 2>&1; then
        first_hour=passed
        until_seen "screen saying the box is ready" screen_has '^State: (ready|clock not synchronised)$'
    else
        first_hour=failed
    fi
    ready_screen=$(screen)
fi

log "boot test: powering the VM off (ACPI) to read its data partition"
exec 3<>/dev/tcp/127.0.0.1/"$MONITOR_PORT" && printf 'system_powerdown\n' >&3
for _ in $(seq 1 90); do kill -0 $QEMU 2>/dev/null || break; sleep 2; done
kill -0 $QEMU 2>/dev/null && { kill $QEMU; die "the VM did not power off within 180 s"; }
exec 3>&-
wait $QEMU 2>/dev/null || true
off_s=$((SECONDS - start))

offset=$(part_offset "$DATA_PART")     # the data partition: /var/lib/esignbox
data_file() { debugfs -R "cat $1" "$RUN/disk.img?offset=$offset" 2>/dev/null; }
fingerprint() { openssl x509 -noout -fingerprint -sha256 | cut -d= -f2; }

passed=0; failed=0
ok() { passed=$((passed + 1)); printf '  ok    %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf '  FAIL  %s\n' "$*"; }
shows() { local what=$1; shift; if grep -qE "$@" <<<"$SCREEN"; then ok "screen shows $what"; else bad "screen shows $what"; fi; }
# The firmware's text (`esignbox status --screen`) may break a fingerprint where it likes: its hex
# digits must follow one another on the screen, whatever stands between them.
shows_fingerprint() {  # shows_fingerprint WHAT PEM
    local fp
    fp=$(fingerprint <<<"$2")
    if [ -n "$fp" ] && tr -cd '0-9A-F' <<<"$SCREEN" | grep -qF "${fp//:/}"; then
        ok "screen shows the fingerprint of $1 ($fp)"
    else
        bad "screen shows the fingerprint of $1 (${fp:-no certificate on the disk})"
    fi
}
echo
while IFS= read -r line; do printf "    | %s\n" "$line"; done <<<"$SCREEN"
echo
shows "the address QEMU's DHCP gave the box" '^Addresses: 10\.0\.2\.15( |$)'
shows "its mDNS name" '^Name: esignbox\.local '
if [[ $mdns_address == 169.254.* ]]; then ok "the box answers esignbox.local over mDNS on the LAN ($mdns_address)"
else bad "the box answers esignbox.local over mDNS on the LAN (${mdns_address:-no answer in 120 s})"; fi
shows "its state" '^State: not set up$'
if [ $follows = yes ]; then ok "screen follows the link-local address as the LAN cable goes out and in"
else bad "screen follows the link-local address as the LAN cable goes out and in"; fi
shows "the console under the box's name and address" '^Console: https://esignbox\.local:8443/$'
shows "the console at the box's address" '^Console: https://10\.0\.2\.15:8443/$'
shows "the signing API's address" '^Signing API: https://esignbox\.local/'
shows_fingerprint "the box's TLS certificate (tls/box.crt)" "$(data_file /tls/box.crt)"
shows_fingerprint "the console CA (box/console/tls/ca.pem)" "$(data_file /box/console/tls/ca.pem)"
if [[ $console_status == [234]?? ]]; then ok "the console answers https://esignbox.local:8443/ ($console_status)"
else bad "the console answers https://esignbox.local:8443/ ($console_status)"; fi
if [ "$first_hour" != skipped ]; then
    sed 's/^/    /' "$RUN/first-hour.log" | grep -E '^ +(ok|FAIL) ' || tail -20 "$RUN/first-hour.log"
    if [ $first_hour = passed ]; then ok "the first hour: set-up in the console with the screen's code and fingerprints, a signature on 443"
    else bad "the first hour (log: $RUN/first-hour.log)"; fi
    state=$(sed -n 's/^State: //p' <<<"${ready_screen:-}")
    if [[ $state == ready || $state == "clock not synchronised" ]]; then ok "screen then says the box is $state"
    else bad "screen then says the box is ready (${state:-no state})"; fi
    if ! grep -q '^Set-up code' <<<"${ready_screen:-}"; then ok "screen no longer shows the set-up code"
    else bad "screen no longer shows the set-up code"; fi
fi
echo
log "boot test $ARCH ($QEMU_ACCEL_NOTE): marked good after $good_s s, screen with address after $screen_s s, off after $off_s s"
echo "boot test: $passed passed, $failed failed"
[ $failed -eq 0 ] || die "boot test failed (serial log: $SERIAL)"
}
main "$@"
