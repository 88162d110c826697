#!/usr/bin/env sh
# Publish events with curl.
#   GATEWAY=http://localhost:8080 sh examples/curl/publish.sh news 'hello' 'world'
# Each event is sent with an Idempotency-Key and retried on 503/429, so a retry
# after a timeout never stores it twice (docs/API.md, "Publishing").
set -eu
GATEWAY="${GATEWAY:-http://localhost:8080}"
topic="${1:?usage: publish.sh TOPIC DATA...}"; shift
for data in "$@"; do
  key="$(date +%s%N)-$$-$(printf %s "$data" | cksum | cut -d' ' -f1)"
  tries=0
  while :; do
    code=$(curl -s -o /tmp/pushgate-publish.$$ -w '%{http_code}' -XPOST \
      -H "Idempotency-Key: $key" ${TOKEN:+-H "Authorization: Bearer $TOKEN"} \
      --data-binary "$data" "$GATEWAY/v1/topics/$topic/events") || code=000
    if [ "$code" = 201 ]; then cat /tmp/pushgate-publish.$$; echo; break; fi
    tries=$((tries + 1))
    if [ "$tries" -ge 5 ] || { [ "$code" != 503 ] && [ "$code" != 429 ] && [ "$code" != 000 ]; }; then
      echo "publish failed ($code): $(cat /tmp/pushgate-publish.$$ 2>/dev/null)" >&2
      rm -f /tmp/pushgate-publish.$$; exit 1
    fi
    sleep 1
  done
done
rm -f /tmp/pushgate-publish.$$
