#!/usr/bin/env bash
# Device acknowledgements: acks/s sustained on the embedded store (fsync
# always) and on Redis, 16 devices acking as fast as answers come back, each
# ack one event further than the last. Loopback only. Prints one JSON line
# per run (pushgate-load publish --ack-url); measures, asserts nothing.
#
#   tests/load/acks.sh | jq -c '{label, events_per_s, request_latency, server_cpu_us_per_event}'
#
# Knobs: DURATION (s, default 10), DEVICES (16), RUNS (3).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
DURATION=${DURATION:-10}
DEVICES=${DEVICES:-16}
RUNS=${RUNS:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
command -v redis-server >/dev/null || { echo "acks.sh: redis-server is required" >&2; exit 1; }
cargo build --release -q -p gateway -p pushgate-load

TMP=$(mktemp -d /tmp/pushgate-acks.XXXXXX)
PIDS=()
# Newest first: the gateway stops before the Redis it uses.
cleanup() { for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; wait "${PIDS[i]}" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
PORT=21491
RPORT=21490
LIMITS=(--max-connections 19000 --accept-rate 1000000 --publish-rate 1000000000 --log-level warn)
URL=http://127.0.0.1:$PORT

wait_ready() {
  for _ in $(seq 100); do curl -sf "$URL/readyz" >/dev/null && return; sleep 0.1; done
  echo "acks.sh: gateway not ready" >&2; exit 1
}

measure() { # label, server pids...
  local label=$1; shift
  local pids=(); for p in "$@"; do pids+=(--server-pid "$p"); done
  for r in $(seq "$RUNS"); do
    "$BIN/pushgate-load" --case acks publish --label "$label run $r" "${pids[@]}" \
      --publishers "$DEVICES" --duration "$DURATION" \
      --pub-url "$URL/v1/topics/{topic}/events" --ack-url "$URL/v1/devices/{topic}/ack"
  done
}

"$BIN/pushgate" serve --listen "127.0.0.1:$PORT" --data-dir "$TMP/data" "${LIMITS[@]}" &
GW=$!; PIDS+=("$GW"); wait_ready
measure embedded "$GW"
kill "$GW"; wait "$GW" 2>/dev/null || true

redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
REDIS=$!; PIDS+=("$REDIS")
"$BIN/pushgate" serve --listen "127.0.0.1:$PORT" --store "redis://127.0.0.1:$RPORT" \
  --redis-key-prefix acks "${LIMITS[@]}" &
GW=$!; PIDS+=("$GW"); wait_ready
measure redis "$GW" "$REDIS"
