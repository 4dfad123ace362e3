#!/usr/bin/env bash
# Run the Autobahn TestSuite (sections 1-10, via PyPI's `kosoku` runner)
# against a wschat binary in echo mode; with AUTOBAHN_COMPRESSION=1 the
# server runs with --compression and sections 12-13 (permessage-deflate)
# are run too.
#
# Usage: scripts/autobahn.sh PATH_TO_WSCHAT_BINARY [extra kosoku args...]
#   e.g. scripts/autobahn.sh target/release/wschat
#        scripts/autobahn.sh target/release/wschat -i '7.*'   # subset
#
# Environment:
#   KOSOKU_VENV          venv to use/create   (default: <repo>/target/kosoku-venv)
#   KOSOKU_VERSION       kosoku version       (default: 0.1.0)
#   PYTHON               interpreter for venv (default: python3, needs >= 3.10)
#   AUTOBAHN_REPORT_DIR  report output dir    (default: <repo>/target/autobahn)
#   AUTOBAHN_TIMEOUT     seconds for the kosoku run (default: 1200)
#   AUTOBAHN_WS_PATH     request path         (default: /)
#   AUTOBAHN_COMPRESSION 1: --compression on, sections 1-13 (default: 0,
#                        compression off, sections 1-10)
#
# Exit status: 0 only if every case passed by kosoku's rules (behavior OK,
# NON-STRICT or INFORMATIONAL *and* close verdict OK or INFORMATIONAL), kosoku
# itself exited 0, and the server was still alive at the end.
set -euo pipefail

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi

BIN_ARG=$1
shift
EXTRA_ARGS=("$@")

if [[ ! -x "$BIN_ARG" || -d "$BIN_ARG" ]]; then
    echo "autobahn.sh: not an executable file: $BIN_ARG" >&2
    exit 2
fi
BIN=$(cd "$(dirname "$BIN_ARG")" && pwd)/$(basename "$BIN_ARG")

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${KOSOKU_VENV:-$REPO/target/kosoku-venv}
KOSOKU_VERSION=${KOSOKU_VERSION:-0.1.0}
PYTHON=${PYTHON:-python3}
REPORT_DIR=${AUTOBAHN_REPORT_DIR:-$REPO/target/autobahn}
RUN_TIMEOUT=${AUTOBAHN_TIMEOUT:-1200}
WS_PATH=${AUTOBAHN_WS_PATH:-/}
COMPRESSION=${AUTOBAHN_COMPRESSION:-0}
if [[ "$COMPRESSION" == 1 ]]; then
    # kosoku 0.1.0 fails its own sections 12-13 on an uncompressed text
    # reply ("Strings must be encoded before hashing"), which RFC 7692
    # allows: every message is compressed here (min size 0). Messages
    # sent plain under the threshold are covered by tests/compression.rs.
    SERVER_EXTRA=(--compression --compression-min-size 0)
    CASES=()
else
    SERVER_EXTRA=()
    CASES=(-x '12.*' -x '13.*')
fi

log() { echo "autobahn.sh: $*"; }

# ---------------------------------------------------------------- venv/kosoku
installed_version() {
    "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kosoku"))' 2>/dev/null || true
}

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv $VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi
if [[ "$(installed_version)" != "$KOSOKU_VERSION" || ! -x "$VENV/bin/kosoku" ]]; then
    log "installing kosoku==$KOSOKU_VERSION into $VENV"
    timeout 600 "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "kosoku==$KOSOKU_VERSION"
fi
log "using kosoku $(installed_version) from $VENV"

# -------------------------------------------------------------------- server
rm -rf "$REPORT_DIR"
mkdir -p "$REPORT_DIR"
SERVER_LOG=$REPORT_DIR/server.log
SERVER_PID=

# shellcheck disable=SC2317  # invoked via trap
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$BIN" --echo --listen 127.0.0.1:0 --max-message-size 64MiB --max-fragments 100000 --max-outbox 64MiB --max-message-rate 0 ${SERVER_EXTRA[@]+"${SERVER_EXTRA[@]}"} >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

ADDR=
for _ in $(seq 100); do  # up to 10 s
    ADDR=$(sed -n 's/^.*wschat listening on \([^[:space:]]*:[0-9][0-9]*\).*$/\1/p' "$SERVER_LOG" | head -n1)
    [[ -n "$ADDR" ]] && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        log "server exited before listening; its output:"
        cat "$SERVER_LOG"
        exit 1
    fi
    sleep 0.1
