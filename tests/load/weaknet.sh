#!/usr/bin/env bash
# Weak-network protocol benchmark: the same fan-out over HTTP/1.1 (TLS),
# HTTP/2 (TLS), HTTP/3 (QUIC) and gRPC (TLS), 100 then 2,000 subscribers,
# on a clean link and on a 100 ms RTT / 5 % loss link. Writes the
# "Protocols on a weak network" section of docs/BENCHMARKS.md (between its
# markers) and keeps the raw JSON lines.
#
#   tests/load/weaknet.sh            # full run (about 20 minutes)
#   QUICK=1 tests/load/weaknet.sh    # small sizes, to try the script
#
# The link, exactly (this kernel has no sch_netem, so no tc delay):
#   - namespaces pgwn-gw (the gateway) and pgwn-cl (the load tool);
#   - the data link: veth pgwn-gd 10.79.0.1/30 <-> pgwn-cd 10.79.0.2/30, which
#     every subscriber uses;
#   - the control link: veth pgwn-gc 10.79.1.1/30 <-> pgwn-cc 10.79.1.2/30, the
#     publisher's, never impaired: latency is the subscribers' downlink plus
#     the gateway, and publisher and subscribers share one clock (one process);
#   - impaired: in each namespace, iptables OUTPUT -o <data veth> -j NFQUEUE,
#     and `pushgate-load delay` holds every queued packet DELAY_MS (50) before
#     letting it through (the kernel cuts GSO packets to wire size before
#     queueing), so the round trip gains 100 ms; and INPUT -i <data veth>
#     -m statistic --mode random --probability LOSS (0.05) -j DROP, so each
#     direction loses 5 % of its packets, handshakes and ACKs included.
#
# Knobs: QUICK, REPEAT (runs per case, median reported; 3), SUBS ("100 2000"),
# LINKS ("clean impaired"; "clean" alone compares the protocols' CPU cost),
# PROFILE (1: sample the gateway with `perf record` during each case and print
# where its CPU time goes, by crate, to stderr and PROFILE_OUT; "syscalls":
# count the gateway's system calls by kind instead),
# RATE (events/s, 10), DURATION (s of publishing, 20), DELAY_MS (50), LOSS
# (0.05), PORT (8443), OUT (docs/BENCHMARKS.md), RESULTS_OUT, H3_BUFFER
# (bytes of the QUIC socket's receive and send buffers; unset: the
# gateway's default, 0: the kernel's). Each case records the UDP
# RcvbufErrors and SndbufErrors of both namespaces (/proc/net/snmp) it caused.
# Benchmarks measure and report; they assert nothing about time. Needs root
# (namespaces, iptables, NFQUEUE); all traffic stays in the two namespaces.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
COMMAND="tests/load/weaknet.sh${QUICK:+ (QUICK=$QUICK)}"
QUICK=${QUICK:-0}
REPEAT=${REPEAT:-3}
SUBS=${SUBS:-100 2000}
LINKS=${LINKS:-clean impaired}
PROFILE=${PROFILE:-0}
PROFILE_OUT=${PROFILE_OUT:-/dev/null}
PERF_DATA_DIR=${PERF_DATA_DIR:-}   # PROFILE=1: keep each case's perf.data here, for perf report
RATE=${RATE:-10}
DURATION=${DURATION:-20}
if [ "$QUICK" = 1 ]; then
    REPEAT=1 SUBS="20 100" DURATION=3
fi
DELAY_MS=${DELAY_MS:-50}
LOSS=${LOSS:-0.05}
PORT=${PORT:-8443}
OUT=${OUT:-docs/BENCHMARKS.md}
PROTOS=${PROTOS:-h1 h2 h3 grpc}
H3_BUFFER=${H3_BUFFER:-}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
GW=pgwn-gw CL=pgwn-cl
DATA_GW=10.79.0.1 CTRL_GW=10.79.1.1

if ! command -v jq >/dev/null || ! command -v curl >/dev/null || ! command -v ping >/dev/null; then
    echo "installing jq, curl, iputils-ping" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq curl iputils-ping >/dev/null
