// Browser tests over the real binary and a real Chromium (Debian's `chromium`, headless):
//
// 1. The playground: get a development token, connect to /realtime (veriops), subscribe,
//    publish through the API, and see the ack and the event on the page (a large one arriving
//    compressed: Chromium and the node agree to permessage-deflate); the same on the brl
//    endpoint with its binary frames decoded; a screenshot of each is saved.
// 2. The veriops document's own `VeriOpsWebSocket` class, unchanged (its hard-coded
//    wss://api.veriops.example endpoint is pointed at the node by a WebSocket shim): it connects,
//    subscribes, answers the server's pings (a short heartbeat here), logs events, and after the
//    node is restarted reconnects and restores its subscriptions.
//
// Usage: node run.mjs <switchboard binary> <output dir>. Exits non-zero on the first failure.

import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const [binary, outDir] = process.argv.slice(2);
if (!binary || !outDir) {
  console.error("usage: node run.mjs <switchboard binary> <output dir>");
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });
const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../..");
const WAIT = 15_000;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

// The shipped config with a 1 s veriops heartbeat (so pings happen within the test; 3 s to answer,
// for a loaded machine) and a short drain, so a restart is quick.
function testConfig(port) {
  let text = readFileSync(path.join(repo, "deploy/examples/all.toml"), "utf8");
  text = text.replace(/^listen = .*$/m, `listen = "127.0.0.1:${port}"`).replace(/^drain_window = .*$/m, 'drain_window = "1s"');
  const marker = 'path = "/realtime"';
  const at = text.indexOf(marker);
  if (at < 0) throw new Error("no /realtime endpoint in all.toml");
  const tail = text.slice(at).replace(/^heartbeat = .*$/m, 'heartbeat = { interval = "1s", timeout = "3s", max_missed = 1 }');
  const file = path.join(outDir, "browser-test.toml");
  writeFileSync(file, text.slice(0, at) + tail);
  return file;
}

