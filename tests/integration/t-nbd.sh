#!/bin/bash
# t-nbd: mirror to NBD exports (-o target=nbd+unix:///{name}?socket=...).
# One qemu-storage-daemon serves an export per image, one of them in a
# subdirectory, one larger than its image and full of stale data, and one
# for an image that a guest creates through the mount.  Guests write during
# the first pass (dd) and after ready (fio, verified; zeroes over data; a
# shrink).  The finished job exits 0 and every export, read back through the
# NBD server, equals its source image: `qemu-img compare` also requires the
# bytes past the image's end to read as zero.  The stale export ends up
# sparse again (zeroing may deallocate).  Then the same on a frugal nbdkit
# (4K minimum block size, no zero command, no block status).
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
for tool in qemu-storage-daemon qemu-img fio; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (contrib/deps.sh installs it)"
done

M=1048576
EXP=$T/exports
SOCK=$T/nbd.sock
mkdir -p "$EXP" "$SRC/disks"

# Sources.
random_file "$SRC/vm1.img" 32
truncate -s 24M "$SRC/disks/vm2.img"
head -c $((3 * M)) /dev/urandom |
    dd of="$SRC/disks/vm2.img" bs=1M seek=5 conv=notrunc status=none || fail "write vm2.img"

# Exports: vm1 exactly its image's size; vm2 larger and full of stale data
# that the mirror must wipe; new.img for an image made through the mount.
truncate -s 32M "$EXP/vm1.raw"
random_file "$EXP/vm2.raw" 32
random_file "$EXP/new.raw" 8
qemu-storage-daemon \
    --blockdev driver=file,filename="$EXP/vm1.raw",node-name=n1 \
    --blockdev driver=file,filename="$EXP/vm2.raw",node-name=n2,discard=unmap \
    --blockdev driver=file,filename="$EXP/new.raw",node-name=n3,discard=unmap \
    --nbd-server addr.type=unix,addr.path="$SOCK" \
    --export type=nbd,id=e1,node-name=n1,name=vm1.img,writable=on \
    --export type=nbd,id=e2,node-name=n2,name=disks/vm2.img,writable=on \
    --export type=nbd,id=e3,node-name=n3,name=new.img,writable=on \
    >"$T/qsd.log" 2>&1 &
QSD=$!
EXTRA_PIDS+=("$QSD")
wait_socket "$SOCK" "$QSD"

uri() { echo "nbd+unix:///$1?socket=$SOCK"; }
# assert_export_equal IMAGE: the export, read through the server, equals
# the source image (and reads as zero past the image's end).
assert_export_equal() {
    qemu-img compare -f raw -F raw "$SRC/$1" "$(uri "$1")" >"$T/compare.out" 2>&1 ||
        fail "export $1 differs from the source: $(grep -v Warning "$T/compare.out" | head -n 2)"
}

TGT="nbd+unix:///{name}?socket=$SOCK"
# A slow first pass, so that guests write while it runs.
start_mirror -o workers=4,speed=16M
assert_eq "$(status_get target)" "$TGT" "target in status"
assert_eq "$(status_get images)" 2 "images"
assert_eq "$(status_get mirrored)" data "an NBD target keeps image data only"

# During the first pass: overwrite a range (maybe copied already).
head -c $((2 * M)) /dev/urandom |
    dd of="$MNT/vm1.img" bs=1M seek=1 conv=notrunc status=none || fail "guest write in bulk"
assert_eq "$(status_get phase)" bulk "phase while the guest wrote"
wait_synced 60
mirrorctl_speed() { echo "speed $1" >"$MNT/.mirror/ctl" || fail "ctl speed $1"; }
mirrorctl_speed 0

# After ready: fio, verified, through the mount ...
(cd "$T" && exec fio --name=guest --filename="$MNT/vm1.img" --direct=1 --ioengine=libaio \
    --rw=randwrite --bs=64k --iodepth=8 --size=32M --verify=crc32c \
    --verify_fatal=1 --verify_state_save=0) >"$T/fio.out" 2>&1 ||
    { cat "$T/fio.out" >&2; fail "fio through the mount"; }
