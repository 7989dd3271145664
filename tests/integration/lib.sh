# lib.sh - shared helpers for the mirrorfs integration tests.
#
# Each test is a bash script run by `make check` (automake's test driver):
# exit 0 = pass, 1 = fail, 77 = skip (only when /dev/fuse is truly missing).
# A test sources this file, calls setup, and everything it starts is undone
# by the EXIT trap even when an assertion fails half-way.
#
# Environment from Makefile.am: MIRRORFS, MIRRORCTL, MKIMAGE, TREECMP.

set -u
set -o pipefail

: "${MIRRORFS:?MIRRORFS must point at the mirrorfs binary}"
: "${MIRRORCTL:=$(dirname "$MIRRORFS")/mirrorctl}"
: "${MKIMAGE:=}"
: "${TREECMP:=$(dirname "${BASH_SOURCE[0]}")/../helpers/treecmp.py}"

T=""
SRC="" TGT="" MNT="" STATE=""
DAEMON_PID=""
DAEMON_RC=""
EXTRA_PIDS=()
# Commands the EXIT trap runs after the mount and the processes are gone
# (unmounting a scratch tmpfs, stopping a server): add with at_cleanup.
CLEANUP_CMDS=()
at_cleanup() { CLEANUP_CMDS+=("$*"); }

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }

fail() {
    log "FAIL: $*"
    if [ -n "$T" ] && [ -s "$T/daemon.err" ]; then
        log "daemon stderr (last 20 lines):"
        tail -n 20 "$T/daemon.err" >&2
    fi
    exit 1
}

skip() { log "SKIP: $*"; exit 77; }

is_mounted() { grep -q " $1 fuse" /proc/mounts; }

cleanup() {
    local rc=$?
    set +e
    local p
    for p in "${EXTRA_PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    if [ -n "$MNT" ] && is_mounted "$MNT"; then
        fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null
    fi
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        local i
        for i in $(seq 1 50); do
            kill -0 "$DAEMON_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$DAEMON_PID" 2>/dev/null
        wait "$DAEMON_PID" 2>/dev/null
    fi
    for p in "${EXTRA_PIDS[@]}"; do
        kill -9 "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    local c
    for c in "${CLEANUP_CMDS[@]}"; do
        eval "$c"
    done
    if [ -n "$T" ] && [ -d "$T" ]; then
        # Never remove anything below a mount that is still there.
        if ! grep -q " $T" /proc/mounts; then
            rm -rf "$T"
        fi
    fi
    exit "$rc"
}

# setup: make a scratch directory with src/ tgt/ mnt/ state/.
setup() {
    [ -c /dev/fuse ] || skip "/dev/fuse is missing"
    command -v fusermount3 >/dev/null || fail "fusermount3 is not installed"
    setup_scratch
}

# setup_scratch: setup without the need for FUSE (for tests of the helpers).
setup_scratch() {
    T=$(mktemp -d "${TMPDIR:-/tmp}/mirrorfs-test.XXXXXX") || fail "mktemp"
    SRC=$T/src TGT=$T/tgt MNT=$T/mnt STATE=$T/state
    mkdir -p "$SRC" "$TGT" "$MNT" "$STATE"
    # Tools such as fio drop state files in the working directory.
    cd "$T" || fail "cd $T"
    trap cleanup EXIT
    trap 'exit 1' INT TERM
}

# wait_mounted [timeout_s]: until MNT is a mirrorfs mount or the daemon died.
wait_mounted() {
    local limit=$(( ${1:-20} * 10 )) i
    for i in $(seq 1 "$limit"); do
        if is_mounted "$MNT" && [ -e "$MNT/.mirror/status" ]; then
            return 0
        fi
        if [ -n "$DAEMON_PID" ] && ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            wait "$DAEMON_PID"; DAEMON_RC=$?
            fail "daemon exited with $DAEMON_RC before the mount appeared"
        fi
        sleep 0.1
    done
    fail "mount did not appear at $MNT"
}

# start_mirror [mirrorfs options...]: run the daemon in the foreground (in
# the background of this shell) with target=TGT and state_dir=STATE.
start_mirror() {
    "$MIRRORFS" -f -o "target=$TGT,state_dir=$STATE" "$@" "$SRC" "$MNT" \
        >"$T/daemon.out" 2>"$T/daemon.err" &
    DAEMON_PID=$!
    wait_mounted
}

