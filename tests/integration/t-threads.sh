#!/bin/bash
# t-threads.sh - with a single FUSE worker thread (-o threads=1) the mount
# keeps serving guest I/O while four readers wait in .mirror/events, one
# reader waits in .mirror/trace, a flock waits for another process's lock
# and fsyncs run: nothing that waits holds the worker.  The waiting readers
# get the next event, a killed reader is let go at once, the waiting flock
# gets the lock once it is free, and the mirror ends equal.  Then, still
# with one thread: a write-blocking write that waits seconds for a slow NBD
# server does not stop reads of another image.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
command -v nbdkit >/dev/null || fail "nbdkit is not installed (contrib/deps.sh installs it)"

random_file "$SRC/a.img" 16
random_file "$SRC/b.img" 4
start_mirror -o threads=1
"$MIRRORCTL" wait --ready --timeout 60 "$MNT" || fail "not ready"

for k in 1 2 3 4; do
    cat "$MNT/.mirror/events" > "$T/events.$k" 2>/dev/null &
    EXTRA_PIDS+=($!)
done
cat "$MNT/.mirror/trace" > "$T/trace" 2>/dev/null &
EXTRA_PIDS+=($!)
tracer=$!

# One process holds b.img's lock; another waits for it.
python3 - "$MNT/b.img" "$T/held" <<'EOF' &
import fcntl, sys, time
f = open(sys.argv[1], "rb")
fcntl.flock(f, fcntl.LOCK_EX)
open(sys.argv[2], "w").close()
time.sleep(120)
EOF
holder=$!
EXTRA_PIDS+=($holder)
for _ in $(seq 1 100); do [ -e "$T/held" ] && break; sleep 0.1; done
[ -e "$T/held" ] || fail "the first flock was not granted"
python3 - "$MNT/b.img" "$T/got" <<'EOF' &
import fcntl, sys
f = open(sys.argv[1], "rb")
fcntl.flock(f, fcntl.LOCK_EX)
open(sys.argv[2], "w").close()
EOF
waiter=$!
EXTRA_PIDS+=($waiter)
sleep 0.5
[ -e "$T/got" ] && fail "the second flock was granted while the first was held"

# Guest I/O meanwhile, through the only worker: writes, fsync, reads.
head -c $((1 << 20)) /dev/urandom > "$T/patch"
timeout 20 dd if="$T/patch" of="$MNT/a.img" bs=64K seek=40 conv=notrunc,fsync status=none ||
    fail "a guest write with fsync did not complete while readers and a flock wait"
timeout 20 python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); os.fdatasync(fd)' \
    "$MNT/a.img" || fail "fdatasync did not complete"
timeout 20 cmp <(dd if="$MNT/a.img" bs=64K skip=40 count=16 status=none) "$T/patch" ||
    fail "the guest write does not read back"
timeout 10 cat "$MNT/.mirror/status" > /dev/null || fail "status could not be read"

# The waiting readers get the next event; the trace reader sees the write.
"$MIRRORCTL" pause "$MNT" || fail "pause"
for k in 1 2 3 4; do
    for _ in $(seq 1 50); do grep -q " phase paused" "$T/events.$k" && break; sleep 0.1; done
    grep -q " phase paused" "$T/events.$k" || fail "reader $k did not get the pause event"
done
grep -Eq '^[0-9.]+ 2621440 65536 a\.img$' "$T/trace" || fail "trace reader: $(cat "$T/trace")"
"$MIRRORCTL" resume "$MNT" || fail "resume"

# A reader killed while it waits is answered at once (the kernel waits for
# the answer before the process can go).
kill "$tracer"
for _ in $(seq 1 50); do kill -0 "$tracer" 2>/dev/null || break; sleep 0.1; done
kill -0 "$tracer" 2>/dev/null && fail "a killed reader of .mirror/trace is still waiting"

# The waiting flock is granted once the holder goes.
kill "$holder"
for _ in $(seq 1 100); do [ -e "$T/got" ] && break; sleep 0.1; done
[ -e "$T/got" ] || fail "the waiting flock was not granted after the holder exited"
wait "$waiter" || fail "the waiting flock failed"

for k in 1 2 3 4; do
    kill "${EXTRA_PIDS[$((k - 1))]}" 2>/dev/null
done
sleep 0.5
finish_mirror
assert_eq "$DAEMON_RC" 0 "exit code"
assert_exact

# --- a write-blocking write waits for a slow target in the pool ---
new_scenario slow
EXP=$T/slow/exports
SOCK=$T/slow/nbd.sock
mkdir -p "$EXP"
random_file "$SRC/a.img" 1
random_file "$SRC/b.img" 1
truncate -s 1M "$EXP/a.img" "$EXP/b.img"
nbdkit -f -U "$SOCK" --filter=delay file dir="$EXP" wdelay=5 >"$T/nbdkit.log" 2>&1 &
nbdkit=$!
EXTRA_PIDS+=($nbdkit)
wait_socket "$SOCK" "$nbdkit" "$T/nbdkit.log"
TGT="nbd+unix:///{name}?socket=$SOCK"
start_mirror -o threads=1
"$MIRRORCTL" wait --ready --timeout 60 "$MNT" || fail "not ready behind the slow server"
"$MIRRORCTL" copy-mode "$MNT" write-blocking || fail "copy-mode write-blocking"
head -c 4096 /dev/urandom > "$T/w"
dd if="$T/w" of="$MNT/a.img" bs=4096 seek=7 conv=notrunc status=none &
writer=$!
EXTRA_PIDS+=($writer)
sleep 0.5
kill -0 "$writer" 2>/dev/null || fail "the write-blocking write did not wait for the server"
# The server holds that write for 5 s; meanwhile the only FUSE thread serves.
timeout 3 cmp "$SRC/b.img" "$MNT/b.img" ||
    fail "a read of another image waited for the write-blocking write"
wait "$writer" || fail "the write-blocking write failed"
cmp <(dd if="$EXP/a.img" bs=4096 skip=7 count=1 status=none) "$T/w" ||
    fail "the acknowledged write-blocking write is not on the target"
finish_mirror_within 60
assert_result completed 0
assert_trees_equal --data-only "$SRC" "$EXP"
assert_files_cmp "$SRC/a.img" "$EXP/a.img" "a.img behind the slow server"
