#!/bin/bash
# contrib/bench.sh - the mirrorfs benchmark, in one command (root, Debian 12).
#
#   sudo contrib/bench.sh                 # full run: 3 rounds (4 in part 2), ~25 min on 2 vCPUs
#   sudo BENCH_QUICK=1 contrib/bench.sh   # smoke test: small sizes, 1 round, ~3 min
#
# Installs what it needs with apt-get (fio, qemu-utils, qemu-system-common for
# qemu-storage-daemon, jq, python3, fuse3, the build dependencies), builds
# mirrorfs if needed, builds libfuse's passthrough_hp example from Debian's
# fuse3 source package (see "passthrough_hp" below), then measures:
#
#  1. guest I/O: fio O_DIRECT on fully allocated images of random data, five
#     workloads, through five setups, each on its own copy of the image:
#     (a) straight on the source file system, (b) through mirrorfs with the
#     job ready (target on the same file system), (c) through
#     qemu-storage-daemon's FUSE export, (d) through passthrough_hp, and
#     (e) through mirrorfs while the first pass is still running (a second,
#     bigger image in its source directory and -o speed=BENCH_SPEED_E keep it
#     running for the whole fio run; started afresh for each of its cells),
#     (f) through mirrorfs after a pivot (the job's target served, no job).
#     (b) to (d) and (f) stay mounted side by side for the whole part.  mirrorfs
#     gets -o threads=N and passthrough_hp --num-threads=N, with the same N;
#  2. the first pass of a big image of random data, twice: cold (caches
#     dropped before each copy) and warm (the source rewritten with dd just
#     before each copy and still in the page cache, mostly dirty): mirrorfs
#     (start until phase ready) vs `qemu-img convert -W -m 8 -t none` vs
#     QEMU's mirror job (blockdev-mirror sync=full in qemu-storage-daemon,
#     over QMP, until BLOCK_JOB_READY) with QEMU's default cache mode; the
#     same job with cache.direct=on,aio=native is shown for information;
#  3. a 1 TiB sparse image with 256 MiB of data in 256 scattered extents:
#     time to ready, allocated bytes of target vs source;
#  4. the daemon's peak RSS (VmHWM) in case 3.
#
# Rounds: every workload of part 1 and every copy of part 2 runs BENCH_RUNS
# rounds in rotation over the setups (round 1: a b c d e, round 2: b c d e a,
# ...), so that no setup always runs first or last after a cache drop.  Every
# cell is the median of the rounds; every ratio is the median of the
# per-round ratios (both sides measured in the same round, seconds apart),
# so slow drift of the machine cancels out.  Part 2 runs BENCH_P2_RUNS
# rounds, by default one per tool (4), so that every tool copies once in
# every position of the rotation: on this project's virtual disk a 4 GiB
# copy's time moves by up to 1.5x from one round to the next and drifts
# through the part, and a tool that always ran late would carry that drift.
# The goals are printed next to the numbers, each marked PASS or MISS.
#
# passthrough_hp: libfuse's example/passthrough_hp.cc from `apt-get source
# fuse3` (the version of the installed libfuse3-dev), built with g++ into
# BENCH_CACHE (default /var/cache/mirrorfs-bench) once and reused.  When apt
# has no deb-src entry, a twin of Debian's own entries is added as
# /etc/apt/sources.list.d/mirrorfs-bench-src.sources (or .list), once; it is
# left in place.  Two patches, both checked: the backing opens drop O_DIRECT
# (libfuse 3.14's buffers are not aligned, so an O_DIRECT backing fd fails
# every write with EINVAL), and --num-threads caps the threads (in 3.14 it
# only sets the idle threads, and the pool grows to libfuse's default of 10;
# later releases cap it).  It runs with --nocache.
#
# Environment:
#   BENCH_QUICK=1       small sizes, 1 round, 2 s fio runs (smoke test)
#   BENCH_DIR=DIR       parent of the scratch directory (default /tmp; it
#                       must be on the file system under test).  A fresh
#                       DIR/mirrorfs-bench.XXXXXX is made and removed at exit.
#   BENCH_CACHE=DIR     where passthrough_hp is built and kept
#                       (default /var/cache/mirrorfs-bench)
#   BENCH_RUNS=N        rounds of parts 1 and 3 (default 3; quick 1)
#   BENCH_P2_RUNS=N     rounds of part 2 (default 4, one per tool; quick 1)
#   BENCH_FIO_RUNTIME=S seconds per fio cell (default 10; quick 2)
#   BENCH_THREADS=N     FUSE threads of mirrorfs and passthrough_hp (default:
#                       what mirrorfs's threads=auto picks, one per CPU, >= 2)
#   BENCH_SPEED_E=RATE  -o speed= for the (e) column (default 256M; quick 128M)
#   BENCH_PARTS="1 2 3" which parts to run (default all)
#   BENCH_OUT=FILE      also write the report to FILE and raw numbers to FILE.tsv
#   BENCH_NO_BUILD=1    use src/mirrorfs as it is and passthrough_hp as cached
#                       (no apt-get, no make; no (d) column if it is not cached)
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
    IMG_SIZE=256M BIG_SIZE=1G RUNS=${BENCH_RUNS:-1} P2_RUNS=${BENCH_P2_RUNS:-1}
    FIO_RUNTIME=${BENCH_FIO_RUNTIME:-2}
    FIO_RAMP=0 SPEED_E=${BENCH_SPEED_E:-128M}
