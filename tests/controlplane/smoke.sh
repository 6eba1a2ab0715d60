#!/usr/bin/env bash
# Smoke test of the Docker-free control plane: build (if needed), start etcd and
# kube-apiserver on loopback, talk to it with kubectl, confirm objects reach etcd,
# tear everything down. Exit 0 only if every check passed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

trap cp_stop EXIT
trap 'exit 130' INT TERM

fail() { cp_log "SMOKE FAILED: $*"; cp_dump_logs; exit 1; }
k() { "$KUBECTL_BIN" --request-timeout=20s "$@"; }

cp_start || fail "control plane did not start"

cp_log "kubectl get ns"
ns="$(k get ns -o name)" || fail "kubectl get ns"
printf '%s\n' "$ns" >&2
for want in default kube-system kube-public; do
    grep -qx "namespace/$want" <<<"$ns" || fail "namespace $want missing"
done

cp_log "kubectl auth can-i '*' '*' (token user is in system:masters)"
[ "$(k auth can-i '*' '*')" = yes ] || fail "admin token is not cluster-admin"

cp_log "apply CRD, wait for Established, create a custom resource"
k apply -f - <<'EOF' || fail "apply CRD"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.privpoll.test
spec:
  group: smoke.privpoll.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
EOF
k wait --for condition=Established --timeout=30s crd/widgets.smoke.privpoll.test >&2 ||
    fail "CRD not Established"

k create namespace smoke >&2 || fail "create namespace"
k apply -n smoke -f - <<'EOF' || fail "apply Widget"
apiVersion: smoke.privpoll.test/v1
kind: Widget
metadata: {name: w1}
spec: {size: 3}
EOF
# Schema validation is enforced by the API server.
if k apply -n smoke -f - >/dev/null 2>&1 <<'EOF'
apiVersion: smoke.privpoll.test/v1
kind: Widget
metadata: {name: bad}
spec: {size: 0}
EOF
then fail "invalid Widget (size 0) was accepted"; fi

cp_log "apply a Deployment"
k apply -n smoke -f - <<'EOF' || fail "apply Deployment"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: privpoll-smoke/web:1.0
        args: [--port, "8080"]
        ports: [{containerPort: 8080}]
EOF

cp_log "read back through the API"
[ "$(k get -n smoke widget w1 -o jsonpath='{.spec.size}')" = 3 ] || fail "Widget w1 not stored"
[ "$(k get -n smoke deploy web -o jsonpath='{.spec.template.spec.containers[0].args[1]}')" = 8080 ] ||
    fail "Deployment web not stored"
k get -n smoke deploy,widgets >&2

cp_log "confirm the objects are in etcd"
for prefix in \
    /registry/apiextensions.k8s.io/customresourcedefinitions/ \
    /registry/smoke.privpoll.test/widgets/smoke/ \
    /registry/deployments/smoke/; do
    n="$(cp_etcd_count "$prefix")" || fail "etcd range $prefix"
    cp_log "  etcd $prefix: $n key(s)"
    [ "$n" -ge 1 ] || fail "nothing stored under $prefix"
done

cp_log "TokenRequest (exercises the service-account signing key)"
k create serviceaccount -n smoke bot >&2 || fail "create serviceaccount"
tok="$(k create token -n smoke bot --duration 10m)" || fail "kubectl create token"
alg="$(python3 -c 'import base64, json, sys
h = sys.argv[1].split(".")[0]
print(json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))["alg"])' "$tok")" || alg=""
[ "$alg" = RS256 ] ||
    fail "service-account token is not an RS256 JWT"

cp_log "teardown"
pids="$CP_APISERVER_PID $CP_ETCD_PID"
cp_stop
for pid in $pids; do
    ! kill -0 "$pid" 2>/dev/null || fail "process $pid still running after teardown"
done

cp_log "SMOKE OK (kube-apiserver ready after ${CP_READY_SECONDS}s)"
