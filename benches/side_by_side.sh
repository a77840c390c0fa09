#!/usr/bin/env bash
# weir next to what people would otherwise reach for, measured in one run on this machine, each
# pair on the same load one after the other; prints every pair and its ratio, and keeps the
# details in target/side-by-side/.
#
#   benches/side_by_side.sh [READINGS]     READINGS in the lake comparison (default 1,000,000)
#
# - HTTP intake: weir's gateway (202 once the bus acknowledged) vs a bare hyper server that
#   answers 202 at once: the ceiling of HTTP on this machine (ingest/examples/http_bench.rs).
# - Produce path: weir's Kafka bus vs kcat (librdkafka's command-line producer, from Debian),
#   the same records to the same local broker, acks=all and idempotent
#   (common/examples/kafka_produce.rs; kcat here).
# - MQTT intake: weir's endpoint (PUBACK after the bus) vs Mosquitto (PUBACK on receipt)
#   (ingest/examples/mqtt_bench.rs).
# - Parquet: weir's writer vs pyarrow on the same rows; `weir sql` vs DuckDB on the same files
#   (sinks/examples/lake_bench.rs, benches/lake_vs_duckdb.py).
set -euo pipefail
cd "$(dirname "$0")/.."

readings=${1:-1000000}
target=${CARGO_TARGET_DIR:-target}
out=$target/side-by-side
mkdir -p "$out"
examples=$target/release/examples
log() { echo "side-by-side: $*" >&2; }

cargo build --release --locked -q -p weir-ingest --example http_bench --example mqtt_bench
cargo build --release --locked -q -p weir-common --example kafka_produce
cargo build --release --locked -q -p weir-sinks --example lake_bench
./infra/mosquitto.sh install
if ! command -v kcat >/dev/null; then
  log "installing kcat from Debian"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q kcat >/dev/null || {
    $sudo apt-get update -q >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q kcat >/dev/null
  }
fi
lake_venv=$HOME/.cache/weir/venv-lake
if ! "$lake_venv/bin/python" -c 'import duckdb, pyarrow' 2>/dev/null; then
  python3 -m venv "$lake_venv"
  "$lake_venv/bin/pip" install -q -r tests/clients/lake-requirements.txt
fi

# 1. HTTP intake.
log "HTTP intake: weir vs a bare hyper server"
"$examples/http_bench" | tee "$out/http.txt"

# 2. Produce path, on a broker of its own.
export WEIR_BROKER_PORT=${WEIR_SIDE_BROKER_PORT:-19492}
export WEIR_BROKER_RUN_DIR=$out/broker
./infra/broker.sh stop >/dev/null 2>&1 || true
./infra/broker.sh start
trap './infra/broker.sh stop >/dev/null 2>&1 || true; ./infra/mosquitto.sh stop 18839 >/dev/null 2>&1 || true' EXIT
records=200000
log "produce path: weir's Kafka bus vs kcat, $records records of 200 B"
"$examples/kafka_produce" "127.0.0.1:$WEIR_BROKER_PORT" "$records" 200 | tee "$out/produce.txt"
./infra/broker.sh topic side-by-side-kcat 8 >/dev/null
python3 - "$records" >"$out/kcat-input.txt" <<'PY'
import sys
value = "x" * 200
for i in range(int(sys.argv[1])):
    print(f"b{i % 500:04d}:{value}")
PY
started=$(date +%s.%N)
# Debian's kcat is built on an older librdkafka than weir's, which some brokers (tansu among
# them) do not answer: then the bare librdkafka producer above is the yardstick.
if kcat -P -b "127.0.0.1:$WEIR_BROKER_PORT" -t side-by-side-kcat -K : \
  -X acks=all -X enable.idempotence=true -X linger.ms=5 -l "$out/kcat-input.txt" \
  2>"$out/kcat.log" && ! grep -q ERROR "$out/kcat.log"; then
  ended=$(date +%s.%N)
  python3 - "$started" "$ended" "$records" <<'PY' | tee -a "$out/produce.txt"
import sys
started, ended, records = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
elapsed = ended - started
print(f"kcat                : {records} records of 200 B acknowledged in {elapsed:.2f} s: "
      f"{records / elapsed:.0f} records/s, {records * 200 / elapsed / 1e6:.1f} MB/s")
PY
else
  log "kcat could not produce to this broker: $(grep -m1 ERROR "$out/kcat.log" || true)"
fi
./infra/broker.sh stop

# 3. MQTT intake.
log "MQTT intake: weir vs Mosquitto"
./infra/mosquitto.sh start 18839
"$examples/mqtt_bench" --mosquitto-port 18839 | tee "$out/mqtt.txt"
./infra/mosquitto.sh stop 18839

# 4. The lake: Parquet writing vs pyarrow, `weir sql` vs DuckDB, on the same files.
log "the lake: $readings readings, weir vs pyarrow and DuckDB"
rm -rf "$out/lake"
"$examples/lake_bench" "$readings" "$out/lake" >"$out/lake.json"
"$lake_venv/bin/python" benches/lake_vs_duckdb.py "$out/lake" | tee "$out/lake.txt"

# The ratios, together.
python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
def grab(path, pattern):
    match = re.search(pattern, open(f"{out}/{path}").read(), re.M)
    return float(match.group(1)) if match else float("nan")
rate = r"([0-9.]+) records/s"
weir_produce = grab("produce.txt", r"^weir kafka backend: .*? " + rate)
kcat = grab("produce.txt", r"^kcat +: .*? " + rate)
bare = grab("produce.txt", r"^bare librdkafka +: .*? " + rate)
print("\nthroughput, weir / the other (above 1: weir is faster)")
print(f"  HTTP intake vs a bare hyper server   {grab('http.txt', r'weir / ceiling = ([0-9.]+)'):.2f}")
if kcat == kcat:
    print(f"  produce path vs kcat                 {weir_produce / kcat:.2f}")
else:
    print(f"  produce path vs bare librdkafka      {weir_produce / bare:.2f}  (kcat could not talk to the broker)")
print(f"  MQTT intake vs Mosquitto             {grab('mqtt.txt', r'weir / mosquitto = ([0-9.]+)'):.2f}")
print(f"  Parquet writing vs pyarrow           {grab('lake.txt', r'weir/pyarrow ([0-9.]+)'):.2f}")
print("query time, weir sql / DuckDB on the same files (below 1: weir is faster)")
for name, ratio in re.findall(r"^(\w+) +\d+ms +\d+ms +([0-9.]+)", open(f"{out}/lake.txt").read(), re.M):
    print(f"  {name:36} {float(ratio):.2f}")
PY
