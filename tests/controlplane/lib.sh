# shellcheck shell=bash
# Start/stop a throw-away Kubernetes control plane (etcd + kube-apiserver) on loopback.
# Source this file; it defines functions only. Binaries come from ./build.sh.
#
#   source tests/controlplane/lib.sh
#   cp_start            # builds if needed, starts etcd + apiserver, waits for /readyz
#   kubectl get ns      # KUBECONFIG is exported by cp_start
#   cp_stop             # kills both processes, removes the work dir
#
# After cp_start these are set (and written to $CP_DIR/env):
#   CP_DIR KUBECONFIG CP_SERVER CP_TOKEN CP_ETCD_URL CP_READY_SECONDS
#   ETCD_BIN KUBE_APISERVER_BIN KUBECTL_BIN
# Logs: $CP_DIR/etcd.log, $CP_DIR/kube-apiserver.log.
#
# Environment knobs: CP_READY_TIMEOUT (seconds, default 90), CP_KEEP_DIR=1 keeps the
# work dir after cp_stop (for debugging), CP_APISERVER_EXTRA_ARGS (word-split and
# appended to the kube-apiserver flags). Without a controller-manager nobody creates
# the "default" ServiceAccount, so Pods (not Deployments) are rejected by the
# ServiceAccount admission plugin unless the test creates that SA or passes
#   CP_APISERVER_EXTRA_ARGS="--disable-admission-plugins ServiceAccount"

CP_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

cp_log() { printf '[controlplane] %s\n' "$*" >&2; }

