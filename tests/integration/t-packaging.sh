#!/bin/bash
# t-packaging.sh - what installing gives: make install puts mirrorfs,
# mirrorctl, both man pages and the systemd unit in place; the unit's own
# ExecStart and ExecStop lines run a job and finish it (stop waits for the
# result); an fstab line mounts through mount(8) and mount.fuse3, the mount
# shows as fuse.mirrorfs with the FUSE options given, and umount finishes.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
: "${TOP_BUILDDIR:=$(dirname "$MIRRORFS")/..}"

# --- make install ---
make -s -C "$TOP_BUILDDIR" install DESTDIR="$T/root" >"$T/install.log" 2>&1 ||
    fail "make install failed: $(tail -n 5 "$T/install.log")"
for f in mirrorfs mirrorctl; do
    p=$(find "$T/root" -path "*/bin/$f" -type f -perm -u+x | head -n 1)
    [ -n "$p" ] || fail "make install did not install $f"
done
for f in mirrorfs.1 mirrorctl.1; do
    find "$T/root" -path "*/man1/$f" -type f | grep -q . || fail "make install did not install $f"
done
unit=$(find "$T/root" -name 'mirrorfs@.service' -type f | head -n 1)
[ -n "$unit" ] || fail "make install did not install the systemd unit"
grep -q '^ExecStart=/.*/bin/mirrorfs -f ' "$unit" || fail "unit ExecStart: $(grep ExecStart "$unit")"
grep -q '@bindir@' "$unit" && fail "unit still has @bindir@"

# --- the unit's ExecStart / ExecStop, as systemd runs them ---
random_file "$SRC/a.img" 4
SOURCE=$SRC MOUNTPOINT=$MNT OPTIONS="target=$TGT,state_dir=$STATE"
expand() { # the unit's ${VAR} references, from the EnvironmentFile values
    sed -n "s/^$1=//p" "$unit" | sed -e "s|\${OPTIONS}|$OPTIONS|; s|\${SOURCE}|$SOURCE|; s|\${MOUNTPOINT}|$MOUNTPOINT|" \
        -e "s|^/[^ ]*/bin/mirrorfs |$MIRRORFS |; s|^/[^ ]*/bin/mirrorctl |$MIRRORCTL |"
}
start_cmd=$(expand ExecStart) stop_cmd=$(expand ExecStop)
$start_cmd >"$T/daemon.out" 2>"$T/daemon.err" &
DAEMON_PID=$!
wait_mounted
dd if=/dev/urandom of="$MNT/a.img" bs=64K count=3 seek=5 conv=notrunc status=none
$stop_cmd >"$T/stop.out" || fail "ExecStop failed: $(cat "$T/stop.out")"
kill -0 "$DAEMON_PID" 2>/dev/null && fail "ExecStop returned while the daemon still runs"
wait "$DAEMON_PID"
assert_eq "$?" 0 "daemon exit code under the unit"
DAEMON_PID=""
grep -q '^phase: completed' "$T/stop.out" || fail "ExecStop did not print the result"
assert_exact

# --- fstab: mount(8) -> mount.fuse3 -> mirrorfs ---
rm -rf "$TGT" "$STATE"; mkdir -p "$TGT" "$STATE"
# mount(8) runs helpers with a fixed PATH, so the fstab names the program by
# its path (TYPE#SOURCE); installed, `SOURCE MNT fuse.mirrorfs OPTIONS` does.
printf '%s#%s %s fuse target=%s,state_dir=%s,allow_other,workers=2 0 0\n' \
    "$MIRRORFS" "$SRC" "$MNT" "$TGT" "$STATE" > "$T/fstab"
mount -T "$T/fstab" "$MNT" || fail "mount from fstab failed"
line=$(grep " $MNT " /proc/mounts)
echo "$line" | grep -q "^$SRC $MNT fuse.mirrorfs " || fail "mount shows: $line"
echo "$line" | grep -q "allow_other" || fail "allow_other did not reach the mount: $line"
pid=$(status_get pid)
EXTRA_PIDS+=("$pid")
dd if=/dev/urandom of="$MNT/a.img" bs=64K count=3 seek=9 conv=notrunc status=none
umount "$MNT" || fail "umount failed"
for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$pid" 2>/dev/null && fail "daemon still running 10 s after umount"
grep -q '^phase: completed' "$STATE/result" || fail "result after umount: $(head -n 1 "$STATE/result")"
assert_exact