else
    IMG_SIZE=1G BIG_SIZE=4G RUNS=${BENCH_RUNS:-3} P2_RUNS=${BENCH_P2_RUNS:-4}
    FIO_RUNTIME=${BENCH_FIO_RUNTIME:-10}
    FIO_RAMP=1 SPEED_E=${BENCH_SPEED_E:-256M}
fi
SPARSE_SIZE=1T SPARSE_EXTENTS=256 SPARSE_EXTENT_SIZE=1M
PARTS=${BENCH_PARTS:-1 2 3}
CACHE=${BENCH_CACHE:-/var/cache/mirrorfs-bench}
# mirrorfs's threads=auto: one per online CPU, at least 2 (src/main.c).
THREADS=${BENCH_THREADS:-$(n=$(getconf _NPROCESSORS_ONLN); echo $((n < 2 ? 2 : n)))}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "bench: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run me as root (mounts, drop_caches, apt-get)"
case "$THREADS" in '' | *[!0-9]* | 0) die "BENCH_THREADS must be a positive number" ;; esac
case "$RUNS" in '' | *[!0-9]* | 0) die "BENCH_RUNS must be a positive number" ;; esac
case "$P2_RUNS" in '' | *[!0-9]* | 0) die "BENCH_P2_RUNS must be a positive number" ;; esac
want() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }

# ---- dependencies and build -------------------------------------------------

# g++, dpkg-dev (dpkg-source for apt-get source) and libfuse3-dev: passthrough_hp.
BENCH_PACKAGES=(fio qemu-utils qemu-system-common jq python3 fuse3 util-linux coreutils
    g++ dpkg-dev libfuse3-dev pkg-config xz-utils)

apt_install_missing() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q </dev/null >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >&2
}

if [ -z "${BENCH_NO_BUILD:-}" ]; then
    . "$top/contrib/deps.sh"
    mirrorfs_install_deps >&2
    apt_install_missing "${BENCH_PACKAGES[@]}"
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

# ---- passthrough_hp, from Debian's fuse3 source package ----------------------

# Is there any deb-src entry in apt's configuration?
have_deb_src() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] && grep -Eq '^[[:space:]]*deb-src[[:space:]]' "$f" && return 0
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk 'tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb-src") f = 1 }
            END { exit !f }' "$f" && return 0
    done
    return 1
}

# Add a deb-src twin of Debian's own entries (deb822 debian.sources, or the
# one-line sources.list) in a file of our own.  Returns 1 if there is
# nothing to copy.
add_deb_src() {
    local d=/etc/apt/sources.list.d out
    if [ -f "$d/debian.sources" ]; then
        out=$d/mirrorfs-bench-src.sources
        {
            echo "# Added by mirrorfs's contrib/bench.sh, for apt-get source fuse3:"
            echo "# source twins of the entries in debian.sources."
            echo
            # One stanza per paragraph; keep those of Types deb, enabled.
            awk 'BEGIN { RS = ""; ORS = "\n\n" }
                {
                    n = split($0, l, "\n"); deb = 0; off = 0
                    for (i = 1; i <= n; i++) {
                        if (tolower(l[i]) ~ /^types:/) {
                            m = split(l[i], t, /[[:space:]]+/)
                            for (j = 2; j <= m; j++) if (t[j] == "deb") deb = 1
                        }
                        if (tolower(l[i]) ~ /^enabled:[[:space:]]*no/) off = 1
                    }
                    if (!deb || off) next
                    s = ""
                    for (i = 1; i <= n; i++)
                        s = s (tolower(l[i]) ~ /^types:/ ? "Types: deb-src" : l[i]) (i < n ? "\n" : "")
                    print s
                }' "$d/debian.sources"
        } >"$out.tmp"
    elif [ -f /etc/apt/sources.list ] && grep -Eq '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list; then
        out=$d/mirrorfs-bench-src.list
        {
            echo "# Added by mirrorfs's contrib/bench.sh, for apt-get source fuse3:"
            echo "# source twins of the deb lines in /etc/apt/sources.list."
            sed -nE 's/^[[:space:]]*deb([[:space:]])/deb-src\1/p' /etc/apt/sources.list
        } >"$out.tmp"
    else
        return 1
    fi
    grep -Eq '^(Types: deb-src|deb-src )' "$out.tmp" || { rm -f "$out.tmp"; return 1; }
    mv "$out.tmp" "$out"
    log "apt had no deb-src entry: added $out (source twins of Debian's entries; it stays)"
}