done
if [[ -z "$ADDR" ]]; then
    log "server did not print 'wschat listening on ...' within 10 s; its output:"
    cat "$SERVER_LOG"
    exit 1
fi
log "server pid $SERVER_PID listening on $ADDR"

# -------------------------------------------------------------------- kosoku
KOSOKU_OUT=$REPORT_DIR/kosoku.log
START=$(date +%s)
set +e
timeout --kill-after=10 "$RUN_TIMEOUT" \
    "$VENV/bin/kosoku" "ws://$ADDR$WS_PATH" -p 2 ${CASES[@]+"${CASES[@]}"} \
    -o "$REPORT_DIR" ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"} >"$KOSOKU_OUT" 2>&1
KOSOKU_RC=$?
set -e
ELAPSED=$(( $(date +%s) - START ))

cat "$KOSOKU_OUT"

SERVER_ALIVE=1
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    SERVER_ALIVE=0
    set +e
    wait "$SERVER_PID"
    SERVER_RC=$?
    set -e
    SERVER_PID=
fi

# ------------------------------------------------------------------- summary
set +e
"$VENV/bin/python" - "$REPORT_DIR/index.json" "$ELAPSED" <<'PY'
import json, sys

path, elapsed = sys.argv[1], sys.argv[2]
try:
    with open(path) as f:
        index = json.load(f)
except (OSError, ValueError) as e:
    print(f"autobahn: no usable report ({path}: {e})")
    sys.exit(3)

def key(cid):
    return [int(p) if p.isdigit() else 0 for p in cid.split(".")]

cases = [(cid, r) for agent in index.values() for cid, r in agent.items()]
cases.sort(key=lambda c: key(c[0]))
PASS_B = {"OK", "NON-STRICT", "INFORMATIONAL"}
PASS_C = {"OK", "INFORMATIONAL"}
order = ["OK", "NON-STRICT", "INFORMATIONAL", "FAILED", "UNIMPLEMENTED", "ERROR"]
counts = {k: 0 for k in order}
for _, r in cases:
    counts[r["behavior"]] = counts.get(r["behavior"], 0) + 1
bad_close = sum(1 for _, r in cases if r["behaviorClose"] not in PASS_C)
failed = [c for c in cases if c[1]["behavior"] not in PASS_B or c[1]["behaviorClose"] not in PASS_C]

print()
print(f"== Autobahn summary: {len(cases)} cases in {elapsed}s (agent: {', '.join(index) or '?'}) ==")
for k, v in counts.items():
    print(f"  {k:<14}{v:>5}")
print(f"  {'close not OK':<14}{bad_close:>5}  (behaviorClose UNCLEAN / WRONG CODE / FAILED / FAILED BY CLIENT)")
nonok = [c for c in cases if c[1]["behavior"] != "OK" or c[1]["behaviorClose"] != "OK"]
if nonok:
    print("Non-OK cases:")
    for cid, r in nonok:
        mark = "FAIL" if (cid, r) in failed else "    "
        print(f"  {mark} {cid:<8} {r['behavior']:<14} close={r['behaviorClose']:<16} "
              f"remoteCloseCode={r.get('remoteCloseCode')} {r.get('duration')}ms")
print(f"autobahn: {len(cases) - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
PY
SUMMARY_RC=$?
set -e

STATUS=0
if [[ $KOSOKU_RC -eq 124 || $KOSOKU_RC -eq 137 ]]; then
    log "FAIL: kosoku did not finish within ${RUN_TIMEOUT}s (killed; no report written)"
    STATUS=1
elif [[ $KOSOKU_RC -ne 0 ]]; then
    log "FAIL: kosoku exited with status $KOSOKU_RC"
    STATUS=1
fi
if [[ $SUMMARY_RC -ne 0 ]]; then
    [[ $SUMMARY_RC -eq 1 ]] && log "FAIL: some cases failed (see list above)"
    STATUS=1
fi
if [[ $SERVER_ALIVE -eq 0 ]]; then
    log "FAIL: server died during the run (exit status $SERVER_RC); last output:"
    tail -n 40 "$SERVER_LOG"
    STATUS=1
fi
if [[ -f "$REPORT_DIR/index.html" ]]; then
    log "reports: $REPORT_DIR/index.html"
fi
log "server log: $SERVER_LOG, kosoku log: $KOSOKU_OUT"
if [[ $STATUS -eq 0 ]]; then
    log "PASS"
fi
exit $STATUS
