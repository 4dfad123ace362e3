#!/usr/bin/env node
// Comparison peer for wschat's cluster mode: the common Node alternative,
// several `ws` servers joined through Redis pub/sub with `ioredis`, in the
// style of socket.io's Redis adapter: a node delivers a message to its own
// clients at once and publishes it once on one channel; every other node
// delivers what it receives from the channel to all of its clients, and
// ignores its own publications.
//
// Port: `--port N` / `--port=N` / first positional argument, else env PORT,
// else 8080; 0 picks a free port. Redis: env REDIS_URL (default
// redis://127.0.0.1:6379). Node name: env NODE_ID (default the port).
// Listens on 127.0.0.1 and prints exactly one line
// `listening on 127.0.0.1:PORT` once bound and subscribed.
'use strict';

const { WebSocketServer, WebSocket } = require('ws');
const Redis = require('ioredis');

const CHANNEL = 'chat';

function portFromArgs() {
  const args = process.argv.slice(2);
  let port;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--port') port = args[++i];
    else if (a.startsWith('--port=')) port = a.slice('--port='.length);
    else if (port === undefined) port = a;
  }
  if (port === undefined) port = process.env.PORT;
  if (port === undefined || port === '') port = '8080';
  const n = Number(port);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    console.error(`invalid port: ${port}`);
    process.exit(2);
  }
  return n;
}

const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const pub = new Redis(redisUrl);
const sub = new Redis(redisUrl);
const wss = new WebSocketServer({ host: '127.0.0.1', port: portFromArgs() });
let node = process.env.NODE_ID;

function local(sender, data, isBinary) {
  wss.clients.forEach((client) => {
    if (client !== sender && client.readyState === WebSocket.OPEN) {
      client.send(data, { binary: isBinary });
    }
  });
}

function broadcast(sender, data, isBinary) {
  local(sender, data, isBinary);
  const body = isBinary ? Buffer.from(data).toString('base64') : String(data);
  pub.publish(CHANNEL, JSON.stringify({ n: node, b: isBinary, d: body }));
}

sub.on('message', (_channel, message) => {
  let m;
  try {
    m = JSON.parse(message);
  } catch {
    return;
  }
  if (m.n === node) return;
  local(null, m.b ? Buffer.from(m.d, 'base64') : m.d, m.b);
});

wss.on('connection', (ws, req) => {
  const name = `User ${req.socket.remotePort}@${node}`;
  broadcast(ws, `${name} joined`, false);
  ws.on('message', (data, isBinary) => {
    if (isBinary) broadcast(ws, data, true);
    else broadcast(ws, `${name}: ${data}`, false);
  });
  ws.on('error', () => {}); // 'close' follows
  ws.on('close', () => broadcast(ws, `${name} left`, false));
});

wss.on('listening', () => {
  const port = wss.address().port;
  if (!node) node = String(port);
  sub.subscribe(CHANNEL).then(
    () => console.log(`listening on 127.0.0.1:${port}`),
    (e) => {
      console.error(`subscribe: ${e.message}`);
      process.exit(1);
    },
  );
});