# build_passthrough_hp: sets PTHP to the cached binary, building it first if
# it is missing.  All output goes to $CACHE/build.log.
PTHP=""
build_passthrough_hp() {
    local ver upver srcdir bin blog=$CACHE/build.log b=$CACHE/build
    ver=$(dpkg-query -W -f='${Version}' libfuse3-dev 2>/dev/null) ||
        die "libfuse3-dev is not installed"
    bin=$CACHE/passthrough_hp-$ver
    if [ -x "$bin" ]; then
        PTHP=$bin
        return 0
    fi
    mkdir -p "$CACHE"
    : >"$blog"
    log "building passthrough_hp from Debian's fuse3 $ver source (log: $blog)"
    upver=${ver#*:}
    upver=${upver%-*}
    srcdir=$CACHE/src/fuse3-$upver
    if [ ! -f "$srcdir/example/passthrough_hp.cc" ]; then
        if ! have_deb_src; then
            add_deb_src || die "no deb-src entry, and no Debian entries to copy (add one for fuse3)"
            apt-get update -q </dev/null >>"$blog" 2>&1 || die "apt-get update failed (see $blog)"
        fi
        if ! apt-get source --print-uris "fuse3=$ver" </dev/null >>"$blog" 2>&1; then
            apt-get update -q </dev/null >>"$blog" 2>&1 || die "apt-get update failed (see $blog)"
        fi
        rm -rf "$CACHE/src"
        mkdir -p "$CACHE/src"
        (cd "$CACHE/src" && apt-get source "fuse3=$ver" </dev/null) >>"$blog" 2>&1 ||
            die "apt-get source fuse3=$ver failed (see $blog)"
        [ -f "$srcdir/example/passthrough_hp.cc" ] || die "$srcdir/example/passthrough_hp.cc is missing"
    fi
    # The patched copy goes next to the pristine source; cxxopts.hpp is
    # taken from the source's example/.
    rm -rf "$b"
    mkdir -p "$b"
    sed -E -e 's/& ~O_NOFOLLOW\b/\& ~(O_NOFOLLOW | O_DIRECT)/g' \
        -e 's/^([[:space:]]*)fuse_loop_cfg_set_idle_threads\(loop_config, fs\.num_threads\);/\1{ fuse_loop_cfg_set_idle_threads(loop_config, fs.num_threads); fuse_loop_cfg_set_max_threads(loop_config, fs.num_threads); }/' \
        "$srcdir/example/passthrough_hp.cc" >"$b/passthrough_hp.cc"
    # Both backing opens (open and create) must have lost O_DIRECT, and the
    # thread cap must be in; otherwise the source has changed under us.
    if [ "$(grep -c '& ~(O_NOFOLLOW | O_DIRECT)' "$b/passthrough_hp.cc")" != 2 ] ||
        grep -q '& ~O_NOFOLLOW' "$b/passthrough_hp.cc"; then
        die "the O_DIRECT patch did not apply to $srcdir/example/passthrough_hp.cc"
    fi
    grep -q 'fuse_loop_cfg_set_max_threads(loop_config, fs.num_threads)' "$b/passthrough_hp.cc" ||
        die "the --num-threads patch did not apply to $srcdir/example/passthrough_hp.cc"
    diff -u "$srcdir/example/passthrough_hp.cc" "$b/passthrough_hp.cc" >>"$blog" || true
    # What meson's config.h would say on Linux with glibc.
    # shellcheck disable=SC2046
    g++ -std=c++17 -O2 -pthread -DHAVE_UTIMENSAT -DHAVE_POSIX_FALLOCATE -DHAVE_SETXATTR \
        -I"$srcdir/example" $(pkg-config --cflags fuse3) \
        -o "$bin.tmp" "$b/passthrough_hp.cc" $(pkg-config --libs fuse3) >>"$blog" 2>&1 ||
        die "compiling passthrough_hp failed (see $blog)"
    mv "$bin.tmp" "$bin"
    PTHP=$bin
    log "passthrough_hp built: $bin"
}

if want 1; then
    if [ -z "${BENCH_NO_BUILD:-}" ]; then
        build_passthrough_hp
    else
        v=$(dpkg-query -W -f='${Version}' libfuse3-dev 2>/dev/null || true)
        [ -x "$CACHE/passthrough_hp-$v" ] && PTHP=$CACHE/passthrough_hp-$v
        [ -n "$PTHP" ] || log "no cached passthrough_hp in $CACHE: the (d) column is left out"
    fi
fi

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
if [ -n "$PTHP" ]; then
    PTHP_NAME=$(basename "$PTHP")
    cp "$PTHP" "$W/bin/passthrough_hp"
    PTHP=$W/bin/passthrough_hp
fi

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

# Space.  Part 1: six copies of the image, the targets of (b) and (f) and
# that of (e) (up to both of its images), and the big image.  Part 2: the big image,
# its source copy and one target at a time.  Part 1's files go before part 2.
img_b=$(numfmt --from=iec "$IMG_SIZE") big_b=$(numfmt --from=iec "$BIG_SIZE")
p1_b=$((img_b * 9 + big_b * 2)) p2_b=$((big_b * 3))
need_mib=$(( (p1_b > p2_b ? p1_b : p2_b) / 1048576 + 2048 ))
have_mib=$(df -Pm "$W" | awk 'NR == 2 { print $4 }')
[ "$have_mib" -ge "$need_mib" ] || die "$W: $have_mib MiB free, need about $need_mib MiB"

# ---- helpers --------------------------------------------------------------

now_ns() { date +%s%N; }
secs_since() { awk -v a="$(now_ns)" -v b="$1" 'BEGIN { printf "%.3f\n", (a - b) / 1e9 }'; }

record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RES"; } # key round value

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# rotate K WORD...: the words, rotated left by K (round r runs rotate r-1).
rotate() {
    local k=$1 n i
    shift
    n=$#
    local a=("$@")
    for ((i = 0; i < n; i++)); do
        printf '%s ' "${a[$(((i + k) % n))]}"
    done
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

# ratio NUM DEN: median over rounds of NUM/DEN, both from the same round.
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

# ratios NUM DEN: the per-round ratios, in round order ("1.02 0.97 1.10").
ratios() {
    awk -F'\t' -v a="$1" -v b="$2" '
        $3 != "nan" && $1 == a { x[$2] = $3 }
        $3 != "nan" && $1 == b { y[$2] = $3 }
        END {
            for (r = 1; r <= 1000; r++) if ((r in x) && (r in y) && y[r] > 0) s = s sprintf("%s%.2f", s == "" ? "" : " ", x[r] / y[r])
            print s == "" ? "-" : s
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
fmt_0() { fmt "$1" 0; }

# verdict VALUE OP LIMIT -> PASS / MISS / n/a
verdict() {
    awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
        if (v == "nan") { print "n/a"; exit }
        ok = (op == ">=") ? v >= l : (op == "<=") ? v <= l : (op == "<") ? v < l : 0
        print ok ? "PASS" : "MISS" }'
}

# ---- mirrorfs, qemu-storage-daemon, passthrough_hp -------------------------------

# start_mirrorfs NAME SRC MNT TGT STATE [EXTRA_OPTS]: daemon in the foreground
# (in our background), log in log/mirrorfs-NAME.log; sets MF_PID and returns
# once the mount serves .mirror/status.
MF_PID=""
start_mirrorfs() {
    local name=$1 src=$2 mnt=$3 tgt=$4 state=$5 extra=${6:-}
    mkdir -p "$mnt" "$state"
    "$MIRRORFS" -f -o "target=$tgt,state_dir=$state${extra:+,$extra}" "$src" "$mnt" \
        >>"$W/log/mirrorfs-$name.log" 2>&1 &
    MF_PID=$!
    track "$MF_PID"
    MOUNTS+=("$mnt")
    for _ in $(seq 1 2000); do
        [ -e "$mnt/.mirror/status" ] && return 0
        kill -0 "$MF_PID" 2>/dev/null || die "mirrorfs exited before mounting $mnt (see $W/log/mirrorfs-$name.log)"
        sleep 0.01
    done
    die "mirrorfs did not mount $mnt"
}

status_get() { awk -v k="$2:" '$1 == k { print $2; exit }' "$1/.mirror/status" 2>/dev/null; }

# unmount_wait MNT PID EXPECTED_RC WHAT: unmount, wait for the daemon (mirrorfs
# drains, or exits at once with on_unmount=cancel), warn unless it exits with
# EXPECTED_RC.  Not in a $(...) subshell: only this shell can wait for its
# children.
unmount_wait() {
    local mnt=$1 pid=$2 want_rc=$3 what=$4 _ rc=0
    for _ in $(seq 1 100); do
        fusermount3 -u "$mnt" 2>/dev/null && break
        sleep 0.1 # EBUSY while something still has a file open
    done
    is_mounted "$mnt" && die "cannot unmount $mnt"
    wait "$pid" || rc=$?
    untrack "$pid"
    [ "$rc" = "$want_rc" ] || log "  $what exited with $rc (expected $want_rc; see $W/log/)"
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

# start_pthp SRC MNT: passthrough_hp in the foreground (in our background);
# sets PT_PID.
PT_PID=""
start_pthp() {
    local src=$1 mnt=$2
    mkdir -p "$mnt"
    "$PTHP" --foreground --nocache --num-threads="$THREADS" "$src" "$mnt" \
        >>"$W/log/passthrough_hp.log" 2>&1 &
    PT_PID=$!
    track "$PT_PID"
    MOUNTS+=("$mnt")
    for _ in $(seq 1 2000); do
        is_mounted "$mnt" && return 0
        kill -0 "$PT_PID" 2>/dev/null || die "passthrough_hp exited (see $W/log/passthrough_hp.log)"
        sleep 0.01
    done
    die "passthrough_hp did not mount $mnt"
}

# The QMP driver for QEMU's mirror job: start blockdev-mirror, print the
# CLOCK_REALTIME ns of BLOCK_JOB_READY, cancel (complete without pivot), quit.
cat >"$W/qmp_mirror.py" <<'PYEOF'
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
PYEOF

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

# fio_cell SETUP ROUND WORKLOAD FILE BACKING: run one cell, record and log
# its value.  BACKING is the setup's own copy of the image on ext4.
fio_cell() {
    local cfg=$1 run=$2 wl=$3 file=$4 backing=$5 json val
    json=$W/fio/$cfg-$wl-$run.json
    # Every cell starts from the same page-cache state whatever ran before:
    # caches dropped (buffered 4k writes were seen to vary 10x with the
    # state the page cache was left in), then the setup's image read once,
    # so that the FUSE setups, whose backing I/O is buffered, start warm as
    # for a guest that has been running; (a) is O_DIRECT and starts cold.
    drop_caches
    [ "$cfg" = a ] || cat "$backing" >/dev/null
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
        log "fio failed: $cfg $wl round $run (see $W/log/fio.log)"
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

P1_SETUPS=()
B_PID="" B_MNT="" F_PID=""

# p1_cell SETUP ROUND WORKLOAD
p1_cell() {
    local s=$1 run=$2 wl=$3 t0 ph tr el e_pid
    case $s in
        a) fio_cell a "$run" "$wl" "$W/p1/a/test.img" "$W/p1/a/test.img" ;;
        b)
            fio_cell b "$run" "$wl" "$B_MNT/test.img" "$W/p1/srcB/test.img"
            wait_settled "$B_MNT"
            ;;
        c) fio_cell c "$run" "$wl" "$W/p1/qsd-export.img" "$W/p1/c/test.img" ;;
        d) fio_cell d "$run" "$wl" "$W/p1/mntD/test.img" "$W/p1/srcD/test.img" ;;
        f) fio_cell f "$run" "$wl" "$W/p1/mntF/test.img" "$W/p1/tgtF/test.img" ;;
        e)
            # A fresh first pass for each cell, so that it runs through fio.
            rm -rf "$W/p1/tgtE" "$W/p1/stateE"
            t0=$(now_ns)
            start_mirrorfs E "$W/p1/srcE" "$W/p1/mntE" "$W/p1/tgtE" "$W/p1/stateE" \
                "threads=$THREADS,speed=$SPEED_E,on_unmount=cancel"
            e_pid=$MF_PID
            fio_cell e "$run" "$wl" "$W/p1/mntE/test.img" "$W/p1/srcE/test.img"
            ph=$(status_get "$W/p1/mntE" phase)
            tr=$(status_get "$W/p1/mntE" transferred_bytes)
            el=$(($(now_ns) - t0))
            record "e.inbulk" "$run.$wl" "$([ "$ph" = bulk ] && echo 1 || echo 0)"
            record "e.copyrate" "$run.$wl" "$(awk -v b="${tr:-0}" -v t="$el" 'BEGIN { print b / 1048576 / (t / 1e9) }')"
            [ "$ph" = bulk ] || log "  WARNING: the first pass had ended (phase $ph) before fio did"
            unmount_wait "$W/p1/mntE" "$e_pid" 2 "mirrorfs (e)"
            rm -rf "$W/p1/tgtE"
            ;;
    esac
}

