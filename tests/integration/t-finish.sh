#!/bin/bash
# t-finish: how a mirror ends.
#  (a) unmount during the first pass with the default on_unmount=complete:
#      the daemon finishes the copy, exits 0, records `completed`, target ==
#      source;
#  (b) guest writes acknowledged (fsync) right before the unmount are all on
#      the target;
#  (c) on_unmount=cancel during the first pass: exit 2 within 10 s, result
#      `cancelled`;
#  (d) daemonized mode (no -f) finished with `mirrorctl finish`.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
M=1048576

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# --- (a) unmount during the bulk pass -------------------------------------
new_scenario a
SRC_A=$SRC
mkimg "$SRC/big.img" 512M --seed 31
mkimg "$SRC/small.img" 1M --seed 32
evict_cache "$SRC/big.img" "$SRC/small.img"
start_mirror_quick -o workers=1
ph=$(status_get phase)
[ "$ph" = bulk ] || fail "(a) phase is '$ph' right before the unmount; expected bulk"
copied=$(status_get copied_bytes)
[ "$copied" -lt $(( 513 * M )) ] || fail "(a) copied_bytes $copied: nothing left for the drain"
t0=$(date +%s%N)
finish_mirror_within 60
log "(a) drain after unmount at copied_bytes=$copied took $(ms_since "$t0") ms"
assert_result completed 0
assert_exact
cmp "$SRC/big.img" "$TGT/big.img" || fail "(a) big.img differs"
cmp "$SRC/small.img" "$TGT/small.img" || fail "(a) small.img differs"
assert_clean_stderr

# --- (b) fsync-acknowledged writes right before the unmount ---------------
new_scenario b
mkimg "$SRC/disk.img" 128M --seed 33
cp "$SRC/disk.img" "$T/b/shadow.img" || fail "cp shadow"
start_mirror -o workers=2
wait_phase ready 60
# 200 random blocks of 4K at random (some unaligned) offsets, each pwrite +
# fsync through the mount, then 50 without fsync; the same writes go to a
# shadow copy.  The unmount follows at once.
python3 - "$MNT/disk.img" "$T/b/shadow.img" <<'PY' || fail "(b) guest writes"
import os, random, sys
rnd = random.Random(1234)
size = os.path.getsize(sys.argv[1])
g = os.open(sys.argv[1], os.O_WRONLY)
s = os.open(sys.argv[2], os.O_WRONLY)
for i in range(200):
    off = rnd.randrange(0, size - 4096)
    if i % 2 == 0:
        off &= ~4095
    data = os.urandom(4096)
    assert os.pwrite(g, data, off) == 4096
    os.fsync(g)
    os.pwrite(s, data, off)
os.close(g)
# Then 50 more with plain write() and close() but no fsync: acknowledged too
# (the unmount's sync must still bring them to the source and the target).
g = os.open(sys.argv[1], os.O_WRONLY)
for i in range(50):
    off = rnd.randrange(0, size - 4096)
    data = os.urandom(4096)
    assert os.pwrite(g, data, off) == 4096
    os.pwrite(s, data, off)
os.close(g)
os.close(s)
PY
finish_mirror_within 60
assert_result completed 0
assert_exact
cmp "$T/b/shadow.img" "$SRC/disk.img" || fail "(b) the source lacks acknowledged writes"
cmp "$T/b/shadow.img" "$TGT/disk.img" || fail "(b) the target lacks acknowledged writes"
assert_clean_stderr

# --- (c) on_unmount=cancel during the bulk pass ---------------------------
new_scenario c
SRC=$SRC_A                       # the 512 MiB image of (a), unchanged since
evict_cache "$SRC/big.img"
start_mirror_quick -o workers=1,on_unmount=cancel
ph=$(status_get phase)
[ "$ph" = bulk ] || fail "(c) phase is '$ph' right before the unmount; expected bulk"
t0=$(date +%s%N)
finish_mirror_within 10
el=$(ms_since "$t0")
log "(c) cancel took $el ms"
assert_result cancelled 2
is_mounted "$MNT" && fail "(c) still mounted"
assert_clean_stderr

# --- (d) daemonized, finished with mirrorctl ------------------------------
new_scenario d
mkimg "$SRC/vm.img" 64M --seed 34
mkimg "$SRC/sub/b.img" 3M --seed 35
"$MIRRORFS" -o "target=$TGT,state_dir=$STATE" "$SRC" "$MNT" >"$T/daemon.out" 2>"$T/daemon.err"
rc=$?
assert_eq "$rc" 0 "(d) mirrorfs without -f exit code"
is_mounted "$MNT" || fail "(d) mirrorfs returned but $MNT is not mounted"
dpid=$(status_get pid)
[[ "$dpid" =~ ^[0-9]+$ ]] || fail "(d) pid in status is '$dpid'"
EXTRA_PIDS+=("$dpid")
kill -0 "$dpid" 2>/dev/null || fail "(d) the daemon pid $dpid from status is not running"
grep -q mirrorfs "/proc/$dpid/cmdline" 2>/dev/null || fail "(d) pid $dpid is not mirrorfs"
head -c $(( 5 * M )) /dev/urandom | dd of="$MNT/vm.img" bs=1M seek=10 conv=notrunc status=none ||
    fail "(d) guest write"
timeout 60 "$MIRRORCTL" finish "$MNT" >"$T/ctl.out" 2>"$T/ctl.err"
rc=$?
[ "$rc" = 0 ] || fail "(d) mirrorctl finish exited with $rc: $(cat "$T/ctl.out" "$T/ctl.err")"
grep -qx 'phase: completed' "$T/ctl.out" || fail "(d) mirrorctl finish printed: $(head -c 500 "$T/ctl.out")"
is_mounted "$MNT" && fail "(d) still mounted after mirrorctl finish"
for _ in $(seq 1 20); do
    [ -e "/proc/$dpid" ] || break
    [ "$(awk '{print $3}' "/proc/$dpid/stat" 2>/dev/null)" = Z ] && break
    sleep 0.1
done
[ -e "/proc/$dpid" ] && [ "$(awk '{print $3}' "/proc/$dpid/stat" 2>/dev/null)" != Z ] &&
    fail "(d) daemon pid $dpid still running after mirrorctl finish returned"
DAEMON_RC=$rc               # mirrorctl finish passes on the daemon's code
assert_result completed 0
assert_exact
assert_clean_stderr
exit 0
