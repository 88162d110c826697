#!/usr/bin/env bash
# Side-by-side benchmark: pushgate (release build, embedded store) and nchan
# (Debian nginx-light + libnginx-mod-nchan, memory store), both on loopback,
# every mode of pushgate-load against both in one run. Writes
# docs/BENCHMARKS.md and docs/benchmarks-latency.png.
#
#   tests/load/bench.sh            # full run (about 12 minutes)
#   QUICK=1 tests/load/bench.sh    # small sizes, to try the script
#
# Knobs (environment): REPEAT (runs of the headline cases, default 3),
# IDLE_STREAMS (15000), IDLE_STREAMS_MAX (18000), TOPIC_STREAMS (5000), SUBS (2000), DURATION (seconds of publishing, 10),
# PG_PORT/NCHAN_PORT (28180/28181), NGINX_WORKERS (2), OUT (docs/BENCHMARKS.md),
# RESULTS_OUT (keep the raw JSON lines there). To re-render from kept results:
#   pushgate-load report --results FILE --out docs/BENCHMARKS.md \
#       --png docs/benchmarks-latency.png --notes tests/load/ANALYSIS.md
# Benchmarks measure and report; they assert nothing about time.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
COMMAND="tests/load/bench.sh${QUICK:+ (QUICK=$QUICK)}"
QUICK=${QUICK:-0}
REPEAT=${REPEAT:-3}
IDLE_STREAMS=${IDLE_STREAMS:-15000}
IDLE_STREAMS_MAX=${IDLE_STREAMS_MAX:-18000}
TOPIC_STREAMS=${TOPIC_STREAMS:-5000}
SUBS=${SUBS:-2000}
DURATION=${DURATION:-10}
STORM_STREAMS=${STORM_STREAMS:-5000}
if [ "$QUICK" = 1 ]; then
    REPEAT=1 IDLE_STREAMS=1000 IDLE_STREAMS_MAX=1200 TOPIC_STREAMS=300 SUBS=200 DURATION=3 STORM_STREAMS=500
fi
PG_PORT=${PG_PORT:-28180}
NCHAN_PORT=${NCHAN_PORT:-28181}
NGINX_WORKERS=${NGINX_WORKERS:-2}
OUT=${OUT:-docs/BENCHMARKS.md}
PNG=${PNG:-docs/benchmarks-latency.png}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release

need() { command -v "$1" >/dev/null 2>&1; }
if ! need jq || ! need curl || ! need nginx || ! [ -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
    echo "installing jq, curl, nginx-light, libnginx-mod-nchan" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq curl nginx-light libnginx-mod-nchan >/dev/null
fi

echo "building release binaries" >&2
cargo build --release -q -p gateway -p pushgate-load

TMP=$(mktemp -d /tmp/pushgate-bench.XXXXXX)
RESULTS=$TMP/results.jsonl
PG_PID='' NG_PID=''
cleanup() {
    stop_pushgate
    stop_nchan
    rm -rf "$TMP"
}
trap cleanup EXIT

load() { "$BIN/pushgate-load" "$@"; }
record() { tee -a "$RESULTS" >&2; }
note() { jq -nc --arg case "$1" --arg title "$2" --arg note "$3" '{case:$case,title:$title,note:$note}' >>"$RESULTS"; echo "$1: $3" >&2; }

wait_port() {
    for _ in $(seq 1 200); do
        if curl -s -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    return 1
}

start_pushgate() {
    rm -rf "$TMP/pg-data"
    # Limits raised so the benchmark measures the data path, not the admission
    # control (15,000 streams > default max_connections; storms > accept_rate).
    "$BIN/pushgate" serve --listen "127.0.0.1:$PG_PORT" --data-dir "$TMP/pg-data" \
        --max-connections 19000 --accept-rate 1000000 --publish-rate 1000000000 \
        --drain-window 1s --log-level warn "$@" >>"$TMP/pushgate.log" 2>&1 &
    PG_PID=$!
    wait_port "$PG_PORT"
}
stop_pushgate() {
    if [ -n "$PG_PID" ]; then kill "$PG_PID" 2>/dev/null || true; wait "$PG_PID" 2>/dev/null || true; PG_PID=''; fi
}

start_nchan() {
    mkdir -p "$TMP/nginx/logs"
    cat >"$TMP/nginx/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
daemon off;
master_process on;
worker_processes $NGINX_WORKERS;
worker_rlimit_nofile 20000;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 19000; multi_accept on; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    keepalive_requests 100000000;
    nchan_max_reserved_memory 512M;
    server {
        listen 127.0.0.1:$NCHAN_PORT backlog=16384;
        location = / { return 200 "ok\n"; }
        location ~ ^/pub/(.+)$ {
            nchan_publisher;
            nchan_channel_id \$1;
            nchan_message_buffer_length 1000;
            nchan_message_timeout 1h;
        }
        location ~ ^/sub/(.+)$ {
            nchan_subscriber eventsource;
            nchan_channel_id \$1;
            nchan_subscriber_first_message newest;
        }
    }
}
EOF
    nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" >>"$TMP/nginx/logs/stdout.log" 2>&1 &
    NG_PID=$!
    wait_port "$NCHAN_PORT"
    sleep 0.3
}
stop_nchan() {
    if [ -n "$NG_PID" ]; then kill -QUIT "$NG_PID" 2>/dev/null || true; wait "$NG_PID" 2>/dev/null || true; NG_PID=''; fi
}
# The master and its workers: CPU and memory are summed over all of them.
nchan_pids() { echo "$NG_PID" $(pgrep -P "$NG_PID"); }
pid_args() { for p in "$@"; do printf -- '--server-pid %s ' "$p"; done; }

