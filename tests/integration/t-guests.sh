#!/bin/bash
# t-guests: guests as they really run on the mount, during the mirror:
#  (a) fio with O_DIRECT + libaio, random read/write, verified (crc32c);
#  (b) qemu-io -n (cache=none: O_DIRECT) on a raw image, pattern write+read;
#  (c) qemu-img create of a new qcow2 through the mount and qemu-io -t none
#      writes into it.
# Then finish: exit 0, the target qcow2 is identical and consistent
# (qemu-img compare / check) and every file is equal byte for byte.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
for tool in fio qemu-io qemu-img; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done

mkimg "$SRC/fio.img" 64M --seed 21
mkimg "$SRC/raw.img" 32M --seed 22
start_mirror -o workers=2

# no_error_in FILE WHAT: the tool's output mentions no failure.
no_error_in() {
    if grep -Eiq 'invalid argument|EINVAL|error|fail|verify: bad|bad magic' "$1"; then
        cat "$1" >&2
        fail "$2 reported an error: $(grep -Eim1 'invalid argument|EINVAL|error|fail|verify: bad|bad magic' "$1")"
    fi
}

# (a) fio, O_DIRECT, libaio, verified.
(cd "$T" && exec fio --name=guest --filename="$MNT/fio.img" --direct=1 --ioengine=libaio \
    --rw=randrw --bs=4k --iodepth=16 --size=64M --verify=crc32c \
    --verify_fatal=1 --verify_state_save=0) >"$T/fio.out" 2>&1
rc=$?
[ "$rc" = 0 ] || { cat "$T/fio.out" >&2; fail "fio exited with $rc"; }
grep -q 'err= 0' "$T/fio.out" || { cat "$T/fio.out" >&2; fail "fio did not report err= 0"; }
grep -Eiq 'invalid argument|EINVAL|verify: bad|bad magic|verify failed' "$T/fio.out" &&
    { cat "$T/fio.out" >&2; fail "fio reported an error"; }

# (b) qemu-io on a raw image with cache=none (-n: O_DIRECT).
qemu-io -n -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' \
    -c 'write -P 0xcd 17M 192k' -c 'read -P 0xcd 17M 192k' "$MNT/raw.img" >"$T/qio-raw.out" 2>&1
rc=$?
[ "$rc" = 0 ] || { cat "$T/qio-raw.out" >&2; fail "qemu-io -n on raw.img exited with $rc"; }
no_error_in "$T/qio-raw.out" "qemu-io -n on raw.img"
grep -q '^wrote 1048576/1048576 bytes at offset 0' "$T/qio-raw.out" || fail "qemu-io did not write raw.img"
grep -q '^read 1048576/1048576 bytes at offset 0' "$T/qio-raw.out" || fail "qemu-io did not read raw.img"

# (c) a new qcow2 image made through the mount, written with cache=none.
qemu-img create -f qcow2 "$MNT/new.qcow2" 256M >"$T/qimg.out" 2>&1 ||
    { cat "$T/qimg.out" >&2; fail "qemu-img create through the mount"; }
[ -f "$SRC/new.qcow2" ] || fail "new.qcow2 was not created in the source"
qemu-io -t none -f qcow2 -c 'write -P 0x5a 1M 4M' -c 'write -P 0x11 100M 2M' \
    "$MNT/new.qcow2" >"$T/qio-qcow2.out" 2>&1
rc=$?
[ "$rc" = 0 ] || { cat "$T/qio-qcow2.out" >&2; fail "qemu-io -t none on new.qcow2 exited with $rc"; }
no_error_in "$T/qio-qcow2.out" "qemu-io -t none on new.qcow2"
grep -q '^wrote 4194304/4194304 bytes at offset 1048576' "$T/qio-qcow2.out" || fail "qemu-io did not write new.qcow2"
# Read back through the mount, still O_DIRECT.
qemu-io -t none -f qcow2 -c 'read -P 0x5a 1M 4M' -c 'read -P 0x11 100M 2M' -c 'read -P 0 0 1M' \
    "$MNT/new.qcow2" >"$T/qio-qcow2r.out" 2>&1 ||
    { cat "$T/qio-qcow2r.out" >&2; fail "reading new.qcow2 back through the mount"; }
no_error_in "$T/qio-qcow2r.out" "qemu-io read-back of new.qcow2"

finish_mirror_within 60
assert_result completed 0
assert_exact

qemu-img compare "$SRC/new.qcow2" "$TGT/new.qcow2" >"$T/compare.out" 2>&1
rc=$?
[ "$rc" = 0 ] || { cat "$T/compare.out" >&2; fail "qemu-img compare new.qcow2 exited with $rc"; }
grep -q 'Images are identical' "$T/compare.out" || fail "qemu-img compare: $(cat "$T/compare.out")"
qemu-img check "$TGT/new.qcow2" >"$T/check.out" 2>&1 ||
    { cat "$T/check.out" >&2; fail "qemu-img check of the target new.qcow2"; }
# The target holds what the guests wrote.
qemu-io -r -f qcow2 -c 'read -P 0x5a 1M 4M' -c 'read -P 0x11 100M 2M' "$TGT/new.qcow2" >"$T/tq.out" 2>&1 ||
    { cat "$T/tq.out" >&2; fail "target new.qcow2 lacks the guest's data"; }
qemu-io -r -f raw -c 'read -P 0xab 0 1M' -c 'read -P 0xcd 17M 192k' "$TGT/raw.img" >"$T/tr.out" 2>&1 ||
    { cat "$T/tr.out" >&2; fail "target raw.img lacks the guest's data"; }
cmp "$SRC/raw.img" "$TGT/raw.img" || fail "raw.img differs"
cmp "$SRC/fio.img" "$TGT/fio.img" || fail "fio.img differs"
assert_clean_stderr
exit 0
