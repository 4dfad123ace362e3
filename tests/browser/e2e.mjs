// Browser end-to-end test of wschat's chat page (src/chat/page.html).
//
//   node tests/browser/e2e.mjs http://127.0.0.1:PORT      (or WSCHAT_URL=...)
//   WSCHAT_E2E_CERT=cert.pem NODE_EXTRA_CA_CERTS=ca.pem \
//     node tests/browser/e2e.mjs https://127.0.0.1:TLS_PORT
//
// Over https (a server with --tls-listen and --compression) Chromium trusts
// the server's certificate by its key (--ignore-certificate-errors-spki-list,
// the SHA-256 of the SubjectPublicKeyInfo of WSCHAT_E2E_CERT), the Node
// client and fetch by NODE_EXTRA_CA_CERTS, and one more step checks that
// every socket negotiated permessage-deflate and that a long message went
// out compressed to each recipient (the server's /metrics).
// Against a running server: two Chromium pages in a fresh room /e2e-... (the JSON
// subprotocol, through the real page) and one Node client speaking plain
// text like the README's REPL walkthrough. Debian's Chromium is driven by
// playwright-core, which downloads no browser. Every wait is bounded; the
// first failure stops the run with a non-zero exit code.

import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

// Node 20 has WebSocket only behind a flag (Node 22 by default): re-run
// this script with it rather than ask every caller to remember.
if (typeof globalThis.WebSocket === "undefined") {
  const run = spawnSync(process.execPath, ["--experimental-websocket", ...process.execArgv, ...process.argv.slice(1)], {
    stdio: "inherit",
    env: { ...process.env, NODE_NO_WARNINGS: "1" },
  });
  process.exit(run.status ?? 1);
}

const { chromium } = await import("playwright-core");

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const base = (process.argv[2] || process.env.WSCHAT_URL || "").replace(/\/+$/, "");
if (!/^https?:\/\/[^/]+$/.test(base)) {
  console.error("usage: node tests/browser/e2e.mjs http(s)://HOST:PORT  (or set WSCHAT_URL)");
  process.exit(2);
}
const SECURE = base.startsWith("https:");
// The https run keeps its pictures apart from the http run's.
const TAG = SECURE ? "-https" : "";
const SCREENSHOT = path.join(REPO, `target/browser/chat${TAG}.png`);
const PHONE_SCREENSHOT = path.join(REPO, `target/browser/chat${TAG}-phone.png`);
/** What wschat answers an offer of permessage-deflate with. */
const DEFLATE = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const TIMEOUT = 8000;          // the bound on every single wait, in ms
const OVERALL = 120_000;       // the bound on the whole run
// A room of its own per run, so that a rerun against the same server does
// not see the previous run's history.
const ROOM_NAME = `e2e-${Date.now().toString(36)}`;
const ROOM = `/${ROOM_NAME}`;
const ROOM2_NAME = `${ROOM_NAME}-b`, ROOM2 = `/${ROOM2_NAME}`;
// A server with --auth-secret-file gives a signed token for this name (the
// verified-user step runs only then).
const VERIFIED_TOKEN = process.env.WSCHAT_E2E_TOKEN, VERIFIED_NAME = process.env.WSCHAT_E2E_VERIFIED;
const EVIL = `<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">`;

const origin = new URL(base).origin;
const wsBase = base.replace(/^http/, "ws");

/** Chromium's flag trusting the certificate in `file` by its key. */
function trustCertificate(file) {
  const cert = new crypto.X509Certificate(fs.readFileSync(file));
  const spki = cert.publicKey.export({ type: "spki", format: "der" });
  return `--ignore-certificate-errors-spki-list=${crypto.createHash("sha256").update(spki).digest("base64")}`;
}
const tlsArgs = [];
if (SECURE) {
  if (!process.env.WSCHAT_E2E_CERT) {
    console.error("https needs WSCHAT_E2E_CERT (the server's certificate, PEM) and NODE_EXTRA_CA_CERTS");
    process.exit(2);
  }
  tlsArgs.push(trustCertificate(process.env.WSCHAT_E2E_CERT));
}

