#!/usr/bin/env bash
# Makes the Python virtual environment of the outside gRPC client
# (subscribe.py) with the pinned packages of requirements.txt, under
#   $PUSHGATE_PY_CACHE/<hash of requirements.txt>   (default $HOME/.cache/pushgate-py)
# Idempotent: an environment already made from the same requirements is
# reused (a changed file gets a new one). Prints its python last.
# Usage: bash tests/grpc-client/setup.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fail() { echo "grpc-client/setup.sh: FAILED: $*" >&2; exit 1; }
command -v python3 >/dev/null || fail "python3 is not on PATH"
for tool in sha256sum flock; do
  command -v "$tool" >/dev/null || fail "$tool is not on PATH"
done
cache="${PUSHGATE_PY_CACHE:-$HOME/.cache/pushgate-py}"
key="$(sha256sum "$here/requirements.txt" | cut -c1-16)"
venv="$cache/$key"
mkdir -p "$cache"
# Test binaries may call this concurrently; one installs, the others wait.
exec 9>"$cache/.setup.lock"
flock 9

# The marker is written last: a half-made environment is made again.
if [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv" \
    || fail "python3 -m venv failed (on Debian: apt-get install python3-venv)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-deps --require-virtualenv -r "$here/requirements.txt" \
    || fail "pip install -r $here/requirements.txt"
  out="$("$venv/bin/python" -m pip check)" || fail "the pinned packages do not fit together: $out"
  "$venv/bin/python" -c 'import grpc, grpc_reflection, google.protobuf' \
    || fail "the installed packages do not import"
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
