#!/usr/bin/env bash
# The local observability stack without Docker: the otel-cycles Collector, Jaeger v2 and Prometheus, from the cached
# binaries (build.sh, build-jaeger.sh; built on first use) and Debian's `prometheus`, every listener on 127.0.0.1.
#
#   collector/stack.sh up       # start all three (if not running) and wait until each answers
#   collector/stack.sh status   # which run, with their pids and addresses
#   collector/stack.sh down     # stop the three processes this script started, and nothing else
#
# Then: otel-cycles demo --otlp http://127.0.0.1:4318   (traces in Jaeger, metrics in Prometheus)
#
# Ports (each can be moved with its variable):
#   Collector  OTLP gRPC 4317 (CYCLES_OTLP_GRPC_ENDPOINT), OTLP HTTP 4318 (CYCLES_OTLP_HTTP_ENDPOINT), metrics for
#              Prometheus 8889 (CYCLES_PROMETHEUS_ENDPOINT), health 13133 (CYCLES_HEALTH_ENDPOINT), own metrics 8888
#              (CYCLES_SELF_METRICS_PORT)
#   Jaeger     OTLP gRPC 14317 (JAEGER_OTLP_GRPC_ENDPOINT), query API 16686 (JAEGER_QUERY_HTTP_ENDPOINT), query gRPC
#              16685 (JAEGER_QUERY_GRPC_ENDPOINT); collector/jaeger.yaml
#   Prometheus 9090 (STACK_PROMETHEUS_ENDPOINT)
# The Collector exports to Jaeger's OTLP port by construction (CYCLES_JAEGER_OTLP_ENDPOINT is set from
# JAEGER_OTLP_GRPC_ENDPOINT), and otelcol.sh refuses an exporter pointing at the Collector's own receivers. The other
# Collector settings (CYCLES_SAMPLING_PERCENT, CYCLES_DECISION_WAIT, CYCLES_REDACT_CONTENT, ...) pass through.
#
# Pid files, logs and Prometheus' data live in the state directory, outside the repository:
#   ${OTEL_CYCLES_STACK_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/otel-cycles/stack}
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
state="${OTEL_CYCLES_STACK_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/otel-cycles/stack}"
components=(jaeger collector prometheus)

export CYCLES_OTLP_GRPC_ENDPOINT="${CYCLES_OTLP_GRPC_ENDPOINT:-127.0.0.1:4317}"
export CYCLES_OTLP_HTTP_ENDPOINT="${CYCLES_OTLP_HTTP_ENDPOINT:-127.0.0.1:4318}"
export CYCLES_PROMETHEUS_ENDPOINT="${CYCLES_PROMETHEUS_ENDPOINT:-127.0.0.1:8889}"
export CYCLES_HEALTH_ENDPOINT="${CYCLES_HEALTH_ENDPOINT:-127.0.0.1:13133}"
export CYCLES_SELF_METRICS_HOST="${CYCLES_SELF_METRICS_HOST:-127.0.0.1}"
export CYCLES_SELF_METRICS_PORT="${CYCLES_SELF_METRICS_PORT:-8888}"
export JAEGER_OTLP_GRPC_ENDPOINT="${JAEGER_OTLP_GRPC_ENDPOINT:-127.0.0.1:14317}"
export JAEGER_QUERY_HTTP_ENDPOINT="${JAEGER_QUERY_HTTP_ENDPOINT:-127.0.0.1:16686}"
export JAEGER_QUERY_GRPC_ENDPOINT="${JAEGER_QUERY_GRPC_ENDPOINT:-127.0.0.1:16685}"
export CYCLES_JAEGER_OTLP_ENDPOINT="$JAEGER_OTLP_GRPC_ENDPOINT"
prometheus_endpoint="${STACK_PROMETHEUS_ENDPOINT:-127.0.0.1:9090}"

# The addresses each component listens on: up refuses to start one whose address is taken.
addresses() {
  case "$1" in
    jaeger) echo "$JAEGER_OTLP_GRPC_ENDPOINT $JAEGER_QUERY_HTTP_ENDPOINT $JAEGER_QUERY_GRPC_ENDPOINT" ;;
    collector)
      echo "$CYCLES_OTLP_GRPC_ENDPOINT $CYCLES_OTLP_HTTP_ENDPOINT $CYCLES_PROMETHEUS_ENDPOINT $CYCLES_HEALTH_ENDPOINT" \
        "$CYCLES_SELF_METRICS_HOST:$CYCLES_SELF_METRICS_PORT"
      ;;
    prometheus) echo "$prometheus_endpoint" ;;
  esac
}

# The URL that answers 200 once a component is ready.
ready_url() {
  case "$1" in
    jaeger) echo "http://$JAEGER_QUERY_HTTP_ENDPOINT/api/v3/services" ;;
    collector) echo "http://$CYCLES_HEALTH_ENDPOINT/" ;;
    prometheus) echo "http://$prometheus_endpoint/-/ready" ;;
  esac
}

listening() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

