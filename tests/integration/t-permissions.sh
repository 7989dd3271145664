#!/bin/bash
# t-permissions.sh - with allow_other every user of the machine reaches the
# mount: the kernel checks each one's permissions against the source's
# modes and owners (default_permissions, implied), and the steering files
# are the mount owner's.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
open_scratch

random_file "$SRC/private.img" 1
chmod 600 "$SRC/private.img"
random_file "$SRC/shared.img" 1
chmod 644 "$SRC/shared.img"
mkdir -m 755 "$SRC/rootdir"
cp "$SRC/private.img" "$T/private.orig"

# allow_other alone: default_permissions comes with it.
start_mirror -o allow_other
wait_phase ready
grep " $MNT fuse" /proc/mounts | grep -q default_permissions ||
    fail "allow_other without default_permissions: $(grep " $MNT fuse" /proc/mounts)"

as_nobody cat "$MNT/private.img" >/dev/null 2>&1 && fail "nobody read a root 0600 image"
as_nobody dd if=/dev/zero of="$MNT/private.img" bs=4096 count=1 conv=notrunc status=none 2>/dev/null &&
    fail "nobody wrote a root 0600 image"
as_nobody dd if=/dev/zero of="$MNT/shared.img" bs=4096 count=1 conv=notrunc status=none 2>/dev/null &&
    fail "nobody wrote a root 0644 image"
as_nobody cat "$MNT/shared.img" >/dev/null || fail "nobody cannot read a 0644 image"
as_nobody chown 65534 "$MNT/shared.img" 2>/dev/null && fail "nobody chowned a root file"
as_nobody chmod 666 "$MNT/shared.img" 2>/dev/null && fail "nobody chmodded a root file"
as_nobody touch -d 2001-01-01 "$MNT/shared.img" 2>/dev/null && fail "nobody set the times of a root file"
as_nobody mkdir "$MNT/rootdir/x" 2>/dev/null && fail "nobody made a directory in root's 0755 directory"
as_nobody rm -f "$MNT/shared.img" 2>/dev/null && fail "nobody removed a file from root's directory"
[ -f "$SRC/shared.img" ] || fail "shared.img is gone"
assert_eq "$(stat -c %u:%a "$SRC/shared.img")" 0:644 "owner and mode of shared.img"
assert_files_cmp "$SRC/private.img" "$T/private.orig" "private.img after nobody's attempts"

# The steering files belong to the mount's owner; status is for everyone.
as_nobody sh -c "echo pause > '$MNT/.mirror/ctl'" 2>/dev/null && fail "nobody wrote .mirror/ctl"
as_nobody sh -c "echo cancel > '$MNT/.mirror/ctl'" 2>/dev/null && fail "nobody cancelled the job"
as_nobody timeout 2 cat "$MNT/.mirror/trace" >/dev/null 2>&1 && fail "nobody read .mirror/trace"
as_nobody timeout 2 cat "$MNT/.mirror/events" >/dev/null 2>&1 && fail "nobody read .mirror/events"
as_nobody cat "$MNT/.mirror/status" | grep -q '^phase: ready$' || fail "nobody cannot read .mirror/status"
as_nobody cat "$MNT/.mirror/status.json" | grep -q '"phase"' || fail "nobody cannot read .mirror/status.json"
assert_eq "$(status_get phase)" ready "phase after nobody's attempts"
echo pause > "$MNT/.mirror/ctl" || fail "root cannot write .mirror/ctl"
wait_phase paused 5
echo resume > "$MNT/.mirror/ctl" || fail "root cannot write .mirror/ctl"
wait_phase ready

finish_mirror
assert_result completed 0
assert_exact
assert_clean_stderr
exit 0