# finish_mirror: unmount and wait for the daemon; sets DAEMON_RC.
finish_mirror() {
    local i
    for i in $(seq 1 50); do
        fusermount3 -u "$MNT" 2>"$T/umount.err" && break
        sleep 0.2    # EBUSY while a program still has a file open
    done
    is_mounted "$MNT" && fail "could not unmount $MNT: $(cat "$T/umount.err")"
    wait "$DAEMON_PID"
    DAEMON_RC=$?
    DAEMON_PID=""
}

# status_get KEY: the value of KEY in .mirror/status.
status_get() {
    sed -n "s/^$1: //p" "$MNT/.mirror/status" | head -n 1
}

# wait_phase PHASE [timeout_s]: until the job's phase is PHASE.
wait_phase() {
    local want=$1 limit=$(( ${2:-60} * 10 )) i ph=""
    for i in $(seq 1 "$limit"); do
        ph=$(status_get phase)
        [ "$ph" = "$want" ] && return 0
        sleep 0.1
    done
    fail "phase is '$ph' after ${2:-60}s, expected '$want'"
}

assert_eq() {
    [ "$1" = "$2" ] || fail "${3:-values differ}: got '$1', expected '$2'"
}

# assert_trees_equal [treecmp options...] A B: tests/helpers/treecmp.py
# finds no difference between the trees A and B (fails with its lines).
# With no options it compares everything: types, modes (07777), owners,
# sizes, bytes, symlink targets, device numbers, hard links, xattrs, mtime
# and atime; --no-meta leaves out modes, owners, links, xattrs and times,
# --data-only keeps only the regular files and their bytes.
assert_trees_equal() {
    local out rc
    out=$(python3 "$TREECMP" "$@" 2>&1)
    rc=$?
    [ "$rc" = 0 ] && return 0
    fail "trees differ (treecmp $*: exit $rc):"$'\n'"$out"
}

# assert_exact [treecmp options...]: the finished target is an exact copy
# of the source, metadata and all (.mirror, which only the mount shows, left
# out).  Call it right after the job ended, before anything reads the trees:
# reads move atimes.
assert_exact() {
    assert_trees_equal --exclude .mirror "$@" "$SRC" "$TGT"
}

# assert_clean_stderr: the daemon wrote no sanitizer or libfuse error report.
assert_clean_stderr() {
    if grep -Eq 'AddressSanitizer|runtime error|LeakSanitizer|fuse: ' "$T/daemon.err"; then
        fail "daemon stderr: $(grep -E 'AddressSanitizer|runtime error|LeakSanitizer|fuse: ' "$T/daemon.err" | head -n 3)"
    fi
}

# random_file PATH SIZE_MIB: a file of random data.
random_file() {
    head -c "$(( $2 * 1048576 ))" /dev/urandom > "$1" || fail "cannot write $1"
}

# --- set 1 helpers ---

# fsize_of PATH: the size of PATH in bytes (fails the test if PATH is missing).
fsize_of() {
    stat -c %s "$1" 2>/dev/null || fail "cannot stat $1"
}

# assert_files_cmp A B [what]: A and B hold the same bytes.
assert_files_cmp() {
    cmp -s "$1" "$2" || fail "${3:-files differ}: $(cmp "$1" "$2" 2>&1 | head -n 1)"
}

# status_image_field NAME FIELD [STATUSFILE]: FIELD (phase, size, copied,
# dirty, in_flight, granularity) of the `image: NAME ...` line of .mirror/status.
status_image_field() {
    awk -v n="$1" -v f="$2" '
        $1 == "image:" && $2 == n {
            for (i = 3; i <= NF; i++) {
                k = $i; sub(/=.*/, "", k)
                if (k == f) { v = $i; sub(/^[^=]*=/, "", v); print v; exit }
            }
        }' "${3:-$MNT/.mirror/status}"
}

# mounted_anyhow PATH: anything (of any type) is mounted at PATH.
mounted_anyhow() {
    awk -v p="$1" '$2 == p { found = 1 } END { exit !found }' /proc/mounts
}

