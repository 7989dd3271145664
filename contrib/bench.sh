#!/bin/bash
# contrib/bench.sh - the mirrorfs benchmark, in one command (root, Debian 12).
#
#   sudo contrib/bench.sh                 # full run: 3 repetitions, ~15 min on 2 vCPUs
#   sudo BENCH_QUICK=1 contrib/bench.sh   # smoke test: small sizes, 1 run, ~2 min
#
# Installs what it needs with apt-get (fio, qemu-utils, qemu-system-common for
# qemu-storage-daemon, jq, python3, fuse3, the build dependencies), builds
# mirrorfs if needed, then measures:
#
#  1. guest I/O: fio O_DIRECT on a fully allocated image of random data, five
#     workloads, each (a) straight on the source file system, (b) through
#     mirrorfs with the job ready, (c) through qemu-storage-daemon's FUSE
#     export of the same file, (d) through mirrorfs while the first pass is
#     still running (a second, bigger image in the source directory and
#     -o speed=BENCH_SPEED_D keep it running for the whole fio run);
#  2. the first pass of a big image of random data, caches dropped before each
#     run: mirrorfs (start until phase ready) vs `qemu-img convert -W -m 8 -t
#     none` vs QEMU's mirror job (blockdev-mirror sync=full in
#     qemu-storage-daemon, over QMP, until BLOCK_JOB_READY) with QEMU's
#     default cache mode; the same job with cache.direct=on,aio=native is
#     shown for information;
#  3. a 1 TiB sparse image with 256 MiB of data in 256 scattered extents:
#     time to ready, allocated bytes of target vs source;
#  4. the daemon's peak RSS (VmHWM) in case 3.
#
# Every cell is the median of BENCH_RUNS runs; every ratio is the median of
# the per-run ratios (both sides measured in the same repetition), so slow
# drift of the machine cancels out.  The goals are printed next to the
# numbers, each marked PASS or MISS.
#
# Environment:
#   BENCH_QUICK=1       small sizes, 1 run, 2 s fio runs (smoke test)
#   BENCH_DIR=DIR       parent of the scratch directory (default /tmp; it
#                       must be on the file system under test).  A fresh
#                       DIR/mirrorfs-bench.XXXXXX is made and removed at exit.
#   BENCH_RUNS=N        repetitions (default 3; quick 1)
#   BENCH_FIO_RUNTIME=S seconds per fio cell (default 10; quick 2)
#   BENCH_SPEED_D=RATE  -o speed= for the (d) column (default 256M; quick 128M)
#   BENCH_PARTS="1 2 3" which parts to run (default all)
#   BENCH_OUT=FILE      also write the report to FILE and raw numbers to FILE.tsv
#   BENCH_NO_BUILD=1    use src/mirrorfs as it is (no apt-get, no make)
#   BENCH_KEEP=1        keep the scratch directory (logs, fio JSON)
#
# It cleans up every mount and process it started (and only those) on any
# exit, including Ctrl-C.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
bench_t0=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

QUICK=${BENCH_QUICK:-0}
[ "$QUICK" = 0 ] && QUICK=""
if [ -n "$QUICK" ]; then
    IMG_SIZE=256M BIG_SIZE=1G RUNS=${BENCH_RUNS:-1} FIO_RUNTIME=${BENCH_FIO_RUNTIME:-2}
    FIO_RAMP=0 SPEED_D=${BENCH_SPEED_D:-128M}
else
    IMG_SIZE=1G BIG_SIZE=4G RUNS=${BENCH_RUNS:-3} FIO_RUNTIME=${BENCH_FIO_RUNTIME:-10}
    FIO_RAMP=1 SPEED_D=${BENCH_SPEED_D:-256M}
fi
SPARSE_SIZE=1T SPARSE_EXTENTS=256 SPARSE_EXTENT_SIZE=1M
PARTS=${BENCH_PARTS:-1 2 3}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "bench: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run me as root (mounts, drop_caches, apt-get)"

# ---- dependencies and build -------------------------------------------------

BENCH_PACKAGES=(fio qemu-utils qemu-system-common jq python3 fuse3 util-linux coreutils)

if [ -z "${BENCH_NO_BUILD:-}" ]; then
    . "$top/contrib/deps.sh"
    mirrorfs_install_deps
    missing=()
    for p in "${BENCH_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "apt-get install ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q </dev/null >&2
        apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >&2
    fi
    log "building mirrorfs"
    (mirrorfs_build "$top" >&2) || die "the build failed (if someone is editing src/, retry in a minute)"
    make -C "$top" tests/helpers/mkimage >&2 || die "cannot build tests/helpers/mkimage"
