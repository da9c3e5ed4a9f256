#!/usr/bin/env bash
# Builds the pinned Argo CD (e2e/argocd/VERSION) application controller and repo-server from the Go
# module proxy, once, into a cache outside the checkout keyed by the version, this script,
# e2e/argocd/main.go and the Go toolchain. Prints the directory holding `argocd` (one binary, the
# component chosen by $ARGOCD_BINARY_NAME) and `crds/` (Argo CD's Application and AppProject CRDs
# from the same module). Also makes sure Debian's `redis-server` is installed
# (the controller's cache); the suite starts it on loopback.
#
# Argo CD's go.mod has a `replace` block, so `go install …@version` refuses it; we build a small
# consumer module instead: Argo CD's go.mod with its module line renamed, its `tool` and `ignore`
# directives dropped and its `replace` lines kept, plus Argo CD's go.sum and our main.go, which links
# only the components the suite runs. v3.3 and later cannot be built this way: they replace
# gitops-engine with a nested directory that is not in the module zip.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache_root=${PULLWARDEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pullwarden}

command -v go >/dev/null || { echo "build-argocd: Go is required" >&2; exit 1; }

if ! command -v redis-server >/dev/null; then
  sudo=; [ "$(id -u)" = 0 ] || sudo="sudo -n"
  if command -v apt-get >/dev/null; then
    echo "build-argocd: installing redis-server with apt-get (once)" >&2
    $sudo apt-get install -y -q redis-server >&2 || { $sudo apt-get update -q >&2 && $sudo apt-get install -y -q redis-server >&2; }
  fi
  command -v redis-server >/dev/null || { echo "build-argocd: redis-server is required (apt-get install redis-server)" >&2; exit 1; }
fi

version=$(tr -d '[:space:]' <"$here/argocd/VERSION")
key=$( { echo "$version"; cat "$0" "$here/argocd/main.go"; go version; } | sha256sum | cut -c1-16)
out="$cache_root/argocd-bin/$version-$key"
if [ -x "$out/argocd" ] && [ -f "$out/crds/application-crd.yaml" ]; then echo "$out"; exit 0; fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
tmp="$out.partial.$$"
rm -rf "$tmp"; mkdir -p "$tmp/src"
# (A failing command in an EXIT trap would become the exit status under set -e.)
trap 'if [ -d "$tmp" ]; then chmod -R u+w "$tmp"; rm -rf "$tmp"; fi' EXIT

start=$(date +%s)
echo "build-argocd: building Argo CD $version into $out (first time only)" >&2
module=github.com/argoproj/argo-cd/v3
src=$(go mod download -json "$module@$version" | awk -F'"' '$2=="Dir"{print $4}')
[ -d "$src" ] || { echo "build-argocd: could not download $module@$version" >&2; exit 1; }
if grep -Eq '=>[[:space:]]*\.' "$src/go.mod"; then
  echo "build-argocd: $module@$version replaces a module with a local directory; it cannot be built from the module proxy" >&2
  exit 1
fi

# Consumer module: Argo CD's requirements and replaces, our main package.
awk -v module="$module" -v version="$version" '
  /^module / { print "module pullwarden.dev/e2e/argocd"; next }
  /^(tool|ignore) \($/ { skip=1; next }
  skip && /^\)$/ { skip=0; next }
  skip { next }
  /^(tool|ignore) / { next }
  { print }
  END { print ""; print "require " module " " version }
' "$src/go.mod" >"$tmp/src/go.mod"
cp "$src/go.sum" "$tmp/src/go.sum"
cp "$here/argocd/main.go" "$tmp/src/main.go"
chmod -R u+w "$tmp/src"
# Argo CD's Makefile stamps these (`argocd-application-controller version`, the User-Agent).
ld="-s -w -X $module/common.version=${version#v} -X $module/common.gitTag=$version -X $module/common.gitTreeState=clean"
(cd "$tmp/src" && go mod tidy >&2 \
  && go build -p "${BUILD_JOBS:-2}" -ldflags "$ld" -o "$tmp/argocd" .)

mkdir -p "$tmp/crds"
# Pullwarden writes Applications and AppProjects; the ApplicationSet controller is not built.
cp "$src/manifests/crds/application-crd.yaml" "$src/manifests/crds/appproject-crd.yaml" "$tmp/crds/"
chmod -R u+w "$tmp/crds"
rm -rf "$tmp/src"
rm -rf "$out"; mkdir -p "$(dirname "$out")"; mv "$tmp" "$out"
echo "build-argocd: built in $(( $(date +%s) - start ))s" >&2
echo "$out"
