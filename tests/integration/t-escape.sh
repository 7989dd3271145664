#!/bin/bash
# t-escape.sh - whatever users of an allow_other mount do, the daemon (root)
# never writes outside TARGET: a symlink where the target needs a
# directory is replaced, never followed, whether it came through the mount
# (a FIFO renamed over a symlink was once not mirrored, so the target kept
# the symlink) or was planted in the target itself.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
open_scratch

OUT=$T/outside
mkdir -m 755 "$OUT"
mkdir -m 1777 "$SRC/pub"
random_file "$SRC/disk.img" 1

start_mirror -o allow_other
wait_phase ready

# The reported sequence, as nobody.
as_nobody sh -c "cd '$MNT/pub' && ln -s '$OUT' L && mkfifo F && mv -T F L &&
                 rm L && mkdir -m 777 L && echo x > L/victim" ||
    fail "the sequence failed as nobody"
[ -z "$(ls -A "$OUT")" ] || fail "the daemon wrote outside the target: $(ls -A "$OUT")"
[ -d "$TGT/pub/L" ] && [ ! -L "$TGT/pub/L" ] || fail "pub/L on the target is not a directory"
assert_eq "$(cat "$TGT/pub/L/victim")" x "pub/L/victim on the target"

# A file and a FIFO renamed over symlinks, then directories there.
as_nobody sh -c "cd '$MNT/pub' && for k in file fifo; do ln -s '$OUT' s\$k; done &&
                 echo data > f && mv -T f sfile && mkfifo p && mv -T p sfifo &&
                 rm sfile sfifo && mkdir sfile sfifo && echo y > sfile/v && echo y > sfifo/v" ||
    fail "renames over symlinks failed as nobody"
[ -z "$(ls -A "$OUT")" ] || fail "the daemon wrote outside the target: $(ls -A "$OUT")"

# A symlink planted in the target itself, where the mount then makes a
# directory and writes into it: replaced, not followed.
mkdir "$MNT/pub/later" || fail "mkdir pub/later"
rmdir "$MNT/pub/later" || fail "rmdir pub/later"
ln -s "$OUT" "$TGT/pub/later"
ln -s "$OUT" "$TGT/pub/L/deeper"
as_nobody sh -c "cd '$MNT/pub' && mkdir later && echo z > later/w && mkdir L/deeper && echo z > L/deeper/w" ||
    fail "writes below planted symlinks failed"
[ -z "$(ls -A "$OUT")" ] || fail "the daemon followed a symlink planted in the target: $(ls -A "$OUT")"

finish_mirror
assert_result completed 0
[ -z "$(ls -A "$OUT")" ] || fail "the daemon wrote outside the target: $(ls -A "$OUT")"
assert_exact
assert_clean_stderr
exit 0