/** A counter from the server's /metrics. */
async function counter(name) {
  const response = await fetch(base + "/metrics", { signal: AbortSignal.timeout(TIMEOUT) });
  const text = await response.text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  check(line, `no ${name} in /metrics`);
  return Number(line.split(" ")[1]);
}
/** Messages the server queued compressed (RSV1), and received so. */
const compressedDeliveries = () => counter("wschat_deliveries_compressed_total");
const compressedReceived = () => counter("wschat_messages_received_compressed_total");

// A hung browser or server must fail the run, never hang it.
setTimeout(() => {
  console.error(`browser e2e: FAILED: the whole run took over ${OVERALL / 1000} s`);
  process.exit(1);
}, OVERALL).unref();

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until it returns a truthy value (returned), at most `ms`. */
async function waitFor(what, probe, detail = async () => "", ms = TIMEOUT) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms / 1000} s waiting for ${what}${await detail()}`);
    }
    await sleep(25);
  }
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

// ----- the plain-text client: the README's Node REPL user -----

class Plain {
  constructor(url) {
    this.lines = [];
    // No protocols argument: a plain client must not offer wschat.v1.json.
    this.ws = new WebSocket(url);
    this.ws.onmessage = (event) => this.lines.push(String(event.data));
  }
  async opened() {
    await waitFor("the plain client to connect", () => this.ws.readyState === WebSocket.OPEN);
  }
  async expect(line) {
    await waitFor(`the plain client to receive ${JSON.stringify(line)}`, () => this.lines.includes(line),
      async () => `; it received:\n  ${this.lines.map((l) => JSON.stringify(l)).join("\n  ")}`);
  }
}

// ----- reading a page -----

/** The page's log as data: one entry per line, from the DOM. */
function lines(page) {
  return page.$$eval("#log li", (lis) => lis.map((li) => ({
    type: li.dataset.type || li.className,
    cls: li.className,
    from: li.dataset.from ?? null,
    seq: li.dataset.seq ?? null,
    text: li.querySelector(".text")?.textContent ?? li.textContent,
    tag: li.querySelector(".from .tag")?.textContent ?? null,
    verified: li.querySelector(".from .verified")?.title ?? null,
  })));
}

const who = (page) => page.$$eval("#users li", (lis) => lis.map((li) => li.dataset.name));
/** The who-list's names marked verified. */
const verifiedWho = (page) => page.$$eval("#users li", (lis) => lis.filter((li) => li.querySelector(".verified")).map((li) => li.dataset.name));
/** Makes the page believe its tab is hidden (or visible again), as a tab switch would. */
const setHidden = (page, hidden) => page.evaluate((hidden) => {
  if (hidden) Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
  else delete document.visibilityState;       // the prototype's getter again
  document.dispatchEvent(new Event("visibilitychange"));
}, hidden);
/** Waits until the page is connected to `room` as `name`, at path `/room`. */
async function inRoom(page, room, name) {
  await waitFor(`${page.label} to be ${name} in #${room} at /${room}`, () => page.evaluate(([room, name]) =>
    window.wschat.room === room && window.wschat.socket?.readyState === 1 && window.wschat.you === name
      && location.pathname === "/" + room && document.querySelector("#room").textContent === "#" + room, [room, name]), () => dump(page));
}

async function dump(page) {
  const all = await lines(page).catch(() => []);
  return `; ${page.label} shows:\n  ${all.map((l) => `[${l.type}${l.from != null ? ` from ${l.from}` : ""}] ${JSON.stringify(l.text)}`).join("\n  ")}`
    + `\n  who: ${JSON.stringify(await who(page).catch(() => null))}`;
}

/** Waits for a log line matching `match` (fields compared exactly). */
async function expectLine(page, match) {
  const ok = (l) => Object.entries(match).every(([k, v]) => l[k] === v);
  return waitFor(`${page.label} to show ${JSON.stringify(match)}`, async () => (await lines(page)).find(ok), () => dump(page));
}

async function expectWho(page, present, absent = []) {
  await waitFor(`${page.label}'s who-list to contain ${JSON.stringify(present)}${absent.length ? ` and not ${JSON.stringify(absent)}` : ""}`,
    async () => {
      const names = await who(page);
      return present.every((n) => names.includes(n)) && absent.every((n) => !names.includes(n));
    }, () => dump(page));
}

