#!/usr/bin/env bash
# Builds helm from the Go module pinned in e2e/helm, once, into a cache outside the checkout keyed
# by the pinned module graph. Prints the path of the helm binary.
#
# Why from source: like the control plane (see build-k8s.sh), our machines have no container
# engine and no internet beyond the package registries; the Go module proxy is reachable.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache_root=${PULLWARDEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pullwarden}

command -v go >/dev/null || { echo "build-helm: Go is required (https://go.dev/dl or apt install golang)" >&2; exit 1; }

# The key changes whenever the pinned version (go.mod/go.sum), this script or the Go toolchain changes.
key=$( { cat "$here/helm/go.mod" "$here/helm/go.sum" "$0"; go version; } | sha256sum | cut -c1-16)
bin="$cache_root/helm-bin/$key"
if [ -x "$bin/helm" ]; then echo "$bin/helm"; exit 0; fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly"
tmp="$bin.partial.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

version=$(awk '$1=="helm.sh/helm/v3"{print $2; exit}' "$here/helm/go.mod")
# Helm's Makefile stamps the version and the Kubernetes version its client libraries speak (used as
# the default .Capabilities.KubeVersion of `helm template` and by `helm lint`'s deprecation check);
# without it helm would claim Kubernetes v1.20.
client_go=$(awk '$1=="k8s.io/client-go"{print $2; exit}' "$here/helm/go.mod")
k8s_minor=$(echo "$client_go" | cut -d. -f2)
ld="-s -w -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ld="$ld -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$k8s_minor"
done

start=$(date +%s)
echo "build-helm: building helm $version into $bin (first time only)" >&2
(cd "$here/helm" && go build -p "${BUILD_JOBS:-2}" -ldflags "$ld" -o "$tmp/helm" helm.sh/helm/v3/cmd/helm)
rm -rf "$bin"; mkdir -p "$(dirname "$bin")"; mv "$tmp" "$bin"
echo "build-helm: built in $(( $(date +%s) - start ))s" >&2
echo "$bin/helm"
