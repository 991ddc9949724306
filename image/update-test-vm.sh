# The in-VM half of update-test.sh: sourced by bash at every boot (systemd.run= in the test
# disk's grub.cfg). Not part of the image. Progress goes to the serial console as UPDATE-TEST: ...
exec >/dev/console 2>&1
say() { echo "UPDATE-TEST: $*"; }
fail() { say "FAIL $*"; exit 1; }
http() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@"; }
boot_status() {  # boot_status SLOT -> good | bad, from `rauc status --output-format=json`
    rauc status --output-format=json 2>/dev/null | python3 -c '
import json, sys
slots = json.load(sys.stdin)["slots"]
for entry in (slots if isinstance(slots, list) else [slots]):
    for name, slot in entry.items():
        if name == sys.argv[1]:
            print(slot.get("boot_status"))' "$1"
}
phase_file=/var/lib/esignbox/update-test-phase
STATE=/var/lib/esignbox/box
VENV=/opt/esignbox/venv
until mountpoint -q /var/lib/esignbox; do sleep 1; done
phase=$(cat $phase_file 2>/dev/null || echo 1)
# Boot 3 ends in the health check's own reboot: count it as done now.
[ "$phase" = 3 ] && { echo 4 > $phase_file; sync; }
slot=$(sed -n 's/.*rauc\.slot=\([AB]\).*/\1/p' /proc/cmdline)
say "boot $phase, slot $slot, grubenv: $(grub-editenv /boot/efi/EFI/BOOT/grubenv list | grep -E '^(ORDER|[AB]_)' | tr '\n' ' ')"
while case $(systemctl show -P ActiveState esignbox-health.service) in activating|inactive) true ;; *) false ;; esac; do
    sleep 2
done
say "health check: $(systemctl show -P ActiveState esignbox-health.service); boot status A: $(boot_status rootfs.0), B: $(boot_status rootfs.1)"
mkdir -p /run/updates
mount -o ro LABEL=UPDATES /run/updates
as_box() { setpriv --reuid=esignbox --regid=esignbox --init-groups env HOME=$STATE "$@"; }
case $phase in
1)  [ "$slot" = A ] || fail "expected slot A on a fresh disk"
    # Provision a development box (SoftHSM2 token + key) and serve it with the hardened units.
    install -d -m 0700 -o esignbox -g esignbox $STATE
    as_box $VENV/bin/esignbox --state-dir $STATE init-dev >/tmp/init-dev.log 2>&1 || { tail -5 /tmp/init-dev.log; fail "init-dev"; }
    # The service has run since boot without box.toml (the set-up mode; a firmware without it
    # failed its starts): now it serves the box init-dev made.
    systemctl reset-failed esignbox.service
    systemctl restart esignbox.service
    systemctl restart nginx.service
    for _ in $(seq 1 90); do [ "$(http http://127.0.0.1:8080/v1/health)" = 200 ] && break; sleep 2; done
    [ "$(http http://127.0.0.1:8080/v1/health)" = 200 ] \
        || { journalctl -u esignbox.service --no-pager | tail -20; fail "esignbox.service: /v1/health $(http http://127.0.0.1:8080/v1/health)"; }
    [ "$(http -k https://127.0.0.1/v1/health)" = 200 ] || fail "nginx: /v1/health $(http -k https://127.0.0.1/v1/health)"
    key=$(as_box $VENV/bin/esignbox --state-dir $STATE clients add update-test --calls 5 | tail -1)
    hash=$(printf 'update test' | openssl dgst -sha256 -binary | base64 -w0)
    code=$(curl -sk -o /tmp/sig.json -w '%{http_code}' -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
        -d "{\"hash_algorithm\":\"sha256\",\"hash\":\"$hash\",\"level\":\"B-B\",\"profile\":\"CAdES\"}" \
        https://127.0.0.1/v1/signatures)
    [ "$code" = 201 ] || fail "POST /v1/signatures via nginx: $code $(head -c 300 /tmp/sig.json)"
    say "dev box provisioned: esignbox.service (hardened) signs through nginx/TLS: 201"
    echo 2 > $phase_file; sync
    rauc install /run/updates/update.raucb 2>&1 | tail -2 | sed 's/^/UPDATE-TEST:   /'
    say "bundle installed into B; rebooting"
    systemctl reboot ;;
2)  [ "$slot" = B ] || fail "expected slot B after the update"
    [ "$(systemctl show -P ActiveState esignbox-health.service)" = active ] || fail "health check on B"
    # The next update's firmware will not come up: the test grub.cfg masks esignbox.service on A.
    grub-editenv /boot/efi/EFI/BOOT/grubenv set ESIGNBOX_TEST_BREAK_A=1
    echo 3 > $phase_file; sync
    rauc install /run/updates/update.raucb 2>&1 | tail -2 | sed 's/^/UPDATE-TEST:   /'
    say "bundle installed into A (whose firmware will not start); rebooting"
    systemctl reboot ;;
3)  sleep 900; fail "the health check should have rebooted slot $slot" ;;
4)  [ "$slot" = B ] || fail "on slot $slot, expected the fallback to B"
    [ "$(systemctl show -P ActiveState esignbox-health.service)" = active ] || fail "health check on B"
    [ "$(boot_status rootfs.0)" = bad ] || fail "slot A not marked bad ($(boot_status rootfs.0))"
    grub-editenv /boot/efi/EFI/BOOT/grubenv unset ESIGNBOX_TEST_BREAK_A
    say "PASSED: A failed its trial boot and was marked bad; back on B, marked good"
    echo 5 > $phase_file; sync
    systemctl poweroff ;;
*)  systemctl poweroff ;;
esac