part1() {
    local run wl s d d_pid=""
    P1_SETUPS=(a b c)
    [ -n "$PTHP" ] && P1_SETUPS+=(d)
    P1_SETUPS+=(e f)
    log "part 1: guest I/O, $IMG_SIZE images, ${FIO_RUNTIME}s per cell, $RUNS round(s) over ${P1_SETUPS[*]}, $THREADS FUSE threads"
    for d in a srcB c srcD srcE srcF; do
        mkdir -p "$W/p1/$d"
        cp "$W/img/test.img" "$W/p1/$d/test.img"
    done
    ln -f "$W/img/big.img" "$W/p1/srcE/big.img"

    log "part 1: mounting (b) mirrorfs (waiting for ready), (c) qemu-storage-daemon${PTHP:+, (d) passthrough_hp}"
    B_MNT=$W/p1/mntB
    start_mirrorfs B "$W/p1/srcB" "$B_MNT" "$W/p1/tgtB" "$W/p1/stateB" "threads=$THREADS"
    B_PID=$MF_PID
    "$MIRRORCTL" wait --ready --timeout 300 "$B_MNT" >&2 || die "mirrorfs (b) never got ready"
    # (f): a job that pivoted: the mount now serves its target, no job.
    start_mirrorfs F "$W/p1/srcF" "$W/p1/mntF" "$W/p1/tgtF" "$W/p1/stateF" "threads=$THREADS"
    F_PID=$MF_PID
    "$MIRRORCTL" wait --ready --timeout 300 "$W/p1/mntF" >&2 || die "mirrorfs (f) never got ready"
    "$MIRRORCTL" pivot "$W/p1/mntF" >&2 || die "mirrorfs (f) did not pivot"
    record f.pause 0 "$(status_get "$W/p1/mntF" pivot_pause_ms)"
    rm -f "$W/p1/srcF/test.img"
    start_qsd_export "$W/p1/c/test.img" "$W/p1/qsd-export.img"
    if [ -n "$PTHP" ]; then
        start_pthp "$W/p1/srcD" "$W/p1/mntD"
        d_pid=$PT_PID
    fi

    for wl in "${WL_KEYS[@]}"; do
        for run in $(seq 1 "$RUNS"); do
            log "part 1, ${WL_NAME[$wl]}, round $run/$RUNS"
            for s in $(rotate $((run - 1)) "${P1_SETUPS[@]}"); do
                p1_cell "$s" "$run" "$wl"
            done
        done
    done

    # How many threads each FUSE server ended with (passthrough_hp 3.14
    # would grow to 10 without the patch).
    record mf.threads 0 "$(awk '/^Threads:/ { print $2 }' "/proc/$B_PID/status")"
    if [ -n "$PTHP" ]; then
        record pt.threads 0 "$(awk '/^Threads:/ { print $2 }' "/proc/$d_pid/status")"
        unmount_wait "$W/p1/mntD" "$d_pid" 0 passthrough_hp
    fi
    stop_qsd
    unmount_wait "$B_MNT" "$B_PID" 0 "mirrorfs (b)"
    unmount_wait "$W/p1/mntF" "$F_PID" 0 "mirrorfs (f)"
    rm -rf "$W/p1"
}

