#!/bin/bash
# t-copy-mode.sh - copy_mode=write-blocking acknowledges a guest write only
# once it is on the target too; ctl switches modes live; copy_mode=auto
# switches to write-blocking when the copier does not keep up and back once
# in sync.  The copier is throttled to a crawl (speed=1K), so whatever is on
# the target right after a write was put there by the write itself.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup

random_file "$SRC/disk.img" 64

# pwrite_fsync FILE OFFSET DATAFILE: one write and an fsync, as a guest
# that needs durability does it.
pwrite_fsync() {
    python3 - "$1" "$2" "$3" <<'PY' || fail "write to $1 at $2 failed"
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
data = open(sys.argv[3], 'rb').read()
assert os.pwrite(fd, data, int(sys.argv[2])) == len(data)
os.fsync(fd)
os.close(fd)
PY
}

# target_has OFFSET DATAFILE: the target image holds DATAFILE at OFFSET.
target_has() {
    cmp -s -n "$(stat -c %s "$2")" -i "0:$1" "$2" "$TGT/disk.img"
}

# kill -9 the daemon: no drain, no flush; what is on the target stays.
crash_daemon() {
    kill -9 "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null
    DAEMON_PID=""
    fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT"
}

restart_fresh() {
    rm -rf "$TGT" "$STATE"
    mkdir -p "$TGT" "$STATE"
}

head -c 1048576 /dev/urandom > "$T/aligned"
head -c 100000 /dev/urandom > "$T/unaligned"

# 1. Background mode, copier stalled: a write is on the source only.
start_mirror -o speed=1K,workers=1
assert_eq "$(status_get active_copy_mode)" background "active copy mode"
pwrite_fsync "$MNT/disk.img" $((32 << 20)) "$T/aligned"
crash_daemon
target_has $((32 << 20)) "$T/aligned" && fail "background mode: data on the target although the copier is stalled (the test cannot tell the modes apart)"

# 2. write-blocking from the start: after write + fsync, kill -9, and the
# target already holds the data, aligned or not.
restart_fresh
start_mirror -o speed=1K,workers=1,copy_mode=write-blocking
assert_eq "$(status_get copy_mode)" write-blocking "copy mode"
assert_eq "$(status_get active_copy_mode)" write-blocking "active copy mode"
pwrite_fsync "$MNT/disk.img" $((32 << 20)) "$T/aligned"
pwrite_fsync "$MNT/disk.img" 12345 "$T/unaligned"
# A write past the end grows the image on both sides.
pwrite_fsync "$MNT/disk.img" $((64 << 20)) "$T/aligned"
crash_daemon
target_has $((32 << 20)) "$T/aligned" || fail "write-blocking: aligned write missing on the target after kill -9"
target_has 12345 "$T/unaligned" || fail "write-blocking: unaligned write missing on the target after kill -9"
target_has $((64 << 20)) "$T/aligned" || fail "write-blocking: extending write missing on the target after kill -9"

# 3. Switched live with mirrorctl, and back.
restart_fresh
start_mirror -o speed=1K,workers=1
"$MIRRORCTL" copy-mode "$MNT" write-blocking || fail "mirrorctl copy-mode write-blocking"
assert_eq "$(status_get active_copy_mode)" write-blocking "active copy mode after ctl"
pwrite_fsync "$MNT/disk.img" $((8 << 20)) "$T/aligned"
target_has $((8 << 20)) "$T/aligned" || fail "live write-blocking: write missing on the target"
if echo "copy-mode sometimes" > "$MNT/.mirror/ctl" 2>/dev/null; then
    fail "an unknown copy mode was accepted"
fi
assert_eq "$(status_get active_copy_mode)" write-blocking "mode after a refused change"
"$MIRRORCTL" copy-mode "$MNT" background || fail "mirrorctl copy-mode background"
"$MIRRORCTL" speed "$MNT" 0 || fail "mirrorctl speed 0"
wait_phase ready 60
finish_mirror
assert_eq "$DAEMON_RC" 0 "exit code"
assert_exact

# 4. auto: the guest rewrites the start of the image faster than the
# throttled copier copies, so the dirty bytes stop shrinking: after
# auto_after the mode becomes write-blocking (and says so); lifting the
# limit lets the target catch up, and auto goes back to background.
restart_fresh
start_mirror -o speed=256K,workers=1,copy_mode=auto,auto_after=1
assert_eq "$(status_get active_copy_mode)" background "auto starts in background"
(
    for i in $(seq 1 400); do
        dd if=/dev/urandom of="$MNT/disk.img" bs=64K count=1 seek=$(( RANDOM % 512 )) \
            conv=notrunc status=none || exit 1
        sleep 0.01
    done
) &
writer=$!
EXTRA_PIDS+=("$writer")
switched=""
for i in $(seq 1 100); do
    if [ "$(status_get active_copy_mode)" = write-blocking ]; then
        switched=yes
        break
    fi
    sleep 0.1
done
wait "$writer" || fail "writer failed"
[ -n "$switched" ] || fail "auto did not switch to write-blocking ($(status_get dirty_bytes) dirty bytes)"
timeout 2 cat "$MNT/.mirror/events" > "$T/events" || true
grep -q "copy-mode write-blocking (auto" "$T/events" || fail "no copy-mode event: $(cat "$T/events")"
"$MIRRORCTL" speed "$MNT" 0 || fail "mirrorctl speed 0"
back=""
for i in $(seq 1 300); do
    if [ "$(status_get active_copy_mode)" = background ]; then
        back=yes
        break
    fi
    sleep 0.1
done
[ -n "$back" ] || fail "auto did not go back to background once in sync"
wait_phase ready 60
finish_mirror
assert_eq "$DAEMON_RC" 0 "exit code"
assert_exact
assert_clean_stderr
