#!/bin/bash
# t-mirror-basic: a directory of several images is mirrored; the first pass
# reaches ready with copied_bytes == total_bytes, guest writes after ready
# (overwrites, and appends that extend files) reach the target, and the
# finished target is byte for byte the source tree.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup

K=1024 M=1048576
mkimg "$SRC/big.img" 64M --seed 11
mkimg "$SRC/vm2/disks/disk.img" 16M --seed 12
: > "$SRC/empty.img"
mkimg "$SRC/odd.img" 100K --seed 13        # not a multiple of 64K

start_mirror -o workers=2
wait_phase ready 60

total=$(status_get total_bytes)
assert_eq "$total" $(( 64 * M + 16 * M + 0 + 100 * K )) "total_bytes at ready"
assert_eq "$(status_get copied_bytes)" "$total" "copied_bytes at ready (offset == length)"
assert_eq "$(status_get dirty_bytes)" 0 "dirty_bytes at ready"
assert_eq "$(status_get images)" 4 "images"
for img in big.img vm2/disks/disk.img empty.img odd.img; do
    sz=$(stat -c %s "$SRC/$img")
    assert_eq "$(status_image_field "$img" size)" "$sz" "size of $img in status"
    assert_eq "$(status_image_field "$img" copied)" "$sz" "copied of $img in status"
    assert_eq "$(status_image_field "$img" phase)" ready "phase of $img"
done
# The first pass alone already gives a copy of the data (the metadata of
# a live job is compared at the end).
assert_trees_equal --no-meta "$SRC" "$TGT"

# A guest writes: overwrites inside the images at odd offsets and lengths ...
gw() { # FILE OFFSET LENGTH: write LENGTH random bytes at OFFSET through the mount
    head -c "$3" /dev/urandom |
        dd of="$MNT/$1" bs=64K iflag=fullblock oflag=seek_bytes seek="$2" conv=notrunc status=none ||
        fail "guest write $*"
}
gw big.img 0 4096
gw big.img $(( M + 123 )) 5000
gw big.img $(( 31 * M + 65535 )) 2           # straddles a 64K boundary
gw big.img $(( 40 * M )) $(( 3 * M + 17 ))
gw big.img $(( 64 * M - 100 )) 100           # the last bytes
gw vm2/disks/disk.img $(( 8 * M - 10 )) 20
gw odd.img 0 1
gw odd.img $(( 100 * K - 1 )) 1              # last byte of the partial granule
# ... and writes beyond EOF that extend files.
gw odd.img $(( 300 * K + 5 )) 7000           # leaves a hole 100K..300K
gw empty.img 0 12345
head -c $(( 2 * M + 3 )) /dev/urandom >> "$MNT/vm2/disks/disk.img" || fail "append to disk.img"

# The extended sizes are visible through the mount and in the status.
assert_eq "$(stat -c %s "$MNT/odd.img")" $(( 300 * K + 5 + 7000 )) "odd.img size after extension"
assert_eq "$(stat -c %s "$MNT/empty.img")" 12345 "empty.img size after write"
assert_eq "$(stat -c %s "$MNT/vm2/disks/disk.img")" $(( 18 * M + 3 )) "disk.img size after append"
wait_synced 60
total=$(status_get total_bytes)
assert_eq "$total" $(( 64 * M + 18 * M + 3 + 12345 + 300 * K + 5 + 7000 )) "total_bytes after extension"
assert_eq "$(status_get copied_bytes)" "$total" "copied_bytes after the writes were copied"

finish_mirror_within 60
assert_eq "$DAEMON_RC" 0 "daemon exit code"
assert_exact
[ -e "$TGT/.mirror" ] && fail ".mirror was copied to the target"
assert_result completed 0
assert_clean_stderr
is_mounted "$MNT" && fail "still mounted"
exit 0
