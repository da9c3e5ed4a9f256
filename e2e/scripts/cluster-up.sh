#!/usr/bin/env bash
# Starts a local Kubernetes control plane without containers: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok (fake Nodes that make Pods "run"), all bound to
# 127.0.0.1 on free ports, with state, logs and pid files under one directory.
#
#   cluster-up.sh [--dir DIR] [--nodes N] [--owner-pid PID]
#
# Progress goes to stderr; the last line of stdout is `export KUBECONFIG=<path>`, so
#   eval "$(e2e/scripts/cluster-up.sh | tail -n 1)"
# works. If DIR already holds a live control plane it is reused. --owner-pid starts a detached
# watchdog that runs cluster-down.sh for DIR once PID has exited (test harnesses use it so the plane
# dies with them, even on SIGKILL). Stop it with cluster-down.sh [--dir DIR].
# PULLWARDEN_APISERVER_ARGS adds (whitespace-separated) kube-apiserver flags, e.g. feature gates.
# PULLWARDEN_AUDIT_USERS (comma-separated user names, off when empty) turns on an audit log of
# those users' requests only, at Metadata level (verb, resource, user, impersonated user, no
# bodies), one JSON event per line in DIR/logs/kube-apiserver-audit.log; benchmarks count it.
set -euo pipefail

scripts=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${PULLWARDEN_CLUSTER_DIR:-/tmp/pullwarden-cluster-$(id -u)}
nodes=1
owner_pid=

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --dir=*) dir=${1#*=}; shift ;;
    --nodes) nodes=$2; shift 2 ;;
    --nodes=*) nodes=${1#*=}; shift ;;
    --owner-pid) owner_pid=$2; shift 2 ;;
    --owner-pid=*) owner_pid=${1#*=}; shift ;;
    -h|--help) usage 0 ;;
    *) echo "cluster-up: unknown argument: $1" >&2; usage ;;
  esac
done
[[ $nodes =~ ^[0-9]+$ ]] && [ "$nodes" -ge 1 ] || { echo "cluster-up: --nodes must be a positive integer" >&2; exit 2; }
if [ -n "$owner_pid" ]; then
  if ! [[ $owner_pid =~ ^[0-9]+$ ]] || ! kill -0 "$owner_pid" 2>/dev/null; then
    echo "cluster-up: --owner-pid $owner_pid is not a running process" >&2
    exit 2
  fi
fi