fi
[ "$PROFILE" != 0 ] && { command -v perf >/dev/null || { echo "PROFILE=1 needs perf (apt-get install linux-perf)" >&2; exit 1; }; }
for tool in ip iptables openssl jq ping curl; do
    command -v "$tool" >/dev/null || { echo "weaknet.sh needs $tool" >&2; exit 1; }
done
echo "building release binaries" >&2
cargo build --release -q -p gateway -p pushgate-load

TMP=$(mktemp -d /tmp/pushgate-weaknet.XXXXXX)
RESULTS=$TMP/results.jsonl
GW_PID='' DELAY_PIDS=''
cleanup() {
    impair_off
    [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
    ip netns del "$GW" 2>/dev/null || true
    ip netns del "$CL" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

link_up() {
    ip netns del "$GW" 2>/dev/null || true
    ip netns del "$CL" 2>/dev/null || true
    ip netns add "$GW"
    ip netns add "$CL"
    ip link add pgwn-gd type veth peer name pgwn-cd
    ip link add pgwn-gc type veth peer name pgwn-cc
    ip link set pgwn-gd netns "$GW"
    ip link set pgwn-gc netns "$GW"
    ip link set pgwn-cd netns "$CL"
    ip link set pgwn-cc netns "$CL"
    # Addresses exist only inside these two namespaces, which this run made.
    ip -n "$GW" addr add "$DATA_GW/30" dev pgwn-gd
    ip -n "$GW" addr add "$CTRL_GW/30" dev pgwn-gc
    ip -n "$CL" addr add 10.79.0.2/30 dev pgwn-cd
    ip -n "$CL" addr add 10.79.1.2/30 dev pgwn-cc
    for ns in "$GW" "$CL"; do
        ip -n "$ns" link set lo up
        for dev in $(ip -n "$ns" -o link show | awk -F': ' '/pgwn-/ {sub(/@.*/, "", $2); print $2}'); do
            ip -n "$ns" link set "$dev" up
        done
    done
}

impair_on() {
    local ns dev
    for pair in "$GW:pgwn-gd" "$CL:pgwn-cd"; do
        ns=${pair%%:*} dev=${pair#*:}
        ip netns exec "$ns" iptables -A OUTPUT -o "$dev" -j NFQUEUE --queue-num 7
        ip netns exec "$ns" iptables -A INPUT -i "$dev" -m statistic --mode random --probability "$LOSS" -j DROP
        # Outlives any single run; cut short by impair_off.
        ip netns exec "$ns" "$BIN/pushgate-load" delay --queue 7 --ms "$DELAY_MS" --seconds 7200 \
            >>"$TMP/delay-$ns.jsonl" 2>>"$TMP/delay.log" &
        DELAY_PIDS="$DELAY_PIDS $!"
    done
    sleep 0.5
}

impair_off() {
    for ns in "$GW" "$CL"; do
        ip netns exec "$ns" iptables -F 2>/dev/null || true
    done
    for p in $DELAY_PIDS; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    DELAY_PIDS=''
}

certs() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$TMP/ca.key" -out "$TMP/ca.crt" -subj /CN=weaknet-ca \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$TMP/tls.key" -out "$TMP/tls.csr" -subj /CN=gateway 2>/dev/null
    printf 'subjectAltName=IP:%s,IP:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n' \
        "$DATA_GW" "$CTRL_GW" >"$TMP/leaf.ext"
    openssl x509 -req -in "$TMP/tls.csr" -CA "$TMP/ca.crt" -CAkey "$TMP/ca.key" -CAcreateserial \
        -days 2 -out "$TMP/tls.crt" -extfile "$TMP/leaf.ext" 2>/dev/null
}

start_gateway() {
    rm -rf "$TMP/data"
    local config=()
    if [ -n "$H3_BUFFER" ]; then
        printf 'protocols:\n  http3:\n    recv_buffer_bytes: %s\n    send_buffer_bytes: %s\n' \
            "$H3_BUFFER" "$H3_BUFFER" > "$TMP/pushgate.yaml"
        config=(--config "$TMP/pushgate.yaml")
    fi
    # Limits raised so the run measures delivery, not admission control.
    ip netns exec "$GW" "$BIN/pushgate" serve "${config[@]}" --listen "0.0.0.0:$PORT" --data-dir "$TMP/data" \
        --tls-cert-file "$TMP/tls.crt" --tls-key-file "$TMP/tls.key" --http3 true --grpc true \
        --max-connections 19000 --accept-rate 1000000 --publish-rate 1000000000 \
        --log-level warn >>"$TMP/pushgate.log" 2>&1 &
    GW_PID=$!
    for _ in $(seq 1 200); do
        if ip netns exec "$CL" curl -s -o /dev/null --cacert "$TMP/ca.crt" "https://$CTRL_GW:$PORT/healthz"; then
            return 0
        fi
        sleep 0.05
    done
    echo "the gateway did not start: $(tail -n 5 "$TMP/pushgate.log")" >&2
    exit 1
}

# The link itself: ICMP round trips over the data link (the floor no
# protocol can beat), and their loss.
floor() {
    local link=$1 out
    out=$(ip netns exec "$CL" ping -n -q -c 200 -i 0.01 "$DATA_GW" 2>&1 || true)
    jq -nc --arg link "$link" --arg ping "$(echo "$out" | tail -n 2 | tr '\n' ' ')" \
        '{weaknet_floor:{link:$link,ping:$ping}}' >>"$RESULTS"
    echo "$link link: $(echo "$out" | tail -n 2 | tr '\n' ' ')" >&2
}

# Self time of the gateway's samples, summed by the crate of each symbol
# (the first path segment of its Rust name; kernel and libc as they are).
profile_by_crate() {
    perf report -i "$1" --no-children --sort sym --stdio 2>/dev/null \
        | awk '/^ +[0-9.]+%/ {
                pct = $1; sub(/%/, "", pct)
                if ($2 == "[k]") crate = "[kernel]"
                else {
                    sym = $0; sub(/^[^\]]*\] /, "", sym); sub(/^</, "", sym)
                    if (sym ~ /^0x/) crate = "[unknown]"
                    else if (sym !~ /::/) crate = "[libc and other C]"
                    else { crate = sym; sub(/::.*/, "", crate); sub(/ .*/, "", crate) }
                }
                total[crate] += pct
              }
              END { for (c in total) printf "%6.2f%%  %s\n", total[c], c }' \
        | sort -rn | head -n 15
}