PG_SUB="http://127.0.0.1:$PG_PORT/v1/stream?topic={topic}"
PG_PUB="http://127.0.0.1:$PG_PORT/v1/topics/{topic}/events"
NC_SUB="http://127.0.0.1:$NCHAN_PORT/sub/{topic}"
NC_PUB="http://127.0.0.1:$NCHAN_PORT/pub/{topic}"

# Runs one mode against a fresh pushgate and a fresh nchan, alternating.
# usage: both CASE MODE [args...]   (URL flags are added per system)
both() {
    local case=$1 mode=$2; shift 2
    local i pids
    for i in $(seq 1 "$RUNS"); do
        start_pushgate
        # shellcheck disable=SC2046
        load --case "$case" "$mode" --label pushgate $(pid_args "$PG_PID") "$@" \
            $(urls pg "$mode") | record || echo "pushgate $case run $i failed" >&2
        stop_pushgate
        start_nchan
        pids=$(nchan_pids)
        # shellcheck disable=SC2046,SC2086
        load --case "$case" "$mode" --label nchan $(pid_args $pids) "$@" \
            $(urls nc "$mode") | record || echo "nchan $case run $i failed" >&2
        stop_nchan
    done
}
urls() {
    local sys=$1 mode=$2 sub pub
    if [ "$sys" = pg ]; then sub=$PG_SUB pub=$PG_PUB; else sub=$NC_SUB pub=$NC_PUB; fi
    case $mode in
        idle) echo "--sub-url $sub" ;;
        publish) echo "--pub-url $pub" ;;
        *) echo "--sub-url $sub --pub-url $pub" ;;
    esac
}


meta() {
    local cpu mem
    cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || echo unknown)
    mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
    jq -nc --arg command "$COMMAND" \
        --arg date "$(date -u +%Y-%m-%dT%H:%MZ)" \
        --arg machine "$(nproc) cores ($cpu), $mem, Linux $(uname -r); shared with other jobs, so figures are noisy" \
        --arg pushgate "$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- gateway 2>/dev/null || echo ' + local changes'), release build, embedded SQLite store, fsync=always, lean HTTP/1.1 streams" \
        --arg nchan "nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null), nginx $(dpkg-query -W -f='${Version}' nginx-light 2>/dev/null), $NGINX_WORKERS workers, memory store" \
        --arg rust "$(rustc --version)" \
        --arg load "pushgate-load, one current-thread tokio runtime, raw HTTP/1.1 (hand-written chunked + SSE reader, $(load parse-bench --events 200000 | jq -r '.ns_per_event_load_parser | floor') ns per event) and h2c via the h2 crate" \
        '{meta:{command:$command,date:$date,machine:$machine,pushgate:$pushgate,nchan:$nchan,rust:$rust,"load tool":$load}}' >"$RESULTS"
}

meta
TAG=$(date +%s)

