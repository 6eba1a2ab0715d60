#!/usr/bin/env bash
# Build helm from its published Go module (helm.sh/helm/v4), pinned below, for the chart tests.
#
# Idempotent: helm is only built when its versioned file is missing from the cache
#   ${PRIVPOLL_BIN_DIR:-$HOME/.cache/privpoll/bin}/helm-vX.Y.Z
#
# Progress goes to stderr. On success stdout carries one shell assignment, so callers can do
#   eval "$(tests/helm/build.sh)"   # sets HELM_BIN
#
# Environment:
#   PRIVPOLL_BIN_DIR   cache directory (default $HOME/.cache/privpoll/bin)
#   BUILD_JOBS         parallel compile jobs, go build -p (default 2)
#   BUILD_NICE         nice level for the compiler (default 10)
#   FORCE_REBUILD=1    rebuild even when the cached binary exists
set -euo pipefail

# The newest v4 release when this was written: `go list -m -versions helm.sh/helm/v4`.
HELM_VERSION=v4.3.1

BIN_DIR="${PRIVPOLL_BIN_DIR:-$HOME/.cache/privpoll/bin}"
JOBS="${BUILD_JOBS:-2}"
NICE="${BUILD_NICE:-10}"
HELM_BIN="$BIN_DIR/helm-$HELM_VERSION"

log() { printf '[helm/build] %s\n' "$*" >&2; }
die() { printf '[helm/build] ERROR: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "'go' not found on PATH; install Go to build helm $HELM_VERSION"
mkdir -p "$BIN_DIR" || die "cannot create cache directory $BIN_DIR"

# Serialise concurrent invocations (parallel test sessions) on the same cache.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$BIN_DIR/.helm-build.lock"
    flock 9
fi

if [ -x "$HELM_BIN" ] && [ "${FORCE_REBUILD:-0}" != 1 ]; then
    log "cached: $HELM_BIN"
else
    gobin="$(mktemp -d "$BIN_DIR/.helm-build.XXXXXX")"
    trap 'rm -rf "$gobin"' EXIT
    log "go install helm.sh/helm/v4/cmd/helm@$HELM_VERSION -> $HELM_BIN (first build takes minutes)"
    start=$SECONDS
    if ! GOBIN="$gobin" CGO_ENABLED=0 GOFLAGS="-p=$JOBS" nice -n "$NICE" go install -trimpath \
            -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
            "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"; then
        die "go install of helm $HELM_VERSION failed. Check Go version ($(go env GOVERSION)), network access to the Go module proxy, and free disk space."
    fi
    mv -f "$gobin/helm" "$HELM_BIN"
    log "built $HELM_BIN in $((SECONDS - start))s ($(du -h "$HELM_BIN" | cut -f1))"
fi

"$HELM_BIN" version --short >/dev/null 2>&1 || die "$HELM_BIN does not run; delete it and re-run"
printf 'HELM_BIN=%q\n' "$HELM_BIN"