grep -q 'err= 0' "$T/fio.out" || { cat "$T/fio.out" >&2; fail "fio did not report err= 0"; }
# ... zeroes over data (the target gets a zero request, not data) ...
dd if=/dev/zero of="$MNT/vm1.img" bs=1M seek=10 count=2 conv=notrunc status=none ||
    fail "guest zero write"
# ... data past where vm2 will end, copied, then cut off by a shrink: the
# export cannot shrink, so its tail must be zeroed.
head -c $M /dev/urandom |
    dd of="$MNT/disks/vm2.img" bs=1M seek=22 conv=notrunc status=none || fail "write vm2 tail"
wait_synced 60
truncate -s 20M "$MNT/disks/vm2.img" || fail "shrink vm2.img"
# ... and a new image, created through the mount: mirrored to its export.
head -c $((3 * M + 5)) /dev/urandom >"$MNT/new.img" || fail "create new.img"
sync
wait_synced 60
assert_eq "$(status_get images)" 3 "images after the guest created one"
assert_eq "$(status_get errors)" 0 "errors"

finish_mirror_within 60
assert_result completed 0
assert_clean_stderr
for img in vm1.img disks/vm2.img new.img; do
    assert_export_equal "$img"
done
# Same bytes in the server's backing file too (flushed, nothing cached).
assert_files_cmp "$SRC/vm1.img" "$EXP/vm1.raw" "vm1.raw"
# The stale 32M of vm2's export were zeroed by deallocating, not by writing
# zeroes: what is allocated is about the image's 3M of data.
alloc=$(alloc_bytes "$EXP/vm2.raw")
[ "$alloc" -lt $((8 * M)) ] || fail "vm2's export is not sparse: $alloc bytes allocated"
kill -0 "$QSD" 2>/dev/null || fail "qemu-storage-daemon died: $(tail -n 3 "$T/qsd.log")"

# ---- a frugal server ---------------------------------------------------------------
# nbdkit with a 4K minimum block size (unaligned requests are errors), no
# zero command and no block status: odd-sized images, unaligned guest
# writes and a shrink must still give equal exports (read-modify-write,
# zeroes written as data).
command -v nbdkit >/dev/null || fail "nbdkit is not installed (contrib/deps.sh installs it)"
new_scenario frugal
EXP=$T/frugal/exports
SOCK=$T/frugal/nbd.sock
mkdir -p "$EXP"
head -c 12345 /dev/urandom >"$SRC/odd.img" || fail "odd.img"
truncate -s 1M "$SRC/sparse.img"
printf 'hello' | dd of="$SRC/sparse.img" bs=1 seek=700001 conv=notrunc status=none
random_file "$EXP/odd.img" 1          # stale data everywhere
random_file "$EXP/sparse.img" 2
nbdkit -f -U "$SOCK" --filter=blocksize-policy --filter=nozero --filter=noextents \
    file dir="$EXP" blocksize-minimum=4096 blocksize-error-policy=error >"$T/nbdkit.log" 2>&1 &
NBDKIT=$!
EXTRA_PIDS+=("$NBDKIT")
wait_socket "$SOCK" "$NBDKIT"
TGT="nbd+unix:///{name}?socket=$SOCK"
start_mirror -o granularity=4K
wait_synced 30
printf 'XYZ' | dd of="$MNT/odd.img" bs=1 seek=4095 conv=notrunc status=none || fail "write odd.img"
printf 'tail' >>"$MNT/odd.img" || fail "append odd.img"
truncate -s 600000 "$MNT/sparse.img" || fail "shrink sparse.img"
wait_synced 30
finish_mirror_within 30
assert_result completed 0
for img in odd.img sparse.img; do
    qemu-img compare -f raw -F raw "$SRC/$img" "$EXP/$img" >"$T/compare.out" 2>&1 ||
        fail "$img on the frugal server: $(grep -v Warning "$T/compare.out" | head -n 2)"
done
exit 0
