#!/usr/bin/env node
// Bounded semantic check of one chat server, on 127.0.0.1 only.
//
//   node --experimental-websocket check-peer.mjs -- CMD [ARGS...]
//
// Starts CMD with PORT=0, waits for its single `listening on 127.0.0.1:PORT`
// line, connects three clients (Node 20's global WebSocket) and checks joins,
// names, text fan-out to the others only, binary relay, leaves, and that the
// server printed nothing else on stdout. Exits 0 on success, 1 on failure;
// gives up after 15 s.
import { spawn, execFileSync } from 'node:child_process';
import { createInterface } from 'node:readline';

const sep = process.argv.indexOf('--');
const cmd = process.argv.slice(sep === -1 ? 2 : sep + 1);
if (cmd.length === 0 || typeof WebSocket === 'undefined') {
  console.error('usage: node --experimental-websocket check-peer.mjs -- CMD [ARGS...]');
  process.exit(2);
}

let failures = 0;
let passes = 0;
const check = (ok, what) => {
  if (ok) passes++; else failures++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const server = spawn(cmd[0], cmd.slice(1), {
  env: { ...process.env, PORT: '0' },
  stdio: ['ignore', 'pipe', 'inherit'],
});
const stdoutLines = [];
const overall = setTimeout(() => {
  console.log('FAIL timed out');
  server.kill('SIGKILL');
  process.exit(1);
}, 15000);

const port = await new Promise((resolve, reject) => {
  const rl = createInterface({ input: server.stdout });
  rl.on('line', (line) => {
    stdoutLines.push(line);
    const m = /^listening on 127\.0\.0\.1:(\d+)$/.exec(line);
    if (m && stdoutLines.length === 1) resolve(Number(m[1]));
  });
  server.on('exit', (code) => reject(new Error(`server exited early (${code})`)));
});
check(port > 0, `announced real port ${port}`);

function client() {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
  ws.binaryType = 'arraybuffer';
  ws.inbox = [];
  ws.addEventListener('message', (e) => ws.inbox.push(e.data));
  return new Promise((resolve, reject) => {
    ws.addEventListener('open', () => resolve(ws));
    ws.addEventListener('error', () => reject(new Error('connect failed')));
  });
}
// Wait until every client's inbox has its expected length, then a little more
// so that stray extra messages would show up.
async function settle(expect) {
  const t0 = Date.now();
  while (Date.now() - t0 < 3000 && !expect.every(([ws, n]) => ws.inbox.length >= n)) await sleep(10);
  await sleep(150);
}
const take = (ws) => ws.inbox.splice(0);
const eq = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// Client local ports, as the server sees them (cross-check the names).
function clientPorts() {
  try {
    const out = execFileSync('ss', ['-Htn', 'state', 'established', `( dport = :${port} )`], { encoding: 'utf8' });
    return new Set(out.trim().split('\n').filter(Boolean).map((l) => Number(l.trim().split(/\s+/).at(-2).split(':').at(-1))));
  } catch { return null; }
}

const A = await client();
await sleep(100);
check(eq(take(A), []), 'first client gets nothing on its own join');

const B = await client();
await settle([[A, 1]]);
const [joinB] = take(A);
const mB = /^User (\d+) joined$/.exec(joinB ?? '');
check(!!mB, `A sees B join: ${JSON.stringify(joinB)}`);
check(eq(take(B), []), 'B gets no join message for itself or for A');
const nameB = mB && mB[1];

const C = await client();
await settle([[A, 1], [B, 1]]);
const a1 = take(A), b1 = take(B), c1 = take(C);
const mC = /^User (\d+) joined$/.exec(a1[0] ?? '');
check(a1.length === 1 && !!mC && eq(a1, b1), `A and B both see C join: ${JSON.stringify(a1)} / ${JSON.stringify(b1)}`);
check(eq(c1, []), 'C gets no join message');
const nameC = mC && mC[1];

A.send('hello, wörld ✓');
await settle([[B, 1], [C, 1]]);
const a2 = take(A), b2 = take(B), c2 = take(C);
const mA = /^User (\d+): hello, wörld ✓$/.exec(b2[0] ?? '');
check(eq(a2, []), 'sender A does not get its own text back');
check(b2.length === 1 && !!mA && eq(b2, c2), `B and C get A's text: ${JSON.stringify(b2)}`);
const nameA = mA && mA[1];
check(new Set([nameA, nameB, nameC]).size === 3, `names distinct: A=${nameA} B=${nameB} C=${nameC}`);
const ports = clientPorts();
if (ports) check(eq([...ports].sort(), [nameA, nameB, nameC].map(Number).sort()), `names are the clients' remote ports ${[...ports]}`);

B.send(`x`.repeat(30000));
await settle([[A, 1], [C, 1]]);
const a3 = take(A), c3 = take(C);
check(a3.length === 1 && a3[0] === `User ${nameB}: ${'x'.repeat(30000)}` && eq(a3, c3) && eq(take(B), []), 'B\'s 30000-byte text reaches A and C only');

const bytes = new Uint8Array([0, 1, 2, 255, 254, 10, 13, 0]);
C.send(bytes);
await settle([[A, 1], [B, 1]]);
const a4 = take(A), b4 = take(B), c4 = take(C);
const same = (m) => m instanceof ArrayBuffer && eq([...new Uint8Array(m)], [...bytes]);
check(a4.length === 1 && b4.length === 1 && same(a4[0]) && same(b4[0]), 'C\'s binary relayed unchanged to A and B');
check(eq(c4, []), 'sender C does not get its binary back');

B.send('');
await settle([[A, 1], [C, 1]]);
const a5 = take(A), c5 = take(C);
check(eq(a5, [`User ${nameB}: `]) && eq(c5, a5) && eq(take(B), []), 'empty text relayed as "User <port>: "');

B.close();
await settle([[A, 1], [C, 1]]);
const a6 = take(A), c6 = take(C);
check(eq(a6, [`User ${nameB} left`]) && eq(c6, a6), `A and C see B leave: ${JSON.stringify(a6)}`);

A.send('bye');
await settle([[C, 1]]);
check(eq(take(C), [`User ${nameA}: bye`]) && eq(take(A), []), 'after B left, A\'s text reaches C only');

A.close();
await settle([[C, 1]]);
check(eq(take(C), [`User ${nameA} left`]), 'C sees A leave');
C.close();
await sleep(100);

check(stdoutLines.length === 1, `server printed exactly one stdout line (${stdoutLines.length})`);
server.kill('SIGTERM');
clearTimeout(overall);
console.log(`${passes} passed, ${failures} failed`);
process.exit(failures ? 1 : 0);
