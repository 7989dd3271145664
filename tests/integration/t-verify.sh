#!/bin/bash
# t-verify.sh - online verify: bytes of the target are changed behind the
# daemon's back; `mirrorctl verify` compares the whole target with the
# source while the job runs, counts what differs in status, copies it
# again, and the job finishes with source == target.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup

random_file "$SRC/a.img" 48
mkdir -p "$SRC/d"
random_file "$SRC/d/b.img" 16
start_mirror -o workers=2
wait_synced 60
assert_eq "$(status_get verify_checked_bytes)" 0 "checked before any verify"

# Behind the daemon's back: three places in two images.
printf 'XXXXXXXX' | dd of="$TGT/a.img" bs=1 seek=123456 conv=notrunc status=none
printf 'YYYY' | dd of="$TGT/a.img" bs=1 seek=$(( 40 << 20 )) conv=notrunc status=none
printf 'Z' | dd of="$TGT/d/b.img" bs=1 seek=99 conv=notrunc status=none
cmp -s "$SRC/a.img" "$TGT/a.img" && fail "the corruption did not take"

"$MIRRORCTL" verify "$MNT" || fail "mirrorctl verify"
for i in $(seq 1 300); do
    [ "$(status_get verifying)" = no ] && [ "$(status_get verify_checked_bytes)" -gt 0 ] && break
    sleep 0.1
done
assert_eq "$(status_get verifying)" no "verify still running"
checked=$(status_get verify_checked_bytes)
differ=$(status_get verify_differing_bytes)
assert_eq "$checked" $(( 64 << 20 )) "bytes checked"
# Three granules differ: 4K ones, what granularity=auto gives these images.
assert_eq "$differ" $(( 3 * 4096 )) "bytes found differing"
timeout 2 cat "$MNT/.mirror/events" > "$T/events" || true
grep -q " verify-done a.img" "$T/events" || fail "no verify-done event"
wait_synced 60
cmp "$SRC/a.img" "$TGT/a.img" || fail "a.img still differs after verify"
cmp "$SRC/d/b.img" "$TGT/d/b.img" || fail "d/b.img still differs after verify"
finish_mirror
assert_eq "$DAEMON_RC" 0 "exit code"
assert_exact
assert_clean_stderr
