#!/usr/bin/env bash
# Build the control-plane binaries used by the operator tests (etcd, kube-apiserver,
# kubectl) from their published Go modules, pinned by ./etcd/go.mod and ./kube/go.mod.
# With the argument `cluster` it also builds what a one-node cluster needs (tests/cluster):
# kubelet, kube-scheduler, kube-controller-manager and kube-proxy from the same
# k8s.io/kubernetes module, and CoreDNS from ../cluster/coredns/go.mod.
#
# Idempotent: a binary is only built when its versioned file is missing from the cache
#   ${PRIVPOLL_BIN_DIR:-$HOME/.cache/privpoll/bin}/{etcd-vX,kube-apiserver-vY,kubectl-vY,...}
#
# Progress goes to stderr. On success stdout carries shell assignments, so callers can do
#   eval "$(tests/controlplane/build.sh)"   # sets ETCD_BIN, KUBE_APISERVER_BIN, KUBECTL_BIN
#   eval "$(tests/controlplane/build.sh cluster)"   # also KUBELET_BIN, KUBE_SCHEDULER_BIN,
#                                 # KUBE_CONTROLLER_MANAGER_BIN, KUBE_PROXY_BIN, COREDNS_BIN
#
# Environment:
#   PRIVPOLL_BIN_DIR   cache directory (default $HOME/.cache/privpoll/bin)
#   BUILD_JOBS         parallel compile jobs, go build -p (default 2)
#   BUILD_NICE         nice level for the compiler (default 10)
#   FORCE_REBUILD=1    rebuild even when the cached binary exists
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN_DIR="${PRIVPOLL_BIN_DIR:-$HOME/.cache/privpoll/bin}"
JOBS="${BUILD_JOBS:-2}"
NICE="${BUILD_NICE:-10}"

