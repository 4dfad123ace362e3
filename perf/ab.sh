#!/usr/bin/env bash
# A/B of two wschat builds on one load, alternating A and B so that the
# machine's drift hits both: server on CPU 0, wschat-load on CPU 1, a
# fresh server per run, wschat's defaults except --max-message-rate 0
# (as perf/compare.sh). Prints one line per run: A or B, then FIELDS of
# wschat-load's JSON result.
#
#   cargo build --release -p wschat-load
#   perf/ab.sh "-c 100 -s 10 --window 16 --duration 5" deliveries_per_sec,server_cpu_s A_BINARY B_BINARY [RUNS]
set -uo pipefail
cd "$(dirname "$0")/.."
args=$1 fields=$2 a=$3 b=$4 runs=${5:-3}
one() {
  local log pid addr=
  log=$(mktemp)
  taskset -c 0 "$1" --listen 127.0.0.1:0 --max-message-rate 0 >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 50); do
    addr=$(grep -a -o '127.0.0.1:[0-9]*' "$log" | head -1 || true)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  # shellcheck disable=SC2086 # the load's arguments are words
  taskset -c 1 target/release/wschat-load --url "ws://$addr/" --server-pid "$pid" --json $args 2>/dev/null |
    FIELDS=$fields python3 -c 'import json, os, sys; d = json.load(sys.stdin); print(*(d.get(k) for k in os.environ["FIELDS"].split(",")))'
  kill "$pid"
  wait "$pid" 2>/dev/null
  rm -f "$log"
}
for _ in $(seq "$runs"); do
  echo "A $(one "$a")"
  echo "B $(one "$b")"
done