fi
MIRRORFS=$top/src/mirrorfs
MIRRORCTL=$top/src/mirrorctl
MKIMAGE=$top/tests/helpers/mkimage
for b in "$MIRRORFS" "$MIRRORCTL" "$MKIMAGE"; do
    [ -x "$b" ] || die "$b is missing (run without BENCH_NO_BUILD)"
done
for c in fio qemu-img qemu-storage-daemon jq fusermount3 python3; do
    command -v "$c" >/dev/null || die "$c is not installed"
done
# Debian's own interpreter: only the standard library is used.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
[ -c /dev/fuse ] || modprobe fuse 2>/dev/null || true
[ -c /dev/fuse ] || die "/dev/fuse is missing"

# ---- scratch directory, processes, mounts, cleanup --------------------------

parent=${BENCH_DIR:-/tmp}
mkdir -p "$parent"
W=$(mktemp -d "$parent/mirrorfs-bench.XXXXXX")
case "$W" in *[[:space:]]*) rmdir "$W"; die "BENCH_DIR must not contain spaces" ;; esac
mkdir -p "$W/log" "$W/fio" "$W/img"
RES=$W/results.tsv
: >"$RES"

# Run copies: another build of the tree during the benchmark must not swap
# the binaries under test half-way.
mkdir -p "$W/bin"
MIRRORFS_BUILT=$(date -u -r "$MIRRORFS" '+%Y-%m-%d %H:%M UTC')
cp "$MIRRORFS" "$MIRRORCTL" "$MKIMAGE" "$W/bin/"
MIRRORFS=$W/bin/mirrorfs MIRRORCTL=$W/bin/mirrorctl MKIMAGE=$W/bin/mkimage

PIDS=()   # background processes this script started and has not reaped yet
MOUNTS=() # mountpoints this script mounted

is_mounted() { awk -v m="$1" '$2 == m && $3 ~ /^fuse/ { f = 1 } END { exit !f }' /proc/mounts; }

