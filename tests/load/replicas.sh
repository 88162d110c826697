#!/usr/bin/env bash
# Redis store vs embedded store: durable publish throughput and cross-replica
# fan-out, with 1 and 3 gateway replicas on one Redis. Loopback only.
# Writes docs/BENCHMARKS_REPLICAS.md. Measures and reports; asserts nothing.
#
#   tests/load/replicas.sh
#
# Knobs: DURATION (s, default 5), SUBS (subscribers per fan-out process, 300),
# RATE (events/s per fan-out publisher, 100), OUT.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
DURATION=${DURATION:-5}
SUBS=${SUBS:-300}
RATE=${RATE:-100}
OUT=${OUT:-docs/BENCHMARKS_REPLICAS.md}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
command -v jq >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }
echo "building release binaries" >&2
cargo build --release -q -p gateway -p pushgate-load

TMP=$(mktemp -d /tmp/pushgate-replicas.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
RPORT=21390
BASE_PORT=21391
LIMITS=(--publish-rate 100000000 --accept-rate 100000 --max-connections 50000 --log-level warn)

start_redis() {
  redis-server --port $RPORT --bind 127.0.0.1 --dir "$TMP" --appendonly yes --appendfsync everysec \
    --save "" --daemonize no --loglevel warning >/dev/null &
  PIDS+=($!)
  for _ in $(seq 100); do redis-cli -p $RPORT ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "redis did not start" >&2; exit 1
}

# start_gw PORT ARGS...: runs a gateway, waits for readiness.
start_gw() {
  local port=$1; shift
  for _ in $(seq 100); do ss -ltn "sport = :$port" | grep -q LISTEN || break; sleep 0.05; done
  "$BIN/pushgate" serve --listen 127.0.0.1:$port "${LIMITS[@]}" "$@" >"$TMP/gw-$port.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return; sleep 0.05; done
  echo "gateway on $port did not become ready" >&2; cat "$TMP/gw-$port.log" >&2; exit 1
}

stop_all_gw() {
  pkill -9 -f "$BIN/pushgate serve" 2>/dev/null || true
  for _ in $(seq 100); do pgrep -f "$BIN/pushgate serve" >/dev/null || return 0; sleep 0.05; done
}

load() { "$BIN/pushgate-load" --threads 1 "$@"; }

# publish_case LABEL PORTS...: one batch-publishing load process per replica, in parallel; sums events/s.
publish_case() {
  local label=$1; shift
  local outs=()
  for port in "$@"; do
    load publish --label "$label" --batch-url "http://127.0.0.1:$port/v1/publish" --batch 100 \
      --publishers 8 --topics 64 --duration "$DURATION" >"$TMP/pub-$port.json" &
    outs+=($!)
  done
  wait "${outs[@]}"
  local total=0 errors=0
  for port in "$@"; do
    total=$(jq -n "$total + $(jq .events_per_s "$TMP/pub-$port.json")")
    errors=$((errors + $(jq .errors "$TMP/pub-$port.json")))
  done
  printf '| %s | %s | %.0f | %d |\n' "$label" "$#" "$total" "$errors" >>"$TMP/publish.md"
}

# fanout_case LABEL PORTS...: per replica i, SUBS subscribers on replica i and a publisher on replica i+1.
fanout_case() {
  local label=$1; shift
  local ports=("$@") n=$# outs=()
  for i in $(seq 0 $((n - 1))); do
    local sub=${ports[$i]} pub=${ports[$(((i + 1) % n))]}
    load fanout --label "$label" --topic "fan$i" --subscribers "$SUBS" --rate "$RATE" --duration "$DURATION" \
      --sub-url "http://127.0.0.1:$sub/v1/stream?topic={topic}" \
      --pub-url "http://127.0.0.1:$pub/v1/topics/{topic}/events" --drain 10 >"$TMP/fan-$i.json" &
    outs+=($!)
  done
  wait "${outs[@]}"
  local dps=0 lost=0 dups=0 p99=0
  for i in $(seq 0 $((n - 1))); do
    local f="$TMP/fan-$i.json"
    dps=$(jq -n "$dps + $(jq .deliveries_per_s "$f")")
    lost=$((lost + $(jq .lost "$f"))); dups=$((dups + $(jq .dups "$f")))
    p99=$(jq -n "[$p99, $(jq '.latency.p99_ms // .latency.p99 // 0' "$f")] | max")
  done
  printf '| %s | %s | %s | %.0f | %d | %d | %.1f |\n' "$label" "$n" "$((SUBS * n))" "$dps" "$lost" "$dups" "$p99" >>"$TMP/fanout.md"
}

: >"$TMP/publish.md"; : >"$TMP/fanout.md"
echo "embedded store" >&2
start_gw $BASE_PORT --data-dir "$TMP/emb"
publish_case "embedded (fsync always)" $BASE_PORT
fanout_case "embedded" $BASE_PORT
stop_all_gw
start_gw $BASE_PORT --data-dir "$TMP/emb2" --fsync normal
publish_case "embedded (fsync normal)" $BASE_PORT
stop_all_gw

echo "redis store" >&2
start_redis
start_gw $BASE_PORT --store "redis://127.0.0.1:$RPORT" --redis-key-prefix one
publish_case "redis, 1 replica" $BASE_PORT
fanout_case "redis, 1 replica" $BASE_PORT
stop_all_gw
for k in 0 1 2; do start_gw $((BASE_PORT + k)) --store "redis://127.0.0.1:$RPORT" --redis-key-prefix three; done
publish_case "redis, 3 replicas" $BASE_PORT $((BASE_PORT + 1)) $((BASE_PORT + 2))
fanout_case "redis, 3 replicas" $BASE_PORT $((BASE_PORT + 1)) $((BASE_PORT + 2))
stop_all_gw

{
  echo "# Replicas: Redis store vs embedded store"
  echo
  echo "Made by \`tests/load/replicas.sh\` (DURATION=$DURATION SUBS=$SUBS RATE=$RATE) on $(date -u +%Y-%m-%d),"
  echo "$(nproc) cores shared by the gateways, Redis and the load processes (all on loopback), so"
  echo "absolute numbers are a floor, not a capacity: with 3 replicas on 2 cores the replicas compete"
  echo "for the same CPU. Redis runs with \`appendonly yes, appendfsync everysec\` (its default durability);"
  echo "the embedded store fsyncs each group commit (\`fsync: always\`, the default) or leaves it to the OS"
  echo "(\`fsync: normal\`)."
  echo
  echo "## Durable publish throughput (batch endpoint, 100 events per request, 8 publishers per replica)"
  echo
  echo "| store | replicas | events/s acknowledged | errors |"
  echo "|---|---|---|---|"
  cat "$TMP/publish.md"
  echo
  echo "## Fan-out across replicas ($RATE events/s per publisher, $SUBS subscribers per replica, publisher on the next replica)"
  echo
  echo "| store | replicas | subscribers | deliveries/s | lost | dups | worst p99 ms |"
  echo "|---|---|---|---|---|---|---|"
  cat "$TMP/fanout.md"
} >"$OUT"
echo "wrote $OUT" >&2
