# Shared by build.sh and build-jaeger.sh, which source it (it is not run on its own): both cache one Go binary under
# ${OTEL_CYCLES_CACHE:-$HOME/.cache/otel-cycles}, serialise concurrent builds with a lock, and build with Go's caches
# under that same root. Keeping these steps in one place keeps the two scripts' cache layout and Go setup from
# drifting apart. Each function takes the calling script's name for its messages, so stderr reads as before.

go_build_cache="${OTEL_CYCLES_CACHE:-$HOME/.cache/otel-cycles}"

# --force (the only argument either script takes, passed on by `source ... "$@"`) rebuilds even when a binary is
# cached.
go_build_force=0
if [[ "${1:-}" == "--force" ]]; then go_build_force=1; fi

# Print <binary> and end the calling script when it is cached and --force was not given: the path is the last line on
# stdout, the scripts' output contract.
go_build_exit_if_cached() {  # <binary>
  if [[ -x "$1" && "$go_build_force" == 0 ]]; then
    echo "$1"
    exit 0
  fi
}

# Hold an exclusive lock on <cache>/<lock file> for the rest of the calling script (fd 9 stays open in the caller's
# shell), so concurrent builds (two pytest sessions, CI retries) serialise: the second waits, then finds the binary
# cached and returns it.
go_build_lock_or_exit_if_cached() {  # <lock file name> <binary>
  mkdir -p "$go_build_cache"
  exec 9>"$go_build_cache/$1"
  flock 9
  go_build_exit_if_cached "$2"
}

# Find Go and point its module and build caches into the cache root. Only a build needs Go: a cached binary is
# returned before this runs, without it.
go_build_setup_go() {  # <script name for messages>
  if ! command -v go >/dev/null 2>&1; then
    for candidate in /usr/local/go/bin /usr/lib/go/bin; do
      if [[ -x "$candidate/go" ]]; then PATH="$candidate:$PATH"; fi
    done
  fi
  # tests/collector/collector_harness.py skips (outside CI) on exactly this message, so keep its wording.
  command -v go >/dev/null 2>&1 || { echo "$1: Go is not installed (need go >= 1.25 on PATH)" >&2; exit 1; }

  export GOPATH="$go_build_cache/go"
  export GOMODCACHE="$go_build_cache/go/pkg/mod"
  export GOCACHE="$go_build_cache/go-build"
  export GOFLAGS="-modcacherw -buildvcs=false"
  export CGO_ENABLED=0
  export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
}