# The pid in the component's pid file if that process is alive and is the program this script started.
running_pid() {
  local pid_file="$state/$1.pid" pid
  [[ -f "$pid_file" && -f "$state/$1.cmd" ]] || return 1
  pid="$(cat "$pid_file")"
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  grep -q "State:[[:space:]]*[RSD]" "/proc/$pid/status" 2>/dev/null || return 1  # not a zombie
  [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline")" == *"$(cat "$state/$1.cmd")"* ]] || return 1
  echo "$pid"
}

binary() {
  case "$1" in
    jaeger) "$here/build-jaeger.sh" ;;
    collector) "$here/build.sh" ;;
    prometheus)
      command -v prometheus || {
        echo "stack.sh: prometheus is not installed (Debian: apt-get install -y prometheus)" >&2
        return 1
      }
      ;;
  esac
}

start() {
  local name="$1" bin address args
  if pid="$(running_pid "$name")"; then
    echo "$name: already running (pid $pid)"
    return 0
  fi
  for address in $(addresses "$name"); do
    if listening "$address"; then
      echo "stack.sh: $name cannot start: something else listens on $address (move it with its variable)" >&2
      return 1
    fi
  done
  bin="$(binary "$name" | tail -n 1)"
  case "$name" in
    jaeger) args=(--config "$here/jaeger.yaml") ;;
    collector)
      "$here/otelcol.sh" check
      args=(--config "$here/config.yaml" --config "$here/local-stack.yaml")
      ;;
    prometheus)
      # JSON is YAML: scrape the Collector's exporter (span-derived and SDK metrics) and its own telemetry.
      cat >"$state/prometheus.yml" <<EOF
{"global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
 "scrape_configs": [
  {"job_name": "otelcol-cycles", "static_configs": [{"targets": ["$CYCLES_PROMETHEUS_ENDPOINT"]}]},
  {"job_name": "otelcol-self", "static_configs": [{"targets": ["$CYCLES_SELF_METRICS_HOST:$CYCLES_SELF_METRICS_PORT"]}]}]}
EOF
      args=(--config.file="$state/prometheus.yml" --storage.tsdb.path="$state/prometheus-data"
        --web.listen-address="$prometheus_endpoint" --log.level=warn)
      ;;
  esac
  echo "$bin" >"$state/$name.cmd"
  # Its own session, stdin and output detached: it outlives this script and the terminal.
  setsid "$bin" "${args[@]}" </dev/null >"$state/$name.log" 2>&1 &
  echo $! >"$state/$name.pid"
}

wait_ready() {
  local name="$1" deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null "$(ready_url "$name")" 2>/dev/null; do
    if ! running_pid "$name" >/dev/null; then
      echo "stack.sh: $name exited; the end of $state/$name.log:" >&2
      tail -n 20 "$state/$name.log" >&2
      return 1
    fi
    if ((SECONDS > deadline)); then
      echo "stack.sh: $name did not answer $(ready_url "$name") within 60 s; see $state/$name.log" >&2
      return 1
    fi
    sleep 0.2
  done
}

stop() {
  local name="$1" pid waited=0
  if pid="$(running_pid "$name")"; then
    kill -TERM "$pid"
    while running_pid "$name" >/dev/null && ((waited < 150)); do
      sleep 0.1
      waited=$((waited + 1))
    done
    if running_pid "$name" >/dev/null; then kill -KILL "$pid"; fi
    echo "$name: stopped (pid $pid)"
  fi
  rm -f "$state/$name.pid" "$state/$name.cmd"
}

status() {
  local name pid
  for name in "${components[@]}"; do
    if pid="$(running_pid "$name")"; then
      echo "$name: running (pid $pid) on $(addresses "$name")"
    else
      echo "$name: stopped"
    fi
  done
}

case "${1:-}" in
  up)
    mkdir -p "$state"
    for name in "${components[@]}"; do
      start "$name" || {
        echo "stack.sh: stopping what started" >&2
        for started in "${components[@]}"; do stop "$started" >/dev/null; done
        exit 1
      }
    done
    for name in "${components[@]}"; do wait_ready "$name" || {
      for started in "${components[@]}"; do stop "$started" >/dev/null; done
      exit 1
    }; done
    status
    cat <<EOF

Send telemetry to the Collector:  otel-cycles demo --otlp http://$CYCLES_OTLP_HTTP_ENDPOINT
  (or OTEL_EXPORTER_OTLP_ENDPOINT=http://$CYCLES_OTLP_GRPC_ENDPOINT with OTEL_EXPORTER_OTLP_PROTOCOL=grpc)
Jaeger query API:   http://$JAEGER_QUERY_HTTP_ENDPOINT/api/v3/services
Prometheus:         http://$prometheus_endpoint/graph
Logs and pids:      $state
Stop:               collector/stack.sh down
EOF
    ;;
  down)
    # Reverse order: the Collector flushes to Jaeger before Jaeger goes.
    for name in prometheus collector jaeger; do stop "$name"; done
    ;;
  status) status ;;
  *)
    echo "usage: collector/stack.sh up|down|status" >&2
    exit 2
    ;;
esac
