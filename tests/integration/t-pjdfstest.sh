#!/bin/bash
# t-pjdfstest.sh - pjdfstest, the POSIX file system conformance suite (BSD
# licence), run as root inside the mount while the mirror runs.  The mount
# has allow_other and default_permissions: the suite switches to other
# users and expects the kernel's permission checks.  Every test file of the
# suite must pass; then the job must finish with exit 0 and the target must
# be an exact copy (treecmp) of what the suite left in the source.  The
# suite chooses some checks by file system type: it is told the type of
# the file system beneath the mount (PJDFSTEST_FS), whose behaviour the
# mount must pass on.
#
# pjdfstest is not part of mirrorfs and not in the release tarball: it is
# taken from $PJDFSTEST_SRC, else from ../shared/peers/pjdfstest beside the
# source tree, and skipped (exit 77) when it is not there.  It is built once
# in the build tree (tests/pjdfstest-build, which `make clean` removes, or
# $PJDFSTEST_BUILD) and rebuilt when a source file is newer than that build.
# A build failure is a failure, not a skip.  PJDFSTEST_TESTS="chmod rename"
# runs only those directories of the suite; PJDFSTEST_TIMEOUT (seconds,
# default 1200) bounds the run.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"

: "${TOP_SRCDIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${TOP_BUILDDIR:=$(dirname "$MIRRORFS")/..}"
PJD=${PJDFSTEST_SRC:-$TOP_SRCDIR/../shared/peers/pjdfstest}
if [ ! -f "$PJD/pjdfstest.c" ] || [ ! -d "$PJD/tests" ]; then
    skip "pjdfstest not found at $PJD: skipped (it lives outside the release tarball)"
fi
PJD=$(cd "$PJD" && pwd)
BUILD=${PJDFSTEST_BUILD:-$TOP_BUILDDIR/tests/pjdfstest-build}
for tool in prove perl autoreconf make cc; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (contrib/deps.sh installs it)"
done

# build_pjdfstest: a copy of the sources in BUILD, configured and built,
# unless the copy there was built from PJD and no source file is newer.
build_pjdfstest() {
    if [ -x "$BUILD/pjdfstest" ] && [ "$(cat "$BUILD/.built-from" 2>/dev/null)" = "$PJD fs" ] &&
       [ -z "$(find "$PJD" -newer "$BUILD/.built-from" -print -quit)" ]; then
        log "pjdfstest: reusing the build in $BUILD"
        return 0
    fi
    log "pjdfstest: building $PJD in $BUILD"
    case "$BUILD" in */pjdfstest-build) ;; *) [ ! -e "$BUILD" ] ||
        fail "PJDFSTEST_BUILD=$BUILD exists and does not end in pjdfstest-build: not removing it" ;;
    esac
    rm -rf "$BUILD"
    mkdir -p "$(dirname "$BUILD")" || fail "cannot make $(dirname "$BUILD")"
    # The sources may be read-only: copy, then make the copy writable.
    cp -R "$PJD" "$BUILD" && chmod -R u+w "$BUILD" || fail "cannot copy $PJD to $BUILD"
    (cd "$BUILD" && autoreconf -ifs && ./configure && make pjdfstest) >"$BUILD/build.log" 2>&1 ||
        fail "building pjdfstest in $BUILD failed (see $BUILD/build.log):"$'\n'"$(tail -n 20 "$BUILD/build.log")"
    [ -x "$BUILD/pjdfstest" ] || fail "the pjdfstest build in $BUILD made no pjdfstest program"
    # The suite picks checks by file system type (its conf says to set it
    # by hand where needed): PJDFSTEST_FS lets the run name the type of the
    # file system beneath the mount, whose behaviour the mount passes on.
    printf '\n# mirrorfs: the type of the file system beneath the mount\n%s\n' \
        '[ -n "${PJDFSTEST_FS:-}" ] && fs=$PJDFSTEST_FS' >>"$BUILD/tests/conf" ||
        fail "cannot extend $BUILD/tests/conf"
    echo "$PJD fs" >"$BUILD/.built-from"
}
build_pjdfstest

