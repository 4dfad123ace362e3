#!/usr/bin/env bash
# Every test wschat has, in the order a failure is cheapest to find:
#   1. the fuzz crate compiles (it is not built by cargo test), and the
#      API docs build without warnings;
#   2. cargo test --workspace, ignored tests included: unit tests beside
#      the code (the server and tools/wschat-load), integration tests over
#      real sockets (tungstenite and Node clients against the real binary),
#      and the tests plain `cargo test` skips as ignored because they need
#      tools (Node REPLs, Chromium); run here, they fail if those are
#      missing;
#   3. the Autobahn TestSuite, sections 1-10, against `wschat --echo`, then
#      sections 1-13 against `wschat --echo --compression`.
# Needs: cargo, a C++ compiler (libfuzzer-sys), node (20.10+), python3 with
# venv, Chromium and `npm ci` in tests/browser (.ci/run installs them).
# Installs kosoku under target/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== cargo check: fuzz/"
cargo check --locked --manifest-path fuzz/Cargo.toml

echo "== cargo doc: no broken or private links"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --workspace

echo "== cargo test --workspace (ignored tests included)"
cargo test --locked --workspace -- --include-ignored

echo "== Autobahn TestSuite (sections 1-10)"
cargo build --release --locked --bin wschat
bash scripts/autobahn.sh target/release/wschat

echo "== Autobahn TestSuite (sections 1-13, --compression)"
AUTOBAHN_COMPRESSION=1 AUTOBAHN_REPORT_DIR=target/autobahn-compression \
    bash scripts/autobahn.sh target/release/wschat
