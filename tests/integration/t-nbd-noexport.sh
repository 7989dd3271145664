#!/bin/bash
# t-nbd-noexport.sh - an image created through the mount that the NBD server
# has no export for: the guest is served, status and events say so, the rest
# of the job goes on; once the export appears the image is mirrored; an
# image that never gets one makes the job fail (exit 3), never "completed".
# nbdkit's file plugin with dir= serves every file of a directory as an
# export of the same name, so an export appears when its file does.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
command -v nbdkit >/dev/null || fail "nbdkit is not installed (contrib/deps.sh installs it)"

EXP=$T/exports SOCK=$T/nbd.sock
mkdir -p "$EXP"
nbdkit -f -U "$SOCK" file dir="$EXP" >"$T/nbdkit.log" 2>&1 &
EXTRA_PIDS+=($!)
wait_socket "$SOCK" $! "$T/nbdkit.log"

random_file "$SRC/a.img" 8
truncate -s 8M "$EXP/a.img"
TGT="nbd+unix:///{name}?socket=$SOCK"
start_mirror -o workers=2
wait_phase ready 30

# A new image without an export: served, reported, not mirrored.
head -c 3145728 /dev/urandom > "$T/b.data"
cp "$T/b.data" "$MNT/b.img" || fail "the guest could not create b.img"
cmp "$T/b.data" "$MNT/b.img" || fail "b.img does not read back through the mount"
for i in $(seq 1 50); do
    grep -q '^image: b.img phase=no-target' "$MNT/.mirror/status" && break
    sleep 0.1
done
grep -q '^image: b.img phase=no-target' "$MNT/.mirror/status" ||
    fail "status does not say b.img has no target: $(grep '^image:' "$MNT/.mirror/status")"
grep -q '^image: a.img phase=ready' "$MNT/.mirror/status" || fail "a.img left ready"
timeout 2 cat "$MNT/.mirror/events" > "$T/events" || true
grep -q " no-target b.img" "$T/events" || fail "no no-target event: $(cat "$T/events")"
# a.img keeps being mirrored meanwhile.
dd if=/dev/urandom of="$MNT/a.img" bs=64K count=4 seek=10 conv=notrunc status=none

# The export appears: the image is mirrored from its first byte.
truncate -s 3M "$EXP/b.img"
wait_synced 30
grep -q '^image: b.img phase=ready' "$MNT/.mirror/status" || fail "b.img not ready once its export exists"
finish_mirror
assert_eq "$DAEMON_RC" 0 "exit code"
assert_trees_equal --data-only "$SRC" "$EXP"
cmp "$SRC/a.img" "$EXP/a.img" || fail "a.img differs"
cmp "$SRC/b.img" "$EXP/b.img" || fail "b.img differs"

# An image that never gets an export: the job cannot complete.
new_scenario never
random_file "$SRC/a.img" 8
TGT="nbd+unix:///{name}?socket=$SOCK"
start_mirror
wait_phase ready 30
head -c 65536 /dev/urandom > "$MNT/c.img"
finish_mirror
assert_eq "$DAEMON_RC" 3 "exit code with an image never mirrored"
grep -q '^phase: failed' "$STATE/result" || fail "result is not failed"
grep -q 'c.img: never mirrored' "$STATE/result" || fail "result does not name c.img: $(grep last_error "$STATE/result")"
