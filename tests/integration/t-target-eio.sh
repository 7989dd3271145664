#!/bin/bash
# t-target-eio.sh - target I/O errors from a real fault injector: the target
# directory is on ext4 (no journal) on a loop device over nbdfuse over
# nbdkit's memory plugin with the error filter; every write to the device
# fails while a trigger file exists.  Page-cache writes succeed, so the
# errors surface when the target is flushed: what the failed flush may have
# lost must be copied again.  Guest I/O goes on (fio with verify).  At the
# end the file system is remounted so that the comparison reads the device.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
faulty_device pwrite
mkfs.ext4 -q -F -O ^has_journal "$DEV/nbd" || fail "mkfs.ext4"
remount_fs() {
    umount "$FS" 2>/dev/null
    mount -o loop,errors=continue "$DEV/nbd" "$FS" || fail "cannot mount the target fs"
}
remount_fs
random_file "$SRC/disk.img" 24

guest_fio() {
    fio --name=guest --filename="$MNT/disk.img" --rw=randwrite --bs=4k --size=8M \
        --offset=4M --io_size=8M --direct=1 --ioengine=libaio --iodepth=8 \
        --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 \
        --output="$T/fio.out" || fail "guest fio failed during target errors: $(tail -n 5 "$T/fio.out")"
}

check_on_device() {
    remount_fs
    assert_exact
    cmp "$SRC/disk.img" "$FS/tgt/disk.img" || fail "$1: target on the device differs from the source"
}

# The device starts failing once the target copy exists (after ready), as
# a guest keeps writing: new data cannot be made durable until it recovers.
TGT=$FS/tgt
mkdir -p "$TGT"
start_mirror -o on_target_error=ignore,workers=2
wait_phase ready 60
touch "$TRIGGER"
guest_fio
for i in $(seq 1 200); do
    [ "$(status_get errors)" -ge 2 ] && break
    sleep 0.1
done
[ "$(status_get errors)" -ge 2 ] || fail "ignore: no target errors seen ($(status_get last_error))"
status_get last_error | grep -q "Input/output error" || fail "ignore: last_error: $(status_get last_error)"
timeout 2 cat "$MNT/.mirror/events" > "$T/events" || true
grep -q "policy ignore: retry" "$T/events" || fail "ignore: retries not in events"
rm -f "$TRIGGER"
wait_synced
finish_mirror
assert_eq "$DAEMON_RC" 0 "ignore: exit code"
check_on_device ignore
assert_clean_stderr