# ---- part 2: first pass, cold and warm --------------------------------------------

P2_TOOLS=(mirrorfs convert qmirror qmirror_direct)
declare -A P2_NAME=([mirrorfs]="mirrorfs (default options; start until phase ready)"
    [convert]="qemu-img convert -W -m 8 -t none -f raw -O raw"
    [qmirror]="QEMU mirror job, qsd, default cache (until READY)"
    [qmirror_direct]="  same, cache.direct=on,aio=native (info, no goal)")
p2_name() { local n=${P2_NAME[$1]}; echo "${n#"${n%%[! ]*}"}"; } # without the indent

# p2_prepare MODE: the source's cache state just before a copy starts.
# cold: nothing of it in the page cache.  warm: the source just rewritten
# (as by a guest that wrote it), so it is in the page cache and mostly
# dirty; the sync first settles what the previous copy left.
p2_prepare() {
    if [ "$1" = cold ]; then
        drop_caches
    else
        sync
        dd if="$W/img/big.img" of="$W/p2/src/big.img" bs=1M conv=notrunc status=none
    fi
}

# qemu_mirror SRC DST CACHEOPTS MODE: sets QM_EL to the seconds from starting
# qemu-storage-daemon to BLOCK_JOB_READY ("nan" on failure).  Not in a
# $(...) subshell, so that the cleanup knows the daemon's pid.
QM_EL="" QM_D0=""
qemu_mirror() {
    local src=$1 dst=$2 copts=$3 mode=$4 t0 ready pid sock=$W/qmp.sock
    rm -f "$dst" "$sock"
    truncate -s "$(stat -c %s "$src")" "$dst"
    p2_prepare "$mode"
    QM_D0=$(disk_counters)
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

# The block device under $W, as /proc/diskstats names it ("" if none is
# found: then no disk counters are reported).  Each copy's requests and bytes
# show whether every tool moved the same data in a like number of requests.
P2_DEV=""
p2_find_dev() {
    local src
    src=$(df --output=source "$W" | awk 'NR == 2')
    src=$(readlink -f "$src" 2>/dev/null || echo "$src")
    src=${src#/dev/}
    awk -v d="$src" '$3 == d { f = 1 } END { exit !f }' /proc/diskstats && P2_DEV=$src
}
# disk_counters: "reads sectors_read writes sectors_written" of P2_DEV.
disk_counters() {
    awk -v d="$P2_DEV" '$3 == d { print $4, $6, $8, $10 }' /proc/diskstats
}
# p2_disk KEY ROUND BEFORE: records KEY.{rreq,rmib,wreq,wmib} of ROUND, the
# counters since BEFORE (a disk_counters line).
p2_disk() {
    local key=$1 run=$2 before=$3 after r0 rs0 w0 ws0 r1 rs1 w1 ws1
    [ -n "$P2_DEV" ] || return 0
    after=$(disk_counters)
    read -r r0 rs0 w0 ws0 <<<"$before"
    read -r r1 rs1 w1 ws1 <<<"$after"
    record "$key.rreq" "$run" $((r1 - r0))
    record "$key.rmib" "$run" $(((rs1 - rs0) / 2048))
    record "$key.wreq" "$run" $((w1 - w0))
    record "$key.wmib" "$run" $(((ws1 - ws0) / 2048))
}

# p2_copy MODE ROUND TOOL: one timed first pass; records p2.MODE.TOOL (and
# the disk counters of that copy as p2.MODE.TOOL.*).
p2_copy() {
    local mode=$1 run=$2 tool=$3 src=$W/p2/src/big.img t0 el="" pid d0
    case $tool in
        mirrorfs)
            rm -rf "$W/p2/tgt" "$W/p2/state"
            p2_prepare "$mode"
            d0=$(disk_counters)
            t0=$(now_ns)
            start_mirrorfs P2 "$W/p2/src" "$W/p2/mnt" "$W/p2/tgt" "$W/p2/state"
            pid=$MF_PID
            if "$MIRRORCTL" wait --ready --timeout 600 "$W/p2/mnt" >&2; then
                el=$(secs_since "$t0")
            else
                el=nan
            fi
            p2_disk "p2.$mode.$tool" "$run" "$d0"
            unmount_wait "$W/p2/mnt" "$pid" 0 mirrorfs
            if [ "$run" = 1 ] && ! cmp -s "$W/img/big.img" "$W/p2/tgt/big.img"; then
                log "  WARNING: mirrorfs's target differs from the source ($mode)"
            fi
            rm -rf "$W/p2/tgt"
            ;;
        convert)
            rm -f "$W/p2/convert.img"
            p2_prepare "$mode"
            d0=$(disk_counters)
            t0=$(now_ns)
            if qemu-img convert -W -m 8 -t none -f raw -O raw "$src" "$W/p2/convert.img" \
                >>"$W/log/qemu-img.log" 2>&1; then
                el=$(secs_since "$t0")
            else
                el=nan
            fi
            p2_disk "p2.$mode.$tool" "$run" "$d0"
            rm -f "$W/p2/convert.img"
            ;;
        qmirror | qmirror_direct)
            # QEMU's default cache mode (cache.direct=off, aio=threads), or
            # O_DIRECT with Linux AIO (what a cache=none guest gets).
            qemu_mirror "$src" "$W/p2/qmirror.img" \
                "$([ "$tool" = qmirror_direct ] && echo cache.direct=on,aio=native)" "$mode"
            el=$QM_EL
            p2_disk "p2.$mode.$tool" "$run" "$QM_D0"
            if [ "$run" = 1 ] && [ "$tool" = qmirror ] && [ "$el" != nan ] &&
                ! cmp -s "$W/img/big.img" "$W/p2/qmirror.img"; then
                log "  WARNING: QEMU mirror's target differs from the source ($mode)"
            fi
            rm -f "$W/p2/qmirror.img"
            ;;
    esac
    record "p2.$mode.$tool" "$run" "$el"
    log "  $(p2_name "$tool"): $el s"
}

