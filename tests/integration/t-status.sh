#!/bin/bash
# t-status.sh - .mirror/status, status.json and ctl say what the contract
# says, mirrorctl reads them, and `mirrorctl finish` ends the job.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup

A_SIZE=8388608 B_SIZE=1048576 TOTAL=9437184
mkdir -p "$SRC/vm1"
random_file "$SRC/a.img" 8
random_file "$SRC/vm1/b.img" 1

start_mirror
wait_phase ready 30
assert_eq "$(status_get mirrored)" "data, namespace, metadata" "what a directory target keeps"
cp "$MNT/.mirror/status" "$T/st1" || fail "cannot read .mirror/status"

# val KEY [FILE]: the value of KEY in a saved status text
val() { sed -n "s/^$1: \{0,1\}//p" "${2:-$T/st1}" | head -n 1; }

# --- keys in exactly the documented order, then the image lines ---
# (the design allows new keys after the documented ones: "add keys, never
# rename"; so the documented list must be the exact prefix)
want="phase pid source target copy_mode images total_bytes copied_bytes dirty_bytes in_flight_bytes transferred_bytes progress_percent rate_bytes_per_s eta_s guest_write_bytes errors last_error state_dir exit_code"
nwant=$(echo $want | wc -w)
keys=$(sed '/^image:/,$d' "$T/st1" | cut -d: -f1 | head -n "$nwant" | tr '\n' ' ')
assert_eq "$keys" "$want " "status keys (the documented ones, in order, first)"
sed '/^image:/,$d' "$T/st1" | grep -Ev '^[a-z_]+: ?' | head -n 1 | grep -q . &&
    fail "a status line before the images is not 'key: value': $(sed '/^image:/,$d' "$T/st1" | grep -Ev '^[a-z_]+: ?' | head -n 1)"
dups=$(sed '/^image:/,$d' "$T/st1" | cut -d: -f1 | sort | uniq -d | tr '\n' ' ')
assert_eq "$dups" "" "keys that appear twice"
sed -n '/^image:/,$p' "$T/st1" | grep -qv '^image: ' &&
    fail "non-image lines after the first image: line: $(sed -n '/^image:/,$p' "$T/st1" | grep -v '^image: ' | head -n 2)"
assert_eq "$(grep -c '^image: ' "$T/st1")" 2 "number of image: lines"

# --- values in ready ---
assert_eq "$(val phase)" ready "phase"
assert_eq "$(val pid)" "$DAEMON_PID" "pid"
assert_eq "$(val source)" "$SRC" "source"
assert_eq "$(val target)" "$TGT" "target"
assert_eq "$(val state_dir)" "$STATE" "state_dir"
assert_eq "$(val copy_mode)" background "copy_mode"
assert_eq "$(val images)" 2 "images"
assert_eq "$(val total_bytes)" "$TOTAL" "total_bytes"
assert_eq "$(val copied_bytes)" "$TOTAL" "copied_bytes in ready"
assert_eq "$(val dirty_bytes)" 0 "dirty_bytes in ready"
assert_eq "$(val in_flight_bytes)" 0 "in_flight_bytes in ready"
assert_eq "$(val progress_percent)" 100 "progress_percent in ready"
assert_eq "$(val guest_write_bytes)" 0 "guest_write_bytes before any guest write"
assert_eq "$(val errors)" 0 "errors"
assert_eq "$(val last_error)" "" "last_error"
tb=$(val transferred_bytes)
[[ "$tb" =~ ^[0-9]+$ ]] || fail "transferred_bytes is not a number: '$tb'"
[ "$tb" -ge "$TOTAL" ] || fail "transferred_bytes $tb < $TOTAL after copying all-random images"
for k in rate_bytes_per_s eta_s exit_code; do
    [[ "$(val $k)" =~ ^-?[0-9]+$ ]] || fail "$k is not an integer: '$(val $k)'"
done

for spec in "a.img $A_SIZE" "vm1/b.img $B_SIZE"; do
    set -- $spec
    grep -q "^image: $1 " "$T/st1" || fail "no image line for $1: $(grep '^image:' "$T/st1" | tr '\n' ' ')"
    assert_eq "$(status_image_field "$1" phase "$T/st1")" ready "phase of $1"
    assert_eq "$(status_image_field "$1" size "$T/st1")" "$2" "size of $1"
    assert_eq "$(status_image_field "$1" copied "$T/st1")" "$2" "copied of $1"
    assert_eq "$(status_image_field "$1" dirty "$T/st1")" 0 "dirty of $1"
    assert_eq "$(status_image_field "$1" in_flight "$T/st1")" 0 "in_flight of $1"
    # granularity=auto: 4K for images of up to 64G.
    assert_eq "$(status_image_field "$1" granularity "$T/st1")" 4096 "granularity of $1"
done

# --- status.json: valid JSON with the same content ---
cp "$MNT/.mirror/status.json" "$T/st1.json" || fail "cannot read .mirror/status.json"
python3 - "$T/st1.json" "$DAEMON_PID" "$TOTAL" "$A_SIZE" "$B_SIZE" <<'PYEOF' || fail "status.json: $(head -c 600 "$T/st1.json")"
import json, sys
path, pid, total, asz, bsz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
try:
    j = json.load(open(path))
except ValueError as e:
    sys.exit("not valid JSON: %s" % e)
