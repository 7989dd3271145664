#!/bin/bash
# t-source-eio.sh - on_source_error: the source directory is on ext4 on a
# loop device over nbdfuse over nbdkit's memory plugin with the error filter,
# and reads of the device fail while a trigger file exists.  The copier's
# reads of the source then fail:
#   report: the job fails, exit code 3;
#   stop:   the job pauses with the reason; resume after the device works
#           again finishes it, exit 0, equal;
#   ignore: bounded, visible retries; it finishes by itself once the device
#           works, exit 0, equal.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
faulty_device pread
mkfs.ext4 -q -F "$DEV/nbd" || fail "mkfs.ext4"
mount -o loop "$DEV/nbd" "$FS" || fail "cannot mount the source fs"

# scenario NAME: a fresh source image on the failing device, its target.
scenario() {
    new_scenario "$1"
    SRC=$FS/$1
    mkdir -p "$SRC"
    head -c $((16 << 20)) /dev/urandom > "$SRC/disk.img"
    cp "$SRC/disk.img" "$T/$1.expected"
    sync
    # Nothing of it may be served from a cache: the reads must reach the
    # device while the trigger exists.
    echo 3 > /proc/sys/vm/drop_caches
    touch "$TRIGGER"
}

wait_status() { # KEY VALUE TIMEOUT
    local i
    for i in $(seq 1 $(( $3 * 10 ))); do
        [ "$(status_get "$1")" = "$2" ] && return 0
        sleep 0.1
    done
    fail "$1 is '$(status_get "$1")' after $3 s, expected '$2'"
}

# --- report ---
scenario report
start_mirror -o on_source_error=report
wait_status phase failed 30
status_get last_error | grep -q "source read error.*Input/output error" ||
    fail "report: last_error: $(status_get last_error)"
rm -f "$TRIGGER"
finish_mirror
assert_eq "$DAEMON_RC" 3 "report: exit code"

# --- stop ---
scenario stop
start_mirror -o on_source_error=stop
wait_status phase paused 30
rm -f "$TRIGGER"
"$MIRRORCTL" resume "$MNT" || fail "mirrorctl resume"
wait_phase ready 60
finish_mirror
assert_eq "$DAEMON_RC" 0 "stop: exit code"
assert_exact
cmp "$T/stop.expected" "$TGT/disk.img" || fail "stop: target differs"

# --- ignore ---
scenario ignore
start_mirror -o on_source_error=ignore
for i in $(seq 1 100); do
    [ "$(status_get errors)" -ge 2 ] && break
    sleep 0.1
done
[ "$(status_get errors)" -ge 2 ] || fail "ignore: no retries counted"
assert_eq "$(status_get phase)" bulk "ignore: phase while the source fails"
rm -f "$TRIGGER"
wait_phase ready 60
finish_mirror
assert_eq "$DAEMON_RC" 0 "ignore: exit code"
assert_exact
cmp "$T/ignore.expected" "$TGT/disk.img" || fail "ignore: target differs"
