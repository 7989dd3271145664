#!/bin/bash
# t-passthrough.sh - every file operation a guest or an admin uses works
# through the mount, lands in the source, and the mirror still ends equal.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup

mkdir -p "$SRC/sub" "$SRC/emptydir"
random_file "$SRC/a.img" 2
head -c 12345 /dev/urandom > "$SRC/sub/b.raw" || fail "cannot write b.raw"
: > "$SRC/empty.img"

start_mirror

# --- visible with the right types and sizes, read back equals the source ---
[ -f "$MNT/a.img" ] || fail "a.img is not a regular file on the mount"
[ -d "$MNT/sub" ] || fail "sub is not a directory on the mount"
[ -f "$MNT/sub/b.raw" ] || fail "sub/b.raw is missing on the mount"
[ -f "$MNT/empty.img" ] || fail "empty.img is missing on the mount"
[ -d "$MNT/emptydir" ] || fail "emptydir is missing on the mount"
assert_eq "$(fsize_of "$MNT/a.img")" 2097152 "size of a.img on the mount"
assert_eq "$(fsize_of "$MNT/sub/b.raw")" 12345 "size of sub/b.raw on the mount"
assert_eq "$(fsize_of "$MNT/empty.img")" 0 "size of empty.img on the mount"
assert_eq "$(cd "$MNT/sub" && ls -A)" "b.raw" "listing of sub on the mount"
assert_files_cmp "$MNT/a.img" "$SRC/a.img" "a.img read through the mount"
assert_files_cmp "$MNT/sub/b.raw" "$SRC/sub/b.raw" "sub/b.raw read through the mount"

# --- write with dd conv=notrunc lands in the source, nothing else changes ---
cp "$SRC/a.img" "$T/a.expected"
head -c 8192 /dev/urandom > "$T/patch1"
dd if="$T/patch1" of="$MNT/a.img" bs=4096 seek=10 conv=notrunc status=none ||
    fail "dd conv=notrunc through the mount failed"
dd if="$T/patch1" of="$T/a.expected" bs=4096 seek=10 conv=notrunc status=none
assert_eq "$(fsize_of "$SRC/a.img")" 2097152 "a.img size after a notrunc write"
assert_files_cmp "$SRC/a.img" "$T/a.expected" "source after a dd write via the mount"
assert_files_cmp "$MNT/a.img" "$T/a.expected" "mount after a dd write via the mount"

# --- fsync: dd conv=fsync and python os.fsync both succeed and land ---
head -c 4096 /dev/urandom > "$T/patch2"
dd if="$T/patch2" of="$MNT/a.img" bs=4096 seek=100 conv=notrunc,fsync status=none ||
    fail "dd conv=fsync through the mount failed"
dd if="$T/patch2" of="$T/a.expected" bs=4096 seek=100 conv=notrunc status=none
python3 - "$MNT/sub/b.raw" <<'PYEOF' || fail "python write+fsync+fdatasync through the mount failed"
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
assert os.pwrite(fd, b"fsync-me" * 16, 1000) == 128
os.fsync(fd)
os.fdatasync(fd)
os.close(fd)
PYEOF
assert_files_cmp "$SRC/a.img" "$T/a.expected" "source after dd conv=fsync"
python3 - "$SRC/sub/b.raw" <<'PYEOF' || fail "the fsync'd python write is not in the source"
import sys
with open(sys.argv[1], "rb") as f:
    f.seek(1000)
    assert f.read(128) == b"fsync-me" * 16
PYEOF

