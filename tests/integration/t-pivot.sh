#!/bin/bash
# t-pivot: switch the guests of a ready job to its target without a stop
# (mirrorctl pivot), and jobs started on a live mount (mirrorctl mirror).
#  (a) fio with crc32c verify writes through the mount before, during and
#      after the pivot: no I/O error, no verify failure; after it every
#      write reaches the target only, the daemon holds no descriptor of the
#      source, and an unmount exits 0 at once;
#  (b) qemu-io (cache=none) keeps its image open across the pivot;
#  (c) SOURCE on a loop-mounted ext4: after the pivot the file system is
#      unmounted and the loop device detached while a guest keeps writing;
#  (d) refused: in bulk, while paused, with an NBD target, on an idle mount;
#  (e) kill -9 before the record, after the record, and after the pivot,
#      then the same command again: the right tree is served, nothing lost;
#  (f) an idle mount: mirror, pivot, mirror and pivot again, data checked
#      after each step; unmount exits 0 at once and says what was served.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
for tool in fio qemu-io mkfs.ext4 losetup nbdkit; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (contrib/deps.sh installs it)"
done

ctl() { "$MIRRORCTL" "$@"; }
sum_of() { md5sum <"$1" | cut -d' ' -f1; }

# no_source_fds DIR: the daemon holds no descriptor of anything in DIR
# (compared by device and inode: its descriptors go through a private
# clone of the mount, whose paths do not name DIR).
no_source_fds() {
    local ids f id
    ids=$(find "$1" -xdev -printf '%D:%i\n' | sort -u)
    for f in /proc/"$DAEMON_PID"/fd/*; do
        id=$(stat -L -c '%d:%i' "$f" 2>/dev/null) || continue
        # stat prints the device as a decimal number, find as well.
        if grep -qx "$id" <<<"$ids"; then
            fail "the daemon still holds $(readlink "$f") of the source ($id)"
        fi
    done
}

# --- (a) fio verify across the pivot -----------------------------------------
new_scenario a
random_file "$SRC/disk.img" 64
mkdir "$SRC/dir" && echo hello >"$SRC/dir/note"
start_mirror
wait_synced
fio --name=across --filename="$MNT/disk.img" --rw=randwrite --bs=4k --size=64M \
    --ioengine=libaio --iodepth=8 --direct=1 --verify=crc32c --verify_backlog=256 \
    --do_verify=1 --time_based --runtime=6 --output="$T/fio-a.out" &
FIO=$!
EXTRA_PIDS+=("$FIO")
sleep 2
ctl pivot "$MNT" >"$T/pivot-a.out" 2>&1 || fail "(a) pivot refused: $(cat "$T/pivot-a.out")"
assert_eq "$(status_get phase)" pivoted "(a) phase after the pivot"
assert_eq "$(status_get serving)" "$TGT" "(a) serving"
pause=$(status_get pivot_pause_ms)
[ "$pause" -ge 0 ] 2>/dev/null || fail "(a) pivot_pause_ms is '$pause'"
log "(a) guests held $pause ms with fio running"
src_sum=$(sum_of "$SRC/disk.img")
no_source_fds "$SRC"
wait "$FIO" || fail "(a) fio across the pivot: $(grep -iE 'err|verify' "$T/fio-a.out" | head -n 5)"
grep -q "err= 0" "$T/fio-a.out" || fail "(a) fio reported errors: $(grep err= "$T/fio-a.out")"
echo after >"$MNT/dir/after" || fail "(a) cannot create a file after the pivot"
mv "$MNT/dir/note" "$MNT/dir/note2" || fail "(a) rename after the pivot"
[ -e "$TGT/dir/after" ] && [ -e "$TGT/dir/note2" ] || fail "(a) namespace changes did not reach the target"
[ ! -e "$SRC/dir/after" ] && [ -e "$SRC/dir/note" ] || fail "(a) a change after the pivot reached the source"
assert_eq "$(sum_of "$SRC/disk.img")" "$src_sum" "(a) the source after the pivot"
cmp -s "$MNT/disk.img" "$TGT/disk.img" || fail "(a) the mount does not show the target's bytes"
finish_mirror_within 5
assert_result pivoted 0
assert_eq "$(result_get serving)" "$TGT" "(a) serving in the result"
# The pivot's record: a restart with the same arguments serves the target.
grep -qx "serving=$TGT" "$STATE/pivot" || fail "(a) no pivot record in $STATE"

# --- (b) qemu-io keeps its image open across the pivot -------------------------
new_scenario b
random_file "$SRC/q.img" 16
start_mirror
wait_synced
qemu-io -f raw -t none -c 'write -P 0x11 0 1M' -c 'sleep 3000' -c 'write -P 0x22 1M 1M' \
    -c 'read -P 0x11 0 1M' -c 'read -P 0x22 1M 1M' -c 'flush' "$MNT/q.img" >"$T/qio.out" 2>&1 &
QIO=$!
EXTRA_PIDS+=("$QIO")
sleep 1
wait_synced
ctl pivot "$MNT" >"$T/pivot-b.out" 2>&1 || fail "(b) pivot refused: $(cat "$T/pivot-b.out")"
wait "$QIO" || fail "(b) qemu-io failed: $(tail -n 5 "$T/qio.out")"
grep -qi "fail\|error" "$T/qio.out" && fail "(b) qemu-io: $(grep -i 'fail\|error' "$T/qio.out" | head -n 3)"
assert_eq "$(grep -c '^wrote\|^read' "$T/qio.out")" 4 "(b) qemu-io requests done"
cmp -s <(head -c 1M /dev/zero | tr '\0' '\042') <(dd if="$TGT/q.img" bs=1M skip=1 count=1 status=none) ||
    fail "(b) the write after the pivot is not on the target"
cmp -s <(head -c 1M /dev/zero | tr '\0' '\042') <(dd if="$SRC/q.img" bs=1M skip=1 count=1 status=none) &&
    fail "(b) the write after the pivot reached the source"
cmp -s <(head -c 1M /dev/zero | tr '\0' '\021') <(dd if="$TGT/q.img" bs=1M count=1 status=none) ||
    fail "(b) the write before the pivot is not on the target"
finish_mirror_within 5
assert_result pivoted 0

# --- (c) the source's file system is unmounted after the pivot ------------------
new_scenario c
truncate -s 256M "$T/c/fs.img"
mkfs.ext4 -q -F "$T/c/fs.img" || fail "(c) mkfs.ext4"
LOOP=$(losetup -f --show "$T/c/fs.img") || fail "(c) losetup"
at_cleanup "umount '$SRC' 2>/dev/null; losetup -d '$LOOP' 2>/dev/null"
mount "$LOOP" "$SRC" || fail "(c) mount $LOOP"
random_file "$SRC/vm.img" 32
start_mirror
wait_synced
# A guest that writes block after block (4 KiB, its number in it) through
# one descriptor and flushes every 16, until told to stop.
python3 - "$MNT/vm.img" "$T/c/stop" "$T/c/count" <<'PY' &
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
n = 0
while not os.path.exists(sys.argv[2]) or n < 64:
    os.pwrite(fd, (b"%08d" % n) * 512, (n % 8192) * 4096)
    n += 1
    if n % 16 == 0:
        os.fsync(fd)
        time.sleep(0.005)
os.fsync(fd)
os.close(fd)
open(sys.argv[3], "w").write(str(n))
PY
WRITER=$!
EXTRA_PIDS+=("$WRITER")
sleep 1
ctl pivot "$MNT" >"$T/pivot-c.out" 2>&1 || fail "(c) pivot refused: $(cat "$T/pivot-c.out")"
umount "$SRC" 2>"$T/c/umount.err" || fail "(c) the source's file system is still busy: $(cat "$T/c/umount.err")"
losetup -d "$LOOP" || fail "(c) cannot detach $LOOP"
sleep 1
kill -0 "$WRITER" 2>/dev/null || fail "(c) the guest stopped during the pivot"
touch "$T/c/stop"
wait "$WRITER" || fail "(c) the guest's writes failed after the pivot"
n=$(cat "$T/c/count")
python3 - "$TGT/vm.img" "$n" <<'PY' || fail "(c) the target lacks the guest's writes"
import sys
f = open(sys.argv[1], "rb")
n = int(sys.argv[2])
last = {}
for k in range(n):
    last[k % 8192] = k
for blk, k in last.items():
    f.seek(blk * 4096)
    if f.read(4096) != (b"%08d" % k) * 512:
        sys.exit("block %d: not write %d" % (blk, k))
PY
log "(c) $n guest writes, the source's file system unmounted under them"
finish_mirror_within 5
assert_result pivoted 0

# --- (d) refusals ------------------------------------------------------------------
new_scenario d
random_file "$SRC/big.img" 64
start_mirror -o speed=1M
assert_eq "$(status_get phase)" bulk "(d) phase"
ctl pivot "$MNT" 2>"$T/d.err" && fail "(d) pivot accepted in bulk"
grep -q "bulk, not ready" "$T/d.err" || fail "(d) refusal in bulk: $(cat "$T/d.err")"
ctl speed "$MNT" 0 || fail "(d) speed"
wait_synced
ctl pause "$MNT" || fail "(d) pause"
ctl pivot "$MNT" 2>"$T/d.err" && fail "(d) pivot accepted while paused"
grep -q "paused" "$T/d.err" || fail "(d) refusal while paused: $(cat "$T/d.err")"
assert_eq "$(wc -l <"$T/d.err")" 1 "(d) lines of the refusal"
ctl resume "$MNT" || fail "(d) resume"
wait_synced
finish_mirror
assert_result completed 0
assert_exact

new_scenario d-nbd
SOCK=$T/d-nbd/nbd.sock
mkdir "$T/d-nbd/exp" && truncate -s 16M "$T/d-nbd/exp/vm.img"
nbdkit -f -U "$SOCK" file dir="$T/d-nbd/exp" >"$T/d-nbd/nbdkit.log" 2>&1 &
NBDKIT=$!
EXTRA_PIDS+=("$NBDKIT")
wait_socket "$SOCK" "$NBDKIT" "$T/d-nbd/nbdkit.log"
random_file "$SRC/vm.img" 16
TGT="nbd+unix:///{name}?socket=$SOCK"
start_mirror
wait_synced
ctl pivot "$MNT" 2>"$T/d.err" && fail "(d) pivot accepted with an NBD target"
grep -q "NBD export, not a directory" "$T/d.err" || fail "(d) refusal with NBD: $(cat "$T/d.err")"
assert_eq "$(status_get phase)" ready "(d) phase after the refusal"
finish_mirror
assert_result completed 0
cmp -s "$SRC/vm.img" "$T/d-nbd/exp/vm.img" || fail "(d) the NBD export differs"

# --- (e) kill -9 during and after the pivot ---------------------------------------
# pattern_at FILE MIB BYTE: the MiB at MIB of FILE holds BYTE (octal).
pattern_at() {
    cmp -s <(head -c 1M /dev/zero | tr '\0' "\\$3") <(dd if="$1" bs=1M skip="$2" count=1 status=none)
}
kill_daemon() {
    kill -9 "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null
    DAEMON_PID=""
    fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT"
}
for stop in record switch after; do
    new_scenario "e-$stop"
    random_file "$SRC/k.img" 16
    if [ "$stop" != after ]; then
        export MIRRORFS_TEST_PIVOT_STOP=$stop
    fi
    start_mirror
    unset MIRRORFS_TEST_PIVOT_STOP
    dd if=<(head -c 1M /dev/zero | tr '\0' '\063') of="$MNT/k.img" bs=1M seek=3 conv=notrunc,fsync status=none ||
        fail "(e-$stop) write before the pivot"
    wait_synced
    if [ "$stop" = after ]; then
        ctl pivot "$MNT" >/dev/null || fail "(e-after) pivot refused"
        dd if=<(head -c 1M /dev/zero | tr '\0' '\064') of="$MNT/k.img" bs=1M seek=4 conv=notrunc,fsync status=none ||
            fail "(e-after) write after the pivot"
    else
        ctl pivot "$MNT" >"$T/e-$stop/pivot.out" 2>&1 &
        PIVOT=$!
        for i in $(seq 1 100); do
            grep -q "pivot stopped before the $stop" "$T/daemon.err" && break
            sleep 0.1
        done
        grep -q "pivot stopped before the $stop" "$T/daemon.err" || fail "(e-$stop) the pivot did not stop there"
    fi
    src_sum=$(sum_of "$SRC/k.img")
    kill_daemon
    [ "$stop" != after ] && { wait "$PIVOT"; true; }
    # The same command again.
    start_mirror
    if [ "$stop" = record ]; then
        # Nothing recorded: the source is served and mirrored again.
        [ "$(status_get phase)" != pivoted ] || fail "(e-record) pivoted without a record"
        assert_eq "$(status_get serving)" "$SRC" "(e-record) serving"
        wait_synced
        ctl pivot "$MNT" >/dev/null || fail "(e-record) the pivot after the restart was refused"
    else
        assert_eq "$(status_get phase)" pivoted "(e-$stop) phase after the restart"
        assert_eq "$(status_get serving)" "$TGT" "(e-$stop) serving after the restart"
        grep -q "was pivoted to $TGT" "$T/daemon.err" || fail "(e-$stop) the restart did not say what it serves"
    fi
    pattern_at "$MNT/k.img" 3 063 || fail "(e-$stop) the write before the pivot is lost"
    [ "$stop" = after ] && { pattern_at "$MNT/k.img" 4 064 || fail "(e-after) the write after the pivot is lost"; }
    dd if=<(head -c 1M /dev/zero | tr '\0' '\065') of="$MNT/k.img" bs=1M seek=5 conv=notrunc,fsync status=none ||
        fail "(e-$stop) write after the restart"
    pattern_at "$TGT/k.img" 5 065 || fail "(e-$stop) the write after the restart is not on the target"
    [ "$stop" = record ] || assert_eq "$(sum_of "$SRC/k.img")" "$src_sum" "(e-$stop) the source changed after the pivot"
    finish_mirror_within 5
    assert_result pivoted 0
done
# The recorded target gone: refused, never the stale source in silence.
mv "$TGT" "$TGT.moved"
"$MIRRORFS" -f -o "target=$TGT,state_dir=$STATE" "$SRC" "$MNT" >"$T/daemon.out" 2>"$T/daemon.err"
assert_eq "$?" 1 "(e) start with the pivot's target gone"
grep -q "was pivoted to $TGT (No such file or directory)" "$T/daemon.err" ||
    fail "(e) refusal when the target is gone: $(cat "$T/daemon.err")"
is_mounted "$MNT" && fail "(e) mounted although the pivot's target is gone"
mv "$TGT.moved" "$TGT"

# --- (f) an idle mount: mirror, pivot, mirror, pivot --------------------------------
new_scenario f
random_file "$SRC/m.img" 8
mkdir "$SRC/sub" && ln -s m.img "$SRC/link"
"$MIRRORFS" -f -o "state_dir=$STATE" "$SRC" "$MNT" >"$T/daemon.out" 2>"$T/daemon.err" &
DAEMON_PID=$!
wait_mounted
assert_eq "$(status_get phase)" idle "(f) phase without a target"
ctl pivot "$MNT" 2>"$T/f.err" && fail "(f) pivot accepted on an idle mount"
grep -q "no mirror job" "$T/f.err" || fail "(f) refusal when idle: $(cat "$T/f.err")"
ctl wait --ready --timeout 5 "$MNT" 2>"$T/f.err"
assert_eq "$?" 1 "(f) mirrorctl wait on an idle mount"
grep -q "no mirror job runs (phase idle" "$T/f.err" || fail "(f) wait when idle: $(cat "$T/f.err")"
echo idle-write >"$MNT/sub/w" || fail "(f) write while idle"
[ -e "$SRC/sub/w" ] || fail "(f) the idle mount is not a passthrough"
T1=$T/f/t1 T2=$T/f/t2
ctl mirror "$MNT" "$T1" >/dev/null || fail "(f) mirror to t1 refused"
ctl mirror "$MNT" "$T2" 2>"$T/f.err" && fail "(f) a second job was started beside the first"
wait_synced
ctl pivot "$MNT" >/dev/null || fail "(f) pivot to t1"
assert_eq "$(status_get serving)" "$T1" "(f) serving after the first pivot"
assert_trees_equal --exclude .mirror --no-atime "$SRC" "$T1"
dd if=/dev/urandom of="$MNT/m.img" bs=64K count=4 seek=8 conv=notrunc,fsync status=none
cmp -s "$SRC/m.img" "$T1/m.img" && fail "(f) the write after the first pivot reached the source"
ctl mirror "$MNT" "$T2" -o workers=2 >/dev/null || fail "(f) mirror to t2 refused"
assert_eq "$(status_get source)" "$T1" "(f) the second job's source"
wait_synced
ctl pivot "$MNT" >/dev/null || fail "(f) pivot to t2"
assert_eq "$(status_get serving)" "$T2" "(f) serving after the second pivot"
assert_trees_equal --exclude .mirror --no-atime "$T1" "$T2"
echo last >"$MNT/sub/last"
[ -e "$T2/sub/last" ] && [ ! -e "$T1/sub/last" ] || fail "(f) the write after the second pivot went astray"
finish_mirror_within 5
assert_result pivoted 0
assert_eq "$(result_get serving)" "$T2" "(f) serving in the result"

# An idle mount ends at once and says what it served.
new_scenario g
echo x >"$SRC/file"
"$MIRRORFS" -f -o "state_dir=$STATE" "$SRC" "$MNT" >"$T/daemon.out" 2>"$T/daemon.err" &
DAEMON_PID=$!
wait_mounted
echo y >>"$MNT/file"
finish_mirror_within 5
assert_result idle 0
assert_eq "$(result_get serving)" "$SRC" "(g) serving in the result"
assert_eq "$(cat "$SRC/file")" "x"$'\n'"y" "(g) the idle mount's write"
assert_clean_stderr
log "ok"
