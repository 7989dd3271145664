#!/bin/bash
# bench-pivot.sh - how long a pivot holds the guests.
#
# N images (16 by default, 64 MiB each) open through one mount by a guest
# that keeps them open, nothing dirty: mirror, wait until synced, pivot,
# read pivot_pause_ms; then mirror the pivoted mount on to a new target and
# pivot again, ROUNDS times in all.  A second series does the same while
# fio writes 4 KiB blocks at queue depth 4 into one of the images, with
# copy_mode=write-blocking (the pause then includes flushing what that
# guest wrote last).  Prints each
# pause and the medians; the goal for the idle case is under 100 ms.
#
#   sudo contrib/bench-pivot.sh
#   BENCH_IMAGES=N BENCH_ROUNDS=R BENCH_DIR=/var/tmp/x  (defaults 16, 7, a mktemp dir)
set -u
set -o pipefail
cd "$(dirname "$0")/.." || exit 1
TOP=$PWD
MIRRORFS=$TOP/src/mirrorfs
MIRRORCTL=$TOP/src/mirrorctl
IMAGES=${BENCH_IMAGES:-16}
ROUNDS=${BENCH_ROUNDS:-7}
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "bench-pivot: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (FUSE mounts)"
[ -x "$MIRRORFS" ] && [ -x "$MIRRORCTL" ] || die "build first (make)"
command -v fio >/dev/null || apt-get install -y fio >/dev/null || die "fio is missing"

W=${BENCH_DIR:-$(mktemp -d /var/tmp/mirrorfs-bench-pivot.XXXXXX)}
mkdir -p "$W/src" "$W/mnt" "$W/state"
DAEMON="" HOLDER="" FIO=""
cleanup() {
    [ -n "$FIO" ] && kill "$FIO" 2>/dev/null
    [ -n "$HOLDER" ] && kill "$HOLDER" 2>/dev/null
    [ -n "$FIO" ] && wait "$FIO" 2>/dev/null
    [ -n "$HOLDER" ] && wait "$HOLDER" 2>/dev/null
    if awk -v m="$W/mnt" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; then
        fusermount3 -u "$W/mnt" 2>/dev/null || umount -l "$W/mnt"
    fi
    [ -n "$DAEMON" ] && wait "$DAEMON" 2>/dev/null
    [ -z "${BENCH_DIR:-}" ] && rm -rf "$W"
}
trap cleanup EXIT

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
status_get() { sed -n "s/^$1: //p" "$W/mnt/.mirror/status" | head -n 1; }
wait_synced() {
    local i st
    for i in $(seq 1 1200); do
        st=$(cat "$W/mnt/.mirror/status")
        grep -qx 'phase: ready' <<<"$st" && grep -qx 'dirty_bytes: 0' <<<"$st" &&
            grep -qx 'in_flight_bytes: 0' <<<"$st" && return 0
        sleep 0.1
    done
    die "not synced after 120 s"
}

for i in $(seq 1 "$IMAGES"); do
    head -c 64M /dev/urandom >"$W/src/vm$i.img" || die "cannot write the images"
done
"$MIRRORFS" -f -o "state_dir=$W/state" "$W/src" "$W/mnt" 2>"$W/daemon.err" &
DAEMON=$!
for i in $(seq 1 100); do [ -e "$W/mnt/.mirror/status" ] && break; sleep 0.1; done
[ -e "$W/mnt/.mirror/status" ] || die "the mount did not appear: $(tail -n 3 "$W/daemon.err")"

# The guest: every image open for reading and writing, kept open.
python3 - "$W/mnt" "$IMAGES" <<'PY' &
import os, signal, sys
fds = [os.open("%s/vm%d.img" % (sys.argv[1], i), os.O_RDWR) for i in range(1, int(sys.argv[2]) + 1)]
signal.pause()
PY
HOLDER=$!

series() { # series NAME: ROUNDS pivots, the pauses on stdout
    local r t
    for r in $(seq 1 "$ROUNDS"); do
        t=$W/t-$1-$r
        # A guest that rewrites a small image at full speed never lets a
        # background copy catch up: write-blocking, as a user would choose.
        "$MIRRORCTL" mirror "$W/mnt" "$t" $([ "$1" = busy ] && echo -o copy_mode=write-blocking) \
            >/dev/null || die "mirror refused: $(status_get last_error)"
        if [ "$1" = idle ]; then
            wait_synced
        else
            # A guest that keeps writing leaves some bytes dirty most of
            # the time: ready is what a user waits for.
            "$MIRRORCTL" wait --ready --timeout 600 "$W/mnt" >/dev/null || die "not ready"
            sleep 0.5
        fi
        "$MIRRORCTL" pivot "$W/mnt" >/dev/null || die "pivot refused: $(status_get last_error)"
        status_get pivot_pause_ms
        # Where it went (the pivoted event): in flight, drain, switch.
        log "$1 $r: $(dd if="$W/mnt/.mirror/events" iflag=nonblock status=none 2>/dev/null |
            grep ' pivoted ' | tail -n 1 | cut -d' ' -f4-)"
        rm -rf "$W/t-$1-$((r - 1))"
    done
}

log "$IMAGES images open, nothing dirty, $ROUNDS pivots"
idle=$(series idle)
log "the same with fio writing 4 KiB at qd4 into vm1.img"
fio --name=guest --filename="$W/mnt/vm1.img" --rw=randwrite --bs=4k --iodepth=4 \
    --ioengine=libaio --direct=1 --time_based --runtime=3600 --size=64M >/dev/null 2>&1 &
FIO=$!
busy=$(series busy)
kill "$FIO" 2>/dev/null
wait "$FIO" 2>/dev/null
FIO=""

echo "pivot pause, $IMAGES open images, $(date -u +%F), commit $(git -C "$TOP" rev-parse --short HEAD 2>/dev/null)"
echo "  nothing dirty (ms):      $(echo $idle)    median $(printf '%s\n' $idle | median)    goal < 100"
echo "  fio 4k qd4 writing (ms): $(echo $busy)    median $(printf '%s\n' $busy | median)"