# --- chmod, touch -d, truncate: visible in stat of mount and source ---
chmod 640 "$MNT/a.img" || fail "chmod through the mount failed"
assert_eq "$(stat -c %a "$MNT/a.img")" 640 "mode on the mount"
assert_eq "$(stat -c %a "$SRC/a.img")" 640 "mode on the source"
touch -d '2001-02-03 04:05:06 UTC' "$MNT/sub/b.raw" || fail "touch -d through the mount failed"
assert_eq "$(stat -c %Y "$MNT/sub/b.raw")" 981173106 "mtime on the mount"
assert_eq "$(stat -c %Y "$SRC/sub/b.raw")" 981173106 "mtime on the source"
cp "$SRC/sub/b.raw" "$T/b.before"
truncate -s 3M "$MNT/a.img" || fail "truncate (grow) through the mount failed"
assert_eq "$(fsize_of "$MNT/a.img")" 3145728 "grown size on the mount"
assert_eq "$(fsize_of "$SRC/a.img")" 3145728 "grown size on the source"
truncate -s 3145728 "$T/a.expected"
assert_files_cmp "$MNT/a.img" "$T/a.expected" "a.img after grow (tail must read as zeros)"
truncate -s 5000 "$MNT/sub/b.raw" || fail "truncate (shrink) through the mount failed"
assert_eq "$(fsize_of "$MNT/sub/b.raw")" 5000 "shrunk size on the mount"
assert_eq "$(fsize_of "$SRC/sub/b.raw")" 5000 "shrunk size on the source"
cmp -s -n 5000 "$SRC/sub/b.raw" "$T/b.before" || fail "shrink changed the kept bytes"

# --- create, unlink, rename (file and directory), mkdir, rmdir ---
printf 'hello\n' > "$MNT/new.txt" || fail "create through the mount failed"
assert_eq "$(cat "$SRC/new.txt" 2>/dev/null)" "hello" "created file in the source"
assert_eq "$(cat "$MNT/new.txt")" "hello" "created file read back"
rm "$MNT/new.txt" || fail "unlink through the mount failed"
[ ! -e "$SRC/new.txt" ] || fail "unlinked file still in the source"
[ ! -e "$MNT/new.txt" ] || fail "unlinked file still on the mount"

cp "$SRC/sub/b.raw" "$T/b.expected"
mv "$MNT/sub/b.raw" "$MNT/sub/c.raw" || fail "rename of a file through the mount failed"
[ ! -e "$SRC/sub/b.raw" ] || fail "old name still in the source after rename"
assert_files_cmp "$SRC/sub/c.raw" "$T/b.expected" "renamed file in the source"
mv "$MNT/sub" "$MNT/sub2" || fail "rename of a directory through the mount failed"
if [ -e "$SRC/sub" ] || [ -e "$MNT/sub" ]; then fail "old directory name still there"; fi
assert_files_cmp "$MNT/sub2/c.raw" "$T/b.expected" "file in the renamed directory (mount)"
assert_files_cmp "$SRC/sub2/c.raw" "$T/b.expected" "file in the renamed directory (source)"

mkdir "$MNT/d1" || fail "mkdir through the mount failed"
[ -d "$SRC/d1" ] || fail "mkdir did not reach the source"
mkdir "$MNT/d1/d2" || fail "nested mkdir through the mount failed"
rmdir "$MNT/d1" 2>/dev/null && fail "rmdir of a non-empty directory succeeded"
rmdir "$MNT/d1/d2" "$MNT/d1" || fail "rmdir through the mount failed"
[ ! -e "$SRC/d1" ] || fail "rmdir did not reach the source"

# --- fallocate -l and --punch-hole; SEEK_DATA/SEEK_HOLE see the hole ---
fallocate -l 4M "$MNT/fa.img" || fail "fallocate -l through the mount failed"
assert_eq "$(fsize_of "$MNT/fa.img")" 4194304 "fallocated size on the mount"
assert_eq "$(fsize_of "$SRC/fa.img")" 4194304 "fallocated size on the source"
[ "$(stat -c %b "$SRC/fa.img")" -ge 8192 ] ||
    fail "fallocate did not allocate blocks in the source ($(stat -c %b "$SRC/fa.img") blocks)"

random_file "$T/ph.data" 4
cp "$T/ph.data" "$MNT/ph.img" || fail "cp into the mount failed"
sync "$MNT/ph.img" 2>/dev/null
fallocate --punch-hole -o 1M -l 1M "$MNT/ph.img" || fail "fallocate --punch-hole through the mount failed"
assert_eq "$(fsize_of "$MNT/ph.img")" 4194304 "size after punch-hole (must keep size)"
dd if=/dev/zero of="$T/ph.data" bs=1M seek=1 count=1 conv=notrunc status=none
assert_files_cmp "$MNT/ph.img" "$T/ph.data" "punched file read through the mount"
assert_files_cmp "$SRC/ph.img" "$T/ph.data" "punched file in the source"
for f in "$MNT/ph.img" "$SRC/ph.img"; do
    python3 - "$f" <<'PYEOF' || fail "SEEK_HOLE/SEEK_DATA do not report the punched hole in $f"
