#!/bin/bash
# Set everything up on a Debian 12 machine (as root) and run the whole test
# suite: unit tests (Check) and integration tests (real mounts, fio,
# qemu-img), then `make distcheck`.  Exit status 0 only if all passed.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/contrib/deps.sh"

mirrorfs_install_deps
cd "$top"
./autogen.sh
./configure --enable-werror
make -j"$(nproc)"

rc=0
make -j1 check || rc=$?
summary="tests: 0 passed, 1 failed"
if [ -f test-suite.log ]; then
    count() { sed -n "s/^# $1: *//p" test-suite.log | head -n 1; }
    pass=$(count PASS) fail=$(count FAIL) skip=$(count SKIP) err=$(count ERROR)
    # Show what failed, not only that something did.
    [ "$rc" -eq 0 ] || sed -n '/^FAIL: \|^ERROR: /,/^$/p' test-suite.log | head -n 200 || true
    summary="tests: ${pass:-0} passed, $(( ${fail:-0} + ${err:-0} )) failed, ${skip:-0} skipped"
fi
if [ "$rc" -eq 0 ] && [ "${MIRRORFS_SKIP_DISTCHECK:-0}" != 1 ]; then
    # The release tarball builds and passes the same suite out of tree.
    make distcheck DISTCHECK_CONFIGURE_FLAGS=--enable-werror || rc=$?
fi
echo "$summary"
exit "$rc"
