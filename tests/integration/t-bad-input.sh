#!/bin/bash
# t-bad-input.sh - every bad input is refused before anything is mounted:
# exit 1, exactly one `mirrorfs: ...` line on stderr, no mount, and the
# target left exactly as it was.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
setup

random_file "$SRC/disk.img" 1

BAD_PID=""
cleanup_bad() {
    # a daemon that wrongly started: unmount it and make sure it is gone
    local mp=$1
    if mounted_anyhow "$mp"; then
        fusermount3 -u "$mp" 2>/dev/null || fusermount3 -u -z "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null
    fi
    if [ -n "$BAD_PID" ]; then
        kill "$BAD_PID" 2>/dev/null
        wait "$BAD_PID" 2>/dev/null
        BAD_PID=""
    fi
}

# listing DIR: a fingerprint of DIR's contents ("ABSENT" when it is missing).
listing() {
    if [ -e "$1" ]; then
        (cd "$1" && find . -printf '%y %p %s\n' | sort && find . -type f -exec md5sum {} + | sort)
    else
        echo ABSENT
    fi
}

# expect_refused NAME MOUNTPOINT WATCHED_DIR -- mirrorfs arguments...
# Runs `mirrorfs -f ARGS` and asserts: exit 1, one `mirrorfs: ` line on
# stderr, nothing mounted at MOUNTPOINT, WATCHED_DIR unchanged.
expect_refused() {
    local name=$1 mp=$2 watched=$3 before after rc i lines
    shift 4
    before=$(listing "$watched")
    timeout 20 "$MIRRORFS" -f "$@" >"$T/bad.out" 2>"$T/bad.err" &
    BAD_PID=$!
    EXTRA_PIDS+=("$BAD_PID")
    # while it runs, watch for a mount: a daemon that accepted the input
    for i in $(seq 1 200); do
        kill -0 "$BAD_PID" 2>/dev/null || break
        if mounted_anyhow "$mp"; then
            cleanup_bad "$mp"
            fail "[$name] mirrorfs accepted the input and mounted $mp"
        fi
        sleep 0.1
    done
    wait "$BAD_PID"
    rc=$?
    BAD_PID=""
    if mounted_anyhow "$mp"; then
        cleanup_bad "$mp"
        fail "[$name] something is mounted at $mp after mirrorfs exited"
    fi
    [ "$rc" = 124 ] && fail "[$name] mirrorfs still running after 20 s (it accepted the input?)"
    assert_eq "$rc" 1 "[$name] exit code"
    lines=$(awk 'END { print NR }' "$T/bad.err")
    assert_eq "$lines" 1 "[$name] number of stderr lines ($(head -c 300 "$T/bad.err" | tr '\n' '|'))"
    case "$(cat "$T/bad.err")" in
    "mirrorfs: "?*) ;;
    *) fail "[$name] stderr does not start with 'mirrorfs: ': $(cat "$T/bad.err")" ;;
    esac
    after=$(listing "$watched")
    [ "$before" = "$after" ] || fail "[$name] $watched changed: before=[$before] after=[$after]"
    log "ok [$name]: $(cat "$T/bad.err")"
}

OPTS="state_dir=$STATE"

# missing source
expect_refused "missing source" "$MNT" "$TGT" -- \
    -o "target=$TGT,$OPTS" "$T/no-such-dir" "$MNT"

# source is a regular file
head -c 4096 /dev/urandom > "$T/afile.img"
expect_refused "source is a file" "$MNT" "$TGT" -- \
    -o "target=$TGT,$OPTS" "$T/afile.img" "$MNT"

# target inside the source (missing: must not be created; existing and empty)
expect_refused "target inside source (missing)" "$MNT" "$SRC" -- \
    -o "target=$SRC/inner,$OPTS" "$SRC" "$MNT"
[ ! -e "$SRC/inner" ] || fail "the target inside the source was created"
expect_refused "target equals source" "$MNT" "$SRC" -- \
    -o "target=$SRC,overwrite,$OPTS" "$SRC" "$MNT"
mkdir "$SRC/inner2"
expect_refused "target inside source (existing)" "$MNT" "$SRC" -- \
    -o "target=$SRC/inner2,$OPTS" "$SRC" "$MNT"
expect_refused "target inside source (via ..)" "$MNT" "$SRC" -- \
    -o "target=$TGT/../src/inner2,$OPTS" "$SRC" "$MNT"
rmdir "$SRC/inner2"

# source inside the target (the target then is not empty: with overwrite the
# only reason left to refuse is the nesting)
mkdir -p "$T/outer/src2"
random_file "$T/outer/src2/disk.img" 1
expect_refused "source inside target" "$MNT" "$T/outer" -- \
    -o "target=$T/outer,overwrite,$OPTS" "$T/outer/src2" "$MNT"
