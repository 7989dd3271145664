#!/bin/bash
# t-namespace.sh - create, unlink, rename, truncate, mkdir and rmdir through
# the mount are applied to the target: namespace operations at once, data
# by the time the job is ready again.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup

mkdir -p "$SRC/vmA/inner"
random_file "$SRC/old.img" 1
random_file "$SRC/a.img" 2
random_file "$SRC/vmA/disk.img" 2
random_file "$SRC/vmA/inner/x.img" 1
random_file "$SRC/p.img" 1
random_file "$SRC/q.img" 2

start_mirror
wait_phase ready
for f in old.img a.img vmA/disk.img vmA/inner/x.img p.img q.img; do
    assert_files_cmp "$TGT/$f" "$SRC/$f" "$f on the target in ready"
done

# --- a new image created through the mount is mirrored from its first byte ---
random_file "$T/new.data" 3
dd if="$T/new.data" of="$MNT/new.img" bs=1M status=none || fail "creating new.img through the mount failed"
assert_files_cmp "$SRC/new.img" "$T/new.data" "new.img in the source"
[ -f "$TGT/new.img" ] || fail "new.img was not created on the target"
wait_synced
assert_eq "$(fsize_of "$TGT/new.img")" 3145728 "size of new.img on the target in ready"
assert_files_cmp "$TGT/new.img" "$T/new.data" "new.img on the target in ready"

# --- unlink: gone from the target at once ---
rm "$MNT/old.img" || fail "unlink through the mount failed"
[ ! -e "$TGT/old.img" ] || fail "old.img still on the target right after unlink"
[ ! -e "$SRC/old.img" ] || fail "old.img still in the source after unlink"

# --- rename of a file: new name on the target at once, old name gone ---
mv "$MNT/a.img" "$MNT/b.img" || fail "rename of a file through the mount failed"
[ -f "$TGT/b.img" ] || fail "b.img is not on the target right after rename"
[ ! -e "$TGT/a.img" ] || fail "a.img still on the target right after rename"

# --- rename over an existing image: the target's copy is replaced ---
cp "$SRC/p.img" "$T/p.data"
mv "$MNT/p.img" "$MNT/q.img" || fail "rename over an existing file failed"
[ ! -e "$TGT/p.img" ] || fail "p.img still on the target after rename over q.img"
[ -f "$TGT/q.img" ] || fail "q.img missing on the target after rename over it"
assert_eq "$(fsize_of "$TGT/q.img")" 1048576 "size of q.img on the target right after rename over it"

# --- rename of a directory holding images ---
mv "$MNT/vmA" "$MNT/vmB" || fail "rename of a directory through the mount failed"
[ -d "$TGT/vmB" ] || fail "vmB is not on the target right after rename"
[ -f "$TGT/vmB/disk.img" ] || fail "vmB/disk.img is not on the target right after rename"
[ -f "$TGT/vmB/inner/x.img" ] || fail "vmB/inner/x.img is not on the target right after rename"
[ ! -e "$TGT/vmA" ] || fail "vmA still on the target right after rename"
# the renamed images keep being mirrored under their new names
head -c 65536 /dev/urandom > "$T/patch"
dd if="$T/patch" of="$MNT/vmB/disk.img" bs=65536 seek=5 conv=notrunc status=none ||
    fail "write to vmB/disk.img failed"
dd if="$T/patch" of="$MNT/vmB/inner/x.img" bs=65536 seek=3 conv=notrunc status=none ||
    fail "write to vmB/inner/x.img failed"
wait_synced
grep -q '^image: vmB/disk.img ' "$MNT/.mirror/status" ||
    fail "status has no image line for vmB/disk.img: $(grep '^image:' "$MNT/.mirror/status" | tr '\n' ' ')"
grep -q '^image: vmA/' "$MNT/.mirror/status" && fail "status still lists vmA/ images"
grep -q '^image: a.img ' "$MNT/.mirror/status" && fail "status still lists a.img after rename"
grep -q '^image: old.img ' "$MNT/.mirror/status" && fail "status still lists old.img after unlink"
assert_files_cmp "$TGT/vmB/disk.img" "$SRC/vmB/disk.img" "vmB/disk.img on the target after a write"
assert_files_cmp "$TGT/vmB/inner/x.img" "$SRC/vmB/inner/x.img" "vmB/inner/x.img on the target after a write"
assert_files_cmp "$TGT/q.img" "$T/p.data" "q.img on the target after rename over it"

