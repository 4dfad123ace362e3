#!/usr/bin/env bash
# Install/build the wschat comparison peers. Idempotent: safe to re-run.
#   bash perf/peers/setup.sh
# Needs: node (>= 18.14; Node 20 expected) + npm, cargo. Uses only the npm
# registry and crates.io.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
HERE="$(pwd)"

for dir in node-websocket node-ws node-ws-redis; do
  echo "== npm install in $dir" >&2
  # With a package-lock.json present, `npm ci` gives the exact locked tree;
  # skip the reinstall when node_modules already matches it.
  if [ -f "$dir/package-lock.json" ]; then
    if [ -f "$dir/node_modules/.package-lock.json" ] &&
       [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ] &&
       [ "$dir/node_modules/.package-lock.json" -nt "$dir/package.json" ]; then
      echo "   up to date" >&2
    else
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    fi
  else
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >&2)
  fi
done

echo "== cargo build --release in tokio-tungstenite" >&2
(cd tokio-tungstenite && cargo build --release >&2)

# Smoke check that each runnable resolves its dependencies.
(cd node-websocket && node -e "require('websocket')")
(cd node-ws && node -e "require('ws'); require('bufferutil')")
(cd node-ws-redis && node -e "require('ws'); require('ioredis')")
test -x tokio-tungstenite/target/release/peer-tokio-tungstenite

cat <<EOT
node-websocket:    node $HERE/node-websocket/server.js
node-ws:           node $HERE/node-ws/server.js
node-ws-redis:     REDIS_URL=redis://HOST:PORT node $HERE/node-ws-redis/server.js (one per node)
tokio-tungstenite: $HERE/tokio-tungstenite/target/release/peer-tokio-tungstenite
(port: --port N | first arg | env PORT | default 8080; each prints "listening on 127.0.0.1:PORT")
EOT
