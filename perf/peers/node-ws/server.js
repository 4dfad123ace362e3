#!/usr/bin/env node
// Comparison peer for wschat: Node + the npm `ws` package (with the native
// `bufferutil` addon installed; on Node >= 18.14 `ws` validates UTF-8 with the
// built-in buffer.isUtf8, so `utf-8-validate` is not needed). Broadcast is the
// typical `ws` way: iterate `wss.clients`, skip the sender, send when OPEN.
//
// Port: `--port N` / `--port=N` / first positional argument, else env PORT,
// else 8080. PORT=0 picks a free port. Listens on 127.0.0.1 and prints exactly
// one line `listening on 127.0.0.1:PORT` once bound.
'use strict';

const { WebSocketServer, WebSocket } = require('ws');

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

const wss = new WebSocketServer({ host: '127.0.0.1', port: portFromArgs() });

wss.on('listening', () => {
  console.log(`listening on 127.0.0.1:${wss.address().port}`);
});

function broadcast(sender, data, isBinary) {
  wss.clients.forEach((client) => {
    if (client !== sender && client.readyState === WebSocket.OPEN) {
      client.send(data, { binary: isBinary });
    }
  });
}

wss.on('connection', (ws, req) => {
  const port = req.socket.remotePort;

  broadcast(ws, `User ${port} joined`, false);

  ws.on('message', (data, isBinary) => {
    if (isBinary) broadcast(ws, data, true);
    else broadcast(ws, `User ${port}: ${data}`, false);
  });

  ws.on('error', () => {}); // 'close' follows

  ws.on('close', () => {
    broadcast(ws, `User ${port} left`, false);
  });
});
