#!/usr/bin/env bash
# `make test-image`: build the x86-64 root filesystem and check it without booting it.
#   1. image/build-rootfs.sh amd64 (debootstrap of Debian bookworm, cached; firmware venv)
#   2. the firmware self-test inside the rootfs, as the esignbox user, in a private network
#      namespace: init-dev, serve, /v1/health, POST /v1/signatures, openssl cms -verify;
#      then the same through the image's nginx with the box-made TLS certificate
#   3. systemd-analyze verify of the box's units (--root on the rootfs)
#   4. the read-only-root, user, udev, RAUC and nginx wiring the units rely on
# Nothing the checks write stays in the rootfs: they run on tmpfs mounts in their own namespace.
source "$(dirname "$0")/lib.sh"
# shellcheck disable=SC2016  # the scripts run in namespaces below are single-quoted on purpose
# The whole script is one function, parsed before it runs: editing the file meanwhile is safe.
main() {
need_root
ARCH=${1:-amd64}    # `make test-image` checks amd64; arm64 works too (slower: qemu-user)
check_arch "$ARCH"
ROOT=$BUILD_DIR/$ARCH/rootfs
start=$SECONDS
passed=0
failed=0
ok() { passed=$((passed + 1)); printf '  ok    %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf '  FAIL  %s\n' "$*"; }
check() { local what=$1; shift; if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi; }

if [ -z "${SKIP_BUILD:-}" ]; then
    "$IMAGE_DIR/build-rootfs.sh" "$ARCH"
fi
[ -x "$ROOT/opt/esignbox/venv/bin/esignbox" ] || die "no rootfs at $ROOT (run without SKIP_BUILD)"
build_s=$((SECONDS - start))

log "test: firmware self-test inside the rootfs (chroot, private network namespace)"
# The self-test starts nginx on ports 80/443, and the box on 18080/19180: free in the
# private network namespace whatever the host runs.
# A PID namespace too: whatever the test starts ends with it.
if unshare --mount --net --pid --fork --mount-proc --propagation private -- bash -c '
        set -e
        root=$1
        ip link set lo up
        mount -t proc proc "$root/proc"
        mount -t sysfs sysfs "$root/sys"
        mount --rbind /dev "$root/dev"
        for d in tmp run var/lib/esignbox var/lib/nginx var/log var/cache; do
            mount -t tmpfs tmpfs "$root/$d" -o mode=0755
        done
        chmod 1777 "$root/tmp"
        exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root \
            SELFTEST_NGINX=1 SELFTEST_TIMEOUT=300 \
            chroot "$root" /usr/lib/esignbox/selftest
    ' selftest "$ROOT"; then
    ok "firmware self-test in the rootfs (init-dev, serve, health, sign + verify, via nginx/TLS)"
else
    bad "firmware self-test in the rootfs"
fi

log "test: [network] of box.toml -> systemd-networkd/timesyncd files and host name (esignbox network apply)"
# The [network] a provisioning bundle writes (provisioning/apply.py, as tests/test_provisioning.py
# checks), applied by the rootfs's own firmware in a private mount and UTS namespace.
network_out=$(unshare --mount --uts --fork --propagation private -- bash -c '
        set -e
        root=$1
        mount -t tmpfs tmpfs "$root/tmp" -o mode=1777
        mkdir "$root/tmp/box"
        printf "%s\n" "[token]" "module = \"m.so\"" "label = \"t\"" "[network]" "hostname = \"esign-hq\"" \
            "mode = \"static\"" "address = \"192.0.2.10/24\"" "gateway = \"192.0.2.1\"" "dns = [\"192.0.2.53\"]" \
            "ntp = [\"ntp.example\"]" > "$root/tmp/box/box.toml"
        chroot "$root" /opt/esignbox/venv/bin/esignbox --state-dir /tmp/box network apply --run-dir /tmp/run
        cat "$root/tmp/run/systemd/network/10-esignbox.network" "$root/tmp/run/systemd/timesyncd.conf.d/50-esignbox.conf"
        echo "hostname=$(hostname)"
    ' network "$ROOT" 2>&1) || true
for line in Address=192.0.2.10/24 Gateway=192.0.2.1 DNS=192.0.2.53 NTP=ntp.example hostname=esign-hq; do
    check "[network] in box.toml gives $line" grep -qx "$line" <<<"$network_out"
done
check "the image's default network (DHCP) sorts after the box's own file" \
    test -f "$ROOT/etc/systemd/network/20-wired.network"

log "test: the box's screen (/usr/lib/esignbox/screen + esignbox status --screen) on a box not set up"
# A state directory as the set-up mode leaves it: the console's facts (written by the firmware's
# own publish_console), the set-up code, no box.toml; a box certificate. On tmpfs in private
# namespaces, with one address on a veth interface.
screen_out=$(unshare --mount --uts --net --fork --propagation private -- bash -c '
        set -e
        root=$1
        hostname esignbox
        ip link set lo up
        ip link add v0 type veth peer name v1 && ip addr add 192.0.2.7/24 dev v0 && ip link set v1 up && ip link set v0 up
        mount -t proc proc "$root/proc"
        for d in tmp run var/lib/esignbox; do mount -t tmpfs tmpfs "$root/$d" -o mode=0755; done
        box=$root/var/lib/esignbox/box
        mkdir -p "$box/console" "$root/var/lib/esignbox/tls"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=ca -days 2 \
            -keyout /dev/null -out "$root/tmp/ca.pem" 2>/dev/null
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=esignbox -days 2 \
            -keyout /dev/null -out "$root/var/lib/esignbox/tls/box.crt" 2>/dev/null
        ca=$(openssl x509 -in "$root/tmp/ca.pem" -noout -fingerprint -sha256 | cut -d= -f2)
        chroot "$root" /opt/esignbox/venv/bin/python -c "import sys; from pathlib import Path
from firmware.operations.box_state import publish_console
publish_console(Path(sys.argv[1]), [\"https://192.0.2.7:8443/\", \"https://127.0.0.1:8443/\"], sys.argv[2])" \
            /var/lib/esignbox/box "$ca"
        echo K7QF-2M9X-AAPE > "$box/console/setup-code"
        chmod 600 "$box/console/setup-code"
        chroot "$root" chown -R esignbox:esignbox /var/lib/esignbox/box
        chroot "$root" /usr/lib/esignbox/screen
        echo "--- mode $(stat -c %a "$root/run/esignbox/issue")"
        cat "$root/run/esignbox/issue"
        echo "--- fingerprint ${ca//:/}"
        echo "--- fingerprint $(openssl x509 -in "$root/var/lib/esignbox/tls/box.crt" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d :)"
        echo "--- owners $(find "$box" ! -user esignbox | wc -l)"
    ' screen "$ROOT" 2>&1) || true
screen_hex=$(sed -n '/^--- mode/,/^--- fingerprint/p' <<<"$screen_out" | grep -v '^---' | tr -cd '0-9A-F')
while read -r fp; do
    check "screen shows the fingerprint ${fp:0:16}… (console CA / box certificate)" grep -q "$fp" <<<"$screen_hex"
done < <(sed -n 's/^--- fingerprint //p' <<<"$screen_out")
check "screen shows the firmware's state: not set up" grep -qx 'State: not set up' <<<"$screen_out"
check "screen shows the set-up code" grep -qx 'Set-up code: K7QF-2M9X-AAPE' <<<"$screen_out"
check "screen shows the box's address and the console under its address and its .local name" \
    bash -c 'grep -qx "Addresses: 192.0.2.7" <<<"$1" && grep -qx "Console: https://192.0.2.7:8443/" <<<"$1" && grep -qx "Console: https://esignbox.local:8443/" <<<"$1"' _ "$screen_out"
check "screen file is readable by root only (it holds the code)" grep -qx -- '--- mode 600' <<<"$screen_out"
check "the firmware's status left nothing in the state directory that is not the service user's" grep -qx -- '--- owners 0' <<<"$screen_out"
check "agetty reads the screen file (/etc/issue.d/esignbox.issue -> /run/esignbox/issue)" \
    test "$(readlink "$ROOT/etc/issue.d/esignbox.issue")" = /run/esignbox/issue
[ "$failed" -eq 0 ] || printf '        %s\n' "${screen_out//$'\n'/$'\n'        }"

log "test: systemd-analyze verify"
UNITS=(esignbox.service esignbox-network.service esignbox-tls.service esignbox-health.service esignbox-provision@sdz1.service
       esignbox-screen.service esignbox-screen.path esignbox-screen-watch.service nginx.service)
verify_out=$BUILD_DIR/$ARCH/systemd-analyze-verify.txt
( cd "$ROOT/etc/systemd/system" && SYSTEMD_LOG_LEVEL=notice systemd-analyze --root="$ROOT" --man=no verify "${UNITS[@]}" ) \
    >"$verify_out" 2>&1
rc=$?
# Lines about units the box does not ship (host-only) are not the image's problem; anything
# mentioning our units, or a non-zero exit, is.
if [ $rc -eq 0 ] && ! grep -E 'esignbox|nginx' "$verify_out" | grep -vE '^$' >/dev/null; then
    ok "systemd-analyze verify ${UNITS[*]}"
else
    bad "systemd-analyze verify (exit $rc):"; sed 's/^/        /' "$verify_out"
fi
security_out=$BUILD_DIR/$ARCH/systemd-analyze-security.txt
if systemd-analyze --root="$ROOT" security --offline=yes --no-pager esignbox.service >"$security_out" 2>&1; then :; fi
exposure=$(grep -oE 'Overall exposure level for esignbox.service: [0-9.]+ [A-Z]+' "$security_out" || true)
[ -n "$exposure" ] && ok "systemd-analyze security (offline): ${exposure#Overall }"

log "test: image wiring"
svc=$ROOT/etc/systemd/system/esignbox.service
for d in 'User=esignbox' 'ProtectSystem=strict' 'NoNewPrivileges=yes' 'PrivateTmp=yes' 'Restart=on-failure' \
         'StateDirectory=esignbox/box' 'SupplementaryGroups=esignbox-token'; do
    check "esignbox.service has $d" grep -qx "$d" "$svc"
done
check "esignbox.service listens on loopback only (nginx is its network face)" \
    grep -qE '^ExecStart=.* serve --host 127\.0\.0\.1$' "$svc"
check "nginx includes the per-client limits from box.toml" \
    grep -qx 'include /run/nginx/esignbox-limits.conf;' "$ROOT/etc/nginx/sites-available/esignbox.conf"
for u in esignbox esignbox-network esignbox-tls esignbox-health esignbox-screen esignbox-screen-watch nginx \
         systemd-networkd systemd-resolved; do
    check "$u.service enabled" bash -c "ls $ROOT/etc/systemd/system/*.target.wants/$u.service"
done
check "esignbox-screen.path enabled" test -L "$ROOT/etc/systemd/system/paths.target.wants/esignbox-screen.path"
check "esignbox.service starts on a box not set up (no condition on box.toml)" bash -c "! grep -q '^Condition.*box.toml' '$svc'"
check "mDNS: systemd-resolved and the wired network answer for <hostname>.local" bash -c \
    "grep -qx 'MulticastDNS=yes' '$ROOT/etc/systemd/resolved.conf.d/esignbox.conf' && grep -qx 'MulticastDNS=yes' '$ROOT/etc/systemd/network/20-wired.network'"
check "user esignbox exists, no login shell" grep -qE '^esignbox:[^:]*:[0-9]+:[0-9]+:[^:]*:/var/lib/esignbox/box:/usr/sbin/nologin$' "$ROOT/etc/passwd"
check "esignbox is in group esignbox-token" grep -qE '^esignbox-token:[^:]*:[0-9]+:esignbox$' "$ROOT/etc/group"
check "root password locked" grep -qE '^root:[!*]' "$ROOT/etc/shadow"
check "machine-id empty (transient id on a read-only root)" test ! -s "$ROOT/etc/machine-id"
check "resolv.conf points into /run" test "$(readlink "$ROOT/etc/resolv.conf")" = ../run/systemd/resolve/stub-resolv.conf
check "fstab: state partition on /var/lib/esignbox" grep -qE '^LABEL=esignbox-data[[:space:]]+/var/lib/esignbox[[:space:]]' "$ROOT/etc/fstab"
for m in /tmp /var/log /var/lib/nginx /var/lib/systemd; do
    check "fstab: tmpfs on $m" grep -qE "^tmpfs[[:space:]]+${m}[[:space:]]" "$ROOT/etc/fstab"
done
check "slapd for [ldap] present, Debian's own slapd.service masked" \
    bash -c "test -x '$ROOT/usr/sbin/slapd' && test -f '$ROOT/usr/lib/ldap/back_sock.so' && [ \"\$(readlink '$ROOT/etc/systemd/system/slapd.service')\" = /dev/null ]"
check "systemd-networkd-wait-online waits for any routable address, 30 s at most" \
    grep -qx 'ExecStart=/lib/systemd/systemd-networkd-wait-online --any --operational-state=routable --timeout=30' \
    "$ROOT/etc/systemd/system/systemd-networkd-wait-online.service.d/esignbox.conf"
for m in apt-daily.timer apt-daily-upgrade.timer; do
    check "$m masked" test "$(readlink "$ROOT/etc/systemd/system/$m")" = /dev/null
done
rules=$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$ROOT/etc/udev/rules.d/70-esignbox.rules")
check "udev: YubiHSM2 1050:0030 -> group esignbox-token, mode 0660" \
    grep -qE 'idVendor\}=="1050".*idProduct\}=="0030".*GROUP="esignbox-token", MODE="0660"' <<<"$rules"
check "udev: USB stick labelled ESIGNBOX -> esignbox-provision@<dev>.service" \
    grep -qE 'ID_FS_LABEL\}=="ESIGNBOX.*SYSTEMD_WANTS\}\+="esignbox-provision@%k.service"' <<<"$rules"
# udevadm (the rootfs's own) loads every rule file for a device and reports lines it cannot parse.
udev_out=$BUILD_DIR/$ARCH/udevadm-test.txt
mount_chroot "$ROOT"
in_root "$ROOT" env SYSTEMD_LOG_LEVEL=debug udevadm test --action=add /sys/class/net/lo >"$udev_out" 2>&1 || true
umount_chroot "$ROOT"
check "udev: 70-esignbox.rules loads without errors (udevadm test)" \
    bash -c "grep -q '70-esignbox.rules' '$udev_out' && ! grep -iE '70-esignbox.rules.*(invalid|error|unknown|ignor)' '$udev_out'"
conf=$ROOT/etc/rauc/system.conf
check "RAUC keyring is a certificate" openssl x509 -in "$ROOT/etc/rauc/keyring.pem" -noout
check "rauc + D-Bus service present" test -x "$ROOT/usr/bin/rauc" -a -f "$ROOT/usr/share/dbus-1/system-services/de.pengutronix.rauc.service"
if [ "$ARCH" = amd64 ]; then
    check "RAUC system.conf: grub backend, two ext4 slots" \
        bash -c "grep -qx 'bootloader=grub' '$conf' && [ \$(grep -c '^type=ext4' '$conf') = 2 ]"
    check "grub-editenv present (RAUC grub backend)" test -x "$ROOT/usr/bin/grub-editenv"
else
    check "RAUC system.conf: custom (tryboot) backend, two ext4 + two vfat slots" \
        bash -c "grep -qx 'bootloader=custom' '$conf' && [ \$(grep -c '^type=ext4' '$conf') = 2 ] && [ \$(grep -c '^type=vfat' '$conf') = 2 ]"
    check "Pi backend + post-install hook present, mtools present" \
        test -x "$ROOT/usr/lib/esignbox/rauc-rpi-backend" -a -x "$ROOT/usr/lib/esignbox/rauc-post-install.platform" -a -x "$ROOT/usr/bin/mcopy"
    check "Pi boot firmware and device tree" bash -c "ls $ROOT/boot/firmware/start4.elf $ROOT/usr/lib/linux-image-*/broadcom/bcm2711-rpi-4-b.dtb"
fi
check "kernel + initrd at /boot/vmlinuz, /boot/initrd.img" test -e "$ROOT/boot/vmlinuz" -a -e "$ROOT/boot/initrd.img"
check "SoftHSM2 module and softhsm2-util" bash -c "ls $ROOT/usr/lib/softhsm/libsofthsm2.so $ROOT/usr/lib/*/softhsm/libsofthsm2.so 2>/dev/null | grep -q . && test -x $ROOT/usr/bin/softhsm2-util"
check "YubiHSM2 PKCS#11 configuration (yhusb://)" grep -qx 'connector = yhusb://' "$ROOT/etc/esignbox/yubihsm_pkcs11.conf"
check "nginx site enabled, default site gone" test -L "$ROOT/etc/nginx/sites-enabled/esignbox.conf" -a ! -e "$ROOT/etc/nginx/sites-enabled/default"
check "no apt lists or .debs left in the image" bash -c "[ -z \"\$(ls -A $ROOT/var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)\" ] && ! ls $ROOT/var/cache/apt/archives/*.deb"

size=$(du -sh --one-file-system "$ROOT" | cut -f1)
venv=$(du -sh "$ROOT/opt/esignbox/venv" | cut -f1)
echo
echo "rootfs $ROOT: $size (firmware venv $venv); version $(cat "$BUILD_DIR/$ARCH/version")"
echo "time: $((SECONDS - start)) s (build $build_s s, checks $((SECONDS - start - build_s)) s)"
echo "image: $passed passed, $failed failed"
[ $failed -eq 0 ]
}
main "$@"
