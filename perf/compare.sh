#!/usr/bin/env bash
# Runs the benchmark scenarios against wschat and the servers users would
# otherwise pick (perf/peers: the seed's Node + websocket stack, Node + ws,
# tokio-tungstenite; and uWebSockets, a prebuilt binary outside the repo),
# all with the same chat semantics, on loopback, and writes a Markdown table
# of medians with ratios to tokio-tungstenite.
#
# Usage: perf/compare.sh [RUNS]        (default 3 runs of every cell)
# Env:   SERVERS="wschat uws tokio-tungstenite node-ws node-websocket"
#             (also "floor": examples/send_floor.rs, one write per delivery
#             and nothing else, the kernel's share of a scenario)
#        SCENARIOS="S1 S2W S3 S4-2k S4-10k S5 S5-open S2W-TLS S5-TLS C1 C1-plain"
#             (S2W-TLS, S5-TLS: S2W and S5 over wss; C1: 1 KiB chat text with
#             permessage-deflate on every client; C1-plain: the same without)
#        DURATION=10 (seconds measured per run)
#        TLS_DIR=target/compare-tls (the test CA and certificate for wss,
#             made once with openssl, again when they expire within a day)
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
# and the other servers have no flood control. Over TLS it serves wss only
# (--listen none --tls-listen); in C1 it runs with --compression and uws with
# --compress (SHARED_COMPRESSOR). A server without a mode for a scenario
# (no TLS, no permessage-deflate) is skipped with a line saying so.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUNS=${1:-3}
SERVERS=${SERVERS:-"wschat uws tokio-tungstenite node-ws node-websocket"}
SCENARIOS=${SCENARIOS:-"S1 S2W S3 S4-2k S4-10k S5 S5-open S2W-TLS S5-TLS C1 C1-plain"}
TLS_DIR=${TLS_DIR:-target/compare-tls}
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
if [[ " $SERVERS " == *" floor "* ]]; then
    cargo build --release --locked --example send_floor
fi
LOAD=target/release/wschat-load
if [[ " $SERVERS " == *" tokio-tungstenite "* || " $SERVERS " == *" node-"* ]]; then
    bash perf/peers/setup.sh >"$OUT/setup.log" 2>&1 || { cat "$OUT/setup.log"; exit 1; }
fi

# A test CA and a certificate for 127.0.0.1 and localhost signed by it (the
# clients trust the CA; a self-signed leaf with CA:TRUE is refused by
# webpki), made once and kept while valid for another day.
make_cert() {
    if [[ -f $TLS_DIR/ca.pem && -f $TLS_DIR/key.pem ]] &&
        openssl x509 -checkend 86400 -noout -in "$TLS_DIR/cert.pem" >/dev/null 2>&1; then
        return
    fi
    mkdir -p "$TLS_DIR"
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -days 30 -subj "/CN=wschat bench CA" \
        -keyout "$TLS_DIR/ca-key.pem" -out "$TLS_DIR/ca.pem" 2>/dev/null
    openssl req "${ec[@]}" -subj "/CN=localhost" \
        -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$TLS_DIR/ext.cnf"
    openssl x509 -req -in "$TLS_DIR/cert.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca-key.pem" \
        -CAcreateserial -days 30 -extfile "$TLS_DIR/ext.cnf" -out "$TLS_DIR/cert.pem" 2>/dev/null
    echo "== made a test CA and certificate in $TLS_DIR"
}
if [[ " $SCENARIOS " == *"-TLS "* ]]; then
    make_cert
fi

is_tls() { [[ $1 == *-TLS ]]; }

# Why `server` cannot run `scenario` (nothing when it can).
unsupported() { # server scenario
    case $1:$2 in
        node-ws:*-TLS | node-websocket:*-TLS) echo "perf/peers/$1 has no TLS mode" ;;
        floor:*-TLS | floor:C1) echo "the send floor speaks plain WebSocket only" ;;
        tokio-tungstenite:C1) echo "tungstenite has no permessage-deflate" ;;
        node-ws:C1 | node-websocket:C1) echo "perf/peers/$1 has no permessage-deflate mode" ;;
    esac
}

# A port that was free a moment ago, for servers that print the port they
# were asked for rather than the one they got (uws-chat with 0).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

server_cmd() { # server scenario
    local cert="$TLS_DIR/cert.pem $TLS_DIR/key.pem" listen="--listen 127.0.0.1:0" tls="" deflate=""
    if is_tls "$2"; then
        listen="--listen none --tls-listen 127.0.0.1:0 --tls-cert $TLS_DIR/cert.pem --tls-key $TLS_DIR/key.pem"
        tls=" --tls $cert"
    fi
    [[ $2 == C1 ]] && deflate=1
    case $1 in
        wschat) echo "target/release/wschat $listen --max-message-rate 0${deflate:+ --compression}" ;;
        floor) echo "target/release/examples/send_floor 0" ;;
        uws) echo "$UWS $(free_port)${deflate:+ --compress}$tls" ;;
        tokio-tungstenite) echo "perf/peers/tokio-tungstenite/target/release/peer-tokio-tungstenite 0$tls" ;;
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
        S2W-TLS) scenario_args S2W ;;
        S5-TLS) scenario_args S5 ;;
        C1) echo "$(scenario_args C1-plain) --deflate" ;;
        C1-plain) echo "-c 100 -s 10 --window 16 --payload 1024 --filler chat --duration $DURATION" ;;
        *) echo "unknown scenario $1" >&2; exit 2 ;;
    esac
}

run_one() { # server scenario run
    local server=$1 scenario=$2 run=$3 log=$OUT/$1-$2-$3
    local pid addr url
    # shellcheck disable=SC2046
    # A previous run's log must not be read for this one's address: the
    # redirection below truncates it only once the background child runs.
    rm -f "$log.server.out" "$log.server.err" "$log.json" "$log.load.err"
    RUST_LOG=error taskset -c 0 $(server_cmd "$server" "$scenario") >"$log.server.out" 2>"$log.server.err" &
    pid=$!
    for _ in $(seq 100); do
        # "listening on ADDR", or wschat's "listening (TLS) on ADDR".
        addr=$(grep -oE 'listening (\(TLS\) )?on [^ ]*' "$log.server.out" 2>/dev/null | head -1 | awk '{print $NF}') || true
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
    url="ws://$addr/"
    is_tls "$scenario" && url="wss://$addr/ --ca $TLS_DIR/ca.pem"
    # shellcheck disable=SC2046,SC2086
    if timeout 300 taskset -c 1 "$LOAD" --url $url --server-pid "$pid" \
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
            why=$(unsupported "$server" "$scenario")
            if [[ -n "$why" ]]; then
                echo "  $server $scenario run $run: skipped ($why)"
                continue
            fi
            run_one "$server" "$scenario" "$run"
        done
    done
done

python3 perf/table.py "$RESULTS" >"$OUT/table.md"
cat "$OUT/table.md"
