#!/bin/bash
# t-outside.sh - writes that do not come through the mount.  A process that
# holds a source file open for writing outside the mount is refused at
# start (naming the pid, the command and the file, with nothing written on
# the target), unless -o open_writers=verify; during the job, writes to the
# source behind the mount (fanotify) make the image compared again in full.
# Either way, exit 0 only with the target equal to the source.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup

random_file "$SRC/a.img" 8
random_file "$SRC/b.img" 8

# hold_open FILE: a process (python3, in the background) with FILE open for
# writing; it writes 4 KiB at a random offset each time it gets SIGUSR1.
# Sets HOLDER.
hold_open() {
    python3 - "$1" <<'PY' &
import os, random, signal, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
size = os.fstat(fd).st_size
def write(sig, frame):
    os.pwrite(fd, os.urandom(4096), random.randrange(0, size - 4096))
signal.signal(signal.SIGUSR1, write)
while True:
    time.sleep(1)
PY
    HOLDER=$!
    EXTRA_PIDS+=("$HOLDER")
    sleep 0.5
}

# --- an in-place mount over a file a process writes: refused ---
hold_open "$SRC/a.img"
rmdir "$TGT"
# (A daemon that did not refuse would keep serving: the timeout ends it.)
if timeout 10 "$MIRRORFS" -f -o "target=$TGT,state_dir=$STATE" "$SRC" "$SRC" >"$T/out" 2>"$T/err" ||
   mounted_anyhow "$SRC"; then
    fusermount3 -u -z "$SRC" 2>/dev/null
    fail "a source file open for writing outside the mount was not refused"
fi
grep -q "a.img: open for writing by pid $HOLDER (python3) outside the mount" "$T/err" ||
    fail "the refusal does not name the file, pid and command: $(cat "$T/err")"
[ "$(wc -l < "$T/err")" = 1 ] || fail "more than one line: $(cat "$T/err")"
[ ! -e "$TGT" ] || fail "the target was written before the check refused"
mounted_anyhow "$SRC" && fail "something is mounted over the source"

# --- open_writers=verify: it proceeds, and the writes behind it are copied ---
MNT=$SRC
start_mirror -o open_writers=verify
wait_phase ready
kill -USR1 "$HOLDER"; sleep 0.2; kill -USR1 "$HOLDER"; sleep 0.2
finish_mirror
assert_result completed 0
assert_exact
kill "$HOLDER"; wait "$HOLDER" 2>/dev/null
MNT=$T/mnt

# --- during the job, writes and truncates behind the mount are noticed ---
start_mirror
wait_synced
dd if=/dev/urandom of="$SRC/a.img" bs=4096 count=4 seek=100 conv=notrunc status=none ||
    fail "write behind the mount"
truncate -s 6M "$SRC/b.img" || fail "truncate behind the mount"
for i in $(seq 1 50); do
    [ "$(status_get outside_writes)" -ge 2 ] && break
    sleep 0.1
done
[ "$(status_get outside_writes)" -ge 2 ] ||
    fail "outside_writes is $(status_get outside_writes) after two writes behind the mount"
timeout 2 cat "$MNT/.mirror/events" > "$T/events" || true
grep -q "outside-write a.img: written behind the mount by pid" "$T/events" ||
    fail "no outside-write event for a.img: $(grep outside "$T/events")"
wait_synced
assert_files_cmp "$TGT/a.img" "$SRC/a.img" "a.img after a write behind the mount"
# One more right before the unmount: the completion waits for its report.
dd if=/dev/urandom of="$SRC/b.img" bs=4096 count=1 seek=7 conv=notrunc status=none
finish_mirror
assert_result completed 0
assert_exact
assert_clean_stderr
exit 0
