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
manifest="$here/builder-config.yaml"
cache="${OTEL_CYCLES_CACHE:-$HOME/.cache/otel-cycles}"
ocb_version="v0.158.0"  # keep equal to the core component versions in the manifest

force=0
if [[ "${1:-}" == "--force" ]]; then force=1; fi

digest="$(sha256sum "$manifest" | cut -d' ' -f1)"
dest="$cache/otelcol-$digest"
binary="$dest/otelcol-cycles"

if [[ -x "$binary" && "$force" == 0 ]]; then
  echo "$binary"
  exit 0
fi

mkdir -p "$cache"
# Serialise concurrent builds (two pytest sessions, CI retries): the second waits, then finds the binary cached.
exec 9>"$cache/build.lock"
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
command -v go >/dev/null 2>&1 || { echo "build.sh: Go is not installed (need go >= 1.25 on PATH)" >&2; exit 1; }

export GOPATH="$cache/go"
export GOMODCACHE="$cache/go/pkg/mod"
export GOCACHE="$cache/go-build"
export GOBIN="$cache/bin"
export GOFLAGS="-modcacherw -buildvcs=false"
export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

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
