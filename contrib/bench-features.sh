#!/bin/bash
# contrib/bench-features.sh - what mirrorfs's features cost, as ratios from
# one run (medians of BENCH_RUNS repetitions; both sides of a ratio are
# measured in the same repetition).  Called by contrib/bench.sh (part 5);
# runs alone too:
#
#   sudo contrib/bench-features.sh
#
#  a. write-blocking vs background: guest rand write 4k qd16 and 64k qd4
#     through a ready mirror (what write-blocking costs the guest);
#  b. crash-safe state on vs off (persist=on|off), same workloads
#     (goal: >= 0.90, i.e. at most 10% overhead);
#  c. first pass of a 1 GiB image of random data to an NBD target (qemu-nbd
#     on a file) vs `nbdcopy --flush` of the same file to the same server
#     (goal: >= 1.0).
#
# Environment: BENCH_RUNS (3), BENCH_FIO_RUNTIME (8 s), BENCH_DIR (/tmp),
# BENCH_NO_BUILD=1 (use src/ as built), BENCH_QUICK=1 (256M image, 1 run, 2 s).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/contrib/deps.sh"
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    MIRRORFS_PACKAGES+=(libnbd-bin qemu-utils fio)
    mirrorfs_install_deps
    mirrorfs_build "$top" >/dev/null
fi
MIRRORFS=$top/src/mirrorfs MIRRORCTL=$top/src/mirrorctl
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    RUNS=${BENCH_RUNS:-1} RT=${BENCH_FIO_RUNTIME:-2} SIZE_MB=256
else
    RUNS=${BENCH_RUNS:-3} RT=${BENCH_FIO_RUNTIME:-8} SIZE_MB=1024
fi
W=$(mktemp -d "${BENCH_DIR:-/tmp}/mirrorfs-features.XXXXXX")
DAEMON="" SERVER=""
cleanup() {
    set +e
    grep -q " $W/mnt " /proc/mounts && fusermount3 -u -z "$W/mnt"
    [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
    [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/src" "$W/mnt"
head -c $((SIZE_MB << 20)) /dev/urandom > "$W/src/disk.img"

median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# mount_ready TARGET OPTIONS...: start the daemon, wait for ready.
mount_ready() {
    local tgt=$1; shift
    rm -rf "$W/state"
    "$MIRRORFS" -f -o "target=$tgt,state_dir=$W/state" "$@" "$W/src" "$W/mnt" 2>>"$W/daemon.log" &
    DAEMON=$!
    for _ in $(seq 1 100); do [ -e "$W/mnt/.mirror/status" ] && break; sleep 0.05; done
    "$MIRRORCTL" wait --ready "$W/mnt" --timeout 600 >/dev/null
}
unmount() {
    fusermount3 -u "$W/mnt"
    wait "$DAEMON" || true
    DAEMON=""
}
iops() { # RW BS QD
    fio --name=g --filename="$W/mnt/disk.img" --rw="$1" --bs="$2" --iodepth="$3" \
        --ioengine=libaio --direct=1 --time_based --runtime="$RT" --size="${SIZE_MB}M" \
        --randrepeat=0 --norandommap --output-format=json 2>/dev/null |
        python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(int(j["write"]["iops"]+j["read"]["iops"]))'
}

declare -A R
for run in $(seq 1 "$RUNS"); do
    for cfg in background write-blocking persist-off; do
        rm -rf "$W/tgt"
        case $cfg in
            background) mount_ready "$W/tgt" ;;
            write-blocking) mount_ready "$W/tgt" -o copy_mode=write-blocking ;;
            persist-off) mount_ready "$W/tgt" -o persist=off ;;
        esac
        R[$cfg,4k,$run]=$(iops randwrite 4k 16)
        R[$cfg,64k,$run]=$(iops randwrite 64k 4)
        unmount
    done
    # c. NBD first pass vs nbdcopy, same server, same file.
    rm -f "$W/export.img" "$W/nbd.sock"
    truncate -s "${SIZE_MB}M" "$W/export.img"
    qemu-nbd -t -f raw -x disk.img -k "$W/nbd.sock" --cache=none --aio=native "$W/export.img" &
    SERVER=$!
    for _ in $(seq 1 100); do [ -S "$W/nbd.sock" ] && break; sleep 0.05; done
    sync; echo 3 > /proc/sys/vm/drop_caches
    t0=$(date +%s%N)
    mount_ready "nbd+unix:///{name}?socket=$W/nbd.sock"
    t1=$(date +%s%N)
    unmount
    sync; echo 3 > /proc/sys/vm/drop_caches
    t2=$(date +%s%N)
    nbdcopy --flush "$W/src/disk.img" "nbd+unix:///disk.img?socket=$W/nbd.sock"
    t3=$(date +%s%N)
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
    R[nbd,mirrorfs,$run]=$(( (SIZE_MB << 20) * 1000 / ((t1 - t0) / 1000) ))   # bytes/ms -> ~KB/s
    R[nbd,nbdcopy,$run]=$(( (SIZE_MB << 20) * 1000 / ((t3 - t2) / 1000) ))
done

cell() { for run in $(seq 1 "$RUNS"); do echo "${R[$1,$2,$run]}"; done | median; }
ratio() { # A B KEY: median over runs of A/B
    for run in $(seq 1 "$RUNS"); do
        awk -v a="${R[$1,$3,$run]}" -v b="${R[$2,$3,$run]}" 'BEGIN {printf "%.3f\n", a / b}'
    done | median
}
verdict() { awk -v r="$1" -v g="$2" 'BEGIN {print (r >= g) ? "PASS" : "MISS"}'; }

echo
echo "mirrorfs feature costs ($(date -u +%F), $(nproc) CPUs, image ${SIZE_MB} MiB, median of $RUNS)"
printf '%-28s %14s %14s %14s\n' "guest rand write (IOPS)" background write-blocking persist=off
for k in 4k 64k; do
    q=16; [ "$k" = 64k ] && q=4
    printf '%-28s %14s %14s %14s\n' "$k qd$q" "$(cell background $k)" "$(cell write-blocking $k)" "$(cell persist-off $k)"
done
for k in 4k 64k; do
    r=$(ratio write-blocking background $k)
    printf '  write-blocking / background, %-4s %6sx  (what write-blocking costs the guest)\n' "$k" "$r"
done
for k in 4k 64k; do
    r=$(ratio background persist-off $k)
    printf '  persist=on / persist=off, %-4s     %6sx  goal >= 0.90  %s\n' "$k" "$r" "$(verdict "$r" 0.90)"
done
mb() { awk -v v="$1" 'BEGIN {printf "%.0f", v * 1000 / 1048576}'; }
printf 'first pass to NBD (MiB/s):    mirrorfs %s, nbdcopy --flush %s\n' \
    "$(mb "$(cell nbd mirrorfs)")" "$(mb "$(cell nbd nbdcopy)")"
r=$(for run in $(seq 1 "$RUNS"); do awk -v a="${R[nbd,mirrorfs,$run]}" -v b="${R[nbd,nbdcopy,$run]}" 'BEGIN {printf "%.3f\n", a / b}'; done | median)
printf '  mirrorfs / nbdcopy              %6sx  goal >= 1.0   %s\n' "$r" "$(verdict "$r" 1.0)"
