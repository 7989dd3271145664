#!/bin/bash
# t-nbd-errors: NBD targets that are wrong or misbehave.
#  (a) refused before mounting, exit 1 and one `mirrorfs: ` line: a URI
#      without {name}, a URI libnbd cannot use, no server on the socket, no
#      server on the TCP port, a missing export, an export smaller than its
#      image, a read-only export (whose data stays untouched);
#  (b) a server failing a fifth of the writes and zeroes (nbdkit's error
#      filter): with on_target_error=ignore the job retries and ends exit 0
#      with every export equal to its image; with =report it fails (exit 3);
#  (c) a slow server (nbdkit's delay filter, 300 ms a write): the copy keeps
#      many writes in flight on the one connection, so the first pass takes
#      a fraction of what one write at a time would, and the result is equal.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
for tool in qemu-storage-daemon nbdkit qemu-img; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (contrib/deps.sh installs it)"
done

M=1048576

# expect_refused NAME PATTERN -- mirrorfs arguments...: exit 1, exactly one
# stderr line, starting with `mirrorfs: ` and matching PATTERN (grep -E),
# nothing mounted at MNT.
expect_refused() {
    local name=$1 pattern=$2 rc
    shift 3
    timeout 30 "$MIRRORFS" -f "$@" >"$T/bad.out" 2>"$T/bad.err"
    rc=$?
    if mounted_anyhow "$MNT"; then
        fusermount3 -u -z "$MNT" 2>/dev/null
        fail "[$name] mirrorfs mounted $MNT"
    fi
    assert_eq "$rc" 1 "[$name] exit code ($(head -c 300 "$T/bad.err"))"
    assert_eq "$(awk 'END { print NR }' "$T/bad.err")" 1 \
        "[$name] number of stderr lines ($(head -c 300 "$T/bad.err" | tr '\n' '|'))"
    grep -q '^mirrorfs: ' "$T/bad.err" || fail "[$name] stderr: $(cat "$T/bad.err")"
    grep -Eq -- "$pattern" "$T/bad.err" ||
        fail "[$name] stderr does not match '$pattern': $(cat "$T/bad.err")"
    log "ok [$name]: $(cat "$T/bad.err")"
}

# ---- (a) refusals ------------------------------------------------------------
EXP=$T/exports
SOCK=$T/qsd.sock
mkdir -p "$EXP"
truncate -s 1M "$EXP/small.raw"
random_file "$EXP/ro.raw" 2
cp "$EXP/ro.raw" "$T/ro.orig"
qemu-storage-daemon \
    --blockdev driver=file,filename="$EXP/small.raw",node-name=n1 \
    --blockdev driver=file,filename="$EXP/ro.raw",node-name=n2,read-only=on \
    --nbd-server addr.type=unix,addr.path="$SOCK" \
    --export type=nbd,id=e1,node-name=n1,name=small.img,writable=on \
    --export type=nbd,id=e2,node-name=n2,name=ro.img \
    >"$T/qsd.log" 2>&1 &
QSD=$!
EXTRA_PIDS+=("$QSD")
wait_socket "$SOCK" "$QSD"

OPTS="state_dir=$STATE"
random_file "$SRC/small.img" 2
expect_refused "no {name}" "needs \{name\}" -- \
    -o "target=nbd+unix:///small.img?socket=$SOCK,$OPTS" "$SRC" "$MNT"
expect_refused "unusable URI" "socket" -- \
    -o "target=nbd+unix:///{name},$OPTS" "$SRC" "$MNT"
expect_refused "no server on the socket" "No such file or directory" -- \
    -o "target=nbd+unix:///{name}?socket=$T/none.sock,$OPTS" "$SRC" "$MNT"
expect_refused "no server on the port" "Connection refused" -- \
    -o "target=nbd://127.0.0.1:1/{name},$OPTS" "$SRC" "$MNT"
expect_refused "export smaller than the image" \
    "target: cannot open small.img there: No space left on device" -- \
    -o "target=nbd+unix:///{name}?socket=$SOCK,$OPTS" "$SRC" "$MNT"
rm "$SRC/small.img"
random_file "$SRC/missing.img" 1
expect_refused "missing export" "target: cannot open missing.img there: No such file or directory" -- \
    -o "target=nbd+unix:///{name}?socket=$SOCK,$OPTS" "$SRC" "$MNT"
rm "$SRC/missing.img"
random_file "$SRC/ro.img" 1
expect_refused "read-only export" "target: cannot open ro.img there: Read-only file system" -- \
    -o "target=nbd+unix:///{name}?socket=$SOCK,$OPTS" "$SRC" "$MNT"
assert_files_cmp "$T/ro.orig" "$EXP/ro.raw" "the read-only export was changed"
kill -0 "$QSD" 2>/dev/null || fail "qemu-storage-daemon died: $(tail -n 3 "$T/qsd.log")"

