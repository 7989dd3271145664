#!/bin/bash
# t-speed.sh - the copy rate limit: at speed=20M the first pass of 100 MiB
# takes at least 4 s (a lower bound that a noisy machine cannot break), the
# limit is shown in status, and it can be lifted live through ctl.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup

random_file "$SRC/a.img" 60
random_file "$SRC/b.img" 40

t0=$(date +%s%N)
start_mirror -o speed=20M,workers=4
assert_eq "$(status_get speed_bytes_per_s)" 20971520 "speed in status"
wait_phase ready 60
t1=$(date +%s%N)
elapsed_ms=$(( (t1 - t0) / 1000000 ))
log "100 MiB at speed=20M took ${elapsed_ms} ms"
[ "$elapsed_ms" -ge 4000 ] || fail "100 MiB copied in ${elapsed_ms} ms at speed=20M (limit not applied)"
finish_mirror
assert_eq "$DAEMON_RC" 0 "exit code"
assert_exact

# Live change: start slow (1M/s would take 100 s), lift the limit with
# mirrorctl, and the job gets ready long before the slow limit allows.
rm -rf "$TGT" "$STATE"
mkdir -p "$TGT" "$STATE"
start_mirror -o speed=1M
sleep 1
ph=$(status_get phase)
assert_eq "$ph" bulk "phase at 1M/s after 1 s"
"$MIRRORCTL" speed "$MNT" 0 || fail "mirrorctl speed 0 failed"
assert_eq "$(status_get speed_bytes_per_s)" 0 "speed after the change"
wait_phase ready 30
# A malformed rate is refused and changes nothing.
if echo "speed fast" > "$MNT/.mirror/ctl" 2>/dev/null; then
    fail "'speed fast' was accepted"
fi
assert_eq "$(status_get speed_bytes_per_s)" 0 "speed after a refused change"
status_get last_error | grep -q "speed fast" || fail "last_error does not mention the bad speed"
finish_mirror
assert_eq "$DAEMON_RC" 0 "exit code"
assert_exact
assert_clean_stderr
