#!/usr/bin/env bash
# Build Jaeger v2 (all-in-one, in-memory storage) from the Go module proxy, for the end-to-end "ship to Jaeger" tests
# and the no-Docker local stack (collector/stack.sh).
#
# The binary is cached outside the repository, keyed by the Jaeger version, exactly as build.sh caches the Collector:
#   ${OTEL_CYCLES_CACHE:-$HOME/.cache/otel-cycles}/jaeger-<version>/jaeger
# The first build takes 10-15 minutes on 2 cores; a cache hit returns at once. The last line printed on stdout is the
# binary's path; progress goes to stderr. The web UI of a build from Go modules is a placeholder (its assets are built
# from npm separately); the query API (/api/v3/..., /api/traces/...) is the real storage and query path.
#
#   collector/build-jaeger.sh            # build if needed, print the path
#   collector/build-jaeger.sh --force    # rebuild even if cached
set -euo pipefail

jaeger_version="v1.76.0"  # = Jaeger v2.13.0 (v2 is released under v1.x module tags); docker-compose.yaml pins that image
cache="${OTEL_CYCLES_CACHE:-$HOME/.cache/otel-cycles}"

force=0
if [[ "${1:-}" == "--force" ]]; then force=1; fi

dest="$cache/jaeger-$jaeger_version"
binary="$dest/jaeger"
if [[ -x "$binary" && "$force" == 0 ]]; then
  echo "$binary"
  exit 0
fi

mkdir -p "$cache"
# Serialise concurrent builds: the second waits, then finds the binary cached.
exec 9>"$cache/build-jaeger.lock"
flock 9
if [[ -x "$binary" && "$force" == 0 ]]; then
  echo "$binary"
  exit 0
fi

# Only a build needs Go: a cached binary is returned above without it.
if ! command -v go >/dev/null 2>&1; then
  for candidate in /usr/local/go/bin /usr/lib/go/bin; do
    if [[ -x "$candidate/go" ]]; then PATH="$candidate:$PATH"; fi
  done
fi
command -v go >/dev/null 2>&1 || { echo "build-jaeger.sh: Go is not installed (need go >= 1.25 on PATH)" >&2; exit 1; }

export GOPATH="$cache/go"
export GOMODCACHE="$cache/go/pkg/mod"
export GOCACHE="$cache/go-build"
export GOFLAGS="-modcacherw -buildvcs=false"
export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

work="$(mktemp -d "$cache/build-jaeger.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "build-jaeger.sh: building Jaeger $jaeger_version (first build takes 10-15 minutes)" >&2
start=$SECONDS
(
  cd "$work"
  go mod init jaeger-build >/dev/null 2>&1
  go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$jaeger_version" >&2
  go build -trimpath -ldflags "-s -w" -o "$work/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger >&2
)
echo "build-jaeger.sh: built in $((SECONDS - start)) s" >&2

mkdir -p "$dest"
install -m 0755 "$work/jaeger" "$binary.tmp"
mv -f "$binary.tmp" "$binary"
echo "$binary"
