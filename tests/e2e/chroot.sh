#!/usr/bin/env bash
# Build (once) or reuse a Debian trixie chroot with GIMP 3 + Python plug-in support.
# Usage: chroot.sh build            -> prints the chroot path on stdout's last line
# The chroot lives in a cache folder outside the repo: $MAGIC_E2E_CACHE or ~/.cache/magic-gimp-e2e.
# It is built in a temporary folder and renamed when complete, so an interrupted build is never reused.
set -euo pipefail

CACHE="${MAGIC_E2E_CACHE:-${HOME:-/root}/.cache/magic-gimp-e2e}"
ROOT="$CACHE/trixie"
STAMP="$ROOT/.magic-e2e-complete"
# GIMP 3 with Python plug-ins (headless run), then what the GUI run under Xvfb needs.
PACKAGES="gimp python3-gi gir1.2-gimp-3.0 python3-zmq xvfb xdotool openbox imagemagick x11-utils"

log() { echo "[chroot] $*" >&2; }

mounted=()
unmount_all() {
    local i
    for ((i=${#mounted[@]}-1; i>=0; i--)); do
        umount -l "${mounted[$i]}" 2>/dev/null || true
    done
    mounted=()
}

mount_basic() {  # mount proc/sys/dev into $1; recorded for unmount_all
    local dir="$1"
    mount -t proc proc "$dir/proc" && mounted+=("$dir/proc")
    mount -t sysfs sysfs "$dir/sys" && mounted+=("$dir/sys")
    mount --bind /dev "$dir/dev" && mounted+=("$dir/dev")
}

unmount_stale() {  # mounts left inside $1 by a run that was killed before its trap ran
    local dir="$1" mnt
    [[ -d "$dir" ]] || return 0
    while read -r mnt; do
        umount -l "$mnt" 2>/dev/null && log "unmounted stale $mnt"
    done < <(awk -v root="$dir/" 'index($2, root) == 1 {print $2}' /proc/mounts | sort -r)
    rmdir "$dir"/mnt/magic-e2e-* 2>/dev/null || true
}

build() {
    if [[ $(id -u) -eq 0 ]]; then
        unmount_stale "$ROOT"
    fi
    if [[ -f "$STAMP" && ! -x "$ROOT/usr/bin/gimp-console-3.0" ]]; then
        log "cached chroot $ROOT is incomplete: rebuilding"
        rm -f "$STAMP"
    fi
    if [[ -f "$STAMP" && "$(cat "$STAMP")" != "$PACKAGES" ]]; then
        # The package list changed (an older stamp is empty): extend the cached chroot once.
        if [[ $(id -u) -ne 0 ]]; then
            log "extending the cached chroot needs root"
            return 2
        fi
        log "package list changed: installing $PACKAGES into the cached chroot"
        rm -f "$STAMP"  # interrupted from here on: the next run rebuilds it from scratch
        mount_basic "$ROOT"
        trap 'unmount_all' EXIT
        chroot "$ROOT" /usr/bin/env DEBIAN_FRONTEND=noninteractive bash -c \
            "apt-get update -q && apt-get install -y -q --no-install-recommends $PACKAGES \
             && apt-get clean" >&2 </dev/null
        unmount_all
        trap - EXIT
        printf '%s' "$PACKAGES" >"$STAMP"
    fi
    if [[ -f "$STAMP" ]]; then
        log "reusing cached chroot $ROOT"
        echo "$ROOT"
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        log "building the GIMP 3 chroot needs root (debootstrap, mount, chroot)"
        return 2
    fi
    if ! command -v debootstrap >/dev/null; then
        log "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap </dev/null >&2 \
            || { apt-get update -q </dev/null >&2 && \
                 DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap </dev/null >&2; }
    fi
    mkdir -p "$CACHE"
    local old
    for old in "$CACHE"/trixie.building.*; do  # left by an interrupted build
        [[ -d "$old" ]] || continue
        unmount_stale "$old"
        rm -rf --one-file-system "$old"
    done
    local tmp="$CACHE/trixie.building.$$"
    rm -rf "$tmp"
    trap 'unmount_all; rm -rf --one-file-system "$tmp"' EXIT
    log "debootstrap trixie into $tmp (about a minute)"
    debootstrap --variant=minbase trixie "$tmp" >&2 </dev/null
    mount_basic "$tmp"
    log "installing $PACKAGES"
    chroot "$tmp" /usr/bin/env DEBIAN_FRONTEND=noninteractive bash -c \
        "apt-get update -q && apt-get install -y -q --no-install-recommends $PACKAGES && apt-get clean" \
        >&2 </dev/null
    chroot "$tmp" gimp-console-3.0 --version >&2
    unmount_all
    printf '%s' "$PACKAGES" >"$tmp/.magic-e2e-complete"
    rm -rf --one-file-system "$ROOT"
    mv "$tmp" "$ROOT"
    trap - EXIT
    log "chroot ready: $ROOT"
    echo "$ROOT"
}

case "${1:-build}" in
    build) build ;;
    path) echo "$ROOT" ;;
    *) echo "usage: $0 build|path" >&2; exit 2 ;;
esac
