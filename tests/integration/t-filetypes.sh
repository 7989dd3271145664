#!/bin/bash
# t-filetypes.sh - every file type and every rename is mirrored: regular
# files, directories, symlinks, FIFOs, sockets, character and block
# devices, hard links made with link(2) through the mount; renames over
# every type, RENAME_EXCHANGE and RENAME_NOREPLACE between every type.
# Each change is on the target at once, and the finished target is exact.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
: "${RENAMEAT2:?RENAMEAT2 must point at tests/helpers/renameat2}"

mkdir "$SRC/dir"
random_file "$SRC/a.img" 1
ln "$SRC/a.img" "$SRC/dir/a-link.img"        # a hard link present at start
mkfifo "$SRC/fifo0"
ln "$SRC/fifo0" "$SRC/dir/fifo0-link"         # a hard-linked FIFO
mknod "$SRC/null0" c 1 3
ln -s a.img "$SRC/sym0"
random_file "$SRC/b.img" 1
ln "$SRC/b.img" "$T/b-outside"                # a second name outside SOURCE

start_mirror
wait_phase ready
for e in dir a.img dir/a-link.img fifo0 dir/fifo0-link null0 sym0; do
    assert_entry_mirrored "$e"
done
assert_same_inode a.img dir/a-link.img
assert_same_inode fifo0 dir/fifo0-link

# --- every type made through the mount ---
cd "$MNT" || fail "cd $MNT"
mkfifo fifo || fail mkfifo
mknod chr c 1 5 || fail "mknod c"
mknod blk b 7 200 || fail "mknod b"
python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.bind("sock")' || fail "socket"
ln -s /nowhere/at/all sym || fail "ln -s"
mkdir sub || fail mkdir
random_file img 1
cd "$T" || fail "cd $T"
for e in fifo chr blk sock sym sub img; do
    assert_entry_mirrored "$e"
done

# --- hard links through the mount: an image, a FIFO, a symlink, a device ---
ln "$MNT/img" "$MNT/sub/img-link" || fail "link(2) of an image through the mount"
ln "$MNT/fifo" "$MNT/sub/fifo-link" || fail "link(2) of a FIFO"
ln -P "$MNT/sym" "$MNT/sub/sym-link" || fail "link(2) of a symlink"
ln "$MNT/chr" "$MNT/sub/chr-link" || fail "link(2) of a device"
for p in "img sub/img-link" "fifo sub/fifo-link" "sym sub/sym-link" "chr sub/chr-link"; do
    set -- $p
    assert_entry_mirrored "$2"
    assert_same_inode "$1" "$2"
done
# Data written through either name reaches both.
head -c 65536 /dev/urandom | dd of="$MNT/sub/img-link" bs=65536 seek=3 conv=notrunc status=none ||
    fail "write through the second name"
wait_synced
assert_files_cmp "$TGT/img" "$SRC/img" "img after a write through its second name"
# Removing one name keeps the other (and the data mirrored).
rm "$MNT/img" || fail "unlink of one name"
[ ! -e "$TGT/img" ] || fail "img still on the target"
assert_entry_mirrored sub/img-link
head -c 4096 /dev/urandom | dd of="$MNT/sub/img-link" bs=4096 seek=1 conv=notrunc status=none ||
    fail "write after unlinking the other name"
wait_synced
assert_files_cmp "$TGT/sub/img-link" "$SRC/sub/img-link" "sub/img-link after the other name went"

# --- renames over every type ---
over() { # over FROM_KIND TO_KIND: make both in dir ov, rename the first over the second
    local n=$1-over-$2
    mkdir -p "$MNT/ov"
    mk "$1" "$MNT/ov/$n.from"
    mk "$2" "$MNT/ov/$n.to"
    mv -T "$MNT/ov/$n.from" "$MNT/ov/$n.to" || fail "rename $1 over $2"
    [ ! -e "$TGT/ov/$n.from" ] && [ ! -L "$TGT/ov/$n.from" ] || fail "$n.from still on the target"
    assert_entry_mirrored "ov/$n.to"
}
mk() { # mk KIND PATH
    case $1 in
    file) head -c 8192 /dev/urandom > "$2" ;;
    fifo) mkfifo "$2" ;;
    sock) python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$2" ;;
    chr) mknod "$2" c 1 7 ;;
    sym) ln -s "/target/of/$(basename "$2")" "$2" ;;
    dir) mkdir "$2" ;;
    esac || fail "making $1 $2"
}
for from in file fifo sock chr sym; do
    for to in file fifo sock chr sym; do
        over "$from" "$to"
    done
done
over dir dir

# --- RENAME_EXCHANGE between every pair of types, and NOREPLACE ---
for a in file fifo sock chr sym dir; do
    for b in file fifo sock chr sym dir; do
        mkdir -p "$MNT/ex"
        mk "$a" "$MNT/ex/$a-$b.1"
        mk "$b" "$MNT/ex/$a-$b.2"
        "$RENAMEAT2" exchange "$MNT/ex/$a-$b.1" "$MNT/ex/$a-$b.2" || fail "exchange $a $b"
        assert_entry_mirrored "ex/$a-$b.1"
        assert_entry_mirrored "ex/$a-$b.2"
    done
done
mk file "$MNT/ex/nr.1"
mk fifo "$MNT/ex/nr.2"
[ "$("$RENAMEAT2" noreplace "$MNT/ex/nr.1" "$MNT/ex/nr.2" 2>/dev/null)" = EEXIST ] ||
    fail "RENAME_NOREPLACE over an existing name did not fail with EEXIST"
assert_entry_mirrored ex/nr.1
assert_entry_mirrored ex/nr.2
"$RENAMEAT2" noreplace "$MNT/ex/nr.1" "$MNT/ex/nr.3" || fail "RENAME_NOREPLACE to a new name"
assert_entry_mirrored ex/nr.3
# An image exchanged with a FIFO keeps being mirrored under its new name.
random_file "$MNT/ex/xi.img" 1
mkfifo "$MNT/ex/xf"
"$RENAMEAT2" exchange "$MNT/ex/xi.img" "$MNT/ex/xf" || fail "exchange image and FIFO"
head -c 65536 /dev/urandom | dd of="$MNT/ex/xf" bs=65536 seek=2 conv=notrunc status=none ||
    fail "write to the exchanged image"
wait_synced
assert_files_cmp "$TGT/ex/xf" "$SRC/ex/xf" "the image exchanged with a FIFO"
assert_entry_mirrored ex/xi.img

# --- a directory renamed over an empty one, with content ---
mkdir -p "$MNT/d1/in" "$MNT/d2" && mkfifo "$MNT/d1/in/p" && random_file "$MNT/d1/in/f.img" 1 ||
    fail "making d1"
mv -T "$MNT/d1" "$MNT/d2" || fail "rename of a directory over an empty one"
assert_entry_mirrored d2/in/p
assert_entry_mirrored d2/in/f.img

finish_mirror
assert_result completed 0
assert_exact
assert_clean_stderr
exit 0
