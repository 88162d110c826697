#!/usr/bin/env bash
# A single gateway restarted under third-party EventSource clients: CLIENTS
# clients of the npm `eventsource` package (tests/load/restart/gap.mjs) on
# one topic, one publisher at RATE events/s for DURATION s, and a SIGTERM
# at RESTART_AT s; the gateway is started again as soon as the old process
# exits. Prints one JSON line per run: the clients' longest silence, the
# publish→receive latency, losses and duplicates, and how long the old
# process drained. Loopback only; measures, asserts nothing but zero loss.
#
#   tests/load/restart.sh | jq -c '{run: .label, longest_silence_ms, latency_ms, lost, dups, drained_ms}'
#
# Knobs: CLIENTS (200), RATE (20), DURATION (40), RESTART_AT (10), RUNS (3),
# DRAIN_WINDOW (20s, the default), RETRY (the default), GATEWAY_BIN (the
# gateway to measure; default the release build of this tree), LABEL.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
CLIENTS=${CLIENTS:-200}
RATE=${RATE:-20}
DURATION=${DURATION:-40}
RESTART_AT=${RESTART_AT:-10}
RUNS=${RUNS:-3}
DRAIN_WINDOW=${DRAIN_WINDOW:-20s}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
command -v node >/dev/null || { echo "restart.sh: node (20 or later) is required" >&2; exit 1; }
command -v npm >/dev/null || { echo "restart.sh: npm is required" >&2; exit 1; }
if [[ -z ${GATEWAY_BIN:-} ]]; then
  cargo build --release -q -p gateway
  GATEWAY_BIN=$CARGO_TARGET_DIR/release/pushgate
fi
LABEL=${LABEL:-$(git rev-parse --short HEAD 2>/dev/null || echo tree)}
# The client's packages, exactly as locked.
(cd tests/load/restart && npm ci --no-audit --no-fund --silent)

TMP=$(mktemp -d /tmp/pushgate-restart.XXXXXX)
GW=
cleanup() { [[ -n $GW ]] && kill -9 "$GW" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
PORT=21591
URL=http://127.0.0.1:$PORT
ARGS=(serve --listen "127.0.0.1:$PORT" --data-dir "$TMP/data" --drain-window "$DRAIN_WINDOW"
  --max-connections 19000 --accept-rate 100000 --log-level warn)
[[ -n ${RETRY:-} ]] && ARGS+=(--retry "$RETRY")

now_ms() { date +%s%3N; }
start_gateway() {
  "$GATEWAY_BIN" "${ARGS[@]}" 2>>"$TMP/gateway.log" &
  GW=$!
  for _ in $(seq 200); do curl -sf "$URL/readyz" >/dev/null && return; sleep 0.05; done
  echo "restart.sh: the gateway did not become ready" >&2; cat "$TMP/gateway.log" >&2; exit 1
}

for r in $(seq "$RUNS"); do
  rm -rf "$TMP/data" "$TMP/ready"
  start_gateway
  node tests/load/restart/gap.mjs --url "$URL" --clients "$CLIENTS" --rate "$RATE" \
    --seconds "$DURATION" --ready "$TMP/ready" --topic "restart-$r" >"$TMP/out" &
  CLIENT=$!
  for _ in $(seq 600); do [[ -e $TMP/ready ]] && break; sleep 0.05; done
  [[ -e $TMP/ready ]] || { echo "restart.sh: the clients never started publishing" >&2; exit 1; }
  sleep "$RESTART_AT"
  t0=$(now_ms)
  kill -TERM "$GW"
  wait "$GW" || true
  t1=$(now_ms)
  start_gateway
  t2=$(now_ms)
  status=0
  wait "$CLIENT" || status=$?
  jq -c --arg name "$LABEL run $r" --argjson drained "$((t1 - t0))" --argjson down "$((t2 - t1))" \
    --argjson exit "$status" '{label: $name} + . + {drained_ms: $drained, down_ms: $down, client_exit: $exit}' "$TMP/out"
  kill -TERM "$GW"; wait "$GW" || true; GW=
done