log() { printf '[controlplane/build] %s\n' "$*" >&2; }
die() { printf '[controlplane/build] ERROR: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "'go' not found on PATH; install Go >= 1.26 (etcd v3.6.16 needs it)"

mkdir -p "$BIN_DIR" || die "cannot create cache directory $BIN_DIR"

# Serialise concurrent invocations (parallel test sessions) on the same cache.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$BIN_DIR/.build.lock"
    flock 9
fi

# Version of a module as pinned by the go.mod in directory $1.
mod_version() {
    (cd "$1" && go list -m -f '{{.Version}}' "$2") \
        || die "cannot resolve $2 from $1/go.mod (see the go error above; offline with a cold module cache?)"
}

ETCD_VERSION="$(mod_version "$HERE/etcd" go.etcd.io/etcd/server/v3)"
KUBE_VERSION="$(mod_version "$HERE/kube" k8s.io/kubernetes)"

ETCD_BIN="$BIN_DIR/etcd-$ETCD_VERSION"
KUBE_APISERVER_BIN="$BIN_DIR/kube-apiserver-$KUBE_VERSION"
KUBECTL_BIN="$BIN_DIR/kubectl-$KUBE_VERSION"

# Version stamping as done by Kubernetes' hack/lib/version.sh; without it the binaries
# report v0.0.0-master and kubectl warns about version skew.
kube_ldflags() {
    local major minor date
    major="${KUBE_VERSION#v}"; major="${major%%.*}"
    minor="${KUBE_VERSION#v*.}"; minor="${minor%%.*}"
    date="$(cd "$HERE/kube" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes 2>/dev/null || true)"
    local flags="-s -w" pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$KUBE_VERSION"
        flags+=" -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        flags+=" -X $pkg.gitTreeState=clean"
        [ -n "$date" ] && flags+=" -X $pkg.buildDate=$date"
    done
    printf '%s' "$flags"
}

# build <module dir> <package> <output> <ldflags>
build() {
    local dir="$1" pkg="$2" out="$3" ldflags="$4"
    if [ -x "$out" ] && [ "${FORCE_REBUILD:-0}" != 1 ]; then
        log "cached: $out"
        return 0
    fi
    local tmp="$out.tmp.$$"
    log "building $pkg -> $out (go build -p $JOBS, nice $NICE; first build takes minutes)"
    local start=$SECONDS
    if ! (cd "$dir" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -p=$JOBS" \
            nice -n "$NICE" go build -trimpath -ldflags "$ldflags" -o "$tmp" "$pkg"); then
        rm -f "$tmp"
        die "go build of $pkg failed (module dir: $dir). Check Go version ($(go env GOVERSION)), network access to the Go module proxy, and free disk space."
    fi
    mv -f "$tmp" "$out"
    log "built $out in $((SECONDS - start))s ($(du -h "$out" | cut -f1))"
}

build "$HERE/etcd" go.etcd.io/etcd/server/v3 "$ETCD_BIN" "-s -w"
build "$HERE/kube" k8s.io/kubernetes/cmd/kube-apiserver "$KUBE_APISERVER_BIN" "$(kube_ldflags)"
build "$HERE/kube" k8s.io/kubernetes/cmd/kubectl "$KUBECTL_BIN" "$(kube_ldflags)"

# Cheap sanity check that the cached files really are runnable binaries.
"$ETCD_BIN" --version >/dev/null 2>&1 || die "$ETCD_BIN does not run; delete it and re-run"
"$KUBE_APISERVER_BIN" --version >/dev/null 2>&1 || die "$KUBE_APISERVER_BIN does not run; delete it and re-run"
"$KUBECTL_BIN" version --client >/dev/null 2>&1 || die "$KUBECTL_BIN does not run; delete it and re-run"

printf 'ETCD_BIN=%q\nKUBE_APISERVER_BIN=%q\nKUBECTL_BIN=%q\n' \
    "$ETCD_BIN" "$KUBE_APISERVER_BIN" "$KUBECTL_BIN"

[ "${1:-}" = cluster ] || exit 0

# --- one-node cluster (tests/cluster) --------------------------------------------------
KUBELET_BIN="$BIN_DIR/kubelet-$KUBE_VERSION"
KUBE_SCHEDULER_BIN="$BIN_DIR/kube-scheduler-$KUBE_VERSION"
KUBE_CONTROLLER_MANAGER_BIN="$BIN_DIR/kube-controller-manager-$KUBE_VERSION"
KUBE_PROXY_BIN="$BIN_DIR/kube-proxy-$KUBE_VERSION"
build "$HERE/kube" k8s.io/kubernetes/cmd/kube-scheduler "$KUBE_SCHEDULER_BIN" "$(kube_ldflags)"
build "$HERE/kube" k8s.io/kubernetes/cmd/kube-controller-manager "$KUBE_CONTROLLER_MANAGER_BIN" "$(kube_ldflags)"
build "$HERE/kube" k8s.io/kubernetes/cmd/kube-proxy "$KUBE_PROXY_BIN" "$(kube_ldflags)"
build "$HERE/kube" k8s.io/kubernetes/cmd/kubelet "$KUBELET_BIN" "$(kube_ldflags)"
COREDNS_VERSION="$(mod_version "$HERE/../cluster/coredns" github.com/coredns/coredns)"
COREDNS_BIN="$BIN_DIR/coredns-$COREDNS_VERSION"
build "$HERE/../cluster/coredns" github.com/coredns/coredns "$COREDNS_BIN" "-s -w"

for b in "$KUBELET_BIN" "$KUBE_SCHEDULER_BIN" "$KUBE_CONTROLLER_MANAGER_BIN" "$KUBE_PROXY_BIN" "$COREDNS_BIN"; do
    "$b" --version >/dev/null 2>&1 || die "$b does not run; delete it and re-run"
done
printf 'KUBELET_BIN=%q\nKUBE_SCHEDULER_BIN=%q\nKUBE_CONTROLLER_MANAGER_BIN=%q\nKUBE_PROXY_BIN=%q\nCOREDNS_BIN=%q\n' \
    "$KUBELET_BIN" "$KUBE_SCHEDULER_BIN" "$KUBE_CONTROLLER_MANAGER_BIN" "$KUBE_PROXY_BIN" "$COREDNS_BIN"
