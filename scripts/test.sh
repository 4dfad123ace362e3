#!/usr/bin/env bash
# Every test wschat has, in the order a failure is cheapest to find:
#   1. cargo test --workspace: unit tests beside the code (the server and
#      tools/wschat-load), integration tests over real sockets (tungstenite
#      and Node clients against the real binary);
#   2. the Autobahn TestSuite, sections 1-10, against `wschat --echo`.
# Needs: cargo, node (20+), python3 with venv. Installs kosoku under target/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== cargo test --workspace"
cargo test --locked --workspace

echo "== Autobahn TestSuite (sections 1-10)"
cargo build --release --locked --bin wschat
bash scripts/autobahn.sh target/release/wschat