# --- idle: memory per stream -------------------------------------------------
RUNS=$REPEAT
note idle "Idle streams: server memory per stream ($IDLE_STREAMS streams over 100 topics)" \
    "Memory is the servers' proportional set size (PSS, /proc/PID/smaps_rollup; nginx master + workers summed) after the streams are open and held for 3 s, minus before."
both idle idle --streams "$IDLE_STREAMS" --topics 100 --hold 3 --concurrency 1000
# The same gateway with every request on hyper (--lean-streams false): what
# the lean path saves.
for i in $(seq 1 "$RUNS"); do
    start_pushgate --lean-streams false
    load --case idle idle --label pushgate-hyper $(pid_args "$PG_PID") --streams "$IDLE_STREAMS" \
        --topics 100 --hold 3 --concurrency 1000 --sub-url "$PG_SUB" | record || echo "pushgate-hyper idle run $i failed" >&2
    stop_pushgate
done
RUNS=1
note idle-18k "Idle streams at the per-process socket ceiling: $IDLE_STREAMS_MAX streams over 100 topics" \
    "As above, one run each; the load tool stays below about 18,000 sockets per process."
both idle-18k idle --streams "$IDLE_STREAMS_MAX" --topics 100 --hold 3 --concurrency 1000
note idle-topics "Idle streams (pushgate): $TOPIC_STREAMS streams with 1 topic each, then with 50 topics each" \
    "49 of the 50 topics are shared by every stream, the 50th is one of 100: what a subscription to one more topic costs."
printf 'limits:\n  max_topics_per_stream: 50\n' >"$TMP/topics.yaml"
MANY=$(seq -f 'topic=shared-%g' 1 49 | paste -sd'&')
start_pushgate --config "$TMP/topics.yaml"
load --case idle-topics idle --label "pushgate 1 topic" $(pid_args "$PG_PID") --streams "$TOPIC_STREAMS" \
    --topics 100 --hold 3 --concurrency 1000 --sub-url "$PG_SUB" | record || true
stop_pushgate
start_pushgate --config "$TMP/topics.yaml"
load --case idle-topics idle --label "pushgate 50 topics" $(pid_args "$PG_PID") --streams "$TOPIC_STREAMS" \
    --topics 100 --hold 3 --concurrency 1000 --sub-url "$PG_SUB&$MANY" | record || true
stop_pushgate
RUNS=$REPEAT

# --- fanout at a load both keep up with ----------------------------------------
note fanout-50 "Fan-out: $SUBS subscribers × 50 events/s on one topic ($DURATION s)" \
    "Latency is publish→deliver: the publisher stamps the payload just before sending the POST, so pushgate's figure includes its durable group commit (fsync) and nchan's does not persist anything. Server CPU per delivery is (utime+stime of the server processes over the run) / deliveries."
both fanout-50 fanout --topic "f50-$TAG" --subscribers "$SUBS" --rate 50 --duration "$DURATION" --publishers 4
note fanout-50-seq "Fan-out, one sequential publisher: $SUBS subscribers × 50 events/s on one topic ($DURATION s)" \
    "The shape of an independent client: one publisher that sends the next POST only after the previous answer, at a fixed rate. Concurrent publishers (the row above) raise nchan's latency 3-4x on this machine (tests/load/ANALYSIS.md, \"Publisher shape\")."
both fanout-50-seq fanout --topic "f50s-$TAG" --subscribers "$SUBS" --rate 50 --duration "$DURATION" --publishers 1
note floor "The physical floor: a bare loop writing one 121-byte frame per loopback socket per event, $SUBS sockets × 50 events/s ($DURATION s)" \
    "pushgate-load floor: a writer process (std, blocking write() per socket per tick) and a drainer process; CPU is the writer's utime+stime from /proc over the writing, which includes the loopback receive path the kernel charges to the sender. 121 bytes is pushgate's chunked frame in the fan-out above."
for i in $(seq 1 "$RUNS"); do
    load --case floor floor --sockets "$SUBS" --rate 50 --duration "$DURATION" --frame-bytes 121 | record || echo "floor run $i failed" >&2
done

# --- fanout overload ------------------------------------------------------------
RUNS=1
note fanout-500 "Fan-out overload: $SUBS subscribers × 500 events/s ($DURATION s)" \
    "1,000,000 deliveries/s on 2 shared cores is more than the client and server together can do: pushgate disconnects subscribers whose queue fills (slow consumers) and they resume by Last-Event-ID after the retry hint; what counts is zero loss and bounded memory."
