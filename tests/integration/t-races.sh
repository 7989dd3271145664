#!/bin/bash
# t-races.sh - orderings that once left a different target behind exit 0:
# a shared mapping written back through an O_APPEND descriptor; truncates
# racing queued asynchronous O_DIRECT writes; and the rate limit, which a
# guest's truncate must never wait for, which the drain ignores unless
# drain_speed says otherwise, and which a signal during the drain cuts
# short (cancelled, exit 2, result written).
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
command -v fio >/dev/null || fail "fio is not installed"

# --- a shared mapping written through an O_APPEND descriptor ---
random_file "$SRC/m.img" 1
start_mirror
wait_phase ready
head -c 4096 /dev/urandom > "$T/page"
python3 - "$MNT/m.img" "$T/page" <<'PY' || fail "mmap write through O_APPEND"
import mmap, os, sys
data = open(sys.argv[2], "rb").read()
fd = os.open(sys.argv[1], os.O_RDWR | os.O_APPEND)
m = mmap.mmap(fd, 1 << 20, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[8192:8192 + 4096] = data
m.flush()
m.close()
os.close(fd)
PY
assert_eq "$(fsize_of "$SRC/m.img")" 1048576 "size of m.img in the source after the mapped write"
cmp -s <(dd if="$SRC/m.img" bs=4096 skip=2 count=1 status=none) "$T/page" ||
    fail "the mapped write did not land at its offset in the source"

# --- truncates racing queued asynchronous direct writes ---
# Writes queued in the daemon while the kernel lets a truncate through: a
# write that landed between the source's truncate and the image's once
# lost its dirty bits (source 111 MB, target 51 MB).  Many FUSE threads,
# many rounds: each round ends with no truncate after the last writes.
finish_mirror
assert_result completed 0
new_scenario race
random_file "$SRC/m.img" 1
start_mirror -o threads=8
wait_phase ready
for round in $(seq 1 20); do
    truncate -s 16M "$MNT/race.img" || fail "truncate race.img"
    fio --name=race --filename="$MNT/race.img" --ioengine=libaio --direct=1 --iodepth=64 \
        --rw=randwrite --bs=64k --offset=16M --size=112M --time_based --runtime=300ms \
        --output="$T/fio.out" >/dev/null 2>&1 &
    fio_pid=$!
    EXTRA_PIDS+=("$fio_pid")
    sleep 0.25
    python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); os.ftruncate(fd, 16 << 20)' \
        "$MNT/race.img" || fail "ftruncate"
    wait "$fio_pid"
    wait_synced
    assert_eq "$(fsize_of "$TGT/race.img")" "$(fsize_of "$SRC/race.img")" "round $round: size of race.img on the target"
    assert_files_cmp "$TGT/race.img" "$SRC/race.img" "round $round: race.img after a truncate raced direct writes"
done
finish_mirror
assert_result completed 0
assert_exact

# --- a truncate does not wait for the rate limit ---
new_scenario limit
random_file "$SRC/big.img" 32
start_mirror -o speed=100K
sleep 1
assert_eq "$(status_get phase)" bulk "phase at 100K/s"
t0=$(date +%s%N)
truncate -s 30M "$MNT/big.img" || fail "truncate during a throttled first pass"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
log "truncate during a throttled copy took ${ms} ms"
[ "$ms" -lt 3000 ] || fail "a truncate waited ${ms} ms behind the rate limit"
# ... and the drain does not wait for it either (32 MiB at 100K/s: 5 min).
t0=$(date +%s)
finish_mirror_within 60
assert_result completed 0
log "drain at speed=100K took $(( $(date +%s) - t0 )) s"
assert_exact

# --- drain_speed limits the drain, and a signal then cancels it ---
new_scenario signal
random_file "$SRC/s.img" 32
start_mirror -o speed=100K,drain_speed=100K
sleep 0.5
unmount_mirror
sleep 1
kill -0 "$DAEMON_PID" 2>/dev/null || fail "the daemon did not keep draining at drain_speed=100K"
kill -TERM "$DAEMON_PID"
wait_daemon_exit 20
assert_result cancelled 2

exit 0
