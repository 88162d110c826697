#!/usr/bin/env sh
# Subscribe with curl and resume after every disconnect, exactly once.
#   GATEWAY=http://localhost:8080 sh examples/curl/subscribe.sh news [CURSOR|earliest]
# Prints one line per event: "<id> <data>". The last id seen is kept in
# $CURSOR_FILE so a restart of this script resumes too. Stop with Ctrl-C.
set -eu
GATEWAY="${GATEWAY:-http://localhost:8080}"
topic="${1:?usage: subscribe.sh TOPIC [CURSOR|earliest]}"
CURSOR_FILE="${CURSOR_FILE:-.pushgate-cursor-$(echo "$topic" | tr / _)}"
if [ -n "${2:-}" ]; then printf %s "$2" > "$CURSOR_FILE"; fi
while :; do
  cursor="$(cat "$CURSOR_FILE" 2>/dev/null || true)"
  curl -sN ${cursor:+-H "Last-Event-ID: $cursor"} ${TOKEN:+-H "Authorization: Bearer $TOKEN"} \
    "$GATEWAY/v1/stream?topic=$topic" |
  while IFS= read -r line; do
    case "$line" in
      id:*)    id="${line#id:}"; id="${id# }" ;;
      event:*) event="${line#event:}"; event="${event# }" ;;
      data:*)  d="${line#data:}"; d="${d# }"
               if [ -n "${data+x}" ]; then data="$data
$d"; else data="$d"; fi ;;
      "")      if [ -n "${id:-}" ]; then printf %s "$id" > "$CURSOR_FILE"; fi
               if [ -n "${data+x}" ]; then
                 if [ "${event:-message}" = message ]; then echo "$id $data"; else echo "$id [$event] $data"; fi
               fi
               unset data event ;;
    esac
  done || true
  sleep "${RETRY_SECONDS:-1}"
done
