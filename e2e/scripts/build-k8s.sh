#!/usr/bin/env bash
# Builds the local control plane's binaries (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok) from the Go modules pinned in e2e/k8s and e2e/kwok, once, into a
# cache outside the checkout keyed by the pinned module graph. Prints the bin directory.
#
# Why from source: our machines have no container engine and no internet beyond the package
# registries, so envtest-style downloads are impossible; the Go module proxy is reachable.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache_root=${PULLWARDEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pullwarden}
# The key changes whenever a pinned version (go.mod/go.sum), this script or the Go toolchain changes.
key=$( { cat "$here/k8s/go.mod" "$here/k8s/go.sum" "$here/kwok/go.mod" "$here/kwok/go.sum" "$0"; go version; } \
  | sha256sum | cut -c1-16)
bin="$cache_root/k8s-bin/$key"
want=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)

complete() { for b in "${want[@]}"; do [ -x "$bin/$b" ] || return 1; done; }
if complete; then echo "$bin"; exit 0; fi

command -v go >/dev/null || { echo "build-k8s: Go is required (https://go.dev/dl or apt install golang)" >&2; exit 1; }

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly"
tmp="$bin.partial.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

k8s_version=$(awk '$1=="k8s.io/kubernetes"{print $2; exit}' "$here/k8s/go.mod")
minor=$(echo "$k8s_version" | cut -d. -f2)
ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld="$ld -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done

start=$(date +%s)
echo "build-k8s: building Kubernetes $k8s_version binaries into $bin (first time only; takes a while)" >&2
(cd "$here/k8s" && go build -p "${BUILD_JOBS:-2}" -ldflags "$ld" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
(cd "$here/k8s" && go build -p "${BUILD_JOBS:-2}" -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
(cd "$here/kwok" && go build -p "${BUILD_JOBS:-2}" -ldflags "-s -w" -o "$tmp/kwok" sigs.k8s.io/kwok/cmd/kwok)
rm -rf "$bin"; mkdir -p "$(dirname "$bin")"; mv "$tmp" "$bin"
echo "build-k8s: built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
