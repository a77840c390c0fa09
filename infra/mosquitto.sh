#!/usr/bin/env bash
# Eclipse Mosquitto from Debian's packages, for tests and comparisons: `mosquitto_pub` and
# `mosquitto_sub` talk to weir's MQTT endpoint as third-party clients do, and the `mosquitto`
# broker is the yardstick of the MQTT intake benchmark. weir does not need it to run.
#
#   infra/mosquitto.sh install     install mosquitto and mosquitto-clients if missing
#   infra/mosquitto.sh start PORT  start a broker on 127.0.0.1:PORT (anonymous, no persistence)
#   infra/mosquitto.sh stop PORT   stop it
set -euo pipefail

RUN_DIR=${WEIR_MOSQUITTO_RUN_DIR:-$HOME/.cache/weir/mosquitto}
log() { echo "mosquitto: $*" >&2; }

install() {
  if command -v mosquitto_pub >/dev/null && [ -x "$(binary)" ]; then
    return 0
  fi
  log "installing mosquitto and mosquitto-clients from Debian"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto mosquitto-clients \
    >/dev/null || {
    $sudo apt-get update -q >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto mosquitto-clients \
      >/dev/null
  }
}

binary() {
  command -v mosquitto 2>/dev/null || echo /usr/sbin/mosquitto
}

start() {
  local port=$1
  install
  mkdir -p "$RUN_DIR"
  cat >"$RUN_DIR/$port.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 64
CONF
  "$(binary)" -c "$RUN_DIR/$port.conf" >"$RUN_DIR/$port.log" 2>&1 &
  echo $! >"$RUN_DIR/$port.pid"
  for _ in $(seq 1 50); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      log "up on 127.0.0.1:$port"
      return 0
    fi
    sleep 0.1
  done
  log "did not come up; see $RUN_DIR/$port.log"
  return 1
}

stop() {
  local pid_file=$RUN_DIR/$1.pid
  if [ -f "$pid_file" ]; then
    kill "$(cat "$pid_file")" 2>/dev/null || true
    rm -f "$pid_file"
  fi
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?port}" ;;
  stop) stop "${2:?port}" ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
