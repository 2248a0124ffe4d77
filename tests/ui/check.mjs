// Checks the worker's status page in Debian's headless Chromium, as a person would see it.
//
//   node tests/ui/check.mjs URL SCREENSHOT_PATH [CONNECTOR...]
//
// Opens URL (the worker's /ui, optionally with #token=...), waits until the connectors
// table lists every CONNECTOR (or those in $PLEXUS_UI_CONNECTORS, comma-separated), a
// running datagen source shows a rate above 0 and the page holds $PLEXUS_UI_MIN_SAMPLES
// (4) samples of history, checks that the topics table lists a topic
// holding bytes and that the throughput chart is drawn, then saves a full-page
// screenshot. Exits 1 with a message saying what is missing, also on any console error
// or uncaught page error. Run scripts/setup-browser first.

import { existsSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";

const CHROMIUM = process.env.PLEXUS_CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = Number(process.env.PLEXUS_UI_WAIT_MS || 30_000);
// Samples of the worker's history to wait for, so the charts show lines, not dots.
const MIN_SAMPLES = Number(process.env.PLEXUS_UI_MIN_SAMPLES || 4);
const OVERALL_MS = WAIT_MS + 60_000;

const [url, screenshot, ...named] = process.argv.slice(2);
if (!url || !screenshot) {
  fail("usage: node tests/ui/check.mjs URL SCREENSHOT_PATH [CONNECTOR...]");
}
const expected = named.length
  ? named
  : (process.env.PLEXUS_UI_CONNECTORS || "").split(",").map((s) => s.trim()).filter(Boolean);

if (!existsSync(CHROMIUM)) {
  fail(`${CHROMIUM} not found: run scripts/setup-browser (installs Debian's chromium)`);
}
let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch (err) {
  fail(`playwright-core is not installed (${err.message}): run scripts/setup-browser`);
}

// Never hang a test run, whatever Chromium does.
const watchdog = setTimeout(() => fail(`gave up after ${OVERALL_MS / 1000} s`), OVERALL_MS);

const problems = [];
let browser;
try {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // No sandbox: tests run as root. The rest keeps Chromium off the network, which is
    // closed here: no update checks, sync, or background lookups. Playwright gives each
    // launch a fresh temporary profile (--user-data-dir) and removes it on close.
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout: 30_000,
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 }, deviceScaleFactor: 1 });
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console error: ${msg.text()} (${msg.location().url || "page"})`);
  });
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("requestfailed", (req) => problems.push(`request failed: ${req.url()} (${req.failure()?.errorText})`));

  const response = await page.goto(url, { waitUntil: "load", timeout: 15_000 });
  if (!response || !response.ok()) {
    throw new Error(`GET ${url} answered ${response ? response.status() : "nothing"}`);
  }
  const type = response.headers()["content-type"] || "";
  if (!type.startsWith("text/html")) throw new Error(`GET ${url} is \`${type}\`, not text/html`);

  try {
    await page.waitForFunction(ready, { expected, minSamples: MIN_SAMPLES }, { timeout: WAIT_MS, polling: 250 });
  } catch (err) {
    const seen = await page.evaluate(describe).catch((e) => `(page unreadable: ${e.message})`);
    throw new Error(`the page did not show what was expected within ${WAIT_MS / 1000} s.\n${seen}`);
  }

  const topics = await page.$$eval("#topics tbody tr[data-topic]", (rows) =>
    rows.map((r) => ({
      name: r.dataset.topic,
      bytes: Number(r.querySelector('[data-field="bytes"]')?.dataset.value || 0),
    })),
  );
  if (!topics.some((t) => t.bytes > 0)) {
    throw new Error(`no topic with bytes > 0 in the topics table: ${JSON.stringify(topics)}`);
  }

  const chart = await page.evaluate(() => {
    const canvas = document.getElementById("chart-throughput");
    if (!canvas) return { error: "no #chart-throughput canvas" };
    const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
    let painted = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
    return { drawn: canvas.dataset.drawn, points: Number(canvas.dataset.points), painted };
  });
  if (chart.error || chart.drawn !== "true" || !(chart.points > 0) || chart.painted < 500) {
    throw new Error(`the throughput chart is not drawn: ${JSON.stringify(chart)}`);
  }

  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });

  const summary = await page.evaluate(describe);
  console.log(`status page OK (${topics.length} topics, chart ${chart.points} points); screenshot: ${screenshot}\n${summary}`);
} catch (err) {
  problems.unshift(err.message);
} finally {
  if (browser) await browser.close().catch(() => {});
  clearTimeout(watchdog);
}

if (problems.length) fail(problems.join("\n"));

// ---- in the page ------------------------------------------------------------------------

/** True when every expected connector is listed, a running datagen source has a rate
 * and enough history has been sampled. */
function ready({ expected, minSamples }) {
  if (Number(document.body.dataset.samples || 0) < minSamples) return false;
  const rows = [...document.querySelectorAll("#connectors tbody tr[data-connector]")];
  const names = new Set(rows.map((r) => r.dataset.connector));
  if (!expected.every((name) => names.has(name))) return false;
  if (!rows.length) return false;
  const field = (row, name) => row.querySelector(`[data-field="${name}"]`);
  return rows.some(
    (row) =>
      field(row, "type")?.textContent === "datagen" &&
      field(row, "state")?.dataset.value === "RUNNING" &&
      Number(field(row, "rate-in")?.dataset.value || 0) > 0,
  );
}

/** What the connectors table shows, for messages. */
function describe() {
  const rows = [...document.querySelectorAll("#connectors tbody tr[data-connector]")];
  const cell = (row, name) => row.querySelector(`[data-field="${name}"]`);
  const lines = rows.map(
    (r) =>
      `  ${r.dataset.connector}: ${cell(r, "type")?.textContent} ${cell(r, "state")?.dataset.value}` +
      ` in=${cell(r, "rate-in")?.dataset.value || "?"}/s out=${cell(r, "rate-out")?.dataset.value || "?"}/s` +
      ` lag=${cell(r, "lag")?.dataset.value || "?"}`,
  );
  const banner = document.querySelector(".banner.show");
  return [
    `history samples: ${document.body.dataset.samples || 0}`,
    `connectors table (${rows.length} rows):`,
    ...lines,
    banner ? `banner: ${banner.textContent.trim()}` : "",
  ].filter(Boolean).join("\n");
}

function fail(message) {
  console.error(`tests/ui/check.mjs: ${message}`);
  process.exit(1);
}
