#!/bin/bash
# t-nbd-volatile.sh - a server with a volatile write cache dies before it
# flushed: nbdkit's file plugin behind the cache filter (cache=writeback
# keeps writes in its own cache until a flush) is killed with -9 right after
# a burst of guest writes was copied, and restarted.  Writes the server had
# acknowledged are gone; the first flush after the reconnect reports it and
# the job copies them again, so finishing still gives an exact copy.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup
command -v nbdkit >/dev/null || fail "nbdkit is not installed (contrib/deps.sh installs it)"

SOCK=$T/nbd.sock
EXP=$T/vm.raw
NBDKIT=""
start_server() {
    nbdkit -f -U "$SOCK" --filter=cache file "$EXP" cache=writeback \
        >>"$T/nbdkit.log" 2>&1 &
    NBDKIT=$!
    EXTRA_PIDS+=("$NBDKIT")
    wait_socket "$SOCK" "$NBDKIT" "$T/nbdkit.log"
}

random_file "$SRC/vm.img" 32
truncate -s 32M "$EXP"
start_server
TGT="nbd+unix:///{name}?socket=$SOCK"
start_mirror -o on_target_error=ignore,workers=2
wait_synced 60

# A burst the copier sends at once, then the server dies before the next
# periodic flush (every second) could make it durable.
dd if=/dev/urandom of="$MNT/vm.img" bs=1M count=8 seek=4 conv=notrunc status=none
for i in $(seq 1 40); do
    [ "$(status_get dirty_bytes)" = 0 ] && [ "$(status_get in_flight_bytes)" = 0 ] && break
    sleep 0.01
done
kill -9 "$NBDKIT"
wait "$NBDKIT" 2>/dev/null
rm -f "$SOCK"
# What the dead server acknowledged but never wrote is not in the file.
cmp -s -n $((8 << 20)) -i $((4 << 20)) "$SRC/vm.img" "$EXP" &&
    log "note: the server wrote the burst before it died (nothing to resync this time)"
start_server
wait_synced 60
timeout 2 cat "$MNT/.mirror/events" > "$T/events" || true
finish_mirror
assert_eq "$DAEMON_RC" 0 "exit code"
cmp "$SRC/vm.img" "$EXP" || fail "the export differs from the source after the server lost its cache"
grep -q " resync vm.img" "$T/events" || log "note: no resync event (the kill came after a flush)"
assert_clean_stderr
