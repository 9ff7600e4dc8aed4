#!/usr/bin/env bash
# End-to-end test of the GIMP 3 plug-in in a REAL GIMP 3 (Debian trixie chroot, headless).
#
#   bash tests/e2e/run.sh        exit 0 when every check passes
#
# 1. build or reuse the chroot (tests/e2e/chroot.sh; cache: $MAGIC_E2E_CACHE or
#    ~/.cache/magic-gimp-e2e, outside the repo),
# 2. install the plug-in into a throwaway GIMP profile with the installer's code,
# 3. start the real magic-server on the host's 127.0.0.1 (CPU, untrained weights, tiny preset),
# 4. run gimp-console-3.0 in the chroot: every procedure non-interactively, plus error cases,
# 5. judge the results from outside (tests/e2e/check.py), then run the installer against
#    this GIMP's own Python (tests/e2e/installer_check.py: found, not vendored over, doctor),
# 6. the artist's session in GIMP 3's GUI under Xvfb, driven with xdotool (tests/e2e/gui_test.py:
#    menu, dialog, progress, undo, Repeat, Re-show, cancel while previews are shown).
#    MAGIC_E2E_GUI=0 skips it; MAGIC_E2E_SHOTS=DIR also writes the docs/ screenshots there.
# Needs root (debootstrap, mount, chroot). Unmounts and stops the server on any exit.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
E2E="$REPO/tests/e2e"
PY="${MAGIC_E2E_PYTHON:-$REPO/.venv/bin/python}"
CACHE="${MAGIC_E2E_CACHE:-${HOME:-/root}/.cache/magic-gimp-e2e}"
KEEP="${MAGIC_E2E_KEEP:-0}"
T0=$(date +%s)

