#!/bin/bash
# t-sparse: holes in the source stay holes on the target.  A 4 GiB image with
# 32 extents of 1 MiB of data and a fully sparse 1 GiB image: after the first
# pass and after the finish, the target allocates (st_blocks) about what the
# source does, and holes punched through the mount after ready are punched on
# the target too (its allocation shrinks), with equal bytes everywhere.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
command -v fallocate >/dev/null || fail "fallocate is not installed"

M=1048576
need_mkimage
"$MKIMAGE" "$SRC/sparse.img" 4G --data-extents 32 --extent-size 1M --seed 7 \
    --print-extents >"$T/extents" || fail "mkimage sparse.img"
assert_eq "$(wc -l <"$T/extents")" 32 "extents made"
mkimg "$SRC/empty-1g.img" 1G --data-extents 0

src_alloc=$(alloc_bytes "$SRC/sparse.img")
[ "$src_alloc" -ge $(( 32 * M )) ] && [ "$src_alloc" -le $(( 33 * M )) ] ||
    fail "the source image is not sparse as made (allocated $src_alloc bytes); cannot test"

# assert_alloc_close FILE: the target's allocation of FILE is within 1% (+64K)
# of the source's.
assert_alloc_close() {
    local s t slack
    s=$(alloc_bytes "$SRC/$1")
    t=$(alloc_bytes "$TGT/$1")
    slack=$(( s / 100 + 65536 ))
    [ "$t" -le $(( s + slack )) ] && [ "$t" -ge $(( s - slack )) ] ||
        fail "$1: target allocates $t bytes, source $s (allowed +-$slack) [$2]"
}

start_mirror -o workers=2
wait_phase ready 60
assert_eq "$(status_get total_bytes)" $(( 5 * 1024 * M )) "total_bytes"
assert_eq "$(status_get copied_bytes)" $(( 5 * 1024 * M )) "copied_bytes at ready"
# The first pass must not have written the holes.
assert_alloc_close sparse.img "at ready"
assert_alloc_close empty-1g.img "at ready"
assert_eq "$(stat -c %s "$TGT/sparse.img")" $(( 4096 * M )) "target size of sparse.img"
assert_eq "$(stat -c %s "$TGT/empty-1g.img")" $(( 1024 * M )) "target size of empty-1g.img"
tgt_alloc_ready=$(alloc_bytes "$TGT/sparse.img")

# Punch holes through the mount: one whole data extent (64K aligned, 1 MiB),
# and an unaligned 100000-byte piece in the middle of another extent.
read -r off1 len1 < <(sed -n 5p "$T/extents")
read -r off2 _ < <(sed -n 20p "$T/extents")
fallocate --punch-hole --offset "$off1" --length "$len1" "$MNT/sparse.img" ||
    fail "punch hole through the mount"
fallocate --punch-hole --offset $(( off2 + 300000 )) --length 100000 "$MNT/sparse.img" ||
    fail "punch unaligned hole through the mount"
# And write data into a former hole of the fully sparse image.
head -c $(( 2 * M )) /dev/urandom |
    dd of="$MNT/empty-1g.img" bs=1M iflag=fullblock seek=500 conv=notrunc status=none ||
    fail "write into empty-1g.img"

# The source really changed.
assert_eq "$(stat -c %s "$SRC/sparse.img")" $(( 4096 * M )) "punch hole kept the size"
src_alloc2=$(alloc_bytes "$SRC/sparse.img")
[ "$src_alloc2" -le $(( src_alloc - len1 )) ] ||
    fail "punching through the mount did not free the source ($src_alloc -> $src_alloc2)"
cmp -s -n "$len1" -i "$off1:0" "$SRC/sparse.img" /dev/zero ||
    fail "the punched extent does not read as zeros through the source"

# No wait for the copy: the drain after the unmount must carry the holes over.
finish_mirror_within 60
assert_result completed 0
assert_exact
cmp "$SRC/sparse.img" "$TGT/sparse.img" || fail "sparse.img differs"
cmp "$SRC/empty-1g.img" "$TGT/empty-1g.img" || fail "empty-1g.img differs"
assert_alloc_close sparse.img "after finish"
assert_alloc_close empty-1g.img "after finish"
tgt_alloc_end=$(alloc_bytes "$TGT/sparse.img")
[ "$tgt_alloc_end" -le $(( tgt_alloc_ready - len1 + 65536 )) ] ||
    fail "the hole punched through the mount was not punched on the target (allocated $tgt_alloc_ready -> $tgt_alloc_end)"
# du agrees: apparent size 5 GiB + 2 MiB written, far less really used.
du_app=$(du -s -B1 --apparent-size "$TGT" | cut -f1)
du_real=$(du -s -B1 "$TGT" | cut -f1)
[ "$du_app" -ge $(( 5 * 1024 * M )) ] || fail "du --apparent-size of target: $du_app"
[ "$du_real" -le $(( 40 * M )) ] || fail "du of target: $du_real bytes, expected about 33 MiB"
assert_clean_stderr

# --- granularity=auto follows each image's size; a given one applies to all ---
new_scenario gran
truncate -s 64G "$SRC/g64.img"      # 2^24 granules of 4K
truncate -s 100G "$SRC/g100.img"    # too many at 4K: 8K
truncate -s 2T "$SRC/g2t.img"       # 64K at most, however big
start_mirror
wait_phase ready 60
assert_eq "$(status_image_field g64.img granularity)" 4096 "auto granularity of a 64G image"
assert_eq "$(status_image_field g100.img granularity)" 8192 "auto granularity of a 100G image"
assert_eq "$(status_image_field g2t.img granularity)" 65536 "auto granularity of a 2T image"
# A 4K write in the 100G image is copied as one 8K granule.
tb0=$(status_get transferred_bytes)
printf 'x%.0s' $(seq 1 4096) | dd of="$MNT/g100.img" bs=4096 seek=1000 conv=notrunc status=none
wait_synced 30
assert_eq "$(status_get transferred_bytes)" $(( tb0 + 8192 )) "bytes copied for a 4K write at 8K granularity"
cmp <(dd if="$SRC/g100.img" bs=4096 skip=1000 count=2 status=none) \
    <(dd if="$TGT/g100.img" bs=4096 skip=1000 count=2 status=none) || fail "the 4K write did not reach the target"
finish_mirror
assert_eq "$DAEMON_RC" 0 "exit code (auto granularity)"
assert_exact
rm -rf "$TGT" "$STATE"
mkdir -p "$TGT" "$STATE"
start_mirror -o granularity=16K
for img in g64.img g100.img g2t.img; do
    assert_eq "$(status_image_field $img granularity)" 16384 "granularity=16K for $img"
done
finish_mirror
assert_eq "$DAEMON_RC" 0 "exit code (granularity=16K)"
assert_exact
exit 0