# ---- (b) a server that fails writes -------------------------------------------
# nbdkit's file plugin serves every file of a directory as an export.
new_scenario errors
EXP=$T/errors/exports
SOCK=$T/errors/nbd.sock
mkdir -p "$EXP"
random_file "$SRC/a.img" 24
truncate -s 20M "$SRC/b.img"
head -c $((4 * M)) /dev/urandom | dd of="$SRC/b.img" bs=1M seek=8 conv=notrunc status=none
truncate -s 24M "$EXP/a.img"
truncate -s 24M "$EXP/b.img"   # larger than b's 20M: the rest must read zero
nbdkit -f -U "$SOCK" --filter=error file dir="$EXP" \
    error=EIO error-pwrite-rate=20% error-zero-rate=20% >"$T/nbdkit.log" 2>&1 &
NBDKIT=$!
EXTRA_PIDS+=("$NBDKIT")
wait_socket "$SOCK" "$NBDKIT"
TGT="nbd+unix:///{name}?socket=$SOCK"
start_mirror -o on_target_error=ignore,workers=4
wait_synced 60
# After ready: data, and zeroes over data (zero requests, which fail too).
for k in 1 2 3 4 5 6; do
    head -c $((256 * 1024)) /dev/urandom |
        dd of="$MNT/a.img" bs=64k seek=$((k * 53)) conv=notrunc status=none || fail "guest write $k"
done
dd if=/dev/zero of="$MNT/b.img" bs=1M seek=9 count=2 conv=notrunc status=none || fail "guest zero write"
wait_synced 60
finish_mirror_within 60
assert_result completed 0
errors=$(result_get errors)
[ "$errors" -gt 0 ] || fail "the error filter injected no error the job saw (errors=$errors)"
grep -q 'injecting EIO error' "$T/nbdkit.log" || fail "nbdkit injected no error"
assert_files_cmp "$SRC/a.img" "$EXP/a.img" "a.img behind a failing server"
qemu-img compare -f raw -F raw "$SRC/b.img" "$EXP/b.img" >"$T/compare.out" 2>&1 ||
    fail "b.img behind a failing server: $(grep -v Warning "$T/compare.out")"
log "ok [error filter, ignore]: $errors errors retried"

# The same server under on_target_error=report: the job fails, exit 3.
kill "$NBDKIT"; wait "$NBDKIT" 2>/dev/null
new_scenario report
EXP=$T/report/exports
SOCK=$T/report/nbd.sock
mkdir -p "$EXP"
random_file "$SRC/a.img" 8
truncate -s 8M "$EXP/a.img"
nbdkit -f -U "$SOCK" --filter=error file dir="$EXP" error=EIO error-pwrite-rate=100% \
    >"$T/nbdkit.log" 2>&1 &
NBDKIT=$!
EXTRA_PIDS+=("$NBDKIT")
wait_socket "$SOCK" "$NBDKIT"
TGT="nbd+unix:///{name}?socket=$SOCK"
start_mirror -o on_target_error=report
wait_phase failed 30
grep -q 'target write error at offset [0-9]*: Input/output error' "$MNT/.mirror/status" ||
    fail "status does not show the write error: $(status_get last_error)"
finish_mirror_within 30
assert_result failed 3
kill "$NBDKIT"; wait "$NBDKIT" 2>/dev/null
log "ok [error filter, report]: failed"

# ---- (c) a slow server -----------------------------------------------------------
new_scenario slow
EXP=$T/slow/exports
SOCK=$T/slow/nbd.sock
mkdir -p "$EXP"
random_file "$SRC/vm.img" 48
truncate -s 48M "$EXP/vm.img"
nbdkit -f -U "$SOCK" --filter=delay file dir="$EXP" wdelay=300ms \
    >"$T/nbdkit.log" 2>&1 &
NBDKIT=$!
EXTRA_PIDS+=("$NBDKIT")
wait_socket "$SOCK" "$NBDKIT"
TGT="nbd+unix:///{name}?socket=$SOCK"
# 48 writes of 1M: one at a time they take 14.4 s; 16 in flight, about 1 s.
start=$(date +%s%N)
start_mirror -o workers=16
wait_phase ready 30
took_ms=$((($(date +%s%N) - start) / 1000000))
[ "$took_ms" -lt 7000 ] ||
    fail "first pass to a server with 300 ms writes took ${took_ms} ms: writes are not concurrent"
head -c $((2 * M)) /dev/urandom |
    dd of="$MNT/vm.img" bs=64k seek=100 conv=notrunc status=none || fail "guest write"
wait_synced 30
finish_mirror_within 30
assert_result completed 0
assert_trees_equal --data-only "$SRC" "$EXP"
assert_files_cmp "$SRC/vm.img" "$EXP/vm.img" "vm.img behind a slow server"
log "ok [delay filter]: first pass in ${took_ms} ms"
exit 0
