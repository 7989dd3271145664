#!/bin/bash
# t-treecmp.sh - tests/helpers/treecmp.py, which the tests that finish a job
# use to say "the target is an exact copy" (no mount here).  Two trees made
# with cp -a --preserve=all compare equal, twice, and comparing them moves
# no atime; each kind of difference (a mode bit, an owner, a directory's
# mtime, an atime, an xattr, an ACL, a symlink target, a hard link split or
# made, a FIFO where a file was, a device number, one byte of content, an
# entry on one side only) makes it exit 1 with a line naming that path and
# that kind; --exclude, --no-atime, --data-only, --no-meta, the cap on the
# lines, usage errors (exit 2); 10,000 entries in a few seconds.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup_scratch
[ "$(id -u)" = 0 ] || skip "needs root (mknod, chown, trusted.* xattrs)"
[ -r "$TREECMP" ] || fail "TREECMP is not set or not readable: '$TREECMP'"

treecmp() { python3 "$TREECMP" "$@"; }

# --- a tree with every kind of entry and attribute ---
A=$T/a
mkdir -p "$A/sub/deeper" "$A/empty"
head -c 200000 /dev/urandom >"$A/file"
printf 'hello\n' >"$A/sub/small"
: >"$A/zero"
head -c 5000 /dev/urandom >"$A/twin1"
cp "$A/twin1" "$A/twin2"
ln "$A/file" "$A/sub/hard"
ln -s ../file "$A/sub/link"
mkfifo "$A/fifo"
mknod "$A/chr" c 1 3
mknod "$A/blk" b 7 200
python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$A/sock" ||
    fail "cannot make a socket"
truncate -s 6G "$A/sparse"
printf 'data' | dd of="$A/sparse" bs=1 seek=$((3 << 30)) conv=notrunc status=none
chmod 4755 "$A/sub/small"
chmod 2750 "$A/sub/deeper"
chmod 1777 "$A/empty"
chown 1234:5678 "$A/zero"
chown -h 42:43 "$A/sub/link"
python3 - "$A" <<'PY' || fail "cannot set xattrs"
import os, struct, sys
a = sys.argv[1]
os.setxattr(a + "/file", "user.k", b"one")
os.setxattr(a + "/file", "trusted.t", b"\x00\x01binary")
os.setxattr(a + "/sub", "user.dir", b"d")
# An access ACL (what setfacl -m u:1234:r writes): version 2, then
# (tag, perm, id) for USER_OBJ, USER 1234, GROUP_OBJ, MASK, OTHER.
acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, i) for t, p, i in (
    (0x01, 6, 0xffffffff), (0x02, 4, 1234), (0x04, 4, 0xffffffff),
    (0x10, 4, 0xffffffff), (0x20, 4, 0xffffffff)))
os.setxattr(a + "/twin1", "system.posix_acl_access", acl)
os.setxattr(a + "/twin2", "system.posix_acl_access", acl)
PY
touch -m -d '2001-02-03 04:05:06.123456789 UTC' "$A/sub/deeper"
# Read every entry of A once, after it is complete and a moment later: then
# its atimes are newer than its mtimes and ctimes, and cp reading it below
# leaves them alone (relatime).
sleep 0.05
find "$A" -type f ! -name sparse -exec cat {} + >/dev/null
head -c 1 "$A/sparse" >/dev/null
readlink "$A/sub/link" >/dev/null
ls -laR "$A" >/dev/null

# copy NAME: a fresh exact copy of A at $T/NAME.
copy() {
    rm -rf "${T:?}/$1"
    cp -a --preserve=all "$A" "$T/$1" || fail "cp -a --preserve=all to $1"
}

# expect_diff B PATH KIND [treecmp options...]: treecmp A B exits 1 and one
# of its lines starts with "PATH: KIND".
expect_diff() {
    local b=$1 path=$2 kind=$3 out rc line
    shift 3
    out=$(treecmp "$@" "$A" "$b" 2>&1)
    rc=$?
    [ "$rc" = 1 ] || fail "treecmp $* A $(basename "$b") exited $rc, expected 1 for '$path: $kind':"$'\n'"$out"
    while IFS= read -r line; do
        case "$line" in "$path: $kind"*) return 0 ;; esac
    done <<<"$out"
    fail "treecmp did not report '$path: $kind':"$'\n'"$out"
}

# expect_equal B [treecmp options...]
expect_equal() {
    local b=$1 out rc
    shift
    out=$(treecmp "$@" "$A" "$b" 2>&1)
    rc=$?
    [ "$rc" = 0 ] || fail "treecmp $* A $(basename "$b") exited $rc, expected 0:"$'\n'"$out"
    [ -z "$out" ] || fail "treecmp printed something for equal trees: $out"
}

