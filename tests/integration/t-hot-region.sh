#!/bin/bash
# t-hot-region: THE invariant test (doc/design.md, invariants 1, 2, 3, 6).
#
# fio hammers two small regions of an image with verified 4K O_DIRECT writes
# while the first pass runs: the hot region at offset 0 is what the bulk
# pass copies first, so its granules are written both before and after their
# first copy (a lost re-dirty leaves the target stale, invariant 6), and
# every later write races the copy workers re-copying the same granules
# (mark-after-write / clear-before-read, invariant 1; no two copies of a
# granule in flight, invariant 2).  After the unmount the target must be the
# source byte for byte.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
command -v fio >/dev/null || fail "fio is not installed"

# fio_job NAME OFFSET SIZE: the verified random-write job on $MNT/img, in the
# background; its pid goes to EXTRA_PIDS and to FIO_PIDS.
fio_job() {
    # (In $T, with no verify state file: nothing is left behind.)
    (cd "$T" && exec fio --name="$1" --filename="$MNT/img" --rw=randwrite --bs=4k \
        --offset="$2" --size="$3" --io_size=64M --direct=1 \
        --ioengine=libaio --iodepth=8 --verify=crc32c --verify_fatal=1 \
        --do_verify=1 --randrepeat=0 --verify_state_save=0 --output-format=json \
        --output="$T/fio-$1.json") >"$T/fio-$1.out" 2>&1 &
    FIO_PIDS+=($!)
    EXTRA_PIDS+=($!)
}

# round NAME IMAGE_SIZE MID_OFFSET MIRRORFS_OPTIONS
round() {
    local name=$1 size=$2 mid=$3 opts=$4 seed=$RANDOM ph p rc t0
    new_scenario "$name"
    mkimg "$SRC/img" "$size" --seed "$seed"
    evict_cache "$SRC/img"
    t0=$(date +%s%N)
    start_mirror_quick -o "$opts"
    ph=$(status_get phase)
    [ "$ph" = bulk ] || fail "$name: phase is '$ph' before fio started; the first pass must still run"
    FIO_PIDS=()
    fio_job hot 0 8M
    fio_job mid "$mid" 8M
    # The first pass really was under way while fio was writing.
    local seen_bulk_with_writes=no
    for _ in $(seq 1 100); do
        if [ "$(status_get phase)" = bulk ] && [ "$(status_get guest_write_bytes)" != 0 ]; then
            seen_bulk_with_writes=yes
            break
        fi
        [ "$(status_get phase)" = bulk ] || break
        sleep 0.01
    done
    for p in "${FIO_PIDS[@]}"; do
        wait "$p"
        rc=$?
        [ "$rc" = 0 ] || { cat "$T"/fio-*.out "$T"/fio-*.json >&2; fail "$name: fio exited with $rc"; }
    done
    grep -Eiq 'verify failed|bad magic|bad header|Invalid argument|EINVAL' "$T"/fio-*.out "$T"/fio-*.json &&
        { cat "$T"/fio-*.out >&2; fail "$name: fio reported an error"; }
    # What fio wrote (it splits io_size between the writes and its verify
    # reads) went through the daemon, and was verified.
    local wrote gwb
    wrote=$(python3 - "$T"/fio-*.json <<'PY'
import json, sys
total = 0
for p in sys.argv[1:]:
    with open(p) as f:
        txt = f.read()
    j = json.loads(txt[txt.index('{'):])
    for job in j["jobs"]:
        assert job["error"] == 0, (p, job["error"])
        assert job["read"]["io_bytes"] > 0, (p, "nothing verified")
        total += job["write"]["io_bytes"]
print(total)
PY
    ) || fail "$name: cannot read fio's results: $(cat "$T"/fio-*.json)"
    [ "$wrote" -ge $(( 2 * 16 * 1048576 )) ] || fail "$name: fio wrote only $wrote bytes"
    gwb=$(status_get guest_write_bytes)
    [ "$gwb" -ge "$wrote" ] 2>/dev/null ||
        fail "$name: guest_write_bytes is '$gwb', but fio wrote $wrote bytes"
    finish_mirror_within 60
    assert_result completed 0
    assert_exact
    cmp "$SRC/img" "$TGT/img" || fail "$name: target differs from source"
    assert_clean_stderr
    log "$name: ok in $(( ($(date +%s%N) - t0) / 1000000 )) ms (seed $seed; writes counted during bulk: $seen_bulk_with_writes)"
}

round g64k-a 256M 128M granularity=64K,workers=2
round g64k-b 256M 128M granularity=64K,workers=2
round g4k-a 64M 32M granularity=4K,workers=4
round g4k-b 64M 32M granularity=4K,workers=4
exit 0