expect_refused "source inside target (no overwrite)" "$MNT" "$T/outer" -- \
    -o "target=$T/outer,$OPTS" "$T/outer/src2" "$MNT"

# a target below the mountpoint would be reached through the mount itself
# (and hidden by it); a mountpoint below the target would be copied into.
expect_refused "target inside mountpoint" "$MNT" "$MNT" -- \
    -o "target=$MNT/t,$OPTS" "$SRC" "$MNT"
mkdir -p "$T/tt/m"
expect_refused "mountpoint inside target" "$T/tt/m" "$T/tt" -- \
    -o "target=$T/tt,overwrite,$OPTS" "$SRC" "$T/tt/m"

# options that do not exist or do not parse
expect_refused "unknown option" "$MNT" "$TGT" -- \
    -o "target=$TGT,$OPTS,bogus=1" "$SRC" "$MNT"
expect_refused "unknown long option" "$MNT" "$TGT" -- \
    -o "target=$TGT,$OPTS" --bogus=1 "$SRC" "$MNT"
expect_refused "granularity=3K" "$MNT" "$TGT" -- \
    -o "target=$TGT,$OPTS,granularity=3K" "$SRC" "$MNT"
expect_refused "granularity=2K" "$MNT" "$TGT" -- \
    -o "target=$TGT,$OPTS,granularity=2K" "$SRC" "$MNT"
expect_refused "granularity=128M" "$MNT" "$TGT" -- \
    -o "target=$TGT,$OPTS,granularity=128M" "$SRC" "$MNT"
expect_refused "workers=0" "$MNT" "$TGT" -- \
    -o "target=$TGT,$OPTS,workers=0" "$SRC" "$MNT"
expect_refused "--workers=0" "$MNT" "$TGT" -- \
    -o "target=$TGT,$OPTS" --workers=0 "$SRC" "$MNT"
expect_refused "buf_size=abc" "$MNT" "$TGT" -- \
    -o "target=$TGT,$OPTS,buf_size=abc" "$SRC" "$MNT"

# enum options with a value from no list, or from another option's list; a
# message that lists the choices must list only this option's
for spec in "sync=maybe:report|ignore|stop|complete|cancel" \
            "sync=report:report|ignore|stop|complete|cancel" \
            "on_unmount=later:full|none|report|ignore|stop" \
            "on_target_error=cancel:full|none|complete|cancel" \
            "copy_mode=turbo:full|none|report|ignore|stop|complete|cancel"; do
    opt=${spec%%:*} foreign=${spec#*:}
    expect_refused "$opt" "$MNT" "$TGT" -- \
        -o "target=$TGT,$OPTS,$opt" "$SRC" "$MNT"
    msg=$(sed 's/^mirrorfs: [^:]*: //' "$T/bad.err")
    printf '%s\n' "$msg" | grep -Eqw "$foreign" &&
        fail "[$opt] the message offers choices of another option: $(cat "$T/bad.err")"
done

# mountpoint is a regular file
head -c 4096 /dev/urandom > "$T/mnt-file"
expect_refused "mountpoint is a file" "$T/mnt-file" "$TGT" -- \
    -o "target=$TGT,$OPTS" "$SRC" "$T/mnt-file"

# a source that already holds .mirror (a file, then a directory)
: > "$SRC/.mirror"
expect_refused "source holds a .mirror file" "$MNT" "$TGT" -- \
    -o "target=$TGT,$OPTS" "$SRC" "$MNT"
rm "$SRC/.mirror"
mkdir "$SRC/.mirror"
expect_refused "source holds a .mirror directory" "$MNT" "$TGT" -- \
    -o "target=$TGT,$OPTS" "$SRC" "$MNT"
rmdir "$SRC/.mirror"

# a non-empty target: refused without overwrite (and left alone) ...
head -c 3000000 /dev/urandom > "$TGT/disk.img"     # bigger than the source's
head -c 5000 /dev/urandom > "$TGT/other.bin"
cp "$TGT/disk.img" "$T/tgt-disk.before"
expect_refused "non-empty target" "$MNT" "$TGT" -- \
    -o "target=$TGT,$OPTS" "$SRC" "$MNT"
assert_files_cmp "$TGT/disk.img" "$T/tgt-disk.before" "target image after a refused start"
rm "$TGT/other.bin"

# ... and accepted with -o overwrite: the target image is overwritten to an
# exact copy (shrunk to the source's size).
start_mirror -o overwrite
wait_phase ready 30
finish_mirror
assert_eq "$DAEMON_RC" 0 "exit code with -o overwrite"
assert_eq "$(fsize_of "$TGT/disk.img")" 1048576 "overwritten target image size"
assert_exact
assert_clean_stderr
exit 0