# --- equal trees are equal, and comparing them moves no atime ---
copy same
expect_equal "$T/same"
# Every atime of the copy is older than its ctime (cp set the times), so
# relatime would move it on any read that is not O_NOATIME.
atimes() { # DIR: the atime of every entry of A's list, under DIR
    (cd "$A" && find . -print0) | python3 -c '
import os, sys
root = sys.argv[1]
for p in sys.stdin.buffer.read().split(b"\0")[:-1]:
    st = os.lstat(os.path.join(root.encode(), p))
    print(p.decode(errors="replace"), st.st_atime_ns)' "$1"
}
atimes "$T/same" >"$T/atimes.before"
atimes "$A" >"$T/atimes-a.before"
expect_equal "$T/same"
atimes "$T/same" >"$T/atimes.after"
atimes "$A" >"$T/atimes-a.after"
cmp -s "$T/atimes.before" "$T/atimes.after" ||
    fail "treecmp moved atimes in B: $(diff "$T/atimes.before" "$T/atimes.after" | head -n 6 | tr '\n' ' ')"
cmp -s "$T/atimes-a.before" "$T/atimes-a.after" ||
    fail "treecmp moved atimes in A: $(diff "$T/atimes-a.before" "$T/atimes-a.after" | head -n 6 | tr '\n' ' ')"
# The check can see a move: a plain read of the copy does move its atime.
cat "$T/same/sub/small" >/dev/null
atimes "$T/same" >"$T/atimes.read"
cmp -s "$T/atimes.after" "$T/atimes.read" &&
    log "note: a plain read moved no atime here (noatime mount?): the check above proves little"

# --- each kind of difference ---
copy b; chmod u-s "$T/b/sub/small"
expect_diff "$T/b" sub/small "mode: A=4755 B=0755"
copy b; chmod -t "$T/b/empty"
expect_diff "$T/b" empty "mode: A=1777 B=0777"
copy b; chmod 0700 "$T/b"
expect_diff "$T/b" . mode
copy b; chown 4321 "$T/b/zero"
expect_diff "$T/b" zero "uid: A=1234 B=4321"
copy b; chown :8765 "$T/b/zero"
expect_diff "$T/b" zero "gid: A=5678 B=8765"
copy b; chown -h 0 "$T/b/sub/link"
expect_diff "$T/b" sub/link uid
copy b; touch -m -d '2001-02-03 04:05:06.123456788 UTC' "$T/b/sub/deeper"
expect_diff "$T/b" sub/deeper "mtime: A=981173106.123456789 B=981173106.123456788"
copy b; touch -h -m -d '2002-01-01' "$T/b/sub/link"
expect_diff "$T/b" sub/link mtime
copy b; touch -a -d '2003-01-01' "$T/b/zero"
expect_diff "$T/b" zero atime
expect_equal "$T/b" --no-atime
copy b; python3 -c 'import os, sys; os.setxattr(sys.argv[1], "user.k", b"two")' "$T/b/file"
expect_diff "$T/b" file "xattr user.k: A=b'one' B=b'two'"
copy b; python3 -c 'import os, sys; os.removexattr(sys.argv[1], "trusted.t")' "$T/b/file"
expect_diff "$T/b" file "xattr trusted.t: A=b'\x00\x01binary' B=(none)"
copy b; python3 -c 'import os, sys; os.setxattr(sys.argv[1], "user.new", b"")' "$T/b/sub"
expect_diff "$T/b" sub "xattr user.new: A=(none)"
copy b; python3 -c 'import os, sys; os.removexattr(sys.argv[1], "system.posix_acl_access")' "$T/b/twin1"
expect_diff "$T/b" twin1 "xattr system.posix_acl_access"
copy b; rm "$T/b/sub/link"; ln -s ../zero "$T/b/sub/link"
expect_diff "$T/b" sub/link "symlink: A='../file' B='../zero'"
copy b; cp -a "$T/b/sub/hard" "$T/b/sub/hard.new"; mv "$T/b/sub/hard.new" "$T/b/sub/hard"
expect_diff "$T/b" file "links (names of one inode): A={file,sub/hard} B={file}"
copy b; ln -f "$T/b/twin1" "$T/b/twin2"
expect_diff "$T/b" twin1 "links (names of one inode): A={twin1} B={twin1,twin2}"
copy b; rm "$T/b/fifo"; : >"$T/b/fifo"
expect_diff "$T/b" fifo "type: A=fifo B=regular file"
copy b; rm "$T/b/sock"; mkfifo "$T/b/sock"
expect_diff "$T/b" sock "type: A=socket B=fifo"
copy b; rm -r "$T/b/sub/deeper"; : >"$T/b/sub/deeper"
expect_diff "$T/b" sub/deeper "type: A=directory B=regular file"
copy b; rm "$T/b/chr"; mknod "$T/b/chr" c 1 5
expect_diff "$T/b" chr "rdev: A=1:3 B=1:5"
copy b; rm "$T/b/blk"; mknod "$T/b/blk" c 7 200
expect_diff "$T/b" blk "type: A=block device B=char device"
copy b; printf 'X' | dd of="$T/b/file" bs=1 seek=123457 conv=notrunc status=none
expect_diff "$T/b" file "content differs from byte 123457 (of 200000)"
expect_diff "$T/b" sub/hard "content differs from byte 123457"
expect_diff "$T/b" file content --no-meta
expect_diff "$T/b" file content --data-only
copy b; printf 'X' | dd of="$T/b/sparse" bs=1 seek=$(((3 << 30) + 2)) conv=notrunc status=none
expect_diff "$T/b" sparse "content differs from byte $(((3 << 30) + 2))"
copy b; head -c 1 /dev/zero >>"$T/b/sub/small"
expect_diff "$T/b" sub/small "size: A=6 B=7"
copy b; rm -r "$T/b/sub"
expect_diff "$T/b" sub "only in A (directory) (and 4 entries below)"
copy b; : >"$T/b/sub/deeper/new"
expect_diff "$T/b" sub/deeper/new "only in B (regular file)"