# Waits (at most 150 s) until the gateway holds no stream and no QUIC
# connection of the case before, so that none of their work (heartbeats,
# QUIC timers and retransmissions to a client that is gone) is counted
# against the next case.
settle() {
    local m
    for _ in $(seq 1 300); do
        m=$(ip netns exec "$CL" curl -s --cacert "$TMP/ca.crt" "https://$CTRL_GW:$PORT/metrics" || true)
        if echo "$m" | awk '$1 == "pushgate_connections" || $1 == "pushgate_quic_connections" { found++; n += $2 }
                            END { exit !(found == 2 && n == 0) }'; then
            return 0
        fi
        sleep 0.5
    done
    echo "the gateway still holds streams of the case before; measuring anyway" >&2
}

# udp_errors NS: "RcvbufErrors SndbufErrors" of namespace NS so far.
udp_errors() {
    ip netns exec "$1" awk '$1 == "Udp:" && ++n == 2 { print $6, $7 }' /proc/net/snmp
}

run_case() {
    local link=$1 subs=$2 proto=$3 run=$4 perf_pid='' gw0 cl0 gw1 cl1 g_rcv g_snd g_rcv1 g_snd1 c_rcv c_snd c_rcv1 c_snd1
    settle
    gw0=$(udp_errors "$GW") cl0=$(udp_errors "$CL")
    if [ "$PROFILE" = 1 ]; then
        perf record -q -e cpu-clock -F 499 -p "$GW_PID" -o "$TMP/perf.data" 2>>"$TMP/perf.log" &
        perf_pid=$!
    elif [ "$PROFILE" = syscalls ]; then
        perf stat -x, -e 'syscalls:sys_enter_*' -p "$GW_PID" -o "$TMP/perf.stat" 2>>"$TMP/perf.log" &
        perf_pid=$!
    fi
    ip netns exec "$CL" "$BIN/pushgate-load" --case "weaknet" --netns-target --ca-file "$TMP/ca.crt" \
        fanout --label "$link $subs $proto #$run" --server-pid "$GW_PID" --proto "$proto" \
        --sub-url "https://$DATA_GW:$PORT/v1/stream?topic={topic}" \
        --pub-url "https://$CTRL_GW:$PORT/v1/topics/{topic}/events" \
        --topic "wn-$link-$subs-$proto-$run" --subscribers "$subs" --rate "$RATE" \
        --duration "$DURATION" --publishers 1 --concurrency 200 --drain 30 > "$TMP/case.json" || true
    gw1=$(udp_errors "$GW") cl1=$(udp_errors "$CL")
    read -r g_rcv g_snd <<<"$gw0"; read -r g_rcv1 g_snd1 <<<"$gw1"
    read -r c_rcv c_snd <<<"$cl0"; read -r c_rcv1 c_snd1 <<<"$cl1"
    jq -c --arg link "$link" --arg h3buf "${H3_BUFFER:-default}" \
        --argjson gr $((g_rcv1 - g_rcv)) --argjson gs $((g_snd1 - g_snd)) \
        --argjson cr $((c_rcv1 - c_rcv)) --argjson cs $((c_snd1 - c_snd)) \
        '. + {link:$link, h3_buffer:$h3buf, udp_errors:{gateway:{rcvbuf:$gr,sndbuf:$gs},client:{rcvbuf:$cr,sndbuf:$cs}}}' \
        "$TMP/case.json" | tee -a "$RESULTS" >&2 || true
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
        if [ "$PROFILE" = 1 ]; then
            { echo "gateway CPU by crate, $link $subs $proto #$run:"; profile_by_crate "$TMP/perf.data"; } \
                | tee -a "$PROFILE_OUT" >&2
            if [ -n "$PERF_DATA_DIR" ]; then
                mkdir -p "$PERF_DATA_DIR"
                cp "$TMP/perf.data" "$PERF_DATA_DIR/$link-$subs-$proto-$run.perf.data"
            fi
        else
            { echo "gateway system calls, $link $subs $proto #$run (whole case: opens, publishing and drain):"
              awk -F, '$1 + 0 > 0 { sub(/syscalls:sys_enter_/, "", $3); printf "%12d  %s\n", $1, $3 }' "$TMP/perf.stat" \
                | sort -rn | head -n 12; } | tee -a "$PROFILE_OUT" >&2
        fi
    fi
}

