#!/usr/bin/env bash
# Fault tests of weir over Kafka: a steady simulated load through separate gateway, processor
# and cold-sink processes (two of each consumer role) while this script
#   a. kills -9 the cold sinks, several times,
#   b. kills -9 a processor,
#   c. stops the broker (kill -9) for 10 s,
#   d. restarts it on its persistent storage,
# then reconciles from the outside: every reading a device was told was accepted is in the lake
# exactly once, and every window the processors published equals the same window computed from
# the lake with SQL. It ends with one line,
#   chaos: acked=N stored=N lost=0 duplicated=0 aggregates=exact
# and exits non-zero on any loss, duplicate or mismatch.
#
# Environment: WEIR_CHAOS_FAULTS (which faults, default "sink processor broker"),
# WEIR_CHAOS_REPLICAS (processes of each consumer role, default 2), WEIR_BIN
# (the weir binary; default: build it), WEIR_CHAOS_PORT (broker port,
# default 19292), WEIR_CHAOS_SECONDS (length of the load, default 90), WEIR_CHAOS_RATE
# (readings per second, default 300), WEIR_CHAOS_DIR (work directory, default a new temporary
# one, removed on success).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${WEIR_CHAOS_PORT:-19292}
FAULTS=" ${WEIR_CHAOS_FAULTS:-sink processor broker} "
REPLICAS=${WEIR_CHAOS_REPLICAS:-2}
SECONDS_OF_LOAD=${WEIR_CHAOS_SECONDS:-90}
RATE=${WEIR_CHAOS_RATE:-300}
# A crashed process comes back after the group's session timeout (10 s) has passed. tansu 0.6
# (the test broker) hands every partition to the dead member when a new one joins before the
# dead one's session expired, and the group then stays stuck; Kafka does not need the wait.
RESTART_DELAY=${WEIR_CHAOS_RESTART_DELAY:-12}
WORK=${WEIR_CHAOS_DIR:-$(mktemp -d -t weir-chaos-XXXXXX)}
mkdir -p "$WORK"
if [ -z "${WEIR_BIN:-}" ]; then
  cargo build --quiet --bin weir
  WEIR_BIN=${CARGO_TARGET_DIR:-target}/debug/weir
fi

export WEIR_BROKER_PORT=$PORT
export WEIR_BROKER_RUN_DIR=$WORK/broker-run
BROKER_DATA=$WORK/broker-data
PREFIX=chaos-$(date +%s)-
TOKEN=chaos-operator-token
# Windows short enough to publish many during the run; lateness above the longest a retried
# reading can be delayed by the broker outage (about 25 s), so that no reading is late.
# The idempotent producer is off only because tansu 0.6 (the test broker) panics on a
# restarted idempotent producer session (tansu-storage lite.rs, "more or less than one row");
# against Kafka or Redpanda leave it on, as weir does by default.
COMMON=(--kafka "127.0.0.1:$PORT" --kafka-option enable.idempotence=false
  --topic-prefix "$PREFIX" --data-dir "$WORK/data"
  --lake "$WORK/lake" --operator-token "$TOKEN" --partitions 4 --listen 127.0.0.1:0
  --window 20s --hop 5s --allowed-lateness 40s --batch-max-age 2s --log "${WEIR_CHAOS_LOG:-warn}")

log() { echo "chaos: $(date +%T) $*" >&2; }
declare -A PIDS

# start NAME ROLE: runs `weir ROLE` in the background, waits until it listens.
start() {
  local name=$1 role=$2 out=$WORK/$1.out
  # No --instance-id (static membership): tansu 0.6 never lets a restarted static member
  # take its place back, so the dead one would keep its partitions.
  "$WEIR_BIN" "$role" "${COMMON[@]}" >"$out" 2>>"$WORK/$name.log" &
  PIDS[$name]=$!
  for _ in $(seq 1 300); do
    if grep -q "listening on" "$out" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
      log "$name died on start:"; tail -n 20 "$WORK/$name.log" >&2; return 1
    fi
    sleep 0.1
  done
  log "$name did not start"; return 1
}

crash() {
  log "kill -9 $1"
  kill -9 "${PIDS[$1]}" 2>/dev/null || true
  wait "${PIDS[$1]}" 2>/dev/null || true
}