setup
# Held to the standard of the file system beneath: on ext4 that runs the
# checks pjdfstest keeps for it (a rename updates the ctime).
PJDFSTEST_FS=$(df -PT "$SRC" | awk 'END { print toupper($2) }')
export PJDFSTEST_FS
log "pjdfstest: judged as $PJDFSTEST_FS, the file system of $SRC"
start_mirror -o allow_other,default_permissions
wait_phase ready 30
if [ -n "${PJDFSTEST_PIVOT:-}" ]; then
    # The same suite through a mount that pivoted: every operation on the
    # target's tree through the switched descriptors, none on the source.
    "$MIRRORCTL" pivot "$MNT" >&2 || fail "the pivot was refused"
    assert_eq "$(status_get phase)" pivoted "phase before the suite"
fi

dirs=()
for d in ${PJDFSTEST_TESTS:-}; do
    [ -d "$BUILD/tests/$d" ] || fail "PJDFSTEST_TESTS: no directory $d in $BUILD/tests"
    dirs+=("$BUILD/tests/$d")
done
[ "${#dirs[@]}" -gt 0 ] || dirs=("$BUILD/tests")
log "pjdfstest: prove -r ${dirs[*]} in $MNT (its output follows)"
t0=$(date +%s)
(cd "$MNT" && exec timeout -k 10 "${PJDFSTEST_TIMEOUT:-1200}" prove -r "${dirs[@]}") 2>&1 |
    tee "$T/prove.log"
prove_rc=$?
log "pjdfstest: prove exited with $prove_rc after $(( $(date +%s) - t0 )) s"

# The test files that failed, relative to the suite's tests/: those of
# prove's summary with failed tests, a non-zero exit status or parse errors
# (the summary also lists files whose only news is a TODO test passing).
failed=$(awk -v pre="$BUILD/tests/" '
    /^Test Summary Report/ { in_summary = 1; next }
    !in_summary { next }
    /^Files=/ { in_summary = 0; next }
    /\.t +\(Wstat: / {
        cur = $1
        if (index(cur, pre) == 1) cur = substr(cur, length(pre) + 1)
        match($0, /Wstat: [0-9]+/); w = substr($0, RSTART + 7, RLENGTH - 7) + 0
        match($0, /Failed: [0-9]+/); f = substr($0, RSTART + 8, RLENGTH - 8) + 0
        if (w != 0 || f > 0) bad[cur] = 1
        next
    }
    /Parse errors/ && cur != "" { bad[cur] = 1 }
    END { for (c in bad) print c }' "$T/prove.log" | sort)
nfailed=$(printf '%s' "$failed" | grep -c .)
files=$(sed -n 's/^Files=\([0-9]*\),.*/\1/p' "$T/prove.log" | tail -n 1)
why=""
if [ "$prove_rc" != 0 ]; then
    if [ "$prove_rc" = 124 ] || [ "$prove_rc" = 137 ]; then
        why="pjdfstest did not finish within ${PJDFSTEST_TIMEOUT:-1200} s"
    elif [ "$nfailed" -gt 0 ]; then
        why="pjdfstest: $nfailed of ${files:-?} test files failed through the mount: $(echo $failed)"
    else
        why="prove exited with $prove_rc: $(tail -n 3 "$T/prove.log" | tr '\n' ' ')"
    fi
    log "FAILED: $why"
    log "pjdfstest: the failing test files and tests:"
    sed -n '/^Test Summary Report/,$p' "$T/prove.log" >&2
fi

finish_mirror_within 120
log "job: daemon exit code $DAEMON_RC, $(grep -E '^(phase|errors|last_error):' "$STATE/result" 2>/dev/null | tr '\n' ' ' | cut -c 1-400)"
if [ -n "${PJDFSTEST_PIVOT:-}" ]; then
    [ -z "$why" ] || fail "$why (through a pivoted mount); then the daemon exited with $DAEMON_RC"
    assert_result pivoted 0
    # The source was empty at the pivot: nothing of the suite may be there.
    [ -z "$(ls -A "$SRC")" ] || fail "the suite reached the source after the pivot: $(ls -A "$SRC" | head -n 5)"
    assert_clean_stderr
    exit 0
fi
if ! out=$(python3 "$TREECMP" --exclude .mirror "$SRC" "$TGT" 2>&1); then
    log "the target is not an exact copy of the source:"
    printf '%s\n' "$out" >&2
fi
[ -z "$why" ] || fail "$why; then the daemon exited with $DAEMON_RC"
assert_result completed 0
assert_exact
assert_clean_stderr
exit 0