jq -nc --arg command "$COMMAND" --arg date "$(date -u +%Y-%m-%dT%H:%MZ)" \
    --arg machine "$(nproc) cores, Linux $(uname -r); gateway, load tool and both delay stages share them" \
    --arg pushgate "$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- gateway 2>/dev/null || echo ' + local changes'), release build, embedded SQLite store, TLS (P-256), --http3 true --grpc true" \
    --arg link "data veth with NFQUEUE delay ${DELAY_MS} ms per direction and iptables statistic loss $LOSS per direction when impaired; publisher on a separate clean veth" \
    --arg load "pushgate-load fanout: one sequential publisher at $RATE events/s for $DURATION s, one connection per subscriber (h2 and gRPC: one stream per connection), $REPEAT run(s) per case" \
    '{weaknet_meta:{command:$command,date:$date,machine:$machine,pushgate:$pushgate,link:$link,load:$load}}' >"$RESULTS"

certs
link_up
start_gateway
for link in $LINKS; do
    if [ "$link" = impaired ]; then impair_on; fi
    floor "$link"
    for subs in $SUBS; do
        for run in $(seq 1 "$REPEAT"); do
            for proto in $PROTOS; do
                run_case "$link" "$subs" "$proto" "$run"
            done
        done
    done
    if [ "$link" = impaired ]; then impair_off; fi
done
cat "$TMP"/delay-*.jsonl >>"$RESULTS" 2>/dev/null || true

if [ -n "${RESULTS_OUT:-}" ]; then cp "$RESULTS" "$RESULTS_OUT"; fi
"$BIN/pushgate-load" report-protocols --results "$RESULTS" --out "$OUT" --notes tests/load/WEAKNET.md
echo "wrote the weak-network section of $OUT" >&2
