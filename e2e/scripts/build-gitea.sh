#!/usr/bin/env bash
# Builds a pinned Gitea (e2e/gitea/VERSION) from the Go module proxy, once, into a cache outside the
# checkout keyed by the version, this script, e2e/gitea/main.go and the Go toolchain. Prints the
# directory holding `gitea` and `static/` (templates, options and public assets, which a build
# without the `bindata` tag serves from disk).
#
# Gitea's go.mod has a `replace` block, so `go install …@version` refuses it; we build a small
# consumer module instead: Gitea's go.mod with its module line renamed, its `tool` and `ignore`
# directives dropped and its `replace` lines kept, plus Gitea's go.sum and our main.go.
# Cost (2 vCPUs): ≈ 11–15 min and ≈ 1.5 GB RSS the first time, seconds afterwards.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache_root=${PULLWARDEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pullwarden}

command -v go >/dev/null || { echo "build-gitea: Go is required" >&2; exit 1; }
command -v gcc >/dev/null || { echo "build-gitea: gcc is required (Gitea's sqlite driver uses cgo)" >&2; exit 1; }

version=$(tr -d '[:space:]' <"$here/gitea/VERSION")
key=$( { echo "$version"; cat "$0" "$here/gitea/main.go"; go version; } | sha256sum | cut -c1-16)
out="$cache_root/gitea-bin/$version-$key"
if [ -x "$out/gitea" ] && [ -d "$out/static/templates" ]; then echo "$out"; exit 0; fi

export GOTOOLCHAIN=local GOFLAGS="-trimpath -buildvcs=false"
tmp="$out.partial.$$"
rm -rf "$tmp"; mkdir -p "$tmp/src"
# (A failing command in an EXIT trap would become the exit status under set -e.)
trap 'if [ -d "$tmp" ]; then chmod -R u+w "$tmp"; rm -rf "$tmp"; fi' EXIT

start=$(date +%s)
echo "build-gitea: building Gitea $version into $out (first time only)" >&2
src=$(go mod download -json "code.gitea.io/gitea@$version" | awk -F'"' '$2=="Dir"{print $4}')
[ -d "$src" ] || { echo "build-gitea: could not download code.gitea.io/gitea@$version" >&2; exit 1; }

# Consumer module: Gitea's requirements and replaces, our main package.
awk -v version="$version" '
  /^module / { print "module pullwarden.dev/e2e/gitea"; next }
  /^(tool|ignore) \($/ { skip=1; next }
  skip && /^\)$/ { skip=0; next }
  skip { next }
  /^(tool|ignore) / { next }
  { print }
  END { print ""; print "require code.gitea.io/gitea " version }
' "$src/go.mod" >"$tmp/src/go.mod"
cp "$src/go.sum" "$tmp/src/go.sum"
cp "$here/gitea/main.go" "$tmp/src/main.go"
chmod -R u+w "$tmp/src"
(cd "$tmp/src" && go mod tidy >&2 \
  && CGO_ENABLED=1 go build -p "${BUILD_JOBS:-2}" -tags 'sqlite sqlite_unlock_notify' \
       -ldflags "-s -w -X main.Version=${version#v}" -o "$tmp/gitea" .)

# Templates, locale options and public assets, copied so the cache does not depend on the module
# cache staying put.
mkdir -p "$tmp/static"
for d in templates options public; do cp -r "$src/$d" "$tmp/static/$d"; done
chmod -R u+w "$tmp/static"
rm -rf "$tmp/src"
rm -rf "$out"; mkdir -p "$(dirname "$out")"; mv "$tmp" "$out"
echo "build-gitea: built in $(( $(date +%s) - start ))s" >&2
echo "$out"
