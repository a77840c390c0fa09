#!/usr/bin/env bash
# A local Kafka-protocol broker for development and tests: tansu (https://tansu.io), a Kafka
# broker in Rust that works with librdkafka, consumer groups and offset commits included.
# weir does not depend on it: point weir at any Kafka, Redpanda or Event Hubs endpoint instead.
#
#   infra/broker.sh install            build the broker once (cached; ~10 min on 2 cores)
#   infra/broker.sh start [DIR]        start on $WEIR_BROKER_PORT (default 19092), storing to a
#                                      fresh scratch directory, or to DIR, which survives
#                                      restarts; waits until ready
#   infra/broker.sh stop               stop the broker started by `start`
#   infra/broker.sh status             exit 0 when the broker accepts connections
#   infra/broker.sh healthy            exit 0 when the broker answers a Kafka request (it lists
#                                      its topics) within 20 s: a broker can accept connections
#                                      and still have stopped serving
#   infra/broker.sh topic NAME PARTS   create a topic
#
# Environment: WEIR_TOOLS_DIR (where the binary is cached, default ~/.cache/weir/tools),
# WEIR_BROKER_PORT (default 19092), WEIR_BROKER_RUN_DIR (pid and log, default
# ~/.cache/weir/broker-<port>).
set -euo pipefail

TANSU_VERSION=0.6.0
TOOLS_DIR=${WEIR_TOOLS_DIR:-$HOME/.cache/weir/tools}
PORT=${WEIR_BROKER_PORT:-19092}
RUN_DIR=${WEIR_BROKER_RUN_DIR:-$HOME/.cache/weir/broker-$PORT}
TANSU=$TOOLS_DIR/bin/tansu
URL=tcp://127.0.0.1:$PORT

log() { echo "broker: $*" >&2; }

install() {
  if [ -x "$TANSU" ]; then
    return 0
  fi
  log "installing tansu $TANSU_VERSION into $TOOLS_DIR (once; this takes several minutes)"
  mkdir -p "$TOOLS_DIR"
  # A target directory of its own: never contend with (or invalidate) weir's own build cache.
  CARGO_TARGET_DIR="$TOOLS_DIR/build" cargo install tansu --version "$TANSU_VERSION" \
    --locked --features dynostore,libsql --root "$TOOLS_DIR"
  rm -rf "$TOOLS_DIR/build"
}

answers() {
  # A TCP connect is enough to know the listener is up; librdkafka does the rest.
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

start() {
  install
  if answers; then
    log "a broker already answers on $PORT"
    return 0
  fi
  mkdir -p "$RUN_DIR"
  # Always the SQLite engine: tansu's in-memory engine cannot fetch from an offset inside a
  # record batch (it skips the rest of that batch), which consumers resuming from a committed
  # offset rely on.
  local storage=${1:-}
  if [ -z "$storage" ]; then
    storage=$RUN_DIR/data
    rm -rf "$storage"
  fi
  mkdir -p "$storage"
  storage=$(cd "$storage" && pwd)
  # tansu reads the SQLite path relative to its working directory.
  (cd "$storage" && exec nohup "$TANSU" broker --listener-url "$URL" \
    --advertised-listener-url "$URL" --storage-engine sqlite://tansu.db \
    >"$RUN_DIR/broker.log" 2>&1) &
  echo $! >"$RUN_DIR/pid"
  local engine="sqlite in $storage"
  for _ in $(seq 1 100); do
    if answers; then
      log "up on 127.0.0.1:$PORT ($engine), log in $RUN_DIR/broker.log"
      return 0
    fi
    sleep 0.1
  done
  log "did not come up; see $RUN_DIR/broker.log"
  tail -n 20 "$RUN_DIR/broker.log" >&2 || true
  return 1
}

stop() {
  if [ -f "$RUN_DIR/pid" ]; then
    local pid
    pid=$(cat "$RUN_DIR/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$RUN_DIR/pid"
    log "stopped"
  fi
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-}" ;;
  stop) stop ;;
  status) answers ;;
  healthy) install; timeout 20 "$TANSU" topic list --broker "$URL" >/dev/null 2>&1 ;;
  topic) install; "$TANSU" topic create "$2" --partitions "${3:-8}" --broker "$URL" ;;
  *) sed -n '2,18p' "$0" >&2; exit 2 ;;
esac
