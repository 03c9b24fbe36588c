#!/usr/bin/env bash
# Build the otel-cycles Collector from collector/builder-config.yaml with the OpenTelemetry Collector Builder (ocb).
#
# The binary is cached outside the repository, keyed by the manifest's sha256, so a rerun with an unchanged manifest
# returns at once:
#   ${OTEL_CYCLES_CACHE:-$HOME/.cache/otel-cycles}/otelcol-<sha256>/otelcol-cycles
# Go's module and build caches live under the same root, so a fresh machine needs only Go (>= 1.25) and access to
# the Go module proxy. The last line printed on stdout is the binary's path; progress goes to stderr.
#
#   collector/build.sh            # build if needed, print the path
#   collector/build.sh --force    # rebuild even if cached
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Cache root, --force, the build lock and Go's setup, shared with build-jaeger.sh.
source "$here/_go-build-env.sh" "$@"  # passes --force on
manifest="$here/builder-config.yaml"
cache="$go_build_cache"
ocb_version="v0.158.0"  # keep equal to the core component versions in the manifest

digest="$(sha256sum "$manifest" | cut -d' ' -f1)"
dest="$cache/otelcol-$digest"
binary="$dest/otelcol-cycles"

go_build_exit_if_cached "$binary"
go_build_lock_or_exit_if_cached build.lock "$binary"
go_build_setup_go build.sh
# ocb is installed into the cache too (only this script installs a Go tool; build-jaeger.sh builds with -o).
export GOBIN="$cache/bin"

builder="$GOBIN/builder-$ocb_version"
if [[ ! -x "$builder" ]]; then
  echo "build.sh: installing ocb $ocb_version" >&2
  go install "go.opentelemetry.io/collector/cmd/builder@$ocb_version" >&2
  mv "$GOBIN/builder" "$builder"
fi

work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# Same manifest, generated sources and binary go to the scratch directory instead of the repository.
sed "s|^\(  output_path:\).*|\1 $work/src|" "$manifest" >"$work/builder-config.yaml"

echo "build.sh: building the collector (first build takes several minutes)" >&2
start=$SECONDS
"$builder" --config "$work/builder-config.yaml" >&2
echo "build.sh: built in $((SECONDS - start)) s" >&2

mkdir -p "$dest"
cp "$manifest" "$dest/builder-config.yaml"
install -m 0755 "$work/src/otelcol-cycles" "$binary.tmp"
mv -f "$binary.tmp" "$binary"
echo "$binary"