# --- rename while a guest holds the image open; it keeps writing by fd ---
python3 - "$MNT/q.img" "$MNT/r.img" <<'PYEOF' || fail "write after rename of an open image failed"
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
os.pwrite(fd, os.urandom(4096), 0)
os.rename(sys.argv[1], sys.argv[2])
os.pwrite(fd, os.urandom(65536), 4096 * 3)
os.pwrite(fd, os.urandom(4096), 1048576 - 4096)
os.fsync(fd)
os.close(fd)
PYEOF
[ -f "$TGT/r.img" ] || fail "r.img is not on the target right after renaming an open image"
[ ! -e "$TGT/q.img" ] || fail "q.img still on the target after renaming it"
wait_synced
assert_files_cmp "$TGT/r.img" "$SRC/r.img" "r.img (written by fd after its rename) on the target"

# --- unlink while a guest holds the image open: the target copy stays gone ---
random_file "$MNT/gone.img" 1
wait_synced
[ -f "$TGT/gone.img" ] || fail "gone.img is not on the target"
python3 - "$MNT/gone.img" <<'PYEOF' || fail "write after unlink of an open image failed"
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
os.unlink(sys.argv[1])
if os.path.exists(sys.argv[1]):
    sys.exit("still visible after unlink")
for i in range(16):
    os.pwrite(fd, os.urandom(65536), i * 65536)
os.fsync(fd)
os.close(fd)
PYEOF
[ ! -e "$TGT/gone.img" ] || fail "gone.img still on the target right after unlink"
wait_synced
[ ! -e "$TGT/gone.img" ] || fail "gone.img came back on the target after writes to the unlinked file"
grep -q '^image: gone.img ' "$MNT/.mirror/status" && fail "status still lists the unlinked gone.img"

# --- O_TRUNC rewrite with less data, then appends ---
head -c 100000 /dev/urandom > "$T/small"
cat "$T/small" > "$MNT/new.img" || fail "rewriting new.img (O_TRUNC) failed"
wait_synced
assert_eq "$(fsize_of "$TGT/new.img")" 100000 "target size of new.img after an O_TRUNC rewrite"
assert_files_cmp "$TGT/new.img" "$T/small" "new.img on the target after an O_TRUNC rewrite"
cat "$T/small" >> "$MNT/new.img" || fail "append to new.img failed"
printf 'tail\n' >> "$MNT/new.img" || fail "second append to new.img failed"
assert_eq "$(fsize_of "$SRC/new.img")" 200005 "source size of new.img after appends"
wait_synced
assert_eq "$(fsize_of "$TGT/new.img")" 200005 "target size of new.img after appends"
assert_files_cmp "$TGT/new.img" "$SRC/new.img" "new.img on the target after appends"

# --- truncate shrink and grow ---
truncate -s 512K "$MNT/b.img" || fail "truncate (shrink) through the mount failed"
wait_synced
assert_eq "$(fsize_of "$SRC/b.img")" 524288 "source size after shrink"
assert_eq "$(fsize_of "$TGT/b.img")" 524288 "target size after shrink"
assert_files_cmp "$TGT/b.img" "$SRC/b.img" "b.img after shrink"
assert_eq "$(status_image_field b.img size)" 524288 "status size of b.img after shrink"
truncate -s 5M "$MNT/b.img" || fail "truncate (grow) through the mount failed"
wait_synced
assert_eq "$(fsize_of "$SRC/b.img")" 5242880 "source size after grow"
assert_eq "$(fsize_of "$TGT/b.img")" 5242880 "target size after grow"
assert_files_cmp "$TGT/b.img" "$SRC/b.img" "b.img after grow"
assert_eq "$(status_image_field b.img size)" 5242880 "status size of b.img after grow"
# data written into the grown tail is mirrored too
dd if="$T/patch" of="$MNT/b.img" bs=65536 seek=70 conv=notrunc status=none || fail "write into the grown tail failed"
wait_synced
assert_files_cmp "$TGT/b.img" "$SRC/b.img" "b.img after a write into the grown tail"

# --- mkdir / rmdir at once ---
mkdir "$MNT/newdir" || fail "mkdir through the mount failed"
[ -d "$TGT/newdir" ] || fail "newdir not on the target right after mkdir"
mkdir "$MNT/newdir/deeper" || fail "nested mkdir through the mount failed"
[ -d "$TGT/newdir/deeper" ] || fail "newdir/deeper not on the target right after mkdir"
rmdir "$MNT/newdir/deeper" || fail "rmdir through the mount failed"
[ ! -e "$TGT/newdir/deeper" ] || fail "newdir/deeper still on the target right after rmdir"
rmdir "$MNT/newdir" || fail "rmdir through the mount failed"
[ ! -e "$TGT/newdir" ] || fail "newdir still on the target right after rmdir"
mkdir "$MNT/keepdir" || fail "mkdir keepdir failed"

# --- finish ---
finish_mirror
assert_eq "$DAEMON_RC" 0 "daemon exit code"
assert_exact
[ -d "$TGT/keepdir" ] || fail "empty directory keepdir not on the target"
[ ! -e "$TGT/.mirror" ] || fail ".mirror was copied to the target"
assert_clean_stderr
exit 0