# --- holes: a hole on one side and written zeros on the other are equal ---
copy b
dd if=/dev/zero of="$T/b/sparse" bs=1M seek=1000 count=3 conv=notrunc status=none
touch -r "$A/sparse" "$T/b/sparse"
expect_equal "$T/b"

# --- options ---
copy b; mkdir "$T/b/.mirror"; mkdir "$T/b/sub/.mirror"
touch -r "$A" "$T/b"
expect_diff "$T/b" .mirror "only in B (directory)"
expect_diff "$T/b" sub/.mirror "only in B" --exclude .mirror
copy b; mkdir "$T/b/.mirror" "$T/b/other"; touch -r "$A" "$T/b"
expect_equal "$T/b" --exclude .mirror --exclude other
# --data-only: only the regular files and their bytes.
copy b
chmod 0600 "$T/b/file"; chown 7 "$T/b/zero"; touch -d 2000-01-01 "$T/b/twin2" "$T/b/sub"
rm "$T/b/sub/link" "$T/b/fifo"; ln -s elsewhere "$T/b/sub/link"; mkdir "$T/b/newdir"
expect_equal "$T/b" --data-only
rm "$T/b/zero"; ln -s file "$T/b/zero"
expect_diff "$T/b" zero "only in A (regular file)" --data-only
# --no-meta: entries, types, sizes, targets and bytes, no metadata.
copy b
chmod 0600 "$T/b/file"; chown 7 "$T/b/zero"; touch -d 2000-01-01 "$T/b/twin2" "$T/b/sub"
python3 -c 'import os, sys; os.setxattr(sys.argv[1], "user.k", b"two")' "$T/b/file"
expect_equal "$T/b" --no-meta
rm "$T/b/sub/link"; ln -s elsewhere "$T/b/sub/link"
expect_diff "$T/b" sub/link symlink --no-meta
# At most 50 lines, then a count.
copy b
for i in $(seq 1 60); do : >"$T/b/extra$i"; done
out=$(treecmp --no-atime "$A" "$T/b")
assert_eq "$?" 1 "exit code with 61 differences"
assert_eq "$(printf '%s\n' "$out" | wc -l)" 51 "lines printed for 61 differences"
assert_eq "$(printf '%s\n' "$out" | tail -n 1)" "... 11 more differences (61 in all)" "last line"

# --- usage errors and trees that cannot be compared: exit 2 ---
for args in "" "$A" "--bogus $A $T/same" "--exclude a/b $A $T/same" "--data-only --no-meta $A $T/same" \
    "$A $T/nonexistent" "$A $A/file" "$A $T/same $T/same"; do
    # shellcheck disable=SC2086
    treecmp $args >"$T/usage.out" 2>&1
    rc=$?
    assert_eq "$rc" 2 "exit code of treecmp $args"
done

# --- 10,000 entries in a few seconds ---
mkdir "$T/many"
python3 - "$T/many" <<'PY' || fail "cannot make the big tree"
import os, sys
for d in range(100):
    os.mkdir("%s/d%02d" % (sys.argv[1], d))
    for f in range(99):
        with open("%s/d%02d/f%02d" % (sys.argv[1], d, f), "wb") as fh:
            fh.write(os.urandom(2000))
PY
cp -a "$T/many" "$T/many2" || fail "cp the big tree"
t0=$(date +%s%N)
out=$(treecmp --no-atime "$T/many" "$T/many2") || fail "the big trees differ: $out"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
log "10,000 entries compared in $ms ms"
[ "$ms" -lt 10000 ] || fail "comparing 10,000 entries took $ms ms"
exit 0
