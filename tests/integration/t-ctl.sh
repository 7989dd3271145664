#!/bin/bash
# t-ctl.sh - steering a live job through .mirror/ctl and mirrorctl: pause
# stops the copy (the phase says paused, nothing more is copied) and resume
# continues; cancel ends the job with exit code 2 while the mount keeps
# serving; mirrorctl's errors on a path that is not a mirror, its timeout;
# .mirror/trace shows each guest write.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup

random_file "$SRC/a.img" 64

# --- pause / resume ---
start_mirror -o speed=16M,workers=2
"$MIRRORCTL" pause "$MNT" || fail "mirrorctl pause"
sleep 0.3
assert_eq "$(status_get phase)" paused "phase after pause"
c1=$(status_get transferred_bytes)
sleep 1.5
c2=$(status_get transferred_bytes)
# At most one chunk per worker (4 MiB in a first pass) was already on its
# way; unpaused, 1.5 s at 16M would copy 24 MiB.
[ $((c2 - c1)) -le $((2 * (4 << 20))) ] || fail "paused, yet $((c2 - c1)) bytes were copied"
"$MIRRORCTL" resume "$MNT" || fail "mirrorctl resume"
"$MIRRORCTL" speed "$MNT" 0 || fail "mirrorctl speed"
"$MIRRORCTL" wait --ready "$MNT" --timeout 60 || fail "mirrorctl wait --ready after resume"

# --- trace: one line per guest write, while read ---
timeout 3 cat "$MNT/.mirror/trace" > "$T/trace" &
reader=$!
sleep 0.5
dd if=/dev/urandom of="$MNT/a.img" bs=65536 count=1 seek=7 conv=notrunc status=none
printf 'abc' | dd of="$MNT/a.img" bs=3 seek=1000 oflag=seek_bytes conv=notrunc status=none
wait "$reader"
grep -Eq '^[0-9]+\.[0-9]{3} 458752 65536 a\.img$' "$T/trace" || fail "trace: $(cat "$T/trace")"
grep -Eq '^[0-9]+\.[0-9]{3} 1000 3 a\.img$' "$T/trace" || fail "trace lacks the 3-byte write: $(cat "$T/trace")"
finish_mirror
assert_eq "$DAEMON_RC" 0 "exit code"
assert_exact

# --- cancel: exit 2, the mount serves until unmounted ---
rm -rf "$TGT" "$STATE"; mkdir -p "$TGT" "$STATE"
start_mirror -o speed=4M
echo cancel > "$MNT/.mirror/ctl" || fail "cancel refused"
sleep 0.3
assert_eq "$(status_get phase)" cancelled "phase after cancel"
dd if=/dev/urandom of="$MNT/a.img" bs=4096 count=4 seek=3 conv=notrunc,fsync status=none ||
    fail "the mount stopped serving after cancel"
cmp -s "$SRC/a.img" "$MNT/a.img" || fail "the mount does not show the source after cancel"
finish_mirror
assert_eq "$DAEMON_RC" 2 "exit code after cancel"
grep -q '^phase: cancelled' "$STATE/result" || fail "result is not cancelled"

# --- mirrorctl on what is not a mirror, and its timeout ---
out=$("$MIRRORCTL" status "$T" 2>&1) && fail "mirrorctl status on a plain directory succeeded"
echo "$out" | grep -q "not a mirrorfs mount" || fail "mirrorctl said: $out"
rm -rf "$TGT" "$STATE"; mkdir -p "$TGT" "$STATE"
start_mirror -o speed=1M
rc=0
"$MIRRORCTL" wait --ready "$MNT" --timeout 1 2>/dev/null || rc=$?
assert_eq "$rc" 4 "mirrorctl wait --timeout exit code"
"$MIRRORCTL" speed "$MNT" 0
finish_mirror
assert_eq "$DAEMON_RC" 0 "exit code"
assert_exact
assert_clean_stderr