both fanout-500 fanout --topic "f500-$TAG" --subscribers "$SUBS" --rate 500 --duration "$DURATION" --publishers 8 --drain 30

# --- durable publish throughput -------------------------------------------------
note publish "Publish throughput: 16 concurrent publishers, one event per request, 64 topics" \
    "pushgate acknowledges only after the group commit is durable (fsync); nchan's memory store acknowledges after an in-memory store."
both publish publish --publishers 16 --topics 64 --duration "$DURATION"
note publish-batch "Publish throughput with the batch endpoint (pushgate only): 32 publishers × 100-event batches" \
    "nchan has no batch publish; this is the group-commit ceiling of the embedded store."
start_pushgate
load --case publish-batch publish --label pushgate $(pid_args "$PG_PID") \
    --batch-url "http://127.0.0.1:$PG_PORT/v1/publish" --batch 100 --publishers 32 --topics 64 \
    --duration "$DURATION" | record || true
stop_pushgate
if "$BIN/pushgate" serve --help 2>/dev/null | grep -q redis && need redis-server; then
    REDIS_PORT=${REDIS_PORT:-28379}
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
    REDIS_PID=$!
    sleep 0.5
    if start_pushgate --store "redis://127.0.0.1:$REDIS_PORT"; then
        note publish-redis "Publish throughput on the Redis store" "pushgate with --store redis://127.0.0.1:$REDIS_PORT (redis-server without persistence)."
        load --case publish-redis publish --label "pushgate-redis" $(pid_args "$PG_PID" "$REDIS_PID") \
            --pub-url "$PG_PUB" --publishers 16 --topics 64 --duration "$DURATION" | record || true
        load --case publish-redis publish --label "pushgate-redis batch" $(pid_args "$PG_PID" "$REDIS_PID") \
            --batch-url "http://127.0.0.1:$PG_PORT/v1/publish" --batch 100 --publishers 32 --topics 64 \
            --duration "$DURATION" | record || true
    else
        note publish-redis "Publish throughput on the Redis store" "skipped: pushgate did not start with --store redis:// ($(tail -n1 "$TMP/pushgate.log"))"
    fi
    stop_pushgate
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
else
    note publish-redis "Publish throughput on the Redis store" "skipped: this pushgate build has no Redis store yet, or redis-server is not installed."
fi

# --- reconnect storm ------------------------------------------------------------
note storm "Reconnect storm: $STORM_STREAMS streams over 50 topics drop at once, miss 100 events each, reconnect at once with Last-Event-ID" \
    "Time is from the moment all reconnects start until every stream has received all 100 missed events."
both storm storm --streams "$STORM_STREAMS" --topics 50 --missed 100 --publishers 8

# --- protocols ------------------------------------------------------------------
note protocols "Protocols (pushgate): the same fan-out ($SUBS × 50 events/s) over HTTP/1.1 and h2c" \
    "h2c multiplexes 100 streams per connection. HTTP/2 over TLS: $(if "$BIN/pushgate" serve --help 2>/dev/null | grep -q tls-cert; then echo 'the gateway has TLS flags, but the load tool has no TLS client yet, so it is not measured here'; else echo 'skipped: the gateway does not serve TLS in this build'; fi)."
start_pushgate
load --case protocols fanout --label "pushgate h1" $(pid_args "$PG_PID") --sub-url "$PG_SUB" --pub-url "$PG_PUB" \
    --topic "p1-$TAG" --subscribers "$SUBS" --rate 50 --duration "$DURATION" | record || true
load --case protocols fanout --label "pushgate h2c" $(pid_args "$PG_PID") --sub-url "$PG_SUB" --pub-url "$PG_PUB" \
    --proto h2c --streams-per-conn 100 --topic "p2-$TAG" --subscribers "$SUBS" --rate 50 --duration "$DURATION" | record || true
stop_pushgate

# --- bad network ------------------------------------------------------------------
# tests/load/weaknet.sh measures every protocol on an impaired link (this
# kernel has no netem); `report` keeps the section it wrote.


mkdir -p "$(dirname "$OUT")"
if [ -n "${RESULTS_OUT:-}" ]; then cp "$RESULTS" "$RESULTS_OUT"; fi
load report --results "$RESULTS" --out "$OUT" --png "$PNG" --notes tests/load/ANALYSIS.md
echo "wrote $OUT and $PNG" >&2
