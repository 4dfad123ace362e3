#!/usr/bin/env bash
# S4's figure for one build: the server's RSS growth per idle connection
# after N connections (default 2,000), server on CPU 0, load tool on CPU 1.
# Prints: KiB per connection, RSS KiB before connecting, RSS KiB after.
#
#   cargo build --release -p wschat -p wschat-load
#   N=2000 perf/idle-memory.sh [WSCHAT_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/wschat}
log=$(mktemp)
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
taskset -c 0 "$bin" --listen 127.0.0.1:0 --max-message-rate 0 >"$log" 2>&1 &
pid=$!
addr=
for _ in $(seq 50); do
  addr=$(grep -a -o '127.0.0.1:[0-9]*' "$log" | head -1 || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "the server did not start: $(cat "$log")" >&2; exit 1; }
taskset -c 1 target/release/wschat-load --url "ws://$addr/" --server-pid "$pid" --json \
  -c "${N:-2000}" --idle --duration 2 --connect-timeout 120 2>/dev/null |
  python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["rss_kib_per_conn"], d["server_rss_kib_before"], d["server_rss_kib_after"])'