log() { echo "[e2e $(( $(date +%s) - T0 ))s] $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "tests/e2e/run.sh needs root (debootstrap, mount, chroot)"
[[ -x "$PY" ]] || die "no Python at $PY: run 'make venv' first (or set MAGIC_E2E_PYTHON)"
export MAGIC_E2E_CACHE="$CACHE"
mkdir -p "$CACHE"
exec 9>"$CACHE/e2e.lock"
flock -w 900 9 || die "another e2e run holds $CACHE/e2e.lock"

ROOT="$(bash "$E2E/chroot.sh" build | tail -n 1)"
[[ -x "$ROOT/usr/bin/gimp-console-3.0" ]] || die "chroot at $ROOT has no gimp-console-3.0"
log "GIMP chroot: $ROOT"

WORK="$(mktemp -d /tmp/magic-e2e.XXXXXX)"
chmod 755 "$WORK"
INSIDE="/mnt/magic-e2e-$$"
MNT="$ROOT$INSIDE"
mounted=()
server_pid=""
gimp_pid=""

stop_pid() {  # stop_pid PID: TERM, up to 10 s, then KILL
    local pid="$1"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    stop_pid "$gimp_pid"  # `timeout` passes the signal on to gimp-console
    stop_pid "$server_pid"
    local i
    for ((i=${#mounted[@]}-1; i>=0; i--)); do
        umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" 2>/dev/null || \
            echo "[e2e] could not unmount ${mounted[$i]}" >&2
    done
    rmdir "$MNT" 2>/dev/null || true
    if [[ $rc -eq 0 && "$KEEP" != 1 ]]; then
        rm -rf "$WORK"
    else
        echo "[e2e] files kept in $WORK (gimp.log, server.log, results.json)" >&2
    fi
    log "finished with status $rc"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mount_here() {  # mount_here ARGS... TARGET  (records TARGET for cleanup)
    mount "$@"
    mounted+=("${!#}")
}

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

PORT="$(free_port)"
CLOSED_PORT="$(free_port)"
[[ "$PORT" != "$CLOSED_PORT" ]] || CLOSED_PORT=$((PORT + 1))
ADDRESS="tcp://127.0.0.1:$PORT"

log "inputs and plug-in into $WORK"
cp "$E2E/gimp_batch.py" "$WORK/"
"$PY" "$E2E/make_inputs.py" "$WORK" "$CLOSED_PORT"
PROFILE="$WORK/home/.config/GIMP/3.0"
mkdir -p "$PROFILE"
"$PY" "$E2E/install_plugin.py" "$PROFILE" "$ADDRESS" >/dev/null

SERVER=("$REPO/.venv/bin/magic-server")
[[ -x "${SERVER[0]}" ]] || SERVER=("$PY" -m magic_server.server)
log "starting ${SERVER[*]} --bind $ADDRESS --device cpu --weights untrained"
MAGIC_CACHE_DIR="$WORK/server-cache" \
    "${SERVER[@]}" --bind "$ADDRESS" --device cpu --weights untrained --max-pixels 10000 \
    --resolution 32 </dev/null >"$WORK/server.log" 2>&1 &
server_pid=$!

mkdir -p "$MNT"
mount_here -t proc proc "$ROOT/proc"
mount_here -t sysfs sysfs "$ROOT/sys"
mount_here --bind /dev "$ROOT/dev"
mount_here --bind "$WORK" "$MNT"

for _ in $(seq 600); do
    grep -q "ready" "$WORK/server.log" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$WORK/server.log" >&2; die "magic-server exited"; }
    sleep 0.2
done
grep -q "ready" "$WORK/server.log" || { tail "$WORK/server.log" >&2; die "magic-server not ready"; }
log "server ready on $ADDRESS"

log "running GIMP 3 headless (all cases in one session)"
# In the background + wait, so that a signal to this script is handled at once (cleanup).
timeout 900 chroot "$ROOT" /usr/bin/env -i HOME="$INSIDE/home" LANG=C.UTF-8 \
    PATH=/usr/local/bin:/usr/bin:/bin TMPDIR=/tmp MAGIC_GIMP_PREVIEW=1 \
    gimp-console-3.0 -i --batch-interpreter=python-fu-eval \
    -b "E2E_DIR='$INSIDE'; exec(open(E2E_DIR + '/gimp_batch.py').read())" --quit \
    </dev/null >"$WORK/gimp.log" 2>&1 &
gimp_pid=$!
gimp_rc=0
wait "$gimp_pid" || gimp_rc=$?
gimp_pid=""
grep "^E2E case" "$WORK/gimp.log" >&2 || true
[[ $gimp_rc -eq 0 ]] || { tail -40 "$WORK/gimp.log" >&2; die "gimp-console exited $gimp_rc"; }
grep -q "magic-server --bind tcp://127.0.0.1:$CLOSED_PORT" "$WORK/gimp.log" || \
    die "GIMP did not show the server-down message"
grep -q "then select the photo layer and run Filters > MAGIC > Layout edit" "$WORK/gimp.log" || \
    die "GIMP did not tell what to do after the label map"
log "GIMP showed the error messages and the label map's next steps (gimp.log)"
previews=$(grep -c "MAGIC preview frames received" "$WORK/gimp.log" || true)
[[ "$previews" -ge 4 ]] || die "preview frames arrived in $previews run(s), expected 4"
log "preview frames arrived in $previews runs (headless: no preview window)"
# seed-from-layer: on (default) for the move case, off for the copy case.
seeded=$(grep -c "move .*from an init composite" "$WORK/server.log" || true)
unseeded=$(grep -c "copy .*from an init composite" "$WORK/server.log" || true)
[[ "$seeded" -eq 1 && "$unseeded" -eq 0 ]] || \
    die "init composites: move sent $seeded (expected 1), copy sent $unseeded (expected 0)"
log "the move job was seeded from the moved layer (server.log)"

log "checking results"
"$PY" "$E2E/check.py" "$WORK" || die "checks failed"
log "the installer against this GIMP's own Python"
"$PY" "$E2E/installer_check.py" "$ROOT" "$WORK" "$INSIDE" || die "installer checks failed"
log "headless part passed in $(( $(date +%s) - T0 )) s"

if [[ "${MAGIC_E2E_GUI:-1}" != 0 ]]; then
    [[ -x "$ROOT/usr/bin/Xvfb" && -x "$ROOT/usr/bin/xdotool" ]] || \
        die "the chroot has no Xvfb/xdotool (tests/e2e/chroot.sh extends it when its list changes)"
    log "GIMP 3 GUI under Xvfb (the artist's session)"
    mkdir -p "$WORK/gui"
    shots=()
    [[ -n "${MAGIC_E2E_SHOTS:-}" ]] && shots=(--shots "$MAGIC_E2E_SHOTS")
    gui_rc=0
    timeout 600 "$PY" "$E2E/gui_test.py" "$ROOT" "$WORK/gui" "$INSIDE/gui" "${shots[@]}" &
    gimp_pid=$!
    wait "$gimp_pid" || gui_rc=$?
    gimp_pid=""
    [[ $gui_rc -eq 0 ]] || die "the GUI session failed (files in $WORK/gui: gimp.log, *.png)"
fi
log "PASSED in $(( $(date +%s) - T0 )) s"