/** Types into the message field and presses Enter, as a person would. */
async function say(page, text) {
  const input = page.getByLabel("Message", { exact: true });
  await input.fill(text);
  await input.press("Enter");
  await waitFor(`${page.label}'s message field to clear after sending`, async () => (await input.inputValue()) === "");
}

async function welcome(page) {
  await page.goto(base + ROOM, { timeout: TIMEOUT });
  return waitFor(`${page.label} to get its welcome`, () => page.evaluate(() => window.wschat && window.wschat.you), () => dump(page));
}

// ----- the run -----

// Pictures of a failed run are left for the reader; a new run starts clean.
for (const name of [`failure${TAG}-page1.png`, `failure${TAG}-page2.png`]) {
  fs.rmSync(path.join(REPO, "target/browser", name), { force: true });
}

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "wschat-e2e-chromium-"));
let context, plain;
const pageErrors = [];
const requests = [];
const sockets = { page1: [], page2: [], page3: [] };
let passed = 0;
let failed = 0;
const pages = [];

async function step(name, body) {
  try {
    await body();
    passed += 1;
    console.log(`ok - ${name}`);
  } catch (error) {
    failed += 1;
    console.log(`FAIL - ${name}\n  ${String(error.message || error).replace(/\n/g, "\n  ")}`);
    throw error;
  }
}

