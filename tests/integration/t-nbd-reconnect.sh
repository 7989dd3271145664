#!/bin/bash
# t-nbd-reconnect: the NBD server goes away in the middle of the first pass.
#  (a) killed (-9) and restarted, on_target_error=ignore: guest writes go on
#      during the outage, the job reconnects by itself and ends exit 0 with
#      the export equal to the image;
#  (b) killed, on_target_error=stop: the job pauses; after the restart a
#      `resume` finishes it, exit 0, equal;
#  (c) stopped (SIGSTOP: the connection stays open, nothing answers): the
#      stuck requests fail after the stall timeout (shortened here to 2 s
#      with MIRRORFS_NBD_STALL_TIMEOUT) instead of holding the workers, and
#      after SIGCONT the job finishes, exit 0, equal.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
command -v qemu-nbd >/dev/null || fail "qemu-nbd is not installed (contrib/deps.sh installs it)"

M=1048576
QNBD=""

# start_server: qemu-nbd -t (it stays up across clients) on EXP/vm.raw.
start_server() {
    qemu-nbd -t -f raw -x vm.img -k "$SOCK" "$EXP/vm.raw" >>"$T/qemu-nbd.log" 2>&1 &
    QNBD=$!
    EXTRA_PIDS+=("$QNBD")
    wait_socket "$SOCK" "$QNBD" "$T/qemu-nbd.log"
}

kill_server() {
    kill -9 "$QNBD" 2>/dev/null
    wait "$QNBD" 2>/dev/null
}

# scenario NAME: fresh directories, a 64M image, its export, the server.
scenario() {
    new_scenario "$1"
    EXP=$T/$1/exports
    SOCK=$T/$1/nbd.sock
    mkdir -p "$EXP"
    random_file "$SRC/vm.img" 64
    truncate -s 64M "$EXP/vm.raw"
    start_server
    TGT="nbd+unix:///{name}?socket=$SOCK"
}

# in_bulk: wait until the first pass has copied something, and is not done.
in_bulk() {
    local i
    for i in $(seq 1 100); do
        [ "$(status_get copied_bytes)" -gt 0 ] 2>/dev/null && break
        sleep 0.05
    done
    assert_eq "$(status_get phase)" bulk "phase when the server goes away"
}

# guest_write OFFSET_MIB: 1M through the mount, which must not wait for the
# target (invariant 4).
guest_write() {
    head -c $M /dev/urandom >"$T/gw.bin"
    timeout 10 dd if="$T/gw.bin" of="$MNT/vm.img" bs=1M seek="$1" conv=notrunc status=none ||
        fail "guest write at ${1}M while the server is away"
}

wait_error_like() {
    local i
    for i in $(seq 1 300); do
        grep -Eq "^last_error: .*$1" "$MNT/.mirror/status" && return 0
        sleep 0.05
    done
    fail "no error like '$1' in status: $(status_get last_error)"
}

finish_equal() {
    wait_synced 60
    finish_mirror_within 60
    assert_result completed 0
    [ "$(result_get errors)" -gt 0 ] || fail "the job saw no error: the outage was missed"
    assert_files_cmp "$SRC/vm.img" "$EXP/vm.raw" "export after the outage"
}

# ---- (a) killed and restarted, ignore --------------------------------------------
scenario killed
start_mirror -o on_target_error=ignore,speed=16M
in_bulk
kill_server
guest_write 50
wait_error_like 'target write error'
sleep 1
assert_eq "$(status_get phase)" bulk "phase while the server is down (ignore)"
start_server
finish_equal
log "ok [killed, ignore]: $(result_get errors) errors"
kill_server

# ---- (b) killed, stop, resume ------------------------------------------------------
scenario stopped
start_mirror -o on_target_error=stop,speed=16M
in_bulk
kill_server
guest_write 40
wait_phase paused 20
start_server
sleep 0.5
assert_eq "$(status_get phase)" paused "phase before resume"
echo resume >"$MNT/.mirror/ctl" || fail "ctl resume"
finish_equal
log "ok [killed, stop + resume]"
kill_server

# ---- (c) stuck server -------------------------------------------------------------
scenario stuck
export MIRRORFS_NBD_STALL_TIMEOUT=2
start_mirror -o on_target_error=ignore,speed=16M
unset MIRRORFS_NBD_STALL_TIMEOUT
in_bulk
kill -STOP "$QNBD"
guest_write 60
wait_error_like 'timed out'
kill -CONT "$QNBD"
finish_equal
log "ok [stuck server]: $(result_get errors) errors"
kill_server
exit 0
