#!/usr/bin/env bash
# The base image of privpoll's local images, made here from Debian's packages: a bookworm
# root filesystem from debootstrap with Debian's Python, imported into podman as
#   localhost/privpoll-base:bookworm
# so that building the images needs no container registry.
#
# Idempotent: the root filesystem's tarball is kept under $PRIVPOLL_CACHE/images (default
# ~/.cache/privpoll/images) and the image is only imported when podman lacks it.
#
# Environment:
#   PRIVPOLL_CACHE   cache folder (default $HOME/.cache/privpoll)
#   DEBIAN_MIRROR    Debian mirror for debootstrap (default: debootstrap's own)
#   FORCE_REBUILD=1  debootstrap again even when the tarball exists
set -euo pipefail

SUITE=bookworm
BASE_IMAGE="localhost/privpoll-base:$SUITE"
# python3-venv: the Dockerfile's build stage makes a virtualenv; ca-certificates: pip's TLS.
PACKAGES=python3,python3-venv,ca-certificates
CACHE="${PRIVPOLL_CACHE:-$HOME/.cache/privpoll}/images"
TARBALL="$CACHE/debian-$SUITE-$(printf '%s' "$PACKAGES" | cksum | cut -d' ' -f1).tar"

log() { printf '[images/base] %s\n' "$*" >&2; }
die() { printf '[images/base] ERROR: %s\n' "$*" >&2; exit 1; }

command -v podman >/dev/null 2>&1 || die "podman is missing: 'make podman' installs it (as root)"
mkdir -p "$CACHE"
exec 9>"$CACHE/.base.lock"
flock 9

if [ ! -s "$TARBALL" ] || [ "${FORCE_REBUILD:-0}" = 1 ]; then
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing: 'make podman' installs it (as root)"
    [ "$(id -u)" = 0 ] || die "debootstrap needs root"
    rootfs="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
    trap 'rm -rf "$rootfs"' EXIT
    log "debootstrap --variant=minbase $SUITE with $PACKAGES (first time: a minute or two)"
    start=$SECONDS
    # shellcheck disable=SC2086
    if ! nice -n 10 debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" \
            ${DEBIAN_MIRROR:-} >"$CACHE/debootstrap.log" 2>&1; then
        tail -20 "$CACHE/debootstrap.log" >&2
        die "debootstrap failed (whole log: $CACHE/debootstrap.log)"
    fi
    # What an image does not need: package lists and caches, docs, the host's resolver.
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
        "$rootfs"/var/log/* "$rootfs"/var/cache/debconf/*-old
    : >"$rootfs/etc/resolv.conf"
    : >"$rootfs/etc/hostname"
    tar --numeric-owner -C "$rootfs" -cf "$TARBALL.tmp" .
    mv -f "$TARBALL.tmp" "$TARBALL"
    podman image rm -f "$BASE_IMAGE" >/dev/null 2>&1 || true
    log "made $TARBALL in $((SECONDS - start))s ($(du -h "$TARBALL" | cut -f1))"
fi

if ! podman image exists "$BASE_IMAGE"; then
    log "podman import $TARBALL $BASE_IMAGE"
    podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' \
        "$TARBALL" "$BASE_IMAGE" >/dev/null
fi
printf 'BASE_IMAGE=%q\n' "$BASE_IMAGE"