track() { PIDS+=("$1"); }
untrack() {
    local p keep=()
    for p in "${PIDS[@]}"; do
        [ "$p" = "$1" ] || keep+=("$p")
    done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

cleanup() {
    local rc=$? m p
    set +e
    trap - EXIT INT TERM
    for m in "${MOUNTS[@]+"${MOUNTS[@]}"}"; do
        is_mounted "$m" && { fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; }
    done
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do
        kill -TERM "$p" 2>/dev/null
    done
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do
        for _ in $(seq 1 50); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    if [ -n "${BENCH_KEEP:-}" ]; then
        log "scratch directory kept: $W"
    elif ! grep -q " $W" /proc/mounts; then
        rm -rf "$W"
    else
        log "something is still mounted below $W; not removing it"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$W" # fio and friends drop state files in the working directory

# Space: the images, the (d) target (up to both images), two copies of the
# big image in part 2, the sparse image and its copy, and a margin.
need_mib=$(( ($(numfmt --from=iec "$IMG_SIZE") * 2 + $(numfmt --from=iec "$BIG_SIZE") * 3) / 1048576 + 2048 ))
have_mib=$(df -Pm "$W" | awk 'NR == 2 { print $4 }')
[ "$have_mib" -ge "$need_mib" ] || die "$W: $have_mib MiB free, need about $need_mib MiB"

# ---- helpers --------------------------------------------------------------

now_ns() { date +%s%N; }

record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RES"; } # key run value

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# median KEY: median of the recorded values of KEY ("nan" if none).
median() {
    awk -F'\t' -v k="$1" '$1 == k && $3 != "nan" { v[n++] = $3 }
        END {
            if (!n) { print "nan"; exit }
            for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
            print (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2
        }' "$RES"
}

# ratio NUM DEN: median over runs of NUM/DEN, both from the same run.
ratio() {
    awk -F'\t' -v a="$1" -v b="$2" '
        $3 != "nan" && $1 == a { x[$2] = $3 }
        $3 != "nan" && $1 == b { y[$2] = $3 }
        END {
            for (r in x) if ((r in y) && y[r] > 0) v[n++] = x[r] / y[r]
            if (!n) { print "nan"; exit }
            for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
            print (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2
        }' "$RES"
}

maxval() {
    awk -F'\t' -v k="$1" '$1 == k && $3 != "nan" { if (!n++ || $3 > m) m = $3 } END { print n ? m : "nan" }' "$RES"
}

# fmt VALUE DECIMALS
fmt() { awk -v v="$1" -v d="$2" 'BEGIN { if (v == "nan") print "-"; else printf "%.*f\n", d, v }'; }
fmtk() { # IOPS as 12.3k
    awk -v v="$1" 'BEGIN { if (v == "nan") print "-"; else if (v >= 10000) printf "%.1fk\n", v / 1000; else printf "%.0f\n", v }'
}

# verdict VALUE OP LIMIT -> PASS / MISS / n/a
verdict() {
    awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
        if (v == "nan") { print "n/a"; exit }
        ok = (op == ">=") ? v >= l : (op == "<=") ? v <= l : (op == "<") ? v < l : 0
        print ok ? "PASS" : "MISS" }'
}

# ---- mirrorfs and qemu-storage-daemon ----------------------------------------

MF_PID=""
MF_MNT=""

# start_mirrorfs SRC MNT TGT STATE [EXTRA_OPTS]: daemon in the foreground
# (in our background); returns once the mount serves .mirror/status.
start_mirrorfs() {
    local src=$1 mnt=$2 tgt=$3 state=$4 extra=${5:-}
    mkdir -p "$mnt" "$state"
    "$MIRRORFS" -f -o "target=$tgt,state_dir=$state${extra:+,$extra}" "$src" "$mnt" \
        >>"$W/log/mirrorfs.log" 2>&1 &
    MF_PID=$!
    MF_MNT=$mnt
    track "$MF_PID"
    MOUNTS+=("$mnt")
    for _ in $(seq 1 2000); do
        [ -e "$mnt/.mirror/status" ] && return 0
        kill -0 "$MF_PID" 2>/dev/null || die "mirrorfs exited before mounting $mnt (see $W/log/mirrorfs.log)"
        sleep 0.01
    done
    die "mirrorfs did not mount $mnt"
}

status_get() { awk -v k="$2:" '$1 == k { print $2; exit }' "$1/.mirror/status" 2>/dev/null; }

# stop_mirrorfs EXPECTED_RC: unmount, wait for the daemon (it drains, or
# exits at once with on_unmount=cancel), warn unless it exits with EXPECTED_RC.
# Not in a $(...) subshell: only this shell can wait for its children.
stop_mirrorfs() {
    local _ rc=0
    for _ in $(seq 1 100); do
        fusermount3 -u "$MF_MNT" 2>/dev/null && break
        sleep 0.1 # EBUSY while something still has a file open
    done
    is_mounted "$MF_MNT" && die "cannot unmount $MF_MNT"
    wait "$MF_PID" || rc=$?
    untrack "$MF_PID"
    MF_PID=""
    [ "$rc" = "$1" ] || log "  mirrorfs exited with $rc (expected $1; see $W/log/mirrorfs.log)"
}

QSD_PID=""
# start_qsd_export IMAGE MOUNTFILE
start_qsd_export() {
    local img=$1 mnt=$2
    : >"$mnt"
    qemu-storage-daemon \
        --blockdev "driver=file,node-name=f0,filename=$img" \
        --export "type=fuse,id=e0,node-name=f0,mountpoint=$mnt,writable=on" \
        >>"$W/log/qsd.log" 2>&1 &
    QSD_PID=$!
    track "$QSD_PID"
    MOUNTS+=("$mnt")
    for _ in $(seq 1 2000); do
        is_mounted "$mnt" && return 0
        kill -0 "$QSD_PID" 2>/dev/null || die "qemu-storage-daemon exited (see $W/log/qsd.log)"
        sleep 0.01
    done
    die "qemu-storage-daemon did not export $mnt"
}

stop_qsd() {
    kill -TERM "$QSD_PID" 2>/dev/null || true
    wait "$QSD_PID" 2>/dev/null || true
    untrack "$QSD_PID"
    QSD_PID=""
}

# The QMP driver for QEMU's mirror job: start blockdev-mirror, print the
# CLOCK_REALTIME ns of BLOCK_JOB_READY, cancel (complete without pivot), quit.
cat >"$W/qmp_mirror.py" <<'EOF'
import json, socket, sys, time

path, src, tgt = sys.argv[1:4]
deadline = time.time() + 60
while True:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.005)
f = s.makefile("rw")
pending = []


def recv():
    line = f.readline()
    if not line:
        sys.exit("qmp: connection closed")
    return json.loads(line)


def cmd(name, **args):
    f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
    f.flush()
    while True:
        m = recv()
        if "return" in m:
            return m["return"]
        if "error" in m:
            sys.exit("qmp: %s: %s" % (name, m["error"]))
        pending.append(m)


def wait_event(name):
    while True:
        m = pending.pop(0) if pending else recv()
        ev = m.get("event")
        if ev == name:
            return m
        if ev in ("BLOCK_JOB_ERROR", "BLOCK_JOB_CANCELLED", "BLOCK_JOB_COMPLETED"):
            sys.exit("qmp: unexpected %s" % json.dumps(m))


recv()  # greeting
cmd("qmp_capabilities")
cmd("blockdev-mirror", **{"job-id": "m0", "device": src, "target": tgt, "sync": "full"})
wait_event("BLOCK_JOB_READY")
print(time.time_ns(), flush=True)
cmd("block-job-cancel", device="m0")
wait_event("BLOCK_JOB_COMPLETED")
cmd("quit")
EOF

# qemu_mirror SRC DST CACHEOPTS: sets QM_EL to the seconds from starting
# qemu-storage-daemon to BLOCK_JOB_READY ("nan" on failure).  Not in a
# $(...) subshell, so that the cleanup knows the daemon's pid.
QM_EL=""
qemu_mirror() {
    local src=$1 dst=$2 copts=$3 t0 ready pid sock=$W/qmp.sock
    rm -f "$dst" "$sock"
    truncate -s "$(stat -c %s "$src")" "$dst"
    drop_caches
    t0=$(now_ns)
    qemu-storage-daemon \
        --blockdev "driver=file,node-name=src,filename=$src${copts:+,$copts}" \
        --blockdev "driver=file,node-name=tgt,filename=$dst${copts:+,$copts}" \
        --chardev "socket,id=qmp0,path=$sock,server=on,wait=off" --monitor chardev=qmp0 \
        >>"$W/log/qsd-mirror.log" 2>&1 &
    pid=$!
    track "$pid"
    ready=$("$PY" "$W/qmp_mirror.py" "$sock" src tgt 2>>"$W/log/qsd-mirror.log") || ready=""
    [ -n "$ready" ] || kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    untrack "$pid"
    if [ -z "$ready" ]; then
        log "QEMU mirror failed (see $W/log/qsd-mirror.log)"
        QM_EL=nan
        return
    fi
    QM_EL=$(awk -v a="$ready" -v b="$t0" 'BEGIN { printf "%.3f\n", (a - b) / 1e9 }')
}

# ---- fio ----------------------------------------------------------------------

WL_KEYS=(seqw seqr randw4k randr4k randw64k)
declare -A WL_NAME=([seqw]="seq write 1M psync" [seqr]="seq read 1M psync"
    [randw4k]="rand write 4k qd16" [randr4k]="rand read 4k qd16" [randw64k]="rand write 64k qd4")
declare -A WL_ARGS=([seqw]="--rw=write --bs=1M --ioengine=psync --iodepth=1"
    [seqr]="--rw=read --bs=1M --ioengine=psync --iodepth=1"
    [randw4k]="--rw=randwrite --bs=4k --ioengine=libaio --iodepth=16"
    [randr4k]="--rw=randread --bs=4k --ioengine=libaio --iodepth=16"
    [randw64k]="--rw=randwrite --bs=64k --ioengine=libaio --iodepth=4")
declare -A WL_DIR=([seqw]=write [seqr]=read [randw4k]=write [randr4k]=read [randw64k]=write)
declare -A WL_UNIT=([seqw]=MiB/s [seqr]=MiB/s [randw4k]=IOPS [randr4k]=IOPS [randw64k]=IOPS)

# fio_cell CONFIG RUN WORKLOAD FILE: run one cell, record and log its value.
fio_cell() {
    local cfg=$1 run=$2 wl=$3 file=$4 json val
    json=$W/fio/$cfg-$wl-$run.json
    # Every cell starts from the same page-cache state whatever ran before:
    # caches dropped (buffered 4k writes were seen to vary 10x with the
    # state the page cache was left in), then the image read once, so
    # that the buffered paths (b), (c), (d) start warm as for a guest that
    # has been running; (a) is O_DIRECT and starts cold.
    drop_caches
    [ "$cfg" = a ] || cat "$W/img/test.img" >/dev/null
    # shellcheck disable=SC2086
    if fio --name="$wl" --filename="$file" --direct=1 --size="$IMG_SIZE" \
        --allow_file_create=0 --time_based --runtime="$FIO_RUNTIME" --ramp_time="$FIO_RAMP" \
        --norandommap --randrepeat=0 --output-format=json --output="$json" \
        ${WL_ARGS[$wl]} >>"$W/log/fio.log" 2>&1; then
        if [ "${WL_UNIT[$wl]}" = IOPS ]; then
            val=$(jq -r --arg d "${WL_DIR[$wl]}" '.jobs[0][$d].iops' "$json")
        else
            val=$(jq -r --arg d "${WL_DIR[$wl]}" '.jobs[0][$d].bw_bytes / 1048576' "$json")
        fi
    else
        log "fio failed: $cfg $wl run $run (see $W/log/fio.log)"
        val=nan
    fi
    record "fio.$cfg.$wl" "$run" "$val"
    log "  ($cfg) ${WL_NAME[$wl]}: $(fmt "$val" 0) ${WL_UNIT[$wl]}"
}

# wait_settled MNT: until the ready job has copied the guest's last writes.
wait_settled() {
    local _ d
    for _ in $(seq 1 600); do
        d=$(status_get "$1" dirty_bytes)
        [ "${d:-0}" = 0 ] && [ "$(status_get "$1" in_flight_bytes)" = 0 ] && return 0
        sleep 0.05
    done
    log "  the job did not settle in 30 s (dirty_bytes=$d)"
}

# ---- part 1: guest I/O ----------------------------------------------------------

part1() {
    local run wl rc ph t0 tr el
    log "part 1: guest I/O, $IMG_SIZE image, ${FIO_RUNTIME}s per cell, $RUNS run(s)"
    mkdir -p "$W/p1/srcB" "$W/p1/srcD"
    ln -f "$W/img/test.img" "$W/p1/srcB/test.img"
    ln -f "$W/img/test.img" "$W/p1/srcD/test.img"
    ln -f "$W/img/big.img" "$W/p1/srcD/big.img"
    for run in $(seq 1 "$RUNS"); do
        log "part 1, run $run/$RUNS: (a) straight on the source file system"
        for wl in "${WL_KEYS[@]}"; do
            fio_cell a "$run" "$wl" "$W/img/test.img"
        done

        log "part 1, run $run/$RUNS: (b) through mirrorfs, job ready"
        rm -rf "$W/p1/tgtB" "$W/p1/stateB"
        start_mirrorfs "$W/p1/srcB" "$W/p1/mntB" "$W/p1/tgtB" "$W/p1/stateB"
        "$MIRRORCTL" wait --ready --timeout 300 "$W/p1/mntB" >&2 || die "mirrorfs never got ready"
        for wl in "${WL_KEYS[@]}"; do
            fio_cell b "$run" "$wl" "$W/p1/mntB/test.img"
            wait_settled "$W/p1/mntB"
        done
        stop_mirrorfs 0
        rm -rf "$W/p1/tgtB"

        log "part 1, run $run/$RUNS: (c) through qemu-storage-daemon's FUSE export"
        start_qsd_export "$W/img/test.img" "$W/p1/qsd-export.img"
        for wl in "${WL_KEYS[@]}"; do
            fio_cell c "$run" "$wl" "$W/p1/qsd-export.img"
        done
        stop_qsd

        log "part 1, run $run/$RUNS: (d) through mirrorfs during the first pass (-o speed=$SPEED_D)"
        for wl in "${WL_KEYS[@]}"; do
            rm -rf "$W/p1/tgtD" "$W/p1/stateD"
            t0=$(now_ns)
            start_mirrorfs "$W/p1/srcD" "$W/p1/mntD" "$W/p1/tgtD" "$W/p1/stateD" \
                "speed=$SPEED_D,on_unmount=cancel"
            fio_cell d "$run" "$wl" "$W/p1/mntD/test.img"
            ph=$(status_get "$W/p1/mntD" phase)
            tr=$(status_get "$W/p1/mntD" transferred_bytes)
            el=$(( $(now_ns) - t0 ))
            record "d.inbulk" "$run.$wl" "$([ "$ph" = bulk ] && echo 1 || echo 0)"
            record "d.copyrate" "$run.$wl" "$(awk -v b="${tr:-0}" -v t="$el" 'BEGIN { print b / 1048576 / (t / 1e9) }')"
            [ "$ph" = bulk ] || log "  WARNING: the first pass had ended (phase $ph) before fio did"
            stop_mirrorfs 2
        done
        rm -rf "$W/p1/tgtD"
    done
}

# ---- part 2: first pass -----------------------------------------------------------

part2() {
    local run t0 t1 rc el bytes
    bytes=$(stat -c %s "$W/img/big.img")
    log "part 2: first pass of a $BIG_SIZE image of random data, cold cache, $RUNS run(s)"
    mkdir -p "$W/p2/src"
    ln -f "$W/img/big.img" "$W/p2/src/big.img"
    record p2.bytes 0 "$bytes"
    for run in $(seq 1 "$RUNS"); do
        # mirrorfs, default options: start of the daemon until phase ready.
        rm -rf "$W/p2/tgt" "$W/p2/state"
        drop_caches
        t0=$(now_ns)
        start_mirrorfs "$W/p2/src" "$W/p2/mnt" "$W/p2/tgt" "$W/p2/state"
        if "$MIRRORCTL" wait --ready --timeout 600 "$W/p2/mnt" >&2; then
            t1=$(now_ns)
            el=$(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.3f\n", (a - b) / 1e9 }')
        else
            el=nan
        fi
        stop_mirrorfs 0
        if [ "$run" = 1 ] && ! cmp -s "$W/img/big.img" "$W/p2/tgt/big.img"; then
            log "  WARNING: mirrorfs's target differs from the source"
        fi
        rm -rf "$W/p2/tgt"
        record p2.mirrorfs "$run" "$el"
        log "  mirrorfs: ${el} s"

        # qemu-img convert
        rm -f "$W/p2/convert.img"
        drop_caches
        t0=$(now_ns)
        if qemu-img convert -W -m 8 -t none -f raw -O raw "$W/img/big.img" "$W/p2/convert.img" \
            >>"$W/log/qemu-img.log" 2>&1; then
            t1=$(now_ns)
            el=$(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.3f\n", (a - b) / 1e9 }')
        else
            el=nan
        fi
        rm -f "$W/p2/convert.img"
        record p2.convert "$run" "$el"
        log "  qemu-img convert: ${el} s"

        # QEMU's mirror job, default cache mode (cache.direct=off, aio=threads)
        qemu_mirror "$W/img/big.img" "$W/p2/qmirror.img" ""
        el=$QM_EL
        if [ "$run" = 1 ] && [ "$el" != nan ] && ! cmp -s "$W/img/big.img" "$W/p2/qmirror.img"; then
            log "  WARNING: QEMU mirror's target differs from the source"
        fi
        rm -f "$W/p2/qmirror.img"
        record p2.qmirror "$run" "$el"
        log "  QEMU mirror (default cache): ${el} s"

        # The same with O_DIRECT and Linux AIO (what a cache=none guest gets)
        qemu_mirror "$W/img/big.img" "$W/p2/qmirror.img" "cache.direct=on,aio=native"
        el=$QM_EL
        rm -f "$W/p2/qmirror.img"
        record p2.qmirror_direct "$run" "$el"
        log "  QEMU mirror (cache.direct=on,aio=native): ${el} s"
    done
}

# ---- part 3: 1 TiB sparse image, peak RSS ------------------------------------------

part3() {
    local run t0 t1 el rc hwm sa ta
    log "part 3: $SPARSE_SIZE sparse image, $SPARSE_EXTENTS extents of $SPARSE_EXTENT_SIZE, $RUNS run(s)"
    mkdir -p "$W/p3/src"
    "$MKIMAGE" "$W/p3/src/sparse.img" "$SPARSE_SIZE" --data-extents "$SPARSE_EXTENTS" \
        --extent-size "$SPARSE_EXTENT_SIZE" --seed 1 >&2 || die "mkimage failed"
    for run in $(seq 1 "$RUNS"); do
        rm -rf "$W/p3/tgt" "$W/p3/state"
        drop_caches
        t0=$(now_ns)
        start_mirrorfs "$W/p3/src" "$W/p3/mnt" "$W/p3/tgt" "$W/p3/state"
        if "$MIRRORCTL" wait --ready --timeout 600 "$W/p3/mnt" >&2; then
            t1=$(now_ns)
            el=$(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.3f\n", (a - b) / 1e9 }')
        else
            el=nan
        fi
        # Peak RSS just before finishing.
        hwm=$(awk '/^VmHWM:/ { print $2 * 1024 }' "/proc/$MF_PID/status")
        stop_mirrorfs 0
        sa=$(stat -c '%b %B' "$W/p3/src/sparse.img" | awk '{ print $1 * $2 }')
        ta=$(stat -c '%b %B' "$W/p3/tgt/sparse.img" | awk '{ print $1 * $2 }')
        record p3.ready "$run" "$el"
        record p3.rss "$run" "$hwm"
        record p3.src_alloc "$run" "$sa"
        record p3.tgt_alloc "$run" "$ta"
        log "  ready in ${el} s, VmHWM $((hwm / 1024)) KiB, allocated: source $sa, target $ta bytes"
        rm -rf "$W/p3/tgt"
    done
}

# ---- run --------------------------------------------------------------------------

want() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }

if want 1 || want 2; then
    log "making images: test.img ($IMG_SIZE) and big.img ($BIG_SIZE) of random data"
    "$MKIMAGE" "$W/img/test.img" "$IMG_SIZE" --seed 2 >&2 || die "mkimage failed"
    "$MKIMAGE" "$W/img/big.img" "$BIG_SIZE" --seed 3 >&2 || die "mkimage failed"
fi
want 1 && part1
want 2 && part2
want 3 && part3
bench_t1=$(date +%s)

# ---- report -------------------------------------------------------------------------

report() {
    local wl unit fmtv rt mode commit dirty fs kernel cpu mem
    mode=$([ -n "$QUICK" ] && echo "QUICK (smoke test, not for comparison)" || echo full)
    commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$top" diff-index --quiet HEAD -- 2>/dev/null || dirty=" + local changes"
    fs=$(findmnt -n -o FSTYPE,SOURCE --target "$W" | awk '{ print $1 " on " $2 }')
    kernel=$(uname -r)
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
    echo "mirrorfs benchmark -- $(date -u '+%Y-%m-%d %H:%M UTC'), mode: $mode, runs: $RUNS"
    echo "machine: $(nproc) vCPU ($cpu), $mem RAM, Linux $kernel, scratch on $fs"
    echo "software: mirrorfs $commit${dirty:-} (binary built $MIRRORFS_BUILT), $(fio --version), $(qemu-img --version | awk 'NR == 1 { print "QEMU " $3 }'), libfuse $(dpkg-query -W -f='${Version}' libfuse3-3 2>/dev/null)"
    echo "load average: $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end (other work on the machine adds noise)"
    echo "cells: median of $RUNS run(s); ratios: median of the per-run ratios; page cache dropped before"
    echo "every cell, then the image read once for (b), (c), (d)"
    echo

    if want 1; then
        echo "1. Guest I/O: fio --direct=1 on a $IMG_SIZE fully allocated image of random data, ${FIO_RUNTIME}s per cell (+${FIO_RAMP}s ramp)"
        echo "   (a) straight on the source fs  (b) mirrorfs, job ready  (c) qemu-storage-daemon FUSE export (cache.direct=off)"
        echo "   (d) mirrorfs during the first pass: source dir also holds a $BIG_SIZE image, -o speed=$SPEED_D"
        printf '   %-20s %-6s %9s %9s %9s %9s %7s %7s %7s\n' workload unit "(a)" "(b)" "(c)" "(d)" "b/c" "b/a" "d/b"
        for wl in "${WL_KEYS[@]}"; do
            unit=${WL_UNIT[$wl]}
            fmtv=fmtk
            [ "$unit" = MiB/s ] && fmtv="fmt_0"
            printf '   %-20s %-6s %9s %9s %9s %9s %6sx %6sx %6sx\n' "${WL_NAME[$wl]}" "$unit" \
                "$($fmtv "$(median "fio.a.$wl")")" "$($fmtv "$(median "fio.b.$wl")")" \
                "$($fmtv "$(median "fio.c.$wl")")" "$($fmtv "$(median "fio.d.$wl")")" \
                "$(fmt "$(ratio "fio.b.$wl" "fio.c.$wl")" 2)" \
                "$(fmt "$(ratio "fio.b.$wl" "fio.a.$wl")" 2)" \
                "$(fmt "$(ratio "fio.d.$wl" "fio.b.$wl")" 2)"
        done
        local inbulk
        inbulk=$(awk -F'\t' '$1 == "d.inbulk" { s += $3; n++ } END { print s + 0 "/" n + 0 }' "$RES")
        echo "   (d): first pass still running when fio ended in $inbulk cells; copy rate meanwhile $(fmt "$(median d.copyrate)" 0) MiB/s (median)"
        echo
    fi
    if want 2; then
        local bytes m cv qm qd
        bytes=$(median p2.bytes)
        m=$(median p2.mirrorfs) cv=$(median p2.convert) qm=$(median p2.qmirror) qd=$(median p2.qmirror_direct)
        echo "2. First pass of a $BIG_SIZE image of random data to a local target (page cache dropped before each run)"
        printf '   %-52s %9s %9s %10s\n' tool seconds MiB/s "mirrorfs is"
        printf '   %-52s %9s %9s %10s\n' "mirrorfs (default options; start until phase ready)" "$(fmt "$m" 2)" \
            "$(awk -v b="$bytes" -v t="$m" 'BEGIN { if (t == "nan") print "-"; else printf "%.0f\n", b / 1048576 / t }')" ""
        printf '   %-52s %9s %9s %9sx\n' "qemu-img convert -W -m 8 -t none -f raw -O raw" "$(fmt "$cv" 2)" \
            "$(awk -v b="$bytes" -v t="$cv" 'BEGIN { if (t == "nan") print "-"; else printf "%.0f\n", b / 1048576 / t }')" \
            "$(fmt "$(ratio p2.convert p2.mirrorfs)" 2)"
        printf '   %-52s %9s %9s %9sx\n' "QEMU mirror job, qsd, default cache (until READY)" "$(fmt "$qm" 2)" \
            "$(awk -v b="$bytes" -v t="$qm" 'BEGIN { if (t == "nan") print "-"; else printf "%.0f\n", b / 1048576 / t }')" \
            "$(fmt "$(ratio p2.qmirror p2.mirrorfs)" 2)"
        printf '   %-52s %9s %9s %9sx\n' "  same, cache.direct=on,aio=native (info, no goal)" "$(fmt "$qd" 2)" \
            "$(awk -v b="$bytes" -v t="$qd" 'BEGIN { if (t == "nan") print "-"; else printf "%.0f\n", b / 1048576 / t }')" \
            "$(fmt "$(ratio p2.qmirror_direct p2.mirrorfs)" 2)"
        echo "   (\"mirrorfs is\" = other tool's time / mirrorfs's time: >1 means mirrorfs is faster)"
        echo
    fi
    if want 3; then
        local rd sa ta dev rss
        rd=$(median p3.ready) sa=$(median p3.src_alloc) ta=$(median p3.tgt_alloc) rss=$(maxval p3.rss)
        dev=$(awk -v s="$sa" -v t="$ta" 'BEGIN { if (s == "nan" || t == "nan" || s == 0) print "nan"; else { d = (t - s) / s * 100; print d < 0 ? -d : d } }')
        echo "3./4. $SPARSE_SIZE sparse image, $SPARSE_EXTENTS extents of $SPARSE_EXTENT_SIZE at random 64K-aligned offsets"
        echo "   time to ready: $(fmt "$rd" 2) s; allocated: source $sa B, target $ta B (difference $(fmt "$dev" 3) %)"
        echo "   daemon peak RSS (VmHWM just before finishing, max of runs): $(awk -v r="$rss" 'BEGIN { if (r == "nan") print "-"; else printf "%.1f MiB\n", r / 1048576 }')"
        echo
    fi

    echo "Goals"
    goal() { printf '   %-4s  %-52s %s\n' "$(verdict "$2" "$3" "$4")" "$1" "$5"; }
    if want 1; then
        for wl in "${WL_KEYS[@]}"; do
            rt=$(ratio "fio.b.$wl" "fio.c.$wl")
            goal "${WL_NAME[$wl]}: (b) >= 1.0x (c)" "$rt" ">=" 1.0 "$(fmt "$rt" 2)x"
        done
        for wl in seqw seqr; do
            rt=$(ratio "fio.b.$wl" "fio.a.$wl")
            goal "${WL_NAME[$wl]}: (b) >= 0.6x (a)" "$rt" ">=" 0.6 "$(fmt "$rt" 2)x"
        done
        rt=$(ratio fio.d.randw64k fio.b.randw64k)
        goal "rand write 64k qd4: (d) >= 0.5x (b)" "$rt" ">=" 0.5 "$(fmt "$rt" 2)x"
    fi
    if want 2; then
        rt=$(ratio p2.convert p2.mirrorfs)
        goal "first pass: >= 1.0x qemu-img convert" "$rt" ">=" 1.0 "$(fmt "$rt" 2)x"
        rt=$(ratio p2.qmirror p2.mirrorfs)
        goal "first pass: >= 2x QEMU mirror" "$rt" ">=" 2.0 "$(fmt "$rt" 2)x"
    fi
    if want 3; then
        goal "1 TiB sparse: ready < 10 s" "$rd" "<" 10 "$(fmt "$rd" 2) s"
        goal "1 TiB sparse: target allocation within 1% of source" "$dev" "<=" 1 "$(fmt "$dev" 3) %"
        goal "peak RSS <= 64 MiB" "$rss" "<=" 67108864 \
            "$(awk -v r="$rss" 'BEGIN { if (r == "nan") print "-"; else printf "%.1f MiB\n", r / 1048576 }')"
    fi
    echo
    echo "benchmark runtime: $(( (bench_t1 - bench_t0) / 60 )) min $(( (bench_t1 - bench_t0) % 60 )) s"
}
fmt_0() { fmt "$1" 0; }

if [ -n "${BENCH_OUT:-}" ]; then
    report | tee "$BENCH_OUT"
    cp "$RES" "$BENCH_OUT.tsv"
else
    report
fi
