#!/usr/bin/env bash
# Fuzz the sans-IO protocol core with cargo-fuzz (libFuzzer), each target
# for a bounded time.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 60
#   TARGET              default: handshake frame connection connection_open
#                       connection_close
#
# Each target's corpus is fuzz/corpus/<target>, seeded from the committed
# fuzz/seeds/<target>/. Files named regression-* there are past finds: each
# is also replayed on its own first, and one that still fails fails the
# target (they pass once the bug they show is fixed). Crashes
# land in fuzz/artifacts/<target>/, logs in fuzz/logs/<target>.log.
# Reproduce a crash with:
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/crash-...
#
# Network is used only to install cargo-fuzz and fetch the fuzz crate's
# dependencies when missing; the build and runs are offline. The toolchain
# may be stable: RUSTC_BOOTSTRAP=1 unlocks the sanitizer flags cargo-fuzz
# passes.
#
# Exit status: 0 if no target found a crash, leak, timeout or OOM and no
# regression seed still fails; 1 otherwise; 2 on usage or setup errors.
#
# Environment:
#   FUZZ_RSS_LIMIT_MB   libFuzzer -rss_limit_mb (default 2048)
#   FUZZ_INPUT_TIMEOUT  libFuzzer -timeout, seconds per input (default 30)
#   FUZZ_EXTRA_ARGS     more libFuzzer flags, e.g. "-max_len=8192"
#   FUZZ_KEEP_GOING=1   don't stop at the first crash: libFuzzer's fork mode
#                       with -ignore_crashes/-ignore_timeouts/-ignore_ooms, so
#                       a known bug does not end the exploration (still exits 1)
set -euo pipefail

usage() { sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; }

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    usage
    exit 0
fi
SECS=${1:-60}
if ! [[ "$SECS" =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz.sh: SECONDS_PER_TARGET must be a positive integer, got '$SECS'" >&2
    usage >&2
    exit 2
fi
shift || true
ALL_TARGETS=(handshake frame connection connection_open connection_close resp extensions inflate relay)
TARGETS=("$@")
if [[ ${#TARGETS[@]} -eq 0 ]]; then
    TARGETS=("${ALL_TARGETS[@]}")
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
RSS=${FUZZ_RSS_LIMIT_MB:-2048}
INPUT_TIMEOUT=${FUZZ_INPUT_TIMEOUT:-30}
read -r -a EXTRA <<<"${FUZZ_EXTRA_ARGS:-}"
if [[ "${FUZZ_KEEP_GOING:-0}" == 1 ]]; then
    EXTRA+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
fi
export RUSTC_BOOTSTRAP=1

log() { echo "fuzz.sh: $*"; }

for t in "${TARGETS[@]}"; do
    if [[ ! -f "fuzz/fuzz_targets/$t.rs" ]]; then
        echo "fuzz.sh: no such target '$t' (have: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked || {
        echo "fuzz.sh: could not install cargo-fuzz" >&2
        exit 2
    }
fi

# The only other network access: the fuzz crate's dependencies, once.
if ! CARGO_NET_OFFLINE=true cargo metadata --manifest-path fuzz/Cargo.toml \
    --format-version 1 >/dev/null 2>&1; then
    log "fetching the fuzz crate's dependencies"
    cargo fetch --manifest-path fuzz/Cargo.toml
fi
export CARGO_NET_OFFLINE=true

log "building ${TARGETS[*]}"
for t in "${TARGETS[@]}"; do
    cargo fuzz build "$t" || { echo "fuzz.sh: building $t failed" >&2; exit 2; }
done

HOST=$(rustc -vV | sed -n 's/^host: //p')
bin_of() { echo "fuzz/target/$HOST/release/$1"; }

# Replays write crash-* files to -artifact_prefix (by default the current
# directory): keep them out of the tree.
REPLAY_DIR=$(mktemp -d)
trap 'rm -rf "$REPLAY_DIR"' EXIT
replay() { "$1" -artifact_prefix="$REPLAY_DIR/" "$2"; }

# The first line of a failure's message when `bin` runs `input` ("" if none).
failure_of() {
    { replay "$1" "$2" 2>&1 || true; } | grep -A1 -E 'panicked at|^==[0-9]+==ERROR' | tail -1 |
        cut -c1-160 || true
}

# Replays the committed regression-* seeds (past finds) on their own:
# libFuzzer's fork mode drops crashing seeds silently. Prints those that
# still fail; returns 1 if any does.
regressions() {
    local t=$1 bin f why rc=0
    bin=$(bin_of "$t")
    for f in fuzz/seeds/"$t"/regression-*; do
        [[ -f "$f" ]] || continue
        if ! replay "$bin" "$f" >/dev/null 2>&1; then
            why=$(failure_of "$bin" "$f")
            log "$t: regression still fails: $f: ${why:-(no panic message)}"
            rc=1
        fi
    done
    return $rc
}

# Replays the artifacts a run left and prints each distinct failure once.
triage() {
    local t=$1 marker=$2 bin f
    bin=$(bin_of "$t")
    [[ -x "$bin" ]] || return 0
    find "fuzz/artifacts/$t" -type f -newer "$marker" | head -200 | while read -r f; do
        local why
        why=$(failure_of "$bin" "$f")
        why=${why:-(no panic message; timeout or OOM?)}
        # Deduplicated on the message with its numbers blanked out.
        echo "$(echo "$why" | tr -s '0-9' '#')"$'\t'"$why"$'\t'"$f"
    done | sort -t $'\t' -k1,1 -u | cut -f2- | sed "s/^/fuzz.sh: $t: found: /"
}

mkdir -p fuzz/logs
failed=()
for t in "${TARGETS[@]}"; do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    if [[ -d "fuzz/seeds/$t" ]]; then
        cp -p fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
    fi
    regressed=0
    regressions "$t" || regressed=1
    logfile="fuzz/logs/$t.log"
    marker="fuzz/logs/.$t.start"
    touch "$marker"
    log "running $t for ${SECS}s (corpus $corpus, log $logfile)"
    status=0
    # The outer timeout only guards against a wedged process: libFuzzer
    # stops itself after -max_total_time.
    timeout --kill-after=30 $((SECS + 120)) \
        cargo fuzz run "$t" "$corpus" -- \
        -max_total_time="$SECS" -rss_limit_mb="$RSS" -timeout="$INPUT_TIMEOUT" \
        -print_final_stats=1 "${EXTRA[@]}" >"$logfile" 2>&1 || status=$?
    # Final statistics (fork mode prints a progress line instead).
    grep -E '^(stat::|Done )' "$logfile" | sed "s/^/fuzz.sh: $t: /" || true
    grep -E '^#[0-9]+: cov' "$logfile" | tail -1 | sed "s/^/fuzz.sh: $t: /" || true
    # Fork mode may exit 0 after ignored crashes: new artifacts decide.
    found=$(find "fuzz/artifacts/$t" -type f -newer "$marker" | wc -l)
    if [[ $status -ne 0 || $found -ne 0 ]]; then
        log "$t FAILED (exit $status, $found new artifacts); see $logfile and fuzz/artifacts/$t/"
        triage "$t" "$marker"
        failed+=("$t")
    elif [[ $regressed -ne 0 ]]; then
        log "$t: no new crash, but known regressions still fail (above)"
        failed+=("$t")
    else
        log "$t: no crash"
    fi
done

if [[ ${#failed[@]} -ne 0 ]]; then
    log "crashes in: ${failed[*]}"
    exit 1
fi
log "all targets clean (${SECS}s each)"
