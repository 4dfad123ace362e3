#!/usr/bin/env bash
# Runs the benchmark scenarios against wschat and the servers users would
# otherwise pick (perf/peers: the seed's Node + websocket stack, Node + ws,
# tokio-tungstenite; and uWebSockets, a prebuilt binary outside the repo),
# all with the same chat semantics, on loopback, and writes a Markdown table
# of medians with ratios to tokio-tungstenite.
#
# Usage: perf/compare.sh [RUNS]        (default 3 runs of every cell)
# Env:   SERVERS="wschat uws tokio-tungstenite node-ws node-websocket"
#        SCENARIOS="S1 S2W S3 S4-2k S4-10k S5 S5-open"
#        DURATION=10 (seconds measured per run)
#        UWS=../shared/peers/uws/uws-chat (relative to the repo root; when
#             it is not there, uws is skipped with a notice)
#        SKIP="node-ws:S4-10k node-websocket:S4-10k uws:S4-10k" (cells not
#             run: the Node servers and uws need minutes for the 50
#             million join deliveries of 10,000 connections; uws connected
#             6,120 of them within the 120 s connect timeout, at about 5 µs
#             of its CPU per join delivered)
#        OUT=target/compare (results.jsonl, table.md, logs)
#
# Each run starts a fresh server pinned to CPU 0 and the load tool pinned to
# CPU 1 (the machine has two cores), so neither steals the other's core.
# wschat runs with its defaults except --max-message-rate 0: the saturating
# scenarios send far more per user than flood control allows a chat user,
# and the other servers have no flood control.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUNS=${1:-3}
SERVERS=${SERVERS:-"wschat uws tokio-tungstenite node-ws node-websocket"}
SCENARIOS=${SCENARIOS:-"S1 S2W S3 S4-2k S4-10k S5 S5-open"}
DURATION=${DURATION:-10}
OUT=${OUT:-target/compare}
SKIP=${SKIP:-"node-ws:S4-10k node-websocket:S4-10k uws:S4-10k"}
UWS=${UWS:-../shared/peers/uws/uws-chat}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
# 10,000 connections need descriptors; not every peer raises its own limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [[ " $SERVERS " == *" uws "* && ! -x "$UWS" ]]; then
    echo "notice: no uWebSockets peer at $UWS (see ../shared/peers/uws/README.md); skipping uws"
    SERVERS=$(echo " $SERVERS " | sed 's/ uws / /; s/^ *//; s/ *$//')
fi

echo "== building"
cargo build --release --locked -p wschat -p wschat-load
LOAD=target/release/wschat-load
if [[ " $SERVERS " == *" tokio-tungstenite "* || " $SERVERS " == *" node-"* ]]; then
    bash perf/peers/setup.sh >"$OUT/setup.log" 2>&1 || { cat "$OUT/setup.log"; exit 1; }
fi

# A port that was free a moment ago, for servers that print the port they
# were asked for rather than the one they got (uws-chat with 0).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

server_cmd() {
    case $1 in
        wschat) echo "target/release/wschat --listen 127.0.0.1:0 --max-message-rate 0" ;;
        uws) echo "$UWS $(free_port)" ;;
        tokio-tungstenite) echo "perf/peers/tokio-tungstenite/target/release/peer-tokio-tungstenite 0" ;;
        node-ws) echo "node perf/peers/node-ws/server.js 0" ;;
        node-websocket) echo "node perf/peers/node-websocket/server.js 0" ;;
        *) echo "unknown server $1" >&2; exit 2 ;;
    esac
}

scenario_args() {
    case $1 in
        S1) echo "-c 100 -s 10 --rate 1000 --duration $DURATION" ;;
        S2W) echo "-c 100 -s 10 --window 16 --duration $DURATION" ;;
        S3) echo "-c 1000 -s 2 --rate 200 --duration $DURATION" ;;
        S4-2k) echo "-c 2000 --idle --duration 2 --connect-timeout 120" ;;
        S4-10k) echo "-c 10000 --idle --duration 2 --connect-timeout 120" ;;
        S5) echo "-c 20 -s 2 --window 4 --payload 65536 --duration $DURATION" ;;
        S5-open) echo "-c 20 -s 2 --rate 0 --payload 65536 --duration $DURATION" ;;
        *) echo "unknown scenario $1" >&2; exit 2 ;;
    esac
}

run_one() { # server scenario run
    local server=$1 scenario=$2 run=$3 log=$OUT/$1-$2-$3
    local pid addr
    # shellcheck disable=SC2046
    RUST_LOG=error taskset -c 0 $(server_cmd "$server") >"$log.server.out" 2>"$log.server.err" &
    pid=$!
    for _ in $(seq 100); do
        addr=$(grep -o 'listening on [^ ]*' "$log.server.out" 2>/dev/null | head -1 | awk '{print $3}') || true
        [[ -n "$addr" ]] && break
        sleep 0.1
    done
    if [[ -z "$addr" ]]; then
        echo "  $server did not start" >&2
        kill "$pid" 2>/dev/null || true
        return
    fi
    # uws-chat prints the port alone ("uws chat listening on 9001").
    [[ "$addr" == *:* ]] || addr=127.0.0.1:$addr
    # A server may print its line before it accepts (uws-chat does): wait
    # until a TCP connect succeeds, or the run's clients all fail.
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null && break
        sleep 0.1
    done
    # shellcheck disable=SC2046
    if timeout 300 taskset -c 1 "$LOAD" --url "ws://$addr/" --server-pid "$pid" \
        --label "$server $scenario" --json $(scenario_args "$scenario") \
        >"$log.json" 2>"$log.load.err"; then
        if python3 - "$server" "$scenario" "$run" "$log.json" >>"$RESULTS" 2>>"$log.load.err" <<'PY'
import json, sys
server, scenario, run, path = sys.argv[1:5]
data = json.load(open(path))
if data.get("clients") and not data.get("connected"):
    sys.exit(f"no client connected ({data.get('connect_failures')} failures)")
data.update(server=server, scenario=scenario, run=int(run))
print(json.dumps(data))
PY
        then
            echo "  $server $scenario run $run: ok"
        else
            echo "  $server $scenario run $run: failed (see $log.load.err)"
        fi
    else
        echo "  $server $scenario run $run: failed (see $log.load.err)"
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

for run in $(seq "$RUNS"); do
    for scenario in $SCENARIOS; do
        for server in $SERVERS; do
            [[ " $SKIP " == *" $server:$scenario "* ]] && continue
            run_one "$server" "$scenario" "$run"
        done
    done
done

python3 perf/table.py "$RESULTS" >"$OUT/table.md"
cat "$OUT/table.md"
