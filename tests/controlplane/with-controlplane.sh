#!/usr/bin/env bash
# Run a command against a fresh, throw-away control plane (etcd + kube-apiserver on
# loopback), then tear it down. The command sees KUBECONFIG, KUBECTL_BIN, CP_SERVER,
# CP_TOKEN, CP_ETCD_URL and CP_DIR.
#   tests/controlplane/with-controlplane.sh pytest tests/integration -k operator
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"
trap cp_stop EXIT
trap 'exit 130' INT TERM
cp_start
export KUBECONFIG KUBECTL_BIN CP_SERVER CP_TOKEN CP_ETCD_URL CP_DIR
rc=0
"$@" || rc=$?
exit "$rc"