def want(k, v, obj=j):
    if obj.get(k) != v:
        sys.exit("%s is %r, expected %r" % (k, obj.get(k), v))
want("phase", "ready")
want("pid", pid)
want("total_bytes", total)
want("copied_bytes", total)
want("dirty_bytes", 0)
want("in_flight_bytes", 0)
want("progress_percent", 100)
imgs = j.get("images")
if not isinstance(imgs, list) or len(imgs) != 2:
    sys.exit("images is not an array of 2: %r" % (imgs,))
by = {i.get("name"): i for i in imgs}
for name, size in (("a.img", asz), ("vm1/b.img", bsz)):
    if name not in by:
        sys.exit("no image named %r in %r" % (name, list(by)))
    want("phase", "ready", by[name])
    want("size", size, by[name])
    want("copied", size, by[name])
    want("dirty", 0, by[name])
    want("in_flight", 0, by[name])
    want("granularity", 4096, by[name])
PYEOF

# --- a 64K guest write raises guest_write_bytes by exactly 65536 ---
g0=$(status_get guest_write_bytes)
head -c 65536 /dev/urandom > "$T/patch"
dd if="$T/patch" of="$MNT/a.img" bs=65536 seek=17 conv=notrunc,fsync status=none || fail "64K write failed"
for i in $(seq 1 20); do
    [ "$(status_get guest_write_bytes)" != "$g0" ] && break
    sleep 0.1
done
assert_eq "$(status_get guest_write_bytes)" "$(( g0 + 65536 ))" "guest_write_bytes after a 64K write"
wait_synced 30
cp "$MNT/.mirror/status" "$T/st2"
assert_eq "$(val total_bytes "$T/st2")" "$TOTAL" "total_bytes after an in-place write"
assert_eq "$(val copied_bytes "$T/st2")" "$TOTAL" "copied_bytes after the write was copied"
tb2=$(val transferred_bytes "$T/st2")
[ "$tb2" -ge $(( tb + 65536 )) ] || fail "transferred_bytes grew from $tb to $tb2 only, after a 64K write"
assert_files_cmp "$TGT/a.img" "$SRC/a.img" "a.img on the target after the write was copied"

# --- ctl: an unknown command fails with EINVAL and shows in last_error ---
python3 - "$MNT/.mirror/ctl" <<'PYEOF' || fail "writing 'bogus' to .mirror/ctl did not fail with EINVAL"
import errno, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
try:
    os.write(fd, b"bogus\n")
    try:
        os.fsync(fd)
    except OSError:
        pass
    os.close(fd)
    sys.exit("the write succeeded")
except OSError as e:
    if e.errno != errno.EINVAL:
        sys.exit("failed with %s, not EINVAL" % errno.errorcode.get(e.errno, e.errno))
PYEOF
printf 'bogus\n' 2>/dev/null > "$MNT/.mirror/ctl" && fail "shell write of 'bogus' to ctl succeeded"
status_get last_error | grep -q bogus || fail "last_error does not mention the bad command: '$(status_get last_error)'"
assert_eq "$(status_get phase)" ready "phase after a bad ctl command"

# --- .mirror is not mirrored ---
[ ! -e "$TGT/.mirror" ] || fail ".mirror appeared on the target"

# --- mirrorctl status / wait ---
"$MIRRORCTL" status "$MNT" > "$T/ctl-status.out" || fail "mirrorctl status exited with $?"
grep -q '^phase: ready' "$T/ctl-status.out" || fail "mirrorctl status output: $(head -n 3 "$T/ctl-status.out")"
timeout 30 "$MIRRORCTL" wait --ready "$MNT" --timeout 20
assert_eq "$?" 0 "mirrorctl wait --ready exit code"

# --- mirrorctl finish: unmount, wait, print the result, same exit code ---
timeout 40 "$MIRRORCTL" finish "$MNT" > "$T/finish.out" 2> "$T/finish.err"
frc=$?
[ "$frc" = 124 ] && fail "mirrorctl finish did not return within 40 s"
assert_eq "$frc" 0 "mirrorctl finish exit code ($(head -c 300 "$T/finish.err"))"
grep -q '^phase: completed' "$T/finish.out" || fail "finish output has no 'phase: completed': $(head -c 400 "$T/finish.out")"
grep -q '^exit_code: 0$' "$T/finish.out" || fail "finish output has no 'exit_code: 0': $(head -c 400 "$T/finish.out")"
is_mounted "$MNT" && fail "still mounted after mirrorctl finish"
wait "$DAEMON_PID"
DAEMON_RC=$?
DAEMON_PID=""
assert_eq "$DAEMON_RC" 0 "daemon exit code"

[ -f "$STATE/result" ] || fail "no $STATE/result"
grep -q '^phase: completed' "$STATE/result" || fail "result has no 'phase: completed': $(head -c 400 "$STATE/result")"
grep -q '^exit_code: 0$' "$STATE/result" || fail "result has no 'exit_code: 0'"
assert_eq "$(val total_bytes "$STATE/result")" "$TOTAL" "total_bytes in the result"
assert_eq "$(val copied_bytes "$STATE/result")" "$TOTAL" "copied_bytes in the result"
assert_eq "$(val dirty_bytes "$STATE/result")" 0 "dirty_bytes in the result"

[ ! -e "$TGT/.mirror" ] || fail ".mirror was copied to the target"
assert_exact
assert_clean_stderr
exit 0
