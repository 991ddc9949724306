# Shared helpers for the image scripts (sourced, not run). Bash only.
# shellcheck shell=bash disable=SC2034  # (the variables set here are for the scripts that source it)
#
# Everything the build downloads or produces goes under image/build/ (gitignored):
#   build/cache/      debootstrap and apt .debs, pip wheels, base-system tarballs (reused by reruns)
#   build/<arch>/     the root filesystem (rootfs/), slot images, disk images, RAUC bundles
#   build/keys/       the development RAUC signing CA and key (never for a field box)

set -euo pipefail

IMAGE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$IMAGE_DIR/.." && pwd)
BUILD_DIR=${ESIGNBOX_IMAGE_BUILD:-$IMAGE_DIR/build}
CACHE_DIR=$BUILD_DIR/cache
SUITE=${SUITE:-bookworm}
VENV=/opt/esignbox/venv
RPI_DISKID=${RPI_DISKID:-e5b0c5a1}   # MBR disk identifier of the Pi image: PARTUUIDs are <id>-NN

log() { printf '\033[1m[image %(%H:%M:%S)T]\033[0m %s\n' -1 "$*" >&2; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mknod)"; }

# Install host packages that are missing (Debian host). Skipped when all are present.
host_packages() {
    local missing=() p
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing host packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -o DPkg::Lock::Timeout=900 -y -qq "${missing[@]}" >/dev/null \
        || { apt-get update -qq -o DPkg::Lock::Timeout=900 \
             && DEBIAN_FRONTEND=noninteractive apt-get install -o DPkg::Lock::Timeout=900 -y -qq "${missing[@]}" >/dev/null; } \
        || die "could not install host packages: ${missing[*]}"
}

# The Debian mirror this machine's apt uses (MIRROR= overrides): the first URI serving $SUITE
# in /etc/apt/sources.list.d/*.sources (deb822) or a sources.list line.
detect_mirror() {
    if [ -n "${MIRROR:-}" ]; then echo "$MIRROR"; return; fi
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk -v suite="$SUITE" '
            BEGIN { RS=""; FS="\n" }
            { u=""; s=""; t=""
              for (i=1; i<=NF; i++) {
                if ($i ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", $i); u=$i }
                if ($i ~ /^Suites:/) { sub(/^Suites:[ \t]*/, "", $i); s=" " $i " " }
                if ($i ~ /^Types:/)  { t=$i }
              }
              if (t ~ /deb( |$)/ && index(s, " " suite " ") && u != "") { split(u, a, " "); print a[1]; exit }
            }' "$f")
        [ -n "$uri" ] && { echo "${uri%/}"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk -v suite="$SUITE" '$1=="deb" { for (i=2;i<=NF;i++) if ($i !~ /^\[/) { if ($(i+1)==suite) { print $i; exit } break } }' "$f")
        [ -n "$uri" ] && { echo "${uri%/}"; return; }
    done
    echo "http://deb.debian.org/debian"
}

# The security mirror: the same host layout with -security (deb.debian.org/debian-security).
detect_security_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(grep -hoE '(https?://[^ ]+)' "$f" | grep -m1 -- '-security' || true)
        [ -n "$uri" ] && { echo "${uri%/}"; return; }
    done
    echo "$(dirname "$(detect_mirror)")/debian-security"
}

# Mount the API filesystems a chroot needs; umount_chroot undoes it (also on error via trap).
mount_chroot() {
    local root=$1
    mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
    mountpoint -q "$root/sys" || mount -t sysfs sysfs "$root/sys"
    mountpoint -q "$root/dev" || mount --bind /dev "$root/dev"
    mountpoint -q "$root/dev/pts" || mount -t devpts devpts "$root/dev/pts" -o newinstance,ptmxmode=0666 2>/dev/null \
        || mount --bind /dev/pts "$root/dev/pts"
    mountpoint -q "$root/run" || mount -t tmpfs tmpfs "$root/run" -o mode=0755,size=64M
    mountpoint -q "$root/tmp" || mount -t tmpfs tmpfs "$root/tmp" -o mode=1777,size=1G
}

umount_chroot() {
    local root=$1 m
    [ -d "$root" ] || return 0
    # deepest first
    for m in $(awk -v r="$(realpath "$root")" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
}

# Run a command inside the root filesystem with a clean environment.
in_root() {
    local root=$1; shift
    env -i HOME=/root LANG=C.UTF-8 LC_ALL=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        chroot "$root" "$@"
}

# How to accelerate qemu-system-x86_64 here: sets QEMU_ACCEL (QEMU arguments) and QEMU_ACCEL_NOTE
# (why). KVM only when a guest really runs under it: on some hosts /dev/kvm opens and a paused VM
# starts, yet the guest stops at its first instructions ("KVM internal error ... emulation
# failure", seen under nested virtualisation) and the VM then sits with no output at 0 % CPU.
# The probe boots OVMF with no disk and waits for its first bytes on the serial port: under
# working KVM they come in well under a second, under TCG in about 3.5 s on a 2-core machine, so
# 15 s of silence means KVM does not work here. QEMU_ACCEL=tcg|kvm skips the probe.
x86_accel() {
    local run pid i rc=0
    case ${QEMU_ACCEL:-} in
        kvm) QEMU_ACCEL=(-accel kvm -cpu host); QEMU_ACCEL_NOTE="KVM (QEMU_ACCEL=kvm)"; return ;;
        tcg) QEMU_ACCEL=(-accel tcg -cpu max); QEMU_ACCEL_NOTE="TCG (QEMU_ACCEL=tcg)"; return ;;
    esac
    QEMU_ACCEL=(-accel tcg -cpu max)
    if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then QEMU_ACCEL_NOTE="TCG (no usable /dev/kvm)"; return; fi
    run=$(mktemp -d)
    cp /usr/share/OVMF/OVMF_VARS_4M.fd "$run/vars.fd"
    qemu-system-x86_64 -accel kvm -cpu host -machine q35 -m 256 -display none -monitor none -nic none \
        -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
        -drive if=pflash,format=raw,unit=1,file="$run/vars.fd" \
        -serial file:"$run/serial" </dev/null >"$run/qemu.log" 2>&1 &
    pid=$!
    for ((i = 1; i <= 150; i++)); do
        [ -s "$run/serial" ] && break
        kill -0 "$pid" 2>/dev/null || { rc=1; break; }
        grep -q 'KVM internal error' "$run/qemu.log" && break     # the guest stopped: no need to wait
        sleep 0.1
    done
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    if [ -s "$run/serial" ]; then
        QEMU_ACCEL=(-accel kvm -cpu host)
        QEMU_ACCEL_NOTE="KVM (probe: OVMF wrote to serial after $((i / 10)).$((i % 10)) s)"
    elif [ $rc -ne 0 ]; then
        QEMU_ACCEL_NOTE="TCG (probe: QEMU with KVM exited: $(head -c 200 "$run/qemu.log" | tr '\n' ' '))"
    else
        QEMU_ACCEL_NOTE="TCG (probe: /dev/kvm opens but an OVMF guest wrote nothing to serial$(
            grep -q 'KVM internal error' "$run/qemu.log" && echo ': KVM internal error after' || echo ' in') $((i / 10)).$((i % 10)) s)"
    fi
    rm -rf "$run"
}

# The Debian architecture name for a build target (amd64 | arm64).
check_arch() {
    case "$1" in
        amd64|arm64) ;;
        *) die "unknown architecture '$1' (amd64 or arm64)" ;;
    esac
}