# wait_synced [timeout_s]: until the job is ready AND the target has caught
# up with every write so far (dirty_bytes and in_flight_bytes both 0 in one
# reading of the status).  `ready` alone stays set while new writes are
# still being copied, so use this before comparing the target.
wait_synced() {
    local limit=$(( ${1:-60} * 10 )) i st=""
    for i in $(seq 1 "$limit"); do
        st=$(cat "$MNT/.mirror/status" 2>/dev/null)
        # Here-strings, not pipes: with pipefail, grep -q leaving early
        # fails a printf still writing a long status (many images).
        if grep -qx 'phase: ready' <<<"$st" && grep -qx 'dirty_bytes: 0' <<<"$st" &&
           grep -qx 'in_flight_bytes: 0' <<<"$st"; then
            return 0
        fi
        sleep 0.1
    done
    fail "not synced after ${1:-60}s: $(printf '%s\n' "$st" | grep -E '^(phase|dirty_bytes|in_flight_bytes):' | tr '\n' ' ')"
}

# --- set 2 helpers ---

# need_mkimage: MKIMAGE must be an executable (tests/helpers/mkimage).
need_mkimage() {
    [ -n "$MKIMAGE" ] && [ -x "$MKIMAGE" ] || fail "MKIMAGE is not set or not executable: '$MKIMAGE'"
}

# mkimg PATH SIZE [mkimage options...]: make a test image or fail.
mkimg() {
    need_mkimage
    mkdir -p "$(dirname "$1")"
    "$MKIMAGE" "$@" >/dev/null || fail "mkimage $*"
}

# alloc_bytes PATH: bytes allocated on disk for PATH (st_blocks * 512).
alloc_bytes() {
    local b
    b=$(stat -c %b "$1" 2>/dev/null) || fail "cannot stat $1"
    echo $(( b * 512 ))
}

# evict_cache PATH...: flush PATH and drop it from the page cache, so that
# the first pass has to read it from disk (keeps the bulk phase going long
# enough for a test to act during it).  Only these files are affected.
evict_cache() {
    python3 - "$@" <<'PY' || fail "evict_cache $*"
import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
}

# new_scenario NAME: fresh src/ tgt/ mnt/ state/ under $T/NAME for a test
# that runs several independent mirrors one after the other.  The previous
# scenario must be finished (nothing mounted at MNT).
new_scenario() {
    [ -n "$MNT" ] && is_mounted "$MNT" && fail "new_scenario $1: $MNT is still mounted"
    SRC=$T/$1/src TGT=$T/$1/tgt MNT=$T/$1/mnt STATE=$T/$1/state
    DAEMON_PID="" DAEMON_RC=""
    mkdir -p "$SRC" "$TGT" "$MNT" "$STATE" || fail "mkdir $T/$1"
}

# start_mirror_quick [mirrorfs options...]: start_mirror, but notice the
# mount within ~10 ms (for tests that must act while the first pass runs).
start_mirror_quick() {
    "$MIRRORFS" -f -o "target=$TGT,state_dir=$STATE" "$@" "$SRC" "$MNT" \
        >"$T/daemon.out" 2>"$T/daemon.err" &
    DAEMON_PID=$!
    local i
    for i in $(seq 1 2000); do
        if is_mounted "$MNT" && [ -e "$MNT/.mirror/status" ]; then
            return 0
        fi
        if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            wait "$DAEMON_PID"; DAEMON_RC=$?
            fail "daemon exited with $DAEMON_RC before the mount appeared"
        fi
        sleep 0.01
    done
    fail "mount did not appear at $MNT"
}

# unmount_mirror: fusermount3 -u MNT (retrying while EBUSY), without waiting.
unmount_mirror() {
    local i
    for i in $(seq 1 50); do
        fusermount3 -u "$MNT" 2>"$T/umount.err" && return 0
        sleep 0.2
    done
    fail "could not unmount $MNT: $(cat "$T/umount.err")"
}

# wait_daemon_exit TIMEOUT_S: wait for the foreground daemon (a child of this
# shell) to exit; sets DAEMON_RC, fails if it is still running after TIMEOUT_S.
wait_daemon_exit() {
    local limit=$(( $1 * 20 )) i
    for i in $(seq 1 "$limit"); do
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$DAEMON_PID" 2>/dev/null &&
        fail "daemon (pid $DAEMON_PID) still running ${1}s after the unmount"
    wait "$DAEMON_PID"
    DAEMON_RC=$?
    DAEMON_PID=""
}

# finish_mirror_within TIMEOUT_S: finish_mirror with a bound on the drain.
finish_mirror_within() {
    unmount_mirror
    wait_daemon_exit "$1"
}

