#!/bin/bash
# t-state-identity.sh - the crash-safe state is kept per file by (device,
# inode): two images with the same inode number on different file systems
# once shared one map, and a resume after kill -9 skipped real
# differences.  Two fresh tmpfs below SOURCE give such a pair.  (Images on
# file systems mounted below SOURCE are also compared in full before the
# job completes, since the watch over writes behind the mount covers only
# SOURCE's own: test_persist proves the keying itself.)
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup

mkdir "$SRC/a" "$SRC/b"
mount -t tmpfs -o size=64M tmpfs "$SRC/a" || fail "mount tmpfs a"
at_cleanup "umount -l '$SRC/a' 2>/dev/null"
mount -t tmpfs -o size=64M tmpfs "$SRC/b" || fail "mount tmpfs b"
at_cleanup "umount -l '$SRC/b' 2>/dev/null"
random_file "$SRC/a/x.img" 24
random_file "$SRC/b/y.img" 24
assert_eq "$(stat -c %i "$SRC/a/x.img")" "$(stat -c %i "$SRC/b/y.img")" \
    "inode numbers of the two images (the case under test)"
[ "$(stat -c %d "$SRC/a/x.img")" != "$(stat -c %d "$SRC/b/y.img")" ] || fail "same device"

crash_daemon() {
    kill -9 "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null
    DAEMON_PID=""
    fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT"
}

# A first job makes the target a copy; the later ones say so (sync=none),
# so that an image whose state was not found would be trusted.
start_mirror
wait_synced 60
finish_mirror
assert_result completed 0
for round in 1 2 3; do
    start_mirror -o sync=none
    wait_synced 60
    # Until the state is swept clean (a few quiet seconds), a restart
    # copies everything anyway.
    sleep 5
    # Writes into both images, in different extents, then a crash before
    # the target has them for sure.
    # Each order once: the map written last won when they shared one.
    wx() { dd if=/dev/urandom of="$MNT/a/x.img" bs=1M count=2 seek=$(( round * 4 )) conv=notrunc status=none ||
        fail "write x.img"; }
    wy() { dd if=/dev/urandom of="$MNT/b/y.img" bs=1M count=2 seek=$(( 20 - round * 4 )) conv=notrunc status=none ||
        fail "write y.img"; }
    if [ $(( round % 2 )) = 1 ]; then wy; wx; else wx; wy; fi
    crash_daemon
    # The target lost what was not flushed: make it so, as a crash would.
    dd if=/dev/zero of="$TGT/a/x.img" bs=1M count=2 seek=$(( round * 4 )) conv=notrunc status=none
    dd if=/dev/zero of="$TGT/b/y.img" bs=1M count=2 seek=$(( 20 - round * 4 )) conv=notrunc status=none
    start_mirror -o sync=none
    wait_synced 60
    finish_mirror
    assert_result completed 0
    assert_files_cmp "$TGT/a/x.img" "$SRC/a/x.img" "round $round: x.img after resuming"
    assert_files_cmp "$TGT/b/y.img" "$SRC/b/y.img" "round $round: y.img after resuming"
done
exit 0
