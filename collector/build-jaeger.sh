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

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Cache root, --force, the build lock and Go's setup, shared with build.sh.
source "$here/_go-build-env.sh" "$@"  # passes --force on
jaeger_version="v1.76.0"  # = Jaeger v2.13.0 (v2 is released under v1.x module tags); docker-compose.yaml pins that image
cache="$go_build_cache"

dest="$cache/jaeger-$jaeger_version"
binary="$dest/jaeger"
go_build_exit_if_cached "$binary"
go_build_lock_or_exit_if_cached build-jaeger.lock "$binary"
go_build_setup_go build-jaeger.sh

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
