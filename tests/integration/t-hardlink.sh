#!/bin/bash
# t-hardlink.sh - a file with two names in the source is copied once and
# gets the same two names on the target (one inode); removing either name
# through the mount removes that name on the target.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup

mkdir -p "$SRC/d"
random_file "$SRC/d/orig.img" 2
ln "$SRC/d/orig.img" "$SRC/hard.img"
random_file "$SRC/other.img" 1

start_mirror
wait_phase ready 30
assert_eq "$(status_get images)" 2 "images (one per inode)"
[ "$(stat -c %i "$TGT/d/orig.img")" = "$(stat -c %i "$TGT/hard.img")" ] ||
    fail "the two names are not one file on the target"
# Written through one name, seen under both on the target.
dd if=/dev/urandom of="$MNT/hard.img" bs=64K count=2 seek=3 conv=notrunc,fsync status=none
rm "$MNT/d/orig.img"
[ -e "$TGT/d/orig.img" ] && fail "removed name still on the target"
[ -e "$TGT/hard.img" ] || fail "the other name went too"
finish_mirror
assert_eq "$DAEMON_RC" 0 "exit code"
assert_exact

# Removing the last name drops the image and its name on the target.
rm -rf "$TGT" "$STATE"; mkdir -p "$TGT" "$STATE"
ln "$SRC/hard.img" "$SRC/d/again.img"
start_mirror
rm "$MNT/hard.img"
rm "$MNT/d/again.img"
[ -e "$TGT/hard.img" ] && fail "hard.img still on the target"
[ -e "$TGT/d/again.img" ] && fail "d/again.img still on the target"
assert_eq "$(status_get images)" 1 "images after removing both names"
finish_mirror
assert_eq "$DAEMON_RC" 0 "exit code"
assert_exact
assert_clean_stderr
