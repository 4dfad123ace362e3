#!/usr/bin/env node
// Comparison peer for wschat: the seed's stack — Node `http` + the npm
// `websocket` package, written the way its README example (and the seed) does:
// an http server handed to `websocket.server`, connections kept in an array,
// `connection.socket.remotePort` as the user's name.
//
// Port: `--port N` / `--port=N` / first positional argument, else env PORT,
// else 8080. PORT=0 picks a free port. Listens on 127.0.0.1 and prints exactly
// one line `listening on 127.0.0.1:PORT` once bound.
'use strict';

const http = require('http');
const WebSocketServer = require('websocket').server;

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

const server = http.createServer((request, response) => {
  response.writeHead(404);
  response.end();
});

server.listen(portFromArgs(), '127.0.0.1', () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});

const wsServer = new WebSocketServer({
  httpServer: server,
  autoAcceptConnections: false,
});

const connections = [];

function sendToOthers(sender, send) {
  for (const c of connections) {
    if (c !== sender && c.connected) send(c);
  }
}

wsServer.on('request', (request) => {
  // No origin check: accept everything.
  const connection = request.accept(null, request.origin);
  const port = connection.socket.remotePort;

  const joined = `User ${port} joined`;
  sendToOthers(connection, (c) => c.sendUTF(joined));
  connections.push(connection);

  connection.on('message', (message) => {
    if (message.type === 'utf8') {
      const text = `User ${port}: ${message.utf8Data}`;
      sendToOthers(connection, (c) => c.sendUTF(text));
    } else if (message.type === 'binary') {
      const data = message.binaryData;
      sendToOthers(connection, (c) => c.sendBytes(data));
    }
  });

  connection.on('error', () => {}); // 'close' follows

  connection.on('close', () => {
    const i = connections.indexOf(connection);
    if (i !== -1) connections.splice(i, 1);
    const left = `User ${port} left`;
    sendToOthers(connection, (c) => c.sendUTF(left));
  });
});