cleanup() {
  for name in "${!PIDS[@]}"; do kill -9 "${PIDS[$name]}" 2>/dev/null || true; done
  infra/broker.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

# A broker left on this port by something else would be killed by nobody: refuse it.
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  log "port $PORT is already taken; stop what listens there or set WEIR_CHAOS_PORT"
  exit 1
fi
infra/broker.sh start "$BROKER_DATA"
start gateway gateway
start processor1 processor
start sink1 cold-sink
if [ "$REPLICAS" -ge 2 ]; then
  start processor2 processor
  start sink2 cold-sink
fi
GATEWAY=$(grep -o 'http://[^ ]*' "$WORK/gateway.out" | head -n 1)
log "gateway at $GATEWAY, topics $PREFIX*, work in $WORK"

# Minute windows are final once their partition's newest reading is past their end by the
# allowed lateness (40 s). Start the load late enough in a minute (plus 5 s of margin) that
# the first minute with readings is final before the load ends: otherwise, by the clock
# alone, a short run publishes no minute to check.
# Not in a minute's last 5 s either: the load would start in the next minute, too early in it.
into_minute=$((10#$(date +%S)))
first_final=$((105 - SECONDS_OF_LOAD))
if ((first_final > 0 && first_final < 55)); then
  wait_for=0
  if ((into_minute < first_final)); then
    wait_for=$((first_final - into_minute))
  elif ((into_minute >= 55)); then
    wait_for=$((60 - into_minute + first_final))
  fi
  if ((wait_for > 0)); then
    log "waiting $wait_for s, so that a minute is final before the load ends"
    sleep "$wait_for"
  fi
fi

"$WEIR_BIN" simulate --target "$GATEWAY" --devices 1000 --rate "$RATE" \
  --duration "${SECONDS_OF_LOAD}s" --token "$TOKEN" --seed 7 --log error \
  >"$WORK/simulate.json" 2>"$WORK/simulate.log" &
SIMULATOR=$!

at() { # at SECONDS: sleep until that many seconds into the load
  local now=$((SECONDS - LOAD_START))
  if [ "$1" -gt "$now" ]; then sleep $(($1 - now)); fi
}
enabled() { [[ "$FAULTS" == *" $1 "* ]]; }
LOAD_START=$SECONDS
if enabled sink; then at 5; crash sink1; sleep "$RESTART_DELAY"; start sink1 cold-sink; fi
if enabled processor; then at 20; crash processor1; sleep "$RESTART_DELAY"; start processor1 processor; fi
if enabled sink && [ "$REPLICAS" -ge 2 ]; then at 24; crash sink2; sleep "$RESTART_DELAY"; start sink2 cold-sink; fi
if enabled broker; then
  at 40; log "kill -9 the broker for 10 s"
  kill -9 "$(cat "$WEIR_BROKER_RUN_DIR/pid")" 2>/dev/null || true
  sleep 10
  infra/broker.sh start "$BROKER_DATA"
fi
if enabled sink; then at 62; crash sink1; sleep "$RESTART_DELAY"; start sink1 cold-sink; fi

set +e
wait "$SIMULATOR"
SIMULATED=$?
set -e
ACCEPTED=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["accepted"])' "$WORK/simulate.json")
FAILED=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["failed"])' "$WORK/simulate.json")
RETRIED=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["retried"])' "$WORK/simulate.json")
WAITED=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["latency_ms"]["max"])' "$WORK/simulate.json")
log "simulator done (exit $SIMULATED): accepted $ACCEPTED, answered 503 and retried $RETRIED," \
  "failed after retries $FAILED, longest wait for an answer ${WAITED} ms"
if [ "$ACCEPTED" -eq 0 ]; then log "nothing was accepted"; exit 1; fi
# While the broker is away the gateway must say so (503 + Retry-After), not hang or pretend.
if enabled broker && [ "$RETRIED" -eq 0 ]; then
  log "the broker was down for 10 s, yet no request was answered 503"; exit 1
fi

# Let the sinks catch up: the lake count must reach the accepted count and hold still.
count() {
  "$WEIR_BIN" sql --lake "$WORK/lake" --format csv "SELECT count(*) AS n FROM telemetry" | tail -n 1
}
last=-1
for _ in $(seq 1 90); do
  now=$(count)
  if [ "$now" -ge "$ACCEPTED" ] && [ "$now" -eq "$last" ]; then break; fi
  last=$now
  sleep 2
done
# ...and the windows: a processor publishes a minute once its partition's watermark has passed
# it, retrying through the broker's outage, and one that took partitions over first reads where
# its predecessor stopped. Stopping the roles while that is under way would leave nothing to
# check: wait (up to a minute) until reconcile finds published minutes.
reconcile() {
  "$WEIR_BIN" reconcile --kafka "127.0.0.1:$PORT" --topic-prefix "$PREFIX" \
    --lake "$WORK/lake" --accepted "$ACCEPTED"
}
for _ in $(seq 1 12); do
  line=$(reconcile 2>/dev/null || true)
  if [ -n "$line" ] && [[ "$line" != *none-published* ]]; then break; fi
  sleep 5
done
log "lake holds $(count) readings; stopping the roles"
for name in "${!PIDS[@]}"; do kill -TERM "${PIDS[$name]}" 2>/dev/null || true; done
# A role has two minutes to stop; one that has not is reported and killed, not waited on.
for _ in $(seq 1 120); do
  alive=0
  for name in "${!PIDS[@]}"; do kill -0 "${PIDS[$name]}" 2>/dev/null && alive=1; done
  [ "$alive" -eq 1 ] || break
  sleep 1
done
for name in "${!PIDS[@]}"; do
  if kill -0 "${PIDS[$name]}" 2>/dev/null; then
    log "$name did not stop within two minutes of SIGTERM; killing it"
    kill -9 "${PIDS[$name]}" 2>/dev/null || true
  fi
  wait "${PIDS[$name]}" 2>/dev/null || true
done
PIDS=()

set +e
LINE=$(reconcile 2>"$WORK/reconcile.json")
STATUS=$?
set -e
if [ "$STATUS" -ne 0 ]; then
  log "reconcile failed; details in $WORK"
  cat "$WORK/reconcile.json" >&2
else
  # The broker's pid file lives in the work directory: stop it before that goes.
  infra/broker.sh stop >/dev/null 2>&1 || true
  [ -n "${WEIR_CHAOS_DIR:-}" ] || rm -rf "$WORK"
fi
echo "chaos: $LINE"
exit "$STATUS"