log() { echo "cluster-up: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
t0=$(now)

mkdir -p "$dir"
dir=$(cd "$dir" && pwd -P)
# Source the shared helpers only after dir is absolute: they derive every path from it.
# shellcheck source=cluster-lib.sh
. "$scripts/cluster-lib.sh"

if plane_is_live; then
  log "reusing the live control plane in $dir"
  # Its lifetime was fixed by whoever started it; a second owner would let either one kill it.
  [ -z "$owner_pid" ] || log "note: --owner-pid is ignored for a reused plane"
  [ -z "${PULLWARDEN_AUDIT_USERS:-}" ] || log "note: PULLWARDEN_AUDIT_USERS is ignored for a reused plane"
  echo "export KUBECONFIG=$dir/kubeconfig"
  exit 0
fi
if [ -e "$marker" ]; then
  log "cleaning up a dead control plane left in $dir"
  "$scripts/cluster-down.sh" --dir "$dir" >&2
  mkdir -p "$dir"
elif [ -n "$(ls -A "$dir")" ]; then
  # cluster-down.sh deletes the directory, so never adopt one we did not create.
  echo "cluster-up: $dir is not empty and was not made by cluster-up; refusing to use it" >&2
  exit 1
fi

chmod 700 "$dir"
mkdir -p "$piddir" "$logdir" "$dir/pki"
: >"$marker"
record_pid up $$

failed_component=
finish() {
  local rc=$?
  rm -f "$piddir/up.pid"
  [ "$rc" -eq 0 ] && return
  if [ -n "$failed_component" ] && [ -f "$logdir/$failed_component.log" ]; then
    echo "cluster-up: last lines of $failed_component's log:" >&2
    tail -n 40 "$logdir/$failed_component.log" | sed 's/^/    /' >&2
  fi
  echo "cluster-up: start-up failed (exit $rc); stopping what was started" >&2
  "$scripts/cluster-down.sh" --dir "$dir" >&2 || true
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The watchdog comes first so that the owner dying at any point, even mid start-up, tears down
# whatever exists by then.
if [ -n "$owner_pid" ]; then
  owner_start=$(proc_start_time "$owner_pid")
  # shellcheck disable=SC2016 # expanded by the watchdog's own shell
  setsid bash -c '
    owner=$1 start=$2 down=$3 dir=$4
    . "$(dirname "$down")/cluster-lib.sh"
    while [ "$(proc_start_time "$owner")" = "$start" ]; do sleep 1; done
    echo "watchdog: owner $owner is gone at $(date -u +%T.%N); stopping the control plane"
    exec "$down" --dir "$dir"
  ' watchdog "$owner_pid" "$owner_start" "$scripts/cluster-down.sh" "$dir" \
    >"$logdir/watchdog.log" 2>&1 </dev/null &
  record_pid watchdog $!
fi

bin=$("$scripts/build-k8s.sh" | tail -n 1)
echo "$bin" >"$dir/binpath"
t_bin=$(now)

read -r etcd_port peer_port api_port kcm_port sched_port < <(python3 - <<'EOF'
import socket
# Hold all sockets open together so the five ports are distinct.
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)

# PKI: our own CA so kubeconfigs and kcm's --root-ca-file get one stable trust anchor.
pki=$dir/pki
(
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout ca.key -out ca.crt \
    -subj "/CN=pullwarden-e2e-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  openssl req -newkey rsa:2048 -nodes -sha256 -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >apiserver.ext
  openssl x509 -req -sha256 -days 3650 -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
    -extfile apiserver.ext -out apiserver.crt
  openssl genrsa -out sa.key 2048
) >"$logdir/pki.log" 2>&1 || { failed_component=pki; exit 1; }
token=$(openssl rand -hex 32)
printf '%s,admin,admin,"system:masters"\n' "$token" >"$pki/tokens.csv"
chmod 600 "$pki"/*.key "$pki/tokens.csv"

cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pullwarden-e2e
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: admin
  user:
    token: $token
contexts:
- name: pullwarden-e2e
  context:
    cluster: pullwarden-e2e
    user: admin
    namespace: default
current-context: pullwarden-e2e
EOF
chmod 600 "$dir/kubeconfig"
export KUBECONFIG=$dir/kubeconfig

# start NAME ARGS...: runs $bin/NAME in its own session (so cluster-down can signal the whole
# process group), detached from our stdio (so callers reading our stdout see EOF when we exit).
start() {
  local name=$1; shift
  setsid "$bin/$name" "$@" >"$logdir/$name.log" 2>&1 </dev/null &
  record_pid "$name" $!
}

# wait_until COMPONENT SECONDS DESCRIPTION CMD...: polls CMD, failing early if COMPONENT died.
wait_until() {
  local component=$1 timeout=$2 what=$3; shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$component" ] && ! pid_alive "$component"; then
      failed_component=$component
      echo "cluster-up: $component exited while waiting for $what" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      failed_component=$component
      echo "cluster-up: timed out after ${timeout}s waiting for $what" >&2
      return 1
    fi
    sleep 0.2
  done
}
curl_ok() { curl -fsS --max-time 2 "$@"; }

start etcd --name=node0 --data-dir="$dir/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
  --initial-cluster="node0=http://127.0.0.1:$peer_port" \
  --unsafe-no-fsync=true --auto-compaction-retention=1 --log-level=warn
wait_until etcd 60 "etcd /health" curl_ok "http://127.0.0.1:$etcd_port/health"
t_etcd=$(now)

# Without a default route the apiserver cannot pick an advertise address on its own; loopback is
# then the only choice, and the Endpoints reconciler must be off because it rejects loopback IPs.
advertise=()
if ! awk 'NR > 1 && $2 == "00000000" { found = 1 } END { exit !found }' /proc/net/route 2>/dev/null; then
  advertise=(--advertise-address=127.0.0.1 --endpoint-reconciler-type=none)
fi
read -ra extra_apiserver_args <<<"${PULLWARDEN_APISERVER_ARGS:-}"
if [ -n "${PULLWARDEN_AUDIT_USERS:-}" ]; then
  # Each request is logged once it completes (watches also when the response starts, so an open
  # watch is seen before it ends); RequestReceived would only double every event.
  {
    echo "apiVersion: audit.k8s.io/v1"
    echo "kind: Policy"
    echo "omitStages: [RequestReceived]"
    echo "rules:"
    echo "- level: Metadata"
    echo "  users:"
    IFS=, read -ra audit_users <<<"$PULLWARDEN_AUDIT_USERS"
    for u in "${audit_users[@]}"; do printf '  - "%s"\n' "$u"; done
    echo "- level: None"
  } >"$dir/audit-policy.yaml"
  extra_apiserver_args+=(--audit-policy-file="$dir/audit-policy.yaml"
    --audit-log-path="$logdir/kube-apiserver-audit.log" --audit-log-format=json --audit-log-maxsize=0)
  log "audit log of ${PULLWARDEN_AUDIT_USERS} in $logdir/kube-apiserver-audit.log"
fi
start kube-apiserver --etcd-servers="http://127.0.0.1:$etcd_port" \
  --bind-address=127.0.0.1 --secure-port="$api_port" "${advertise[@]}" \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --cert-dir="$pki/apiserver" --client-ca-file="$pki/ca.crt" \
  --service-cluster-ip-range=10.0.0.0/24 \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$pki/sa.key" --service-account-signing-key-file="$pki/sa.key" \
  --token-auth-file="$pki/tokens.csv" --authorization-mode=RBAC --allow-privileged=true \
  --enable-priority-and-fairness=false --max-requests-inflight=0 --max-mutating-requests-inflight=0 \
  --profiling=false "${extra_apiserver_args[@]}"
wait_until kube-apiserver 120 "kube-apiserver /readyz" \
  curl_ok --cacert "$pki/ca.crt" -H "Authorization: Bearer $token" "https://127.0.0.1:$api_port/readyz"
t_readyz=$(now)
log "kube-apiserver ready on https://127.0.0.1:$api_port after $(since "$t_bin")s"

always_allow=--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics
start kube-controller-manager --kubeconfig="$dir/kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$kcm_port" --cert-dir="$pki/kcm" "$always_allow" \
  --leader-elect=false --controllers='*' \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
  --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
  --kube-api-qps=200 --kube-api-burst=400 --profiling=false
start kube-scheduler --kubeconfig="$dir/kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$sched_port" --cert-dir="$pki/scheduler" "$always_allow" \
  --leader-elect=false --kube-api-qps=200 --kube-api-burst=400 --profiling=false
# kwok always merges ~/.kwok/kwok.yaml into its configuration; a private HOME keeps a developer's
# file from changing the fake nodes' behaviour. Without --server-address/--node-port it serves
# nothing. The lease duration must be set: the binary defaults to 0 (no leases), and kcm would then
# mark the nodes NotReady.
mkdir -p "$dir/kwok-home"
HOME=$dir/kwok-home start kwok --kubeconfig="$dir/kubeconfig" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --cidr=10.244.0.0/16 --node-ip=10.244.0.1 --node-lease-duration-seconds=40

kubectl() { "$bin/kubectl" --request-timeout=10s "$@"; }
wait_until kube-controller-manager 60 "kube-controller-manager /healthz" \
  curl_ok -k "https://127.0.0.1:$kcm_port/healthz"
wait_until kube-scheduler 60 "kube-scheduler /healthz" curl_ok -k "https://127.0.0.1:$sched_port/healthz"
wait_until kube-controller-manager 60 "ServiceAccount default/default" kubectl get serviceaccount default -n default

# No NoSchedule taint (unlike kwok's docs): workloads under test must land on these nodes as is.
for i in $(seq 0 $((nodes - 1))); do
  cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-node-$i
    type: kwok
spec:
  providerID: kwok://kwok-node-$i
status:
  allocatable: {cpu: "32", memory: 256Gi, ephemeral-storage: 500Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, ephemeral-storage: 500Gi, pods: "110"}
  nodeInfo:
    architecture: amd64
    kubeletVersion: fake
    kubeProxyVersion: fake
    operatingSystem: linux
    bootID: ""
    containerRuntimeVersion: ""
    kernelVersion: ""
    machineID: ""
    osImage: ""
    systemUUID: ""
  phase: Running
EOF
done >"$dir/nodes.yaml"
kubectl apply -f "$dir/nodes.yaml" >"$logdir/nodes.log" 2>&1 || { failed_component=nodes; exit 1; }
nodes_ready() {
  local ready
  ready=$(kubectl get nodes -l type=kwok \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')
  [ "$ready" -ge "$nodes" ]
}
wait_until kwok 60 "$nodes kwok Node(s) Ready" nodes_ready
t_nodes=$(now)

span() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
cat >"$dir/timings" <<EOF
binaries_s=$(span "$t0" "$t_bin")
etcd_health_s=$(span "$t_bin" "$t_etcd")
apiserver_readyz_s=$(span "$t_bin" "$t_readyz")
nodes_ready_s=$(span "$t_bin" "$t_nodes")
total_s=$(since "$t0")
EOF
log "up in $(since "$t0")s: binaries $(span "$t0" "$t_bin")s, then etcd healthy +$(span "$t_bin" "$t_etcd")s," \
  "/readyz +$(span "$t_bin" "$t_readyz")s, $nodes node(s) Ready +$(span "$t_bin" "$t_nodes")s; state and logs in $dir"
log "stop it with: $scripts/cluster-down.sh --dir $dir"
echo "export KUBECONFIG=$dir/kubeconfig"
