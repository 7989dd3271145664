#!/bin/bash
# t-inplace.sh - MOUNTPOINT == SOURCE: the daemon mounts over the source
# directory it mirrors (reaching it through an fd opened before the mount).
# Guest writes land in the source, and after unmount the source directory
# equals the target byte for byte.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup

mkdir -p "$SRC/vm1"
random_file "$SRC/disk.img" 8
random_file "$SRC/vm1/data.img" 2
cp "$SRC/disk.img" "$T/disk.expected"
cp "$SRC/vm1/data.img" "$T/data.expected"
ino_before=$(stat -c %i "$SRC")

MNT=$SRC          # mount over the source itself
start_mirror
is_mounted "$SRC" || fail "$SRC is not a fuse mount"
[ -e "$SRC/.mirror/status" ] || fail "no .mirror/status in the in-place mount"
assert_eq "$(status_get source)" "$SRC" "status source"
assert_files_cmp "$SRC/disk.img" "$T/disk.expected" "disk.img read through the in-place mount"

# guest_writes N FILE EXPECTED BLOCKS: N random 4K writes at random offsets,
# each dd conv=notrunc,fsync through the mount, mirrored into EXPECTED.
guest_writes() {
    local n=$1 file=$2 exp=$3 blocks=$4 i off
    for i in $(seq 1 "$n"); do
        off=$(( (RANDOM * 32768 + RANDOM) % blocks ))
        head -c 4096 /dev/urandom > "$T/chunk"
        dd if="$T/chunk" of="$file" bs=4096 seek="$off" conv=notrunc,fsync status=none ||
            fail "guest write at block $off of $file failed"
        dd if="$T/chunk" of="$exp" bs=4096 seek="$off" conv=notrunc status=none
    done
}

# writes right away (during or just after the first pass) ...
guest_writes 15 "$SRC/disk.img" "$T/disk.expected" 2048
guest_writes 5 "$SRC/vm1/data.img" "$T/data.expected" 512
wait_phase ready 30
# ... and after ready
guest_writes 15 "$SRC/disk.img" "$T/disk.expected" 2048
guest_writes 5 "$SRC/vm1/data.img" "$T/data.expected" 512
# a write that is neither block-aligned nor block-sized
head -c 10000 /dev/urandom > "$T/odd"
dd if="$T/odd" of="$SRC/disk.img" bs=10000 seek=1234567 oflag=seek_bytes conv=notrunc status=none ||
    fail "unaligned guest write failed"
dd if="$T/odd" of="$T/disk.expected" bs=10000 seek=1234567 oflag=seek_bytes conv=notrunc status=none
assert_files_cmp "$SRC/disk.img" "$T/disk.expected" "disk.img read back through the mount"

finish_mirror
assert_eq "$DAEMON_RC" 0 "daemon exit code"
is_mounted "$SRC" && fail "$SRC is still mounted"
assert_eq "$(stat -c %i "$SRC")" "$ino_before" "the source directory after unmount is not the original"
[ ! -e "$SRC/.mirror" ] || fail ".mirror exists in the unmounted source"
[ ! -e "$TGT/.mirror" ] || fail ".mirror was copied to the target"
assert_exact
assert_files_cmp "$SRC/disk.img" "$T/disk.expected" "guest writes in the source disk.img"
assert_files_cmp "$SRC/vm1/data.img" "$T/data.expected" "guest writes in the source vm1/data.img"
assert_clean_stderr
exit 0