class Node {
  constructor(config, port) { this.config = config; this.base = `http://127.0.0.1:${port}`; this.output = ""; }
  async start() {
    this.proc = spawn(binary, ["serve", "--config", this.config], { stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, SWITCHBOARD_LOG: "warn" } });
    for (const s of [this.proc.stdout, this.proc.stderr]) s.on("data", (d) => { this.output += d; });
    const deadline = Date.now() + WAIT;
    for (;;) {
      try { if ((await fetch(`${this.base}/readyz`)).ok) return; } catch { /* not yet */ }
      if (this.proc.exitCode !== null) throw new Error(`the node exited: ${this.output}`);
      if (Date.now() > deadline) throw new Error(`the node did not get ready: ${this.output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  async stop() {
    if (!this.proc || this.proc.exitCode !== null) return;
    const exited = new Promise((r) => this.proc.once("exit", r));
    this.proc.kill("SIGTERM");
    await exited;
  }
}

async function publish(node, adminKey, body) {
  const r = await fetch(`${node.base}/v1/publish`, { method: "POST", body: JSON.stringify(body),
    headers: { "content-type": "application/json", authorization: `Bearer ${adminKey}` } });
  const answer = await r.json();
  if (r.status !== 200) throw new Error(`publish ${JSON.stringify(body)}: ${r.status} ${JSON.stringify(answer)}`);
  return answer.id;
}

async function untilLogHas(page, text, what) {
  try {
    await page.waitForFunction((t) => document.getElementById("log").textContent.includes(t), text, { timeout: WAIT });
  } catch {
    const log = await page.textContent("#log");
    throw new Error(`${what}: "${text}" never showed in the playground log:\n${log}`);
  }
}

async function playground(browser, node) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(`${node.base}/playground?endpoint=/realtime`);
  await page.waitForSelector("body[data-ready='1']", { timeout: WAIT });
  await page.fill("#user", "alice");
  await page.click("#getToken");
  await page.waitForFunction(() => document.getElementById("cred").value.split(".").length === 3, null, { timeout: WAIT });
  const adminKey = await page.inputValue("#adminKey");
  if (!adminKey) throw new Error("the playground did not get the development admin key");

  // veriops: subscribe (the page's example: project.updated for prj_abc123), see the ack.
  await page.click("#connect");
  await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("connected"), null, { timeout: WAIT });
  await page.click("#send");
  await untilLogHas(page, '"status":"ok"', "the subscribe's ack");
  await publish(node, adminKey, { channel: "project.updated", type: "project.updated", payload: { project_id: "prj_other" } });
  const id = await publish(node, adminKey, { channel: "project.updated", type: "project.updated",
    payload: { project_id: "prj_abc123", status: "active" } });
  await untilLogHas(page, `"id":"${id}"`, "the event published through the API");
  const log = await page.textContent("#log");
  if (log.includes("prj_other")) throw new Error(`the filter let through an event for another project:\n${log}`);
  // The browser offered permessage-deflate and the node agreed; a large event arrives
  // compressed (RSV1) and the page shows it whole, inflated by the browser's own zlib.
  await untilLogHas(page, "open (permessage-deflate; server_no_context_takeover", "permessage-deflate agreed with Chromium");
  const notes = "a long note that compresses well, ".repeat(40);
  const bigId = await publish(node, adminKey, { channel: "project.updated", type: "project.updated",
    payload: { project_id: "prj_abc123", notes } });
  await untilLogHas(page, `"id":"${bigId}"`, "the large (compressed) event");
  if (!(await page.textContent("#log")).includes(notes)) throw new Error("the compressed event arrived cut or garbled");
  // The page's own publish button goes through the same API.
  await page.click("#publish");
  await untilLogHas(page, "POST /v1/publish -> 200", "the page's publish");
  await page.click("#disconnect");
  await untilLogHas(page, "closed: code 1000", "the close code");
  await page.screenshot({ path: path.join(outDir, "playground-veriops.png"), fullPage: true });

  // brl: binary frames built by the page, events decoded on it.
  await page.click("#clear");
  await page.selectOption("#endpoint", "/api/v2/realtime");
  await page.click("#connect");
  await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("connected"), null, { timeout: WAIT });
  await page.click("#brlSubscribe");
  // brl acknowledges nothing: publish pairs (one the filter refuses, one it lets through) until
  // the subscription is in force and one arrives, decoded.
  const deadline = Date.now() + WAIT;
  for (;;) {
    await publish(node, adminKey, { channel: "alerts.eu", type: "alert", payload: { severity: "low", score: 99 } });
    const hit = await publish(node, adminKey, { channel: "alerts.eu", type: "alert", payload: { severity: "critical", score: 91 } });
    try {
      await page.waitForFunction((t) => document.getElementById("log").textContent.includes(t),
        `EVENT topic=alerts.eu id=${hit}`, { timeout: 200 });
      break;
    } catch {
      if (Date.now() > deadline) throw new Error(`no decoded brl event:\n${await page.textContent("#log")}`);
    }
  }
  if ((await page.textContent("#log")).includes('"severity":"low"')) throw new Error("the brl filter let a low alert through");
  await page.screenshot({ path: path.join(outDir, "playground-brl.png"), fullPage: true });
  await page.close();
  return adminKey;
}

// The document's client, exactly as printed in seed 004 (its "Complete client example").
const SEED_CLIENT = `
class VeriOpsWebSocket {
constructor(apiKey) {
this.apiKey = apiKey;
this.endpoint = 'wss://api.veriops.example/realtime';
this.subscriptions = new Set();
this.reconnectDelay = 1000;
this.maxReconnectDelay = 30000;
this.connect();
}
connect() {
this.ws = new WebSocket(\`\${this.endpoint}?token=\${this.apiKey}\`);
this.ws.onopen = () => {
console.log('Connected');
this.reconnectDelay = 1000;
// Restore subscriptions after reconnect
for (const channel of this.subscriptions) {
this.subscribe(channel);
}
};
this.ws.onmessage = (event) => {
const msg = JSON.parse(event.data);
if (msg.type === 'ping') {
this.ws.send(JSON.stringify({ type: 'pong', request_id: msg.request_id }));
} else if (msg.type === 'event') {
this.handleEvent(msg.payload);
}
};
this.ws.onclose = () => {
console.log(\`Reconnecting in \${this.reconnectDelay}ms...\`);
setTimeout(() => this.connect(), this.reconnectDelay);
this.reconnectDelay = Math.min(this.reconnectDelay * 2, this.maxReconnectDelay);
};
}
subscribe(channel) {
this.subscriptions.add(channel);
if (this.ws.readyState === WebSocket.OPEN) {
this.ws.send(JSON.stringify({
type: 'subscribe',
request_id: \`req_\${Date.now()}\`,
payload: { channel }
}));
}
}
handleEvent(payload) {
console.log(\`[\${payload.event_type}] \${JSON.stringify(payload.data)}\`);
}
}
`;

async function seedClient(browser, node, adminKey) {
  const page = await browser.newPage();
  const consoleLines = [];
  page.on("console", (m) => consoleLines.push(m.text()));
  const until = async (pred, what) => {
    const deadline = Date.now() + WAIT;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`${what}; the client logged:\n${consoleLines.join("\n")}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  };
  const count = (text) => consoleLines.filter((l) => l === text).length;
  await page.goto(`${node.base}/healthz`);
  const token = (await (await fetch(`${node.base}/playground/token`, { method: "POST",
    headers: { "content-type": "application/json" }, body: JSON.stringify({ sub: "seed-client" }) })).json()).token;
  const host = new URL(node.base).host;
  // Point the document's endpoint at this node; the class itself is untouched.
  await page.evaluate((host) => {
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
      constructor(url, protocols) { super(url.replace("wss://api.veriops.example", `ws://${host}`), protocols); }
    };
  }, host);
  // The class as a page script, then the document's usage (verbatim but for the key).
  await page.addScriptTag({ content: SEED_CLIENT });
  await page.addScriptTag({ content: `
const client = new VeriOpsWebSocket(${JSON.stringify(token)});
client.subscribe('project.updated');
client.subscribe('task.completed');` });
  await until(() => count("Connected") === 1, "the document's client did not connect");

  // Its subscriptions are in force once an event published now arrives; publish until one does
  // (the subscribes are sent on open and acknowledged, but the class does not report acks).
  const published = async (channel, data, line) => {
    const deadline = Date.now() + WAIT;
    while (!consoleLines.includes(line)) {
      if (Date.now() > deadline) throw new Error(`no "${line}"; the client logged:\n${consoleLines.join("\n")}`);
      await publish(node, adminKey, { channel, type: channel, payload: data });
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  await published("project.updated", { project_id: "prj_abc123", status: "active" },
    '[project.updated] {"project_id":"prj_abc123","status":"active"}');
  await published("task.completed", { task_id: "t1" }, '[task.completed] {"task_id":"t1"}');

  // Three heartbeat rounds (1 s each here): answered, so no reconnect.
  await new Promise((r) => setTimeout(r, 3500));
  if (consoleLines.some((l) => l.startsWith("Reconnecting"))) {
    throw new Error(`the client was dropped although it answers pings:\n${consoleLines.join("\n")}\n${node.output}`);
  }

  // Restart the node: the class reconnects with its backoff and restores both subscriptions.
  await node.stop();
  await until(() => consoleLines.some((l) => l.startsWith("Reconnecting")), "no reconnect after the node stopped");
  await node.start();
  await until(() => count("Connected") === 2, "the document's client did not reconnect");
  await published("task.completed", { task_id: "t2" }, '[task.completed] {"task_id":"t2"}');
  await published("project.updated", { project_id: "prj_abc123", status: "done" },
    '[project.updated] {"project_id":"prj_abc123","status":"done"}');
  writeFileSync(path.join(outDir, "seed-client-console.log"), consoleLines.join("\n") + "\n");
  await page.close();
}

const port = await freePort();
const node = new Node(testConfig(port), port);
let browser;
try {
  await node.start();
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless=new", "--no-sandbox"] });
  const adminKey = await playground(browser, node);
  console.log("ok: playground (veriops and brl), screenshots in", outDir);
  await seedClient(browser, node, adminKey);
  console.log("ok: the veriops document's client: events, pings answered, restored after a restart");
} catch (err) {
  console.error(`browser test failed: ${err.stack || err}`);
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
  await node.stop();
}
