#!/bin/bash
# t-longnames.sh - any legal name is mirrored: a path of 4094 bytes below
# the mount (longer than PATH_MAX from /), and UTF-8 names of 1.2 KiB in
# all, present at start and made through the mount.  Such names once failed
# the job (the crash-safe state's header held a fixed 4 KiB).
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup

# make_deep ROOT SEED: below ROOT, directories of 255-byte names down to a
# file whose path (from ROOT) is 4094 bytes; UTF-8 names beside it; the
# files hold 1 MiB of data each.  Everything through directory fds: the
# absolute paths are longer than PATH_MAX.
make_deep() {
    python3 - "$1" "$2" <<'PY'
import os, sys
root, seed = sys.argv[1], sys.argv[2]
fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
path = 0
for n in range(15):
    name = (seed + chr(ord("a") + n)) * 255
    name = name[:255]
    os.mkdir(name, dir_fd=fd)
    nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(fd)
    fd = nfd
    path += 256
leaf = "f" * (4094 - path)
with os.fdopen(os.open(leaf, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
    f.write(os.urandom(1 << 20))
os.close(fd)
fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
for n in range(5):
    name = ("é" * 126) + seed + str(n)
    os.mkdir(name, dir_fd=fd)
    nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(fd)
    fd = nfd
with os.fdopen(os.open("ü" * 120 + ".img", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
    f.write(os.urandom(1 << 20))
os.close(fd)
print(path + len(leaf))
PY
}

# same_trees A B: the same names, types and bytes, walked by fds.
same_trees() {
    python3 - "$1" "$2" <<'PY'
import os, stat, sys
def walk(a, b, rel):
    na = sorted(os.listdir(a)); nb = sorted(os.listdir(b))
    if na != nb:
        sys.exit(f"{rel or '.'}: entries differ")
    for n in na:
        sa = os.stat(n, dir_fd=a, follow_symlinks=False)
        sb = os.stat(n, dir_fd=b, follow_symlinks=False)
        if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode) or sa.st_size != sb.st_size and not stat.S_ISDIR(sa.st_mode):
            sys.exit(f"{rel}/{n}: type or size differs")
        if stat.S_ISDIR(sa.st_mode):
            fa = os.open(n, os.O_RDONLY | os.O_DIRECTORY, dir_fd=a)
            fb = os.open(n, os.O_RDONLY | os.O_DIRECTORY, dir_fd=b)
            walk(fa, fb, rel + "/" + n)
            os.close(fa); os.close(fb)
        elif stat.S_ISREG(sa.st_mode):
            with os.fdopen(os.open(n, os.O_RDONLY, dir_fd=a), "rb") as x, \
                 os.fdopen(os.open(n, os.O_RDONLY, dir_fd=b), "rb") as y:
                if x.read() != y.read():
                    sys.exit(f"{rel}/{n}: bytes differ")
walk(os.open(sys.argv[1], os.O_RDONLY), os.open(sys.argv[2], os.O_RDONLY), "")
PY
}

len=$(make_deep "$SRC" s) || fail "making long names in the source"
assert_eq "$len" 4094 "length of the deepest path"
start_mirror
wait_phase ready
make_deep "$MNT" m >/dev/null || fail "making long names through the mount"
wait_synced
same_trees "$SRC" "$TGT" || fail "the target differs in ready"
grep -q "^errors: 0$" "$MNT/.mirror/status" || fail "errors in status: $(status_get last_error)"
finish_mirror
assert_result completed 0
# treecmp first: the check below reads (and sets access times).
assert_exact
same_trees "$SRC" "$TGT" || fail "the target differs at completion"
assert_clean_stderr
exit 0
