#!/bin/bash
# mirrorfs demo, end to end, on a Debian 12 machine (as root):
# install what is missing, build, make a sample image directory, mirror it
# while a writer keeps changing the images, show the status as the job moves
# through its phases, finish, and compare source and target byte for byte.
#
# MIRRORFS_DEMO_DIR (default /tmp/mirrorfs-demo) holds everything it makes.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/contrib/deps.sh"

mirrorfs_install_deps
echo "==> building mirrorfs"
mirrorfs_build "$top" >/dev/null
MIRRORFS=$top/src/mirrorfs
MIRRORCTL=$top/src/mirrorctl

D=${MIRRORFS_DEMO_DIR:-/tmp/mirrorfs-demo}
SRC=$D/images TGT=$D/target MNT=$D/mnt STATE=$D/state
writer=""
cleanup() {
    set +e
    [ -n "$writer" ] && kill "$writer" 2>/dev/null && wait "$writer" 2>/dev/null
    if grep -q " $MNT fuse" /proc/mounts; then
        fusermount3 -u -z "$MNT"
    fi
}
trap cleanup EXIT

if grep -q " $MNT fuse" /proc/mounts; then
    fusermount3 -u "$MNT"
fi
rm -rf "$D"
mkdir -p "$SRC/vm1" "$SRC/vm2" "$MNT"

echo "==> sample images in $SRC"
head -c 768M /dev/urandom >"$SRC/vm1/disk.raw"
truncate -s 16G "$SRC/vm1/data.raw"   # sparse: 16 GiB long, 64 MiB of data
for off in 1 3000 9000 15000; do
    dd if=/dev/urandom of="$SRC/vm1/data.raw" bs=1M count=16 seek="$off" conv=notrunc status=none
done
qemu-img create -q -f qcow2 "$SRC/vm2/disk.qcow2" 4G
qemu-io -f qcow2 -c 'write -P 0x42 0 128M' "$SRC/vm2/disk.qcow2" >/dev/null
ls -lsh "$SRC"/*/

show() {
    "$MIRRORCTL" status "$MNT" | awk -F': ' '
        /^phase:/ {p=$2} /^progress_percent:/ {pc=$2} /^copied_bytes:/ {c=$2}
        /^total_bytes:/ {t=$2} /^dirty_bytes:/ {d=$2} /^guest_write_bytes:/ {g=$2}
        END {printf "   phase=%-8s progress=%3s%%  copied=%6.1f MiB of %6.1f MiB  dirty=%6.1f MiB  guest wrote %5.1f MiB\n",
             p, pc, c/1048576, t/1048576, d/1048576, g/1048576}'
}

echo "==> mirrorfs -o target=$TGT $SRC $MNT"
"$MIRRORFS" -o "target=$TGT,state_dir=$STATE,workers=2" "$SRC" "$MNT"
show


# A guest at work: rewrites blocks of the raw image and the qcow2 image
# through the mount while the mirror copies them.
(
    i=0
    while :; do
        i=$((i + 1))
        dd if=/dev/urandom of="$MNT/vm1/disk.raw" bs=64K count=4 \
            seek=$(( (RANDOM * 32768 + RANDOM) % 12000 )) conv=notrunc status=none
        qemu-io -f qcow2 -c "write -P $(( i % 250 )) $(( (i % 64) * 1048576 )) 1M" \
            "$MNT/vm2/disk.qcow2" >/dev/null
        [ "$i" -ge 150 ] && break
    done
) &
writer=$!


echo "==> status while the guest writes (mirrorctl status $MNT)"
show
while kill -0 "$writer" 2>/dev/null; do
    show
    sleep 0.5
done
wait "$writer"
writer=""
show
echo "==> mirrorctl wait --ready $MNT"
"$MIRRORCTL" wait --ready "$MNT" --timeout 120
show
echo "==> full status:"
cat "$MNT/.mirror/status"

echo "==> mirrorctl finish $MNT   (unmount, drain, flush)"
rc=0
"$MIRRORCTL" finish "$MNT" | sed -n '1p;/^transferred_bytes/p;/^exit_code/p' || rc=$?
[ "$rc" -eq 0 ] || { echo "mirrorfs: the job did not complete (exit $rc)"; exit "$rc"; }

echo "==> comparing source and target"
cmp "$SRC/vm1/disk.raw" "$TGT/vm1/disk.raw"
cmp "$SRC/vm1/data.raw" "$TGT/vm1/data.raw"
qemu-img compare -q "$SRC/vm2/disk.qcow2" "$TGT/vm2/disk.qcow2"
echo "   vm1/disk.raw, vm1/data.raw, vm2/disk.qcow2: source and target are identical"
printf '   allocated: source %s, target %s (sparse stays sparse)\n' \
    "$(du -sh "$SRC" | cut -f1)" "$(du -sh "$TGT" | cut -f1)"