part2() {
    local mode run tool
    log "part 2: first pass of a $BIG_SIZE image of random data, cold and warm, $P2_RUNS round(s) over ${P2_TOOLS[*]}"
    mkdir -p "$W/p2/src"
    p2_find_dev || log "part 2: no /proc/diskstats entry for the device under $W; no disk counters"
    cp "$W/img/big.img" "$W/p2/src/big.img"
    record p2.bytes 0 "$(stat -c %s "$W/img/big.img")"
    for mode in cold warm; do
        for run in $(seq 1 "$P2_RUNS"); do
            log "part 2, $mode, round $run/$P2_RUNS"
            for tool in $(rotate $((run - 1)) "${P2_TOOLS[@]}"); do
                p2_copy "$mode" "$run" "$tool"
            done
        done
    done
    rm -rf "$W/p2"
}

# ---- part 3: 1 TiB sparse image, peak RSS ------------------------------------------

part3() {
    local run t0 el hwm sa ta
    log "part 3: $SPARSE_SIZE sparse image, $SPARSE_EXTENTS extents of $SPARSE_EXTENT_SIZE, $RUNS run(s)"
    mkdir -p "$W/p3/src"
    "$MKIMAGE" "$W/p3/src/sparse.img" "$SPARSE_SIZE" --data-extents "$SPARSE_EXTENTS" \
        --extent-size "$SPARSE_EXTENT_SIZE" --seed 1 >&2 || die "mkimage failed"
    for run in $(seq 1 "$RUNS"); do
        rm -rf "$W/p3/tgt" "$W/p3/state"
        drop_caches
        t0=$(now_ns)
        start_mirrorfs P3 "$W/p3/src" "$W/p3/mnt" "$W/p3/tgt" "$W/p3/state"
        if "$MIRRORCTL" wait --ready --timeout 600 "$W/p3/mnt" >&2; then
            el=$(secs_since "$t0")
        else
            el=nan
        fi
        # Peak RSS just before finishing.
        hwm=$(awk '/^VmHWM:/ { print $2 * 1024 }' "/proc/$MF_PID/status")
        unmount_wait "$W/p3/mnt" "$MF_PID" 0 mirrorfs
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
    local wl unit fmtv rt lim mode commit dirty fs kernel cpu mem
    mode=$([ -n "$QUICK" ] && echo "QUICK (smoke test, not for comparison)" || echo full)
    commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$top" diff-index --quiet HEAD -- 2>/dev/null || dirty=" + local changes"
    fs=$(findmnt -n -o FSTYPE,SOURCE --target "$W" | awk '{ print $1 " on " $2 }')
    kernel=$(uname -r)
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
    echo "mirrorfs benchmark -- $(date -u '+%Y-%m-%d %H:%M UTC'), mode: $mode, rounds: $RUNS (part 2: $P2_RUNS)"
    echo "machine: $(nproc) vCPU ($cpu), $mem RAM, Linux $kernel, scratch on $fs"
    echo "software: mirrorfs $commit${dirty:-} (binary built $MIRRORFS_BUILT), $(fio --version), $(qemu-img --version | awk 'NR == 1 { print "QEMU " $3 }'), libfuse $(dpkg-query -W -f='${Version}' libfuse3-3 2>/dev/null)"
    [ -n "$PTHP" ] && echo "          ${PTHP_NAME} (libfuse's example from Debian's fuse3 source; backing opens without O_DIRECT, --num-threads caps the threads)"
    echo "load average: $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end (other work on the machine adds noise)"
    echo "rounds: every setup once per round, in rotation (round r starts with the r-th setup); cells: median of"
    echo "the rounds; ratios: median of the per-round ratios"
    echo

    if want 1; then
        echo "1. Guest I/O: fio --direct=1 on $IMG_SIZE fully allocated images of random data, one copy per setup,"
        echo "   ${FIO_RUNTIME}s per cell (+${FIO_RAMP}s ramp); page cache dropped before every cell, then the setup's image read once"
        echo "   (a) straight on the source fs        (b) mirrorfs -o threads=$THREADS, job ready (target on the same fs)"
        echo "   (c) qemu-storage-daemon FUSE export (cache.direct=off)"
        echo "   (d) passthrough_hp --nocache --num-threads=$THREADS$([ -n "$PTHP" ] || echo ' (not built: left out)')"
        echo "   (e) mirrorfs -o threads=$THREADS during the first pass: source dir also holds a $BIG_SIZE image, -o speed=$SPEED_E"
        echo "   (f) mirrorfs -o threads=$THREADS after a pivot: serving the job's target, no job (pause $(fmt "$(median f.pause)" 0) ms)"
        echo "   (b)-(d), (f) mounted side by side for the whole part; (e) mounted afresh for each of its cells"
        printf '   %-20s %-6s %8s %8s %8s %8s %8s %8s %6s %6s %6s %6s %6s\n' workload unit "(a)" "(b)" "(c)" "(d)" "(e)" \
            "(f)" "b/d" "b/c" "b/a" "e/b" "f/d"
        for wl in "${WL_KEYS[@]}"; do
            unit=${WL_UNIT[$wl]}
            fmtv=fmtk
            [ "$unit" = MiB/s ] && fmtv="fmt_0"
            printf '   %-20s %-6s %8s %8s %8s %8s %8s %8s %5sx %5sx %5sx %5sx %5sx\n' "${WL_NAME[$wl]}" "$unit" \
                "$($fmtv "$(median "fio.a.$wl")")" "$($fmtv "$(median "fio.b.$wl")")" \
                "$($fmtv "$(median "fio.c.$wl")")" "$($fmtv "$(median "fio.d.$wl")")" \
                "$($fmtv "$(median "fio.e.$wl")")" "$($fmtv "$(median "fio.f.$wl")")" \
                "$(fmt "$(ratio "fio.b.$wl" "fio.d.$wl")" 2)" \
                "$(fmt "$(ratio "fio.b.$wl" "fio.c.$wl")" 2)" \
                "$(fmt "$(ratio "fio.b.$wl" "fio.a.$wl")" 2)" \
                "$(fmt "$(ratio "fio.e.$wl" "fio.b.$wl")" 2)" \
                "$(fmt "$(ratio "fio.f.$wl" "fio.d.$wl")" 2)"
        done
        echo "   per-round ratios, in round order:"
        for wl in "${WL_KEYS[@]}"; do
            printf '   %-20s b/d %-16s b/c %-16s b/a %s\n' "${WL_NAME[$wl]}" \
                "$(ratios "fio.b.$wl" "fio.d.$wl")" "$(ratios "fio.b.$wl" "fio.c.$wl")" \
                "$(ratios "fio.b.$wl" "fio.a.$wl")"
        done
        local inbulk
        inbulk=$(awk -F'\t' '$1 == "e.inbulk" { s += $3; n++ } END { print s + 0 "/" n + 0 }' "$RES")
        echo "   (e): first pass still running when fio ended in $inbulk cells; copy rate meanwhile $(fmt "$(median e.copyrate)" 0) MiB/s (median)"
        echo "   FUSE threads at the end: mirrorfs (b) $(fmt "$(median mf.threads)" 0) (1 main, $THREADS FUSE, copy workers and pools), passthrough_hp $(fmt "$(median pt.threads)" 0)"
        echo
    fi
    if want 2; then
        local bytes tool m
        bytes=$(median p2.bytes)
        mibs() { awk -v b="$bytes" -v t="$1" 'BEGIN { if (t == "nan" || t <= 0) print "-"; else printf "%.0f\n", b / 1048576 / t }'; }
        echo "2. First pass of a $BIG_SIZE image of random data to a local target, $P2_RUNS round(s) in rotation per mode"
        echo "   cold: page cache dropped before each copy; warm: the source rewritten with dd just before each"
        echo "   copy (no sync: in the page cache, mostly dirty)"
        printf '   %-52s %25s   %25s\n' "" "------------ cold -------" "------------ warm -------"
        printf '   %-52s %7s %6s %10s   %7s %6s %10s\n' tool seconds MiB/s "mirrorfs is" seconds MiB/s "mirrorfs is"
        for tool in "${P2_TOOLS[@]}"; do
            printf '   %-52s' "${P2_NAME[$tool]}"
            for m in cold warm; do
                printf ' %7s %6s' "$(fmt "$(median "p2.$m.$tool")" 2)" "$(mibs "$(median "p2.$m.$tool")")"
                if [ "$tool" = mirrorfs ]; then
                    printf ' %10s  ' ""
                else
                    printf ' %9sx  ' "$(fmt "$(ratio "p2.$m.$tool" "p2.$m.mirrorfs")" 2)"
                fi
            done
            echo
        done
        echo "   (\"mirrorfs is\" = other tool's time / mirrorfs's time, median of the per-round ratios: >1 means mirrorfs is faster)"
        if [ -n "$P2_DEV" ]; then
            echo "   disk $P2_DEV per copy (medians): MiB read in requests, MiB written in requests"
            for tool in "${P2_TOOLS[@]}"; do
                printf '   %-52s' "$(p2_name "$tool")"
                for m in cold warm; do
                    printf ' %s %5s/%-6s %5s/%-6s' "$m" "$(fmt "$(median "p2.$m.$tool.rmib")" 0)" \
                        "$(fmt "$(median "p2.$m.$tool.rreq")" 0)" "$(fmt "$(median "p2.$m.$tool.wmib")" 0)" \
                        "$(fmt "$(median "p2.$m.$tool.wreq")" 0)"
                done
                echo
            done
        fi
        echo "   per-round \"mirrorfs is\", in round order:"
        for tool in "${P2_TOOLS[@]}"; do
            [ "$tool" = mirrorfs ] && continue
            printf '   %-52s cold %-16s warm %s\n' "$(p2_name "$tool")" \
                "$(ratios "p2.cold.$tool" "p2.cold.mirrorfs")" "$(ratios "p2.warm.$tool" "p2.warm.mirrorfs")"
        done
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
    goal() { printf '   %-4s  %-56s %s\n' "$(verdict "$2" "$3" "$4")" "$1" "$5"; }
    if want 1; then
        for wl in "${WL_KEYS[@]}"; do
            lim=0.9
            [ "${WL_DIR[$wl]}" = read ] && lim=1.0
            rt=$(ratio "fio.b.$wl" "fio.d.$wl")
            goal "${WL_NAME[$wl]}: (b) >= ${lim}x (d) passthrough_hp" "$rt" ">=" "$lim" "$(fmt "$rt" 2)x"
        done
        for wl in "${WL_KEYS[@]}"; do
            rt=$(ratio "fio.b.$wl" "fio.c.$wl")
            goal "${WL_NAME[$wl]}: (b) >= 1.0x (c) qemu-storage-daemon" "$rt" ">=" 1.0 "$(fmt "$rt" 2)x"
        done
    fi
    if want 2; then
        for m in cold warm; do
            rt=$(ratio "p2.$m.convert" "p2.$m.mirrorfs")
            goal "first pass, $m: >= 1.0x qemu-img convert" "$rt" ">=" 1.0 "$(fmt "$rt" 2)x"
        done
    fi
    if want 1; then
        for wl in seqw seqr; do
            rt=$(ratio "fio.b.$wl" "fio.a.$wl")
            goal "${WL_NAME[$wl]}: (b) >= 0.6x (a) ext4" "$rt" ">=" 0.6 "$(fmt "$rt" 2)x"
        done
        rt=$(ratio fio.e.randw64k fio.b.randw64k)
        goal "rand write 64k qd4: (e) first pass >= 0.5x (b)" "$rt" ">=" 0.5 "$(fmt "$rt" 2)x"
    fi
    if want 2; then
        rt=$(ratio p2.cold.qmirror p2.cold.mirrorfs)
        goal "first pass, cold: >= 2x QEMU mirror" "$rt" ">=" 2.0 "$(fmt "$rt" 2)x"
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

if [ -n "${BENCH_OUT:-}" ]; then
    report | tee "$BENCH_OUT"
    cp "$RES" "$BENCH_OUT.tsv"
else
    report
fi
