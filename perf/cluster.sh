#!/usr/bin/env bash
# One room's clients on 1 node without Redis, 1 node with Redis, and 3
# nodes with Redis (issue 11's comparison), with wschat-load spreading the
# clients (senders too) over the nodes and summing CPU over the nodes and
# redis-server. Short runs; numbers go to stdout, one summary per run.
#
#   cargo build --release -p wschat -p wschat-load
#   perf/cluster.sh [SECONDS] [wschat-load options...]
#   # default load: -c 300 -s 10 --rate 1000 (issue 11's latency target)
#   WSCHAT_BIN=/tmp/wschat-main perf/cluster.sh ...   # another wschat build (A/B)
#   PIN=1 perf/cluster.sh ...   # every server process on CPU 0, the load tool on CPU 1
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
shift || true
load=("$@")
[ ${#load[@]} -eq 0 ] && load=(-c 300 -s 10 --rate 1000)
bin=${WSCHAT_BIN:-target/release/wschat}
tool=target/release/wschat-load
# With PIN=1 the servers (nodes, redis-server, the Node peers) share CPU 0
# and the load tool has CPU 1, as perf/compare.sh pins one server and the
# tool: the tool's clock readings are then not delayed by the servers.
server_cpu=()
tool_cpu=()
if [ "${PIN:-0}" = 1 ]; then
  server_cpu=(taskset -c 0)
  tool_cpu=(taskset -c 1)
fi
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts a node in the background; sets NODE_PID and NODE_PORT (in this
# shell, so cleanup sees every node).
start_node() {
  local log=$dir/node-$RANDOM
  "${server_cpu[@]}" "$bin" --listen 127.0.0.1:0 --max-message-rate 0 "$@" >"$log.out" 2>"$log.err" &
  NODE_PID=$!
  pids+=("$NODE_PID")
  for _ in $(seq 100); do
    if grep -q "listening on" "$log.out" 2>/dev/null; then
      NODE_PORT=$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$log.out" | head -1)
      return
    fi
    sleep 0.05
  done
  echo "node did not start: $(cat "$log.err")" >&2
  exit 1
}

wait_up() {
  for _ in $(seq 200); do
    curl -s "http://127.0.0.1:$1/metrics" | grep -q '^wschat_redis_up 1' && return
    sleep 0.05
  done
  echo "node on $1 never reached Redis" >&2
  exit 1
}

run() {
  local label=$1
  shift
  "${tool_cpu[@]}" "$tool" --duration "$secs" --label "$label" "${load[@]}" "$@" 2>&1 | sed -n '1,40p'
  echo
}

# 1 node, no Redis.
start_node
run "1 node, no Redis" --url "ws://127.0.0.1:$NODE_PORT/" --server-pid "$NODE_PID"
kill "$NODE_PID"

rport=$(free_port)
"${server_cpu[@]}" redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  --loglevel warning >"$dir/redis.out" 2>&1 &
rpid=$!
pids+=("$rpid")
until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.05; done
url="redis://127.0.0.1:$rport"

# 1 node with Redis.
start_node --redis "$url" --node-id n1
wait_up "$NODE_PORT"
run "1 node + Redis" --url "ws://127.0.0.1:$NODE_PORT/" --server-pid "$NODE_PID" --server-pid "$rpid"
kill "$NODE_PID"
# The room's history is Redis' and outlives the node: start empty, or
# the next newcomers are replayed this run's messages.
redis-cli -p "$rport" flushall >/dev/null

# 3 nodes with Redis.
urls=()
spids=()
for i in 1 2 3; do
  start_node --redis "$url" --node-id "n$i"
  wait_up "$NODE_PORT"
  urls+=(--url "ws://127.0.0.1:$NODE_PORT/")
  spids+=(--server-pid "$NODE_PID")
done
run "3 nodes + Redis" "${urls[@]}" "${spids[@]}" --server-pid "$rpid"

# With NODE_PEER=1: the same load on 3 Node `ws` + `ioredis` nodes
# (perf/peers/node-ws-redis, `npm ci` there first) on the same Redis.
if [ "${NODE_PEER:-0}" = 1 ]; then
  for p in "${spids[@]}"; do [ "$p" != --server-pid ] && kill "$p"; done
  redis-cli -p "$rport" flushall >/dev/null
  urls=()
  spids=()
  for i in 1 2 3; do
    log=$dir/peer-$i
    REDIS_URL="$url" NODE_ID="p$i" "${server_cpu[@]}" node perf/peers/node-ws-redis/server.js 0 >"$log.out" 2>"$log.err" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 200); do grep -q "listening on" "$log.out" 2>/dev/null && break; sleep 0.05; done
    port=$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$log.out" | head -1)
    urls+=(--url "ws://127.0.0.1:$port/")
    spids+=(--server-pid "$pid")
  done
  run "3 Node ws + ioredis" "${urls[@]}" "${spids[@]}" --server-pid "$rpid"
fi
