#!/bin/bash
# Install what building and testing mirrorfs needs, from Debian's archive.
# Sourced by quickstart.sh and run-tests.sh; runs apt-get only for what is
# missing, so a second run is quick and works offline.
set -euo pipefail

MIRRORFS_PACKAGES=(
    build-essential autoconf automake pkg-config
    libfuse3-dev fuse3 libglib2.0-dev libjson-glib-dev check
    fio qemu-utils python3 util-linux kmod acl perl e2fsprogs
    libnbd-dev libnbd-bin nbdkit qemu-system-common
)

mirrorfs_install_deps() {
    local missing=() p
    for p in "${MIRRORFS_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "mirrorfs: these packages are missing and installing them needs root: ${missing[*]}" >&2
            exit 1
        fi
        echo "==> apt-get install ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q </dev/null
        apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
    fi
    # /dev/fuse: present on most machines; load the module where it is not.
    [ -c /dev/fuse ] || modprobe fuse 2>/dev/null || true
}

# Build in the source tree (autogen, configure, make) unless up to date.
mirrorfs_build() {
    local top=$1
    shift
    cd "$top"
    [ -x configure ] || ./autogen.sh
    [ -f Makefile ] || ./configure "$@"
    make -j"$(nproc)"
}
