#!/bin/bash
# t-target-full.sh - a full target (a small tmpfs) under each error policy,
# while a guest keeps writing with verification through the mount
# (invariant 4: guest I/O never fails because of the target).
#   stop:   the job pauses with the reason in status; after space is freed,
#           resume finishes it and the target equals the source.
#   report: the job fails, the mount keeps serving, exit code 3.
#   ignore: bounded, visible retries; once space is freed the job gets
#           ready by itself and finishes equal.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
command -v fio >/dev/null || fail "fio is not installed"

SMALL=$T/small
mkdir -p "$SMALL"
mount -t tmpfs -o size=40M tmpfs "$SMALL" || fail "cannot mount a tmpfs"
at_cleanup umount -l "$SMALL"
random_file "$SRC/disk.img" 64
TGT=$SMALL/tgt

new_run() {
    rm -rf "$SMALL/tgt" "$STATE"
    mkdir -p "$SMALL/tgt" "$STATE"
    mount -o remount,size=40M "$SMALL" || fail "cannot shrink the tmpfs"
}

guest_fio() {
    fio --name=guest --filename="$MNT/disk.img" --rw=randwrite --bs=4k --size=16M \
        --offset=8M --io_size=16M --direct=1 --ioengine=libaio --iodepth=8 \
        --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 \
        --output="$T/fio.out" || fail "guest fio failed while the target was full: $(tail -n 5 "$T/fio.out")"
}

wait_status() { # KEY VALUE TIMEOUT
    local i
    for i in $(seq 1 $(( $3 * 10 ))); do
        [ "$(status_get "$1")" = "$2" ] && return 0
        sleep 0.1
    done
    fail "$1 is '$(status_get "$1")' after $3 s, expected '$2'"
}

# --- stop ---
new_run
start_mirror -o on_target_error=stop,workers=2
wait_status phase paused 30
status_get last_error | grep -q "No space left on device" ||
    fail "last_error does not say why: $(status_get last_error)"
guest_fio
assert_eq "$(status_get phase)" paused "phase while full"
mount -o remount,size=256M "$SMALL" || fail "cannot grow the tmpfs"
"$MIRRORCTL" resume "$MNT" || fail "mirrorctl resume"
wait_phase ready 60
finish_mirror
assert_eq "$DAEMON_RC" 0 "stop: exit code after resume"
assert_exact
cmp "$SRC/disk.img" "$TGT/disk.img" || fail "stop: target differs after resume"

# --- report ---
new_run
start_mirror -o on_target_error=report,workers=2
wait_status phase failed 30
guest_fio
cmp -s "$SRC/disk.img" "$MNT/disk.img" || fail "report: the mount does not serve the source"
finish_mirror
assert_eq "$DAEMON_RC" 3 "report: exit code"
grep -q '^phase: failed' "$STATE/result" || fail "report: result is not failed"

# --- ignore ---
new_run
start_mirror -o on_target_error=ignore,workers=2
for i in $(seq 1 100); do
    [ "$(status_get errors)" -ge 2 ] && break
    sleep 0.1
done
[ "$(status_get errors)" -ge 2 ] || fail "ignore: no retries counted"
guest_fio
timeout 2 cat "$MNT/.mirror/events" > "$T/events" || true
grep -q "policy ignore: retry in" "$T/events" || fail "ignore: retries not in events"
ph=$(status_get phase)
[ "$ph" = bulk ] || fail "ignore: phase '$ph' while the target is full"
mount -o remount,size=256M "$SMALL" || fail "cannot grow the tmpfs"
wait_phase ready 60
finish_mirror
assert_eq "$DAEMON_RC" 0 "ignore: exit code"
assert_exact
cmp "$SRC/disk.img" "$TGT/disk.img" || fail "ignore: target differs"