# wait_socket PATH PID [LOG]: until the server (pid PID) listens on the unix
# socket PATH; fails (with the tail of LOG) if it exits or takes over 5 s.
wait_socket() {
    local i why
    for i in $(seq 1 100); do
        [ -S "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || { why="the server (pid $2) exited before listening on $1"; break; }
        sleep 0.05
    done
    fail "${why:-no server listening on $1 after 5 s}${3:+: $(tail -n 3 "$3" 2>/dev/null)}"
}

# result_get KEY: the value of KEY in $STATE/result (the final status).
result_get() {
    [ -f "$STATE/result" ] || fail "$STATE/result is missing"
    sed -n "s/^$1: //p" "$STATE/result" | head -n 1
}

# assert_result PHASE EXIT_CODE: the daemon exited with EXIT_CODE and
# $STATE/result records the same phase and exit code.
assert_result() {
    assert_eq "$DAEMON_RC" "$2" "daemon exit code"
    assert_eq "$(result_get phase)" "$1" "phase in $STATE/result"
    assert_eq "$(result_get exit_code)" "$2" "exit_code in $STATE/result"
    if [ "$1" = completed ]; then
        # completed: the drain left nothing dirty or in flight.
        assert_eq "$(result_get dirty_bytes)" 0 "dirty_bytes in $STATE/result"
        assert_eq "$(result_get in_flight_bytes)" 0 "in_flight_bytes in $STATE/result"
        assert_eq "$(result_get copied_bytes)" "$(result_get total_bytes)" "copied_bytes == total_bytes in $STATE/result"
    fi
}

# --- fault injection ---
# faulty_device OP: a 256 MiB device whose OP (pread or pwrite) fails with
# EIO while the file $TRIGGER exists: nbdkit's memory plugin with the error
# filter, exposed as the file $DEV/nbd by nbdfuse.  Sets DEV, FS, TRIGGER;
# everything is undone at exit.  The caller makes and mounts a file system.
faulty_device() {
    local tool i
    for tool in nbdkit nbdfuse mkfs.ext4; do
        command -v "$tool" >/dev/null || fail "$tool is not installed"
    done
    DEV=$T/nbd FS=$T/fs TRIGGER=$T/trigger
    mkdir -p "$DEV" "$FS"
    nbdfuse "$DEV" --command nbdkit -s --exit-with-parent memory 256M \
        --filter=error error-rate=100% error-file="$TRIGGER" "error-$1=EIO" \
        >"$T/nbdfuse.log" 2>&1 &
    EXTRA_PIDS+=($!)
    at_cleanup "umount -l '$FS' 2>/dev/null; fusermount3 -u -z '$DEV' 2>/dev/null"
    for i in $(seq 1 50); do
        [ -e "$DEV/nbd" ] && return 0
        sleep 0.1
    done
    fail "nbdfuse did not come up: $(cat "$T/nbdfuse.log")"
}

# --- other users ---

# as_nobody CMD...: run CMD as the unprivileged user nobody (uid and gid
# 65534, no supplementary groups), as a hostile user of an allow_other
# mount would.  The scratch directory is opened to others (open_scratch).
as_nobody() {
    setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"
}

# open_scratch: let other users reach the scratch directory (mktemp makes
# it 0700), for tests that act as nobody.
open_scratch() {
    chmod 755 "$T" || fail "chmod $T"
}

# assert_entry_mirrored PATH: the target's entry at PATH has the source's
# type, mode, owner, device number, link count and symlink target (the
# namespace is mirrored at once, not only at completion).
assert_entry_mirrored() {
    local s t
    s=$(stat -c '%f %u:%g %t:%T %h' "$SRC/$1" 2>&1) || fail "$1: not in the source: $s"
    t=$(stat -c '%f %u:%g %t:%T %h' "$TGT/$1" 2>&1) || fail "$1: not on the target: $t"
    [ "$s" = "$t" ] || fail "$1: source '$s', target '$t'"
    if [ -L "$SRC/$1" ]; then
        assert_eq "$(readlink "$TGT/$1")" "$(readlink "$SRC/$1")" "$1: symlink target"
    fi
}

# assert_same_inode A B: the target's A and B are one file (hard links).
assert_same_inode() {
    assert_eq "$(stat -c %i "$TGT/$1")" "$(stat -c %i "$TGT/$2")" "$1 and $2 on the target are one inode"
}
