#!/bin/bash
# t-crash.sh - surviving kill -9.  The crash-safe state in state_dir covers
# every range whose target copy may differ, so a restart with the same
# source, target and state_dir resumes instead of copying everything again,
# and still ends with source == target:
#   1. killed during the first pass: the restart copies well under the total;
#   2. killed while a guest writes (fio with verify), at several moments;
#   3. restarted after a clean finish: nothing to copy;
#   4. state lost: with -o overwrite the target is compared, not recopied;
#   5. a damaged state: compared, not resumed from.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup

crash_daemon() {
    kill -9 "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null
    DAEMON_PID=""
    fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT"
}

random_file "$SRC/a.img" 96
random_file "$SRC/b.img" 32
total=$(( 128 << 20 ))

# --- 1. kill -9 during the first pass ---
start_mirror -o speed=16M,workers=2
for i in $(seq 1 200); do
    [ "$(status_get copied_bytes)" -ge $(( total / 2 )) ] && break
    sleep 0.1
done
assert_eq "$(status_get phase)" bulk "phase before the kill"
crash_daemon
start_mirror -o workers=2
assert_eq "$(status_get resumed)" state "resumed after a kill during the first pass"
saved=$(status_get resume_saved_bytes)
[ "$saved" -ge $(( total / 4 )) ] || fail "the restart saves only $saved of $total bytes"
wait_phase ready 60
moved=$(status_get transferred_bytes)
log "first pass killed at half: the restart copied $moved of $total bytes"
[ "$moved" -le $(( total * 3 / 4 )) ] || fail "the restart copied $moved of $total bytes: not resumed"
finish_mirror
assert_eq "$DAEMON_RC" 0 "exit code after resuming"
assert_exact

# --- 2. kill -9 while a guest writes, at several moments; once with
# granules larger than the state's 4 MiB extents ---
for run in 0.3 1.2 2.5 1.2:granularity=8M; do
    delay=${run%%:*}
    opts=workers=2
    [ "$run" != "$delay" ] && opts=$opts,${run#*:}
    start_mirror -o "$opts"
    wait_phase ready 60
    fio --name=guest --filename="$MNT/a.img" --rw=randwrite --bs=4k --size=96M \
        --direct=1 --ioengine=libaio --iodepth=16 --verify=crc32c --do_verify=0 \
        --verify_state_save=0 --time_based --runtime=30 --output="$T/fio.out" 2>"$T/fio.err" &
    fio_pid=$!
    EXTRA_PIDS+=("$fio_pid")
    sleep "$delay"
    # The guest's writes so far are on the source (the mount answered them).
    crash_daemon
    wait "$fio_pid" 2>/dev/null   # fails with the mount gone: expected
    start_mirror -o "$opts"
    assert_eq "$(status_get resumed)" state "resumed after a kill at ${delay}s ($opts)"
    wait_phase ready 60
    log "killed ${delay}s into the guest's writes ($opts): the restart copied $(status_get transferred_bytes) bytes"
    finish_mirror
    assert_eq "$DAEMON_RC" 0 "exit code after a kill at ${delay}s ($opts)"
    assert_exact
done

# --- 3. a restart after a clean finish copies nothing ---
start_mirror -o workers=2
wait_phase ready 30
assert_eq "$(status_get resumed)" state "resumed after a clean finish"
assert_eq "$(status_get resume_saved_bytes)" "$total" "saved after a clean finish"
assert_eq "$(status_get transferred_bytes)" 0 "copied after a clean finish"
finish_mirror
assert_eq "$DAEMON_RC" 0 "exit code"
assert_exact

# --- 4. state lost: compare instead of copying again ---
rm -rf "$STATE"
mkdir -p "$STATE"
printf 'corrupt' | dd of="$TGT/a.img" bs=1 seek=5000000 conv=notrunc status=none
"$MIRRORFS" -f -o "target=$TGT,state_dir=$STATE" "$SRC" "$MNT" 2>"$T/refused.err" &&
    fail "a non-empty target without state and without -o overwrite was accepted"
start_mirror -o overwrite,workers=2
assert_eq "$(status_get resumed)" verify "how a run without state starts"
wait_phase ready 60
differ=$(status_get verify_differing_bytes)
checked=$(status_get verify_checked_bytes)
[ "$differ" -gt 0 ] || fail "the verify pass found no difference"
[ "$differ" -le $(( 1 << 20 )) ] || fail "the verify pass found $differ bytes differing (7 were changed)"
[ "$checked" -ge $(( total * 9 / 10 )) ] || fail "the verify pass checked only $checked bytes"
moved=$(status_get transferred_bytes)
[ "$moved" -le $(( 1 << 20 )) ] || fail "copied $moved bytes after a verify that found $differ"
finish_mirror
assert_eq "$DAEMON_RC" 0 "exit code after the verify pass"
assert_exact

# --- 5. a damaged state is not resumed from: compare ---
# The state says a.img is clean; its target copy is not, and the map's
# header has a byte changed.  Trusting the map would leave the difference.
amap=$(grep -l 'a\.img' "$STATE"/images/*.name)
amap=${amap%.name}.map
[ -f "$amap" ] || fail "no map for a.img in $STATE/images"
printf 'corrupt' | dd of="$TGT/a.img" bs=1 seek=9000000 conv=notrunc status=none
printf '\377' | dd of="$amap" bs=1 seek=100 conv=notrunc status=none
start_mirror -o workers=2
wait_phase ready 60
differ=$(status_get verify_differing_bytes)
checked=$(status_get verify_checked_bytes)
[ "$differ" -gt 0 ] || fail "a damaged state was resumed from: the verify pass found nothing"
[ "$checked" -ge $(( 96 << 20 )) ] || fail "the verify pass checked only $checked bytes"
finish_mirror
assert_eq "$DAEMON_RC" 0 "exit code after a damaged state"
assert_exact
assert_clean_stderr
