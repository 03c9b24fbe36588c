#!/usr/bin/env bash
# Run the otel-cycles Collector (the binary build.sh caches) with collector/config.yaml, after refusing a
# configuration that would make it export traces to its own OTLP receivers. Such a loop is silent and costly: every
# exported span comes back in, is counted again, and goes out again, so the cost and decision counters grow forever.
#
#   collector/otelcol.sh                                    # config.yaml (endpoints from the CYCLES_* variables)
#   collector/otelcol.sh --config collector/file-export.yaml   # more --config files are merged over config.yaml
#   collector/otelcol.sh check                              # only check the endpoints
#   collector/otelcol.sh validate [--config ...]            # check, then let the Collector validate the config
#
# The endpoints come from the same variables config.yaml reads, with config.yaml's own defaults.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
config="$here/config.yaml"

# The value config.yaml will use for variable $1: the environment's, else the default written in config.yaml.
setting() {
  local name="$1" value="${!1:-}"
  if [[ -z "$value" ]]; then
    value="$(sed -n "s/.*\${env:$name:-\([^}]*\)}.*/\1/p" "$config" | head -n 1)"
  fi
  echo "$value"
}

host_of() { local a="${1#*://}"; a="${a%%/*}"; a="${a%:*}"; a="${a#[}"; echo "${a%]}"; }
port_of() { local a="${1#*://}"; a="${a%%/*}"; echo "${a##*:}"; }

# Names and addresses that reach this machine; a receiver on a wildcard address listens on all of them.
local_hosts=" localhost 127.0.0.1 0.0.0.0 :: ::1 $(hostname 2>/dev/null || true) $(hostname -I 2>/dev/null || true) "
reaches() {  # does exporter target $1 reach receiver address $2?
  local target_host receiver_host
  target_host="$(host_of "$1")"
  receiver_host="$(host_of "$2")"
  [[ "$(port_of "$1")" == "$(port_of "$2")" ]] || return 1
  [[ "$target_host" == "$receiver_host" ]] && return 0
  case "$target_host" in 127.*) target_host=127.0.0.1 ;; esac
  [[ "$local_hosts" == *" $target_host "* ]] || return 1
  case "$receiver_host" in 0.0.0.0 | :: | "" | localhost | 127.* | ::1) return 0 ;; esac
  [[ "$local_hosts" == *" $receiver_host "* ]]
}

check() {
  local receivers=(CYCLES_OTLP_GRPC_ENDPOINT CYCLES_OTLP_HTTP_ENDPOINT)
  local exporters=(CYCLES_JAEGER_OTLP_ENDPOINT CYCLES_TEMPO_OTLP_ENDPOINT)
  local exporter receiver
  for exporter in "${exporters[@]}"; do
    for receiver in "${receivers[@]}"; do
      if reaches "$(setting "$exporter")" "$(setting "$receiver")"; then
        cat >&2 <<EOF
otelcol.sh: refusing to start: $exporter=$(setting "$exporter") is the Collector's own receiver
  ($receiver=$(setting "$receiver")). The Collector would export traces to itself in a loop and count every
  span again and again. Point $exporter at the tracing backend (the local stack's Jaeger listens on
  127.0.0.1:14317: collector/stack.sh up), or move the receiver with $receiver.
EOF
        return 2
      fi
    done
  done
}

case "${1:-}" in
  check)
    check
    exit 0
    ;;
  validate)
    shift
    check
    exec "$("$here/build.sh")" validate --config "$config" "$@"
    ;;
  *)
    check
    exec "$("$here/build.sh")" --config "$config" "$@"
    ;;
esac