try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,              // Playwright passes --headless
    viewport: { width: 1000, height: 720 },
    timeout: 30_000,
    // No outside network here: keep Chromium from trying to reach any.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync", ...tlsArgs],
  });
  context.setDefaultTimeout(TIMEOUT);
  const open = async (label) => {
    const page = await context.newPage();
    page.label = label;
    page.on("pageerror", (e) => pageErrors.push(`${label}: ${e.message}`));
    page.on("request", (r) => requests.push(r.url()));
    page.on("websocket", (ws) => sockets[label].push(ws.url()));
    pages.push(page);
    return page;
  };
  const page1 = await open("page1");
  const page2 = await open("page2");
  let p1, p2, plainName;

  await step("the server serves the chat page for a room path", async () => {
    const response = await fetch(base + ROOM, { signal: AbortSignal.timeout(TIMEOUT) });
    check(response.status === 200, `GET ${ROOM}: status ${response.status}`);
    check(/^text\/html/.test(response.headers.get("content-type") || ""), `content-type ${response.headers.get("content-type")}`);
    const body = await response.text();
    check(body.includes("wschat.v1.json"), "the page does not mention wschat.v1.json");
  });

  await step("a plain client connects without the JSON subprotocol", async () => {
    plain = new Plain(wsBase + ROOM);
    await plain.opened();
    check(plain.ws.protocol === "", `a subprotocol was selected: ${JSON.stringify(plain.ws.protocol)}`);
  });

  await step("page 1 connects with wschat.v1.json and gets a welcome with the room and its users", async () => {
    p1 = await welcome(page1);
    check(/^User \d+$/.test(p1), `page 1 is named ${JSON.stringify(p1)}`);
    const protocol = await page1.evaluate(() => window.wschat.socket.protocol);
    check(protocol === "wschat.v1.json", `page 1's socket has protocol ${JSON.stringify(protocol)}`);
    await waitFor("page 1 to show the welcome line naming it", async () =>
      (await lines(page1)).some((l) => l.type === "system" && l.text.includes(p1)), () => dump(page1));
    const room = await page1.textContent("#room");
    check(room === `#${ROOM_NAME}`, `the room shown is ${JSON.stringify(room)}`);
    const names = await who(page1);
    const others = names.filter((n) => n !== p1);
    check(names.includes(p1) && others.length === 1, `page 1's who-list is ${JSON.stringify(names)}`);
    plainName = others[0];
    check(/^User \d+$/.test(plainName), `the plain client is listed as ${JSON.stringify(plainName)}`);
  });

  await step("the plain client sees page 1 join", () => plain.expect(`${p1} joined`));

  await step("page 2 joins: page 1 and the plain client see it, both who-lists are complete", async () => {
    p2 = await welcome(page2);
    check(p2 !== p1 && /^User \d+$/.test(p2), `page 2 is named ${JSON.stringify(p2)}`);
    await expectLine(page1, { type: "join", text: `${p2} joined` });
    await plain.expect(`${p2} joined`);
    await expectWho(page1, [p1, p2, plainName]);
    await expectWho(page2, [p1, p2, plainName]);
  });

  await step("each page shows the other's messages with the right names", async () => {
    await say(page1, "hello from page one");
    await expectLine(page2, { type: "message", from: p1, text: "hello from page one" });
    await expectLine(page1, { type: "message", from: p1, text: "hello from page one" });
    await plain.expect(`${p1}: hello from page one`);
    await say(page2, "hello from page two");
    await expectLine(page1, { type: "message", from: p2, text: "hello from page two" });
    await plain.expect(`${p2}: hello from page two`);
  });

  if (SECURE) await step("over https: every socket agreed permessage-deflate; Chromium sends a long message compressed, it reaches each recipient compressed", async () => {
    for (const page of [page1, page2]) {
      const url = await page.evaluate(() => window.wschat.socket.url);
      check(url.startsWith("wss://"), `${page.label}'s socket is ${url}`);
      const extensions = await page.evaluate(() => window.wschat.socket.extensions);
      check(extensions === DEFLATE, `${page.label}'s socket has extensions ${JSON.stringify(extensions)}`);
    }
    check(plain.ws.extensions === DEFLATE, `the Node client's socket has extensions ${JSON.stringify(plain.ws.extensions)}`);
    const before = await compressedDeliveries();
    const receivedBefore = await compressedReceived();
    const long = `${"a long line for the compressor ".repeat(30)}end`;
    await say(page1, long);
    await expectLine(page2, { type: "message", from: p1, text: long });
    await expectLine(page1, { type: "message", from: p1, text: long });
    await plain.expect(`${p1}: ${long}`);
    // Page 1 (its own message), page 2 and the Node client: all three got
    // RSV1 frames (one JSON frame compressed once for both pages).
    const sent = (await compressedDeliveries()) - before;
    check(sent === 3, `${sent} compressed deliveries of the long message, expected 3`);
    // Chromium compressed it on the way in (RSV1 seen by the server).
    const received = (await compressedReceived()) - receivedBefore;
    check(received === 1, `the server received ${received} compressed messages from page 1, expected 1`);
  });

  await step("page 1 takes the nickname alice; the others see alice's messages as alice", async () => {
    const field = page1.getByLabel("Nickname", { exact: true });
    await field.fill("alice");
    await page1.getByRole("button", { name: "Set" }).click();
    await expectLine(page2, { type: "nick", text: `${p1} is now alice` });
    await plain.expect(`${p1} is now alice`);
    await expectWho(page2, ["alice", p2, plainName], [p1]);
    await expectWho(page1, ["alice"], [p1]);
    await waitFor("page 1 to know it is alice", () => page1.evaluate(() => window.wschat.you === "alice"));
    await say(page1, "alice speaking");
    await expectLine(page2, { type: "message", from: "alice", text: "alice speaking" });
    await plain.expect("alice: alice speaking");
  });

  await step("a message from the plain client appears in both pages", async () => {
    plain.ws.send("hello from node");
    await expectLine(page1, { type: "message", from: plainName, text: "hello from node" });
    await expectLine(page2, { type: "message", from: plainName, text: "hello from node" });
  });

  await step("typed commands: /me, // for a leading slash, an unknown command", async () => {
    await say(page2, "/me waves");
    const action = await expectLine(page1, { type: "message", from: p2, text: "waves" });
    check(action.cls.split(" ").includes("me"), `the /me line is not marked as an action: ${JSON.stringify(action)}`);
    // Its own action comes back to page 2 too (a JSON sender learns its
    // number), maybe after page 1 has it.
    await expectLine(page2, { type: "message", from: p2, text: "waves" });
    const actor = await page2.$eval("#log li.me .actor", (el) => el.textContent);
    check(actor === `* ${p2}(you) `, `page 2's own action reads ${JSON.stringify(actor)}`);
    await plain.expect(`* ${p2} waves`);
    await say(page2, "//not a command");
    await expectLine(page1, { type: "message", from: p2, text: "/not a command" });
    await say(page2, "/nosuchcommand");
    await waitFor("page 2 to show an error for /nosuchcommand",
      async () => (await lines(page2)).some((l) => l.type === "error" && l.text.includes("/nosuchcommand")), () => dump(page2));
  });

  await step("HTML in a message is shown as literal text and never runs", async () => {
    await say(page2, EVIL);
    for (const page of [page1, page2]) {
      await expectLine(page, { type: "message", from: p2, text: EVIL });
    }
    await plain.expect(`${p2}: ${EVIL}`);
    await sleep(300);  // give a broken page's <img onerror> time to fire
    for (const page of [page1, page2]) {
      const pwned = await page.evaluate(() => window.__pwned);
      check(pwned === undefined, `${page.label}: window.__pwned is ${pwned}`);
      const injected = await page.$$eval("#log img, #log script", (els) => els.length);
      check(injected === 0, `${page.label}: the log contains ${injected} img/script elements`);
    }
  });

  await step("page 2 drops, reconnects with its resume token: same name, missed messages once, no leave or join", async () => {
    const before = await page2.evaluate(() => window.wschat.lastSeq);
    check(before > 0, `page 2's last seq is ${before}`);
    const token = await page2.evaluate(() => window.wschat.resume);
    check(/^[0-9a-f]{32}$/.test(token || ""), `page 2's resume token is ${JSON.stringify(token)}`);
    const quietFrom1 = (await lines(page1)).length;
    // Hold page 2 offline (DevTools network emulation, this page only) so
    // that the two messages are certainly sent while it is away, whatever
    // the reconnect timing; then drop its socket from the page itself
    // (close code 4000: not a goodbye, so the server keeps its name).
    const cdp = await context.newCDPSession(page2);
    await cdp.send("Network.enable");
    const offline = (on) => cdp.send("Network.emulateNetworkConditions",
      { offline: on, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    await offline(true);
    await page2.evaluate(() => window.wschat.socket.close(4000, "drop"));
    // The server has seen the drop once /who no longer lists page 2.
    await waitFor(`the server to see ${p2} drop`, () => {
      plain.ws.send("/who");
      const last = plain.lines.filter((l) => l.startsWith("wschat: Users in ")).at(-1) || "";
      return last && !last.includes(p2);
    });
    await say(page1, "missed one");
    await say(page1, "missed two");
    await plain.expect("alice: missed one");
    await plain.expect("alice: missed two");
    const missedNow = (await lines(page2)).filter((l) => l.text.startsWith("missed "));
    check(missedNow.length === 0, `page 2 got the messages while offline: ${JSON.stringify(missedNow)}`);
    await offline(false);
    await cdp.detach();

    await waitFor("page 2 to reconnect (a new welcome, a new token)", () => page2.evaluate(
      (old) => window.wschat.socket?.readyState === 1 && window.wschat.resume !== old, token), () => dump(page2));
    const again = await page2.evaluate(() => window.wschat.you);
    check(again === p2, `page 2 came back as ${again}, not ${p2}`);
    const resume = sockets.page2.at(-1);
    check(resume === `${wsBase}${ROOM}?since=${before}&resume=${token}`,
      `page 2 reconnected to ${resume}, expected ?since=${before}&resume=${token}`);
    for (const text of ["missed one", "missed two"]) {
      await expectLine(page2, { type: "history", from: "alice", text });
    }
    await sleep(200);  // a duplicate would arrive right behind
    const all = await lines(page2);
    for (const text of ["missed one", "missed two", "hello from page one", "hello from node", EVIL]) {
      const n = all.filter((l) => l.text === text).length;
      check(n === 1, `page 2 shows ${JSON.stringify(text)} ${n} times`);
    }
    // Back as its own default name, it does not try the nickname another
    // tab (page 1, same localStorage) remembered.
    const tried = all.filter((l) => l.type === "error" && l.text.includes("taken"));
    check(tried.length === 0, `page 2 tried another name after resuming: ${JSON.stringify(tried)}`);
    const seqs = all.filter((l) => l.seq != null).map((l) => l.seq);
    check(new Set(seqs).size === seqs.length, `page 2 shows a seq twice: ${seqs.join(",")}`);
    await say(page1, "after the reconnect");
    await expectLine(page2, { type: "message", from: "alice", text: "after the reconnect" });
    await expectWho(page1, ["alice", p2, plainName]);
    const noise = (await lines(page1)).slice(quietFrom1).filter((l) => l.type === "join" || l.type === "leave");
    check(noise.length === 0, `page 1 was told of the drop: ${JSON.stringify(noise)}`);
    const plainNoise = plain.lines.filter((l) => l === `${p2} left` || l === `${p2} joined`);
    check(plainNoise.length === 1, `the plain client saw ${JSON.stringify(plainNoise)}, expected only the first join`);
  });

  await step("page 1 reloads: still alice (its tab's token), nobody told; a private message reads as one", async () => {
    const quietFrom2 = (await lines(page2)).length;
    await page1.reload({ timeout: TIMEOUT });
    await waitFor("page 1 to be welcomed back", () => page1.evaluate(() => window.wschat?.socket?.readyState === 1 && window.wschat.you), () => dump(page1));
    const name = await page1.evaluate(() => window.wschat.you);
    check(name === "alice", `after a reload page 1 is ${name}`);
    check(await page1.evaluate(() => localStorage.getItem("wschat.nick")) === "alice", "the nickname is remembered");
    await say(page1, `/msg ${p2} just for you`);
    await expectLine(page2, { type: "private", from: "alice", text: "just for you" });
    await expectLine(page1, { type: "private", from: `to ${p2}`, text: "just for you" });
    await say(page1, "after the reload");
    await plain.expect("alice: after the reload");
    check(!plain.lines.includes("[private] alice: just for you"), "the plain client got the private message");
    const noise = (await lines(page2)).slice(quietFrom2).filter((l) => l.type === "join" || l.type === "leave");
    check(noise.length === 0, `page 2 was told of the reload: ${JSON.stringify(noise)}`);
  });

  await step("own messages are marked (you) on the sender's page only; private lines stand out on both sides", async () => {
    const mine = await expectLine(page1, { type: "message", from: "alice", text: "after the reload" });
    check(mine.cls.split(" ").includes("own") && mine.tag === "(you)", `page 1's own message is not marked: ${JSON.stringify(mine)}`);
    await say(page2, "not alice's");
    const theirs = await expectLine(page1, { type: "message", from: p2, text: "not alice's" });
    check(!theirs.cls.split(" ").includes("own") && theirs.tag === null, `page 2's message is marked as page 1's: ${JSON.stringify(theirs)}`);
    const own2 = await expectLine(page2, { type: "message", from: p2, text: "not alice's" });
    check(own2.tag === "(you)", `page 2's own message is not marked: ${JSON.stringify(own2)}`);
    const aliceOn2 = await expectLine(page2, { type: "message", from: "alice", text: "after the reload" });
    check(aliceOn2.tag === null, `alice's message is marked as page 2's: ${JSON.stringify(aliceOn2)}`);
    for (const page of [page1, page2]) {
      const [privateBg, plainBg] = await page.evaluate(() => [".private", "li.message"].map((sel) =>
        getComputedStyle(document.querySelector(`#log ${sel}`)).backgroundColor));
      check(privateBg !== plainBg, `${page.label}: a private line looks like any other (${privateBg})`);
    }
    // A name in the who-list starts a private message to it.
    await page1.click(`#users li[data-name="${p2}"]`);
    const typed = await page1.getByLabel("Message", { exact: true }).inputValue();
    check(typed === `/msg ${p2} `, `clicking ${p2} typed ${JSON.stringify(typed)}`);
    await page1.getByLabel("Message", { exact: true }).fill("");
  });

  await step("a hidden tab counts unread messages in its title; shown again, the count clears", async () => {
    const title = `#${ROOM_NAME} · wschat`;
    check(await page2.title() === title, `page 2's title is ${JSON.stringify(await page2.title())}`);
    await setHidden(page2, true);
    await say(page1, "while hidden one");
    await say(page1, `/msg ${p2} while hidden, privately`);
    plain.ws.send("while hidden three");
    await expectLine(page2, { type: "message", from: plainName, text: "while hidden three" });
    await waitFor("page 2's title to count 3 unread", async () => (await page2.title()) === `(3) ${title}`,
      async () => `; the title is ${JSON.stringify(await page2.title())}`);
    await setHidden(page2, false);
    await waitFor("page 2's title to clear", async () => (await page2.title()) === title,
      async () => `; the title is ${JSON.stringify(await page2.title())}`);
    await say(page1, "while shown");
    await expectLine(page2, { type: "message", from: "alice", text: "while shown" });
    check(await page2.title() === title, `a visible page counted: ${JSON.stringify(await page2.title())}`);
  });

  if (VERIFIED_TOKEN) await step("a page opened with ?token=JWT (then one with the wschat_token cookie) is verified: a ✓ beside its name in messages and who-lists, the token gone from the address bar", async () => {
    const page3 = await open("page3");
    await page3.goto(`${base}${ROOM}?token=${VERIFIED_TOKEN}`, { timeout: TIMEOUT });
    await inRoom(page3, ROOM_NAME, VERIFIED_NAME);
    check(!page3.url().includes("token"), `the token is still in the address bar: ${page3.url()}`);
    check(sockets.page3.at(-1) === `${wsBase}${ROOM}?token=${VERIFIED_TOKEN}`, `page 3 connected to ${sockets.page3.at(-1)}`);
    await plain.expect(`${VERIFIED_NAME} joined`);
    await say(page3, "verified hello");
    for (const page of [page1, page2, page3]) {
      const line = await expectLine(page, { type: "message", from: VERIFIED_NAME, text: "verified hello" });
      check(line.verified === "verified user", `${page.label} shows no ✓ on ${VERIFIED_NAME}'s message: ${JSON.stringify(line)}`);
      await waitFor(`${page.label}'s who-list to mark only ${VERIFIED_NAME} verified`, async () =>
        JSON.stringify(await verifiedWho(page)) === JSON.stringify([VERIFIED_NAME]), () => dump(page));
    }
    const alice = await expectLine(page2, { type: "message", from: "alice", text: "while shown" });
    check(alice.verified === null, `alice's message is marked verified: ${JSON.stringify(alice)}`);
    // The /who the page asks for itself is not logged; one the user types is.
    const quiet = (await lines(page3)).filter((l) => l.type === "system" && /^Users in /.test(l.text));
    check(quiet.length === 0, `page 3 logged the /who it asked for itself: ${JSON.stringify(quiet)}`);
    await say(page3, "/who");
    await waitFor("page 3 to show the /who it typed", async () =>
      (await lines(page3)).some((l) => l.type === "system" && /^Users in /.test(l.text)), () => dump(page3));
    await page3.close();
    await expectWho(page2, [p2], [VERIFIED_NAME]);

    // The same token in the wschat_token cookie (what a backend would set):
    // the page needs no query. Cleared again so that no other page is vera.
    await context.addCookies([{ name: "wschat_token", value: VERIFIED_TOKEN, url: origin }]);
    try {
      const page4 = await open("page3");
      await page4.goto(base + ROOM, { timeout: TIMEOUT });
      await inRoom(page4, ROOM_NAME, VERIFIED_NAME);
      await waitFor(`page 2 to mark ${VERIFIED_NAME} verified when it joins`, async () =>
        JSON.stringify(await verifiedWho(page2)) === JSON.stringify([VERIFIED_NAME]), () => dump(page2));
      await page4.close();
    } finally {
      await context.clearCookies();
    }
    await expectWho(page2, [p2], [VERIFIED_NAME]);
  });

  await step("screenshots (desktop and phone width); no horizontal overflow on a phone", async () => {
    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page1.screenshot({ path: SCREENSHOT, fullPage: true });
    check(fs.statSync(SCREENSHOT).size > 0, `${SCREENSHOT} is empty`);
    await page2.setViewportSize({ width: 390, height: 760 });
    const overflow = await page2.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 0, `at 390 px the page is ${overflow} px too wide`);
    await page2.screenshot({ path: PHONE_SCREENSHOT, fullPage: true });
    check(fs.statSync(PHONE_SCREENSHOT).size > 0, `${PHONE_SCREENSHOT} is empty`);
  });

  await step("rooms: join one by name, pick one from the list, back and forward; the URL follows and the nickname is taken again", async () => {
    const quietFrom2 = (await lines(page2)).length;
    await page1.getByLabel("Room to join", { exact: true }).fill(ROOM2_NAME);
    await page1.getByRole("button", { name: "Join" }).click();
    await inRoom(page1, ROOM2_NAME, "alice");          // a new user there, named from localStorage
    await expectLine(page2, { type: "leave", text: "alice left" });   // a goodbye: the room is told at once
    await plain.expect("alice left");
    await expectWho(page2, [p2], ["alice"]);
    const stale = (await lines(page1)).filter((l) => /after the reload|while shown/.test(l.text));
    check(stale.length === 0, `page 1 still shows the other room's lines: ${JSON.stringify(stale)}`);
    await say(page1, "hello room b");
    await expectLine(page1, { type: "message", from: "alice", text: "hello room b" });
    await waitFor(`page 1's room list to hold #${ROOM_NAME} and #${ROOM2_NAME}`, () => page1.$$eval("#rooms li",
      (lis, want) => want.every((r) => lis.some((li) => li.dataset.room === r)), [ROOM_NAME, ROOM2_NAME]), () => dump(page1));

    await page1.click(`#rooms li[data-room="${ROOM_NAME}"] a`);
    await inRoom(page1, ROOM_NAME, "alice");
    await expectWho(page2, ["alice", p2]);
    await page1.goBack({ timeout: TIMEOUT });
    await inRoom(page1, ROOM2_NAME, "alice");
    await expectLine(page1, { type: "history", from: "alice", text: "hello room b" });
    await page1.goForward({ timeout: TIMEOUT });
    await inRoom(page1, ROOM_NAME, "alice");
    await expectLine(page1, { type: "history", from: "alice", text: "while shown" });
    const b = (await lines(page2)).slice(quietFrom2).filter((l) => l.text === "hello room b");
    check(b.length === 0, "room b's message reached the first room");
    const visits = sockets.page1.slice(-4).map((u) => new URL(u).pathname);
    check(JSON.stringify(visits) === JSON.stringify([ROOM2, ROOM, ROOM2, ROOM]), `page 1's last sockets went to ${visits.join(", ")}`);
  });

  await step("no page errors, and the pages loaded nothing from anywhere else", async () => {
    check(pageErrors.length === 0, `page errors:\n${pageErrors.join("\n")}`);
    const foreign = requests.filter((u) => new URL(u).origin !== origin);
    check(foreign.length === 0, `requests to other origins: ${foreign.join(", ")}`);
    const extra = requests.filter((u) => new URL(u).pathname !== ROOM);
    check(extra.length === 0, `requests besides the page itself: ${extra.join(", ")}`);
    const wsForeign = [...sockets.page1, ...sockets.page2, ...sockets.page3]
      .filter((u) => !u.startsWith(wsBase + "/") || ![ROOM, ROOM2].includes(new URL(u).pathname));
    check(wsForeign.length === 0, `WebSockets elsewhere: ${wsForeign.join(", ")}`);
  });
} catch (error) {
  if (failed === 0) {
    failed += 1;
    console.log(`FAIL - setup\n  ${error.stack || error}`);
  }
  // Leave a picture of what each page showed for whoever reads the log.
  for (const page of pages) {
    const file = path.join(REPO, `target/browser/failure${TAG}-${page.label}.png`);
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      await page.screenshot({ path: file, fullPage: true, timeout: 3000 });
      console.log(`  (screenshot of ${page.label}: ${file})`);
    } catch {}
  }
} finally {
  try { plain?.ws.close(); } catch {}
  await context?.close().catch(() => {});
  fs.rmSync(userDataDir, { recursive: true, force: true });
}

console.log(`browser e2e: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