import os, sys
M = 1 << 20
fd = os.open(sys.argv[1], os.O_RDONLY)
h = os.lseek(fd, 0, os.SEEK_HOLE)
d = os.lseek(fd, M, os.SEEK_DATA)
os.close(fd)
if h != M or d != 2 * M:
    print("SEEK_HOLE from 0 = %d (want %d), SEEK_DATA from 1M = %d (want %d)" % (h, M, d, 2 * M), file=sys.stderr)
    sys.exit(1)
PYEOF
done

# --- statfs passes through ---
stat -f "$MNT" > /dev/null || fail "stat -f on the mount failed"
assert_eq "$(stat -f -c %b "$MNT")" "$(stat -f -c %b "$SRC")" "total blocks of statfs on the mount vs the source fs"

# --- a shared writable mmap writes through to the source ---
python3 - "$MNT/ph.img" "$T/ph.data" <<'PYEOF' || fail "mmap write through the mount failed"
import mmap, os, sys
data = os.urandom(8192)
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, 4 * 1048576, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    m[3 * 1048576 + 100:3 * 1048576 + 100 + 8192] = data
    m.flush()
    m.close()
    os.close(fd)
PYEOF
assert_files_cmp "$SRC/ph.img" "$T/ph.data" "source after an mmap write through the mount"

# --- symlink + readlink ---
ln -s a.img "$MNT/link" || fail "symlink through the mount failed"
assert_eq "$(readlink "$MNT/link")" "a.img" "readlink on the mount"
assert_eq "$(readlink "$SRC/link" 2>/dev/null)" "a.img" "readlink in the source"
[ -L "$MNT/link" ] || fail "link is not a symlink on the mount"
assert_files_cmp "$MNT/link" "$T/a.expected" "reading through the symlink"
ln -s ../a.img "$MNT/sub2/uplink" || fail "symlink in a subdirectory failed"
assert_eq "$(readlink "$MNT/sub2/uplink")" "../a.img" "readlink in a subdirectory"

# --- .mirror is only at the top, and reserved ---
ls -a "$MNT" | grep -qx '.mirror' || fail ".mirror is not listed in ls -a of the mount"
ls -a "$MNT/sub2" | grep -q 'mirror' && fail ".mirror is listed in a subdirectory"
[ ! -e "$MNT/sub2/.mirror" ] || fail "$MNT/sub2/.mirror exists"
[ ! -e "$SRC/.mirror" ] || fail ".mirror appeared in the source"
printf 'x\n' > "$MNT/.mirror-anything" || fail "creating .mirror-anything failed"
[ -f "$SRC/.mirror-anything" ] || fail ".mirror-anything did not reach the source"
mkdir "$MNT/.mirror" 2>/dev/null && fail "mkdir .mirror at the top succeeded"
mkdir "$MNT/d3" || fail "mkdir d3 failed"
mv -T "$MNT/d3" "$MNT/.mirror" 2>/dev/null && fail "renaming a directory to .mirror at the top succeeded"
ln -sT a.img "$MNT/.mirror" 2>/dev/null && fail "a symlink named .mirror at the top was created"
mv -T "$MNT/.mirror" "$MNT/renamed-mirror" 2>/dev/null && fail "renaming .mirror away succeeded"
rmdir "$MNT/d3" || fail "rmdir d3 failed"
[ ! -e "$SRC/.mirror" ] || fail "a .mirror entry reached the source"
[ -f "$MNT/.mirror/status" ] || fail ".mirror/status is gone after mkdir .mirror"

# --- finish: clean exit, the target equals the source ---
finish_mirror
assert_eq "$DAEMON_RC" 0 "daemon exit code"
assert_exact
[ ! -e "$TGT/.mirror" ] || fail ".mirror was copied to the target"
assert_clean_stderr
exit 0
