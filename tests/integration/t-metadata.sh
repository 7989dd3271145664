#!/bin/bash
# t-metadata.sh - metadata is mirrored: mode (setuid, setgid, sticky and
# the bits the kernel clears on a write), owner, extended attributes
# (user, trusted, security, POSIX ACLs) and times; entries made through the
# mount belong to the user who made them, as on a local file system.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
open_scratch

random_file "$SRC/a.img" 2
mkdir -m 1777 "$SRC/pub"
mkdir -m 2777 "$SRC/grp"
chgrp 100 "$SRC/grp"
python3 -c 'import os, sys; os.setxattr(sys.argv[1], "user.at-start", b"1")' "$SRC/a.img"

start_mirror -o allow_other
wait_phase ready
assert_entry_mirrored a.img
python3 - "$TGT/a.img" <<'PY' || fail "xattr present at start not on the target"
import os, sys
assert os.getxattr(sys.argv[1], "user.at-start") == b"1"
PY

# --- chmod, chown, times and xattrs through the mount, at once on the target ---
chmod 4751 "$MNT/a.img" || fail chmod
chown 1234:5678 "$MNT/a.img" || fail chown
chmod 6751 "$MNT/a.img" || fail "chmod after chown"
touch -m -d '2001-02-03 04:05:06.123456789' "$MNT/a.img" || fail "touch -m"
touch -a -d '2002-03-04 05:06:07.987654321' "$MNT/a.img" || fail "touch -a"
python3 - "$MNT/a.img" <<'PY' || fail "xattrs through the mount"
import os, sys
p = sys.argv[1]
os.setxattr(p, "user.one", b"\x00\x01binary\xff")
os.setxattr(p, "trusted.two", b"2")
os.setxattr(p, "user.gone", b"x")
os.removexattr(p, "user.gone")
assert os.getxattr(p, "user.one") == b"\x00\x01binary\xff"
assert sorted(n for n in os.listxattr(p) if n.startswith(("user.", "trusted."))) == \
    ["trusted.two", "user.at-start", "user.one"]
PY
setfacl -m u:65534:r,g:100:rw "$MNT/a.img" || fail "setfacl through the mount"
assert_entry_mirrored a.img
python3 - "$SRC/a.img" "$TGT/a.img" <<'PY' || fail "xattrs differ on the target"
import os, sys
def xa(p):
    return {n: os.getxattr(p, n, follow_symlinks=False) for n in os.listxattr(p, follow_symlinks=False)}
s, t = xa(sys.argv[1]), xa(sys.argv[2])
assert s == t, (s, t)
assert "system.posix_acl_access" in t, t
PY
assert_eq "$(getfacl -cn "$TGT/a.img" 2>/dev/null | grep "^user:65534")" "user:65534:r--" "the ACL on the target"
assert_eq "$(stat -c %y "$TGT/a.img")" "$(stat -c %y "$SRC/a.img")" "mtime of a.img on the target"

# --- entries made by a user are the user's; a setgid directory's group ---
as_nobody sh -c "echo x > '$MNT/pub/f' && mkdir '$MNT/pub/d' && mkfifo '$MNT/pub/p' &&
                 ln -s f '$MNT/pub/s' && echo y > '$MNT/grp/g' && mkdir '$MNT/grp/gd'" ||
    fail "nobody could not make entries"
for e in pub/f pub/d pub/p pub/s; do
    assert_eq "$(stat -c %u:%g "$SRC/$e")" 65534:65534 "owner of $e in the source"
    assert_entry_mirrored "$e"
done
assert_eq "$(stat -c %g "$SRC/grp/g")" 100 "group of a file in a setgid directory"
assert_eq "$(stat -c %g:%a "$SRC/grp/gd")" 100:2755 "group and mode of a directory in a setgid directory"
assert_entry_mirrored grp/g
assert_entry_mirrored grp/gd

# --- setuid: a user's own setuid file is the user's on the target, and a
# write by another user clears the bit (the kernel's rule) ---
as_nobody sh -c "echo z > '$MNT/pub/suid' && chmod 4755 '$MNT/pub/suid'" || fail "nobody chmod u+s"
assert_eq "$(stat -c %u:%a "$TGT/pub/suid")" 65534:4755 "a user's setuid file on the target"
chmod 4777 "$MNT/pub/f" || fail "chmod 4777"
as_nobody sh -c "echo more >> '$MNT/pub/f'" || fail "nobody append"
chown 1234 "$MNT/pub/f" && chmod 6777 "$MNT/pub/f" || fail "chown, chmod 6777"
as_nobody sh -c "echo again >> '$MNT/pub/f'" || fail "append by a non-owner"
assert_eq "$(stat -c %a "$SRC/pub/f")" 777 "setuid and setgid cleared by a write in the source"
assert_entry_mirrored pub/f
as_nobody chmod g+s "$MNT/pub/suid" || fail "chmod g+s by the owner"
assert_entry_mirrored pub/suid

# --- a directory's times follow its content; the finished copy is exact ---
touch -d '2003-01-01' "$MNT/pub" || fail "touch pub"
assert_eq "$(stat -c %Y "$TGT/pub")" "$(stat -c %Y "$SRC/pub")" "mtime of pub on the target"
dd if=/dev/urandom of="$MNT/a.img" bs=65536 count=4 seek=2 conv=notrunc status=none || fail "write"
chmod 644 "$MNT/a.img" || fail "chmod 644"
finish_mirror
assert_result completed 0
assert_exact
assert_clean_stderr
exit 0
