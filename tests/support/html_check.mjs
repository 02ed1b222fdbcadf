// Loads an allocscope HTML report in headless Chromium and drives it over the DevTools
// protocol: collects console messages and uncaught exceptions, checks the job table and the
// flamegraph are in the DOM, sorts the job table by clicking a header, zooms the flamegraph by
// clicking a frame, checks every network request stayed on the page's own origin, and saves a
// screenshot. Prints one JSON line with what it found; the Rust test (tests/html_browser.rs)
// asserts on it.
//
// usage: node --experimental-websocket html_check.mjs URL SCREENSHOT.png PROFILE_DIR
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";

const [url, shot, profile] = process.argv.slice(2);
const chrome = spawn("chromium", [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  `--user-data-dir=${profile}`, "--remote-debugging-port=0", "--window-size=1280,1800",
  "about:blank",
], { stdio: ["ignore", "ignore", "pipe"] });
chrome.stderr.on("data", () => {});
const fail = (msg) => { console.log(JSON.stringify({ fatal: msg })); chrome.kill("SIGKILL"); process.exit(0); };
setTimeout(() => fail("timed out after 60 s"), 60000).unref();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let port = null;
for (let i = 0; i < 200 && !port; i++) {
  const f = join(profile, "DevToolsActivePort");
  if (existsSync(f)) port = readFileSync(f, "utf8").split("\n")[0];
  else await sleep(100);
}
if (!port) fail("chromium did not open its DevTools port");
const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
const page = targets.find((t) => t.type === "page");
const ws = new WebSocket(page.webSocketDebuggerUrl);
await new Promise((r, j) => { ws.onopen = r; ws.onerror = j; });

let nextId = 1;
const pending = new Map();
const consoleMessages = [];
const requests = [];
let loaded = null;
const loadedPromise = new Promise((r) => { loaded = r; });
ws.onmessage = (m) => {
  const msg = JSON.parse(m.data);
  if (msg.id && pending.has(msg.id)) { pending.get(msg.id)(msg); pending.delete(msg.id); return; }
  if (msg.method === "Runtime.consoleAPICalled")
    consoleMessages.push(`${msg.params.type}: ${msg.params.args.map((a) => a.value ?? a.description).join(" ")}`);
  if (msg.method === "Runtime.exceptionThrown")
    consoleMessages.push(`exception: ${msg.params.exceptionDetails.exception?.description ?? msg.params.exceptionDetails.text}`);
  if (msg.method === "Log.entryAdded" && msg.params.entry.level !== "verbose")
    consoleMessages.push(`log ${msg.params.entry.level}: ${msg.params.entry.text} ${msg.params.entry.url ?? ""}`);
  if (msg.method === "Network.requestWillBeSent") requests.push(msg.params.request.url);
  if (msg.method === "Page.loadEventFired") loaded();
};
const send = (method, params = {}) => new Promise((r) => {
  const id = nextId++;
  pending.set(id, r);
  ws.send(JSON.stringify({ id, method, params }));
});
const evaluate = async (expr) => {
  const r = await send("Runtime.evaluate", { expression: expr, returnByValue: true });
  if (r.result.exceptionDetails) return { error: r.result.exceptionDetails.exception?.description };
  return r.result.result.value;
};

await send("Runtime.enable");
await send("Log.enable");
await send("Network.enable");
await send("Page.enable");
await send("Page.navigate", { url });
await loadedPromise;
await sleep(500);

const result = {};
result.title = await evaluate("document.title");
result.jobRows = await evaluate("document.querySelectorAll('#jobs tbody tr').length");
result.jobNames = await evaluate("Array.from(document.querySelectorAll('#jobs tbody tr td:first-child')).map(td => td.textContent)");
result.flameFrames = await evaluate("document.querySelectorAll('svg #frames g').length");
result.flameWidth = await evaluate("document.querySelector('.flame > svg').getBoundingClientRect().width");
result.scriptElements = await evaluate("Array.from(document.querySelectorAll('script')).map(s => s.src)");
// Sort by name ascending: click the "Job" header (first click on a text column: ascending).
result.sortedNames = await evaluate(`(() => {
  document.querySelector('#jobs th[data-key=name]').dispatchEvent(new MouseEvent('click', {bubbles: true}));
  return Array.from(document.querySelectorAll('#jobs tbody tr td:first-child')).map(td => td.textContent);
})()`);
// Zoom: click the widest frame below the root, as a user would.
result.zoom = await evaluate(`(() => {
  const groups = Array.from(document.querySelectorAll('svg #frames g'));
  const target = groups.find(g => (g.querySelector('title')?.textContent ?? '').indexOf('all ') !== 0);
  if (!target) return { clicked: false };
  const rect = target.querySelector('rect');
  rect.dispatchEvent(new MouseEvent('click', {bubbles: true}));
  const unzoom = document.getElementById('unzoom');
  return { clicked: true, frame: target.querySelector('title').textContent,
           unzoomVisible: !unzoom.classList.contains('hide') };
})()`);
await sleep(200);
const shotData = await send("Page.captureScreenshot", { format: "png" });
writeFileSync(shot, Buffer.from(shotData.result.data, "base64"));
result.console = consoleMessages;
const origin = new URL(url).origin;
result.foreignRequests = requests.filter((u) => !u.startsWith(url) && !u.startsWith("data:") && new URL(u).origin !== origin);
result.requests = requests.length;
console.log(JSON.stringify(result));
ws.close();
chrome.kill("SIGKILL");
process.exit(0);