# Print N distinct free TCP ports on 127.0.0.1 (held open together, so distinct).
cp_free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# cp_wait_for PID TIMEOUT CMD...: wait until CMD succeeds, polling every 0.2 s.
# Fails after TIMEOUT seconds, or at once if process PID has exited.
cp_wait_for() {
    local pid="$1" timeout="$2"; shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { cp_log "process $pid exited during startup"; return 1; }
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

cp_etcd_healthy() { curl -fsS "$CP_ETCD_URL/health" | grep -q '"health":"true"'; }

cp_apiserver_ready() {
    curl -fsS -k -H "Authorization: Bearer $CP_TOKEN" "$CP_SERVER/readyz" | grep -qx ok
}

# Count etcd keys under a prefix, via etcd's HTTP/JSON gateway (no etcdctl needed).
cp_etcd_count() {
    local key end
    key="$(printf '%s' "$1" | base64 -w0)"
    # range_end = prefix with its last byte incremented; prefixes here end in '/' -> '0'.
    end="$(printf '%s' "${1%/}0" | base64 -w0)"
    curl -fsS -X POST "$CP_ETCD_URL/v3/kv/range" \
        -d "{\"key\":\"$key\",\"range_end\":\"$end\",\"count_only\":true}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin).get("count", 0))'
}

# Kill one process we started: SIGTERM, up to 10 s grace, then SIGKILL.
cp_kill() {
    local pid="$1" name="$2" i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        cp_log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cp_stop() {
    cp_kill "${CP_APISERVER_PID:-}" kube-apiserver
    cp_kill "${CP_ETCD_PID:-}" etcd
    CP_APISERVER_PID="" CP_ETCD_PID=""
    if [ -n "${CP_DIR:-}" ] && [ -d "$CP_DIR" ]; then
        if [ "${CP_KEEP_DIR:-0}" = 1 ]; then
            cp_log "kept work dir $CP_DIR"
        else
            rm -rf "$CP_DIR"
        fi
    fi
}

cp_dump_logs() {
    local f
    for f in "$CP_DIR/etcd.log" "$CP_DIR/kube-apiserver.log"; do
        [ -f "$f" ] || continue
        printf '\n===== last 40 lines of %s =====\n' "$(basename "$f")" >&2
        tail -n 40 "$f" >&2
    done
}

cp_start() {
    local out
    out="$("$CP_LIB_DIR/build.sh")" || return 1
    eval "$out"

    CP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/privpoll-controlplane.XXXXXX")"
    local etcd_client etcd_peer secure_port
    read -r etcd_client etcd_peer secure_port <<<"$(cp_free_ports 3)"
    CP_ETCD_URL="http://127.0.0.1:$etcd_client"
    CP_SERVER="https://127.0.0.1:$secure_port"
    CP_TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"

    # --- etcd ------------------------------------------------------------------------
    "$ETCD_BIN" \
        --name controlplane \
        --data-dir "$CP_DIR/etcd" \
        --listen-client-urls "$CP_ETCD_URL" \
        --advertise-client-urls "$CP_ETCD_URL" \
        --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
        --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
        --initial-cluster "controlplane=http://127.0.0.1:$etcd_peer" \
        --unsafe-no-fsync \
        >"$CP_DIR/etcd.log" 2>&1 &
    CP_ETCD_PID=$!
    if ! cp_wait_for "$CP_ETCD_PID" 30 cp_etcd_healthy; then
        cp_log "etcd did not become healthy within 30s"
        cp_dump_logs; cp_stop; return 1
    fi
    cp_log "etcd up at $CP_ETCD_URL (pid $CP_ETCD_PID)"

    # --- credentials -------------------------------------------------------------------
    openssl genrsa -out "$CP_DIR/sa.key" 2048 2>/dev/null &&
        openssl rsa -in "$CP_DIR/sa.key" -pubout -out "$CP_DIR/sa.pub" 2>/dev/null ||
        { cp_log "openssl failed to create the service-account key pair"; cp_stop; return 1; }
    # token,user,uid,"group1,group2"
    printf '%s,admin,admin,"system:masters"\n' "$CP_TOKEN" >"$CP_DIR/tokens.csv"

    # --- kube-apiserver ----------------------------------------------------------------
    local start_ms
    start_ms=$(date +%s%3N)
    "$KUBE_APISERVER_BIN" \
        --etcd-servers "$CP_ETCD_URL" \
        --bind-address 127.0.0.1 \
        --advertise-address 127.0.0.1 \
        --endpoint-reconciler-type none \
        --profiling=false \
        --secure-port "$secure_port" \
        --cert-dir "$CP_DIR/certs" \
        --authorization-mode RBAC \
        --token-auth-file "$CP_DIR/tokens.csv" \
        --service-account-key-file "$CP_DIR/sa.pub" \
        --service-account-signing-key-file "$CP_DIR/sa.key" \
        --service-account-issuer https://kubernetes.default.svc \
        --service-cluster-ip-range 10.0.0.0/24 \
        --allow-privileged \
        ${CP_APISERVER_EXTRA_ARGS:-} \
        >"$CP_DIR/kube-apiserver.log" 2>&1 &
    CP_APISERVER_PID=$!
    if ! cp_wait_for "$CP_APISERVER_PID" "${CP_READY_TIMEOUT:-90}" cp_apiserver_ready; then
        cp_log "kube-apiserver not ready within ${CP_READY_TIMEOUT:-90}s"
        cp_dump_logs; cp_stop; return 1
    fi
    CP_READY_SECONDS="$(awk -v ms=$(( $(date +%s%3N) - start_ms )) 'BEGIN { printf "%.1f", ms / 1000 }')"
    cp_log "kube-apiserver ready at $CP_SERVER after ${CP_READY_SECONDS}s (pid $CP_APISERVER_PID)"

    # --- kubeconfig --------------------------------------------------------------------
    KUBECONFIG="$CP_DIR/kubeconfig"
    cat >"$KUBECONFIG" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: controlplane
  cluster:
    server: $CP_SERVER
    certificate-authority: $CP_DIR/certs/apiserver.crt
users:
- name: admin
  user:
    token: $CP_TOKEN
contexts:
- name: controlplane
  context:
    cluster: controlplane
    user: admin
current-context: controlplane
EOF
    export KUBECONFIG
    printf 'export %s=%q\n' \
        CP_DIR "$CP_DIR" KUBECONFIG "$KUBECONFIG" CP_SERVER "$CP_SERVER" \
        CP_TOKEN "$CP_TOKEN" CP_ETCD_URL "$CP_ETCD_URL" KUBECTL_BIN "$KUBECTL_BIN" \
        >"$CP_DIR/env"
}
