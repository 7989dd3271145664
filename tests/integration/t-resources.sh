#!/bin/bash
# t-resources.sh - many images: the daemon raises its descriptor limit to
# the hard limit (400 images under a soft limit of 1024 once failed with
# "Too many open files"), and holds memory in proportion to the images
# (1000 small images and 2000 files made and removed through the mount
# stay under 64 MiB; each image once held 152 KiB).
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup

# rss_kib: the daemon's peak resident memory (VmHWM), KiB.
rss_kib() {
    awk '/^VmHWM:/ { print $2 }' "/proc/$DAEMON_PID/status"
}

# --- 400 images under a soft limit of 1024 descriptors ---
ulimit -Hn 65536 2>/dev/null || [ "$(ulimit -Hn)" -ge 4096 ] ||
    fail "cannot raise the hard descriptor limit to 65536 (it is $(ulimit -Hn))"
ulimit -Sn 1024 || fail "ulimit -Sn 1024"
python3 - "$SRC" 400 <<'PY' || fail "making images"
import os, sys
for n in range(int(sys.argv[2])):
    d = os.path.join(sys.argv[1], "vm%03d" % (n // 50))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "disk%03d.img" % n), "wb") as f:
        f.write(os.urandom(65536))
PY
start_mirror
wait_phase ready 120
assert_eq "$(status_get images)" 400 "images"
limit=$(awk '/^Max open files/ { print $4 }' "/proc/$DAEMON_PID/limits")
[ "$limit" -ge 4096 ] || fail "the daemon's soft descriptor limit is $limit"
finish_mirror
assert_result completed 0
assert_exact
ulimit -Sn "$(ulimit -Hn)"

# --- memory: 1000 small images, then 2000 files made and removed ---
new_scenario many
python3 - "$SRC" 1000 <<'PY' || fail "making images"
import os, sys
for n in range(int(sys.argv[2])):
    d = os.path.join(sys.argv[1], "vm%03d" % (n // 100))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "disk%04d.img" % n), "wb") as f:
        f.write(os.urandom(4096))
PY
start_mirror
wait_phase ready 120
python3 - "$MNT" <<'PY' || fail "files made and removed through the mount"
import os, sys
d = os.path.join(sys.argv[1], "churn")
os.mkdir(d)
for n in range(2000):
    p = os.path.join(d, "f%04d" % n)
    with open(p, "wb") as f:
        f.write(b"x" * 4096)
    if n % 2:
        os.unlink(p)
PY
wait_synced 120
rss=$(rss_kib)
log "1000 images, 2000 files made (1000 removed): peak RSS ${rss} KiB"
[ "$rss" -lt $(( 64 * 1024 )) ] || fail "peak RSS ${rss} KiB with 1000 small images"
finish_mirror
assert_result completed 0
assert_exact
exit 0
