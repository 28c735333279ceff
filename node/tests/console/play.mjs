// Plays the node's player page (/play/{app}/{name}) in headless Chromium (Debian's `chromium`)
// with playwright-core, for node/tests/player.rs and scripts/bench-player-latency.sh.
//
//   node play.mjs PAGE_URL [SECONDS_OF_PLAY] [SAMPLE_SECONDS] [WAIT_SECONDS]
//
// Waits (within WAIT_SECONDS, default 60) until the page's <video> is playing, then until its currentTime has
// advanced SECONDS_OF_PLAY (default 5; within 20 s more), then samples the page's latency
// figures every 250 ms for SAMPLE_SECONDS (default 0). Prints one JSON object: the mode, the
// video time played, whether hls.js ran in low-latency mode, the LL-HLS part URLs the page
// requested, the latency samples, and the page's errors. Exits 1 when the video never played.
//
// PLAY_INSECURE=1 accepts any certificate (a test CA's, over HTTPS and WSS).
//
// With PLAY_RESTART=1 it then prints the line `restart` and waits for a line on stdin (the
// caller restarts the publisher meanwhile), and reports as `replayed` how far the video moved
// in the 60 s after that line (summed over players: the page may start a new one).
import { chromium } from "playwright-core";

const [url, playArg, sampleArg, waitArg] = process.argv.slice(2);
const playSeconds = Number(playArg || 5);
const sampleSeconds = Number(sampleArg || 0);
const waitSeconds = Number(waitArg || 60);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const state = (page) =>
  page.evaluate(() => {
    const s = window.corecastPlayer;
    if (!s) return null;
    return {
      mode: s.mode,
      status: s.status,
      currentTime: document.getElementById("video").currentTime,
      parts: s.parts,
      fragments: s.fragments,
      errors: s.errors,
      restarts: s.restarts,
      lowLatencyMode: s.hls ? s.hls.config.lowLatencyMode && s.hls.lowLatencyMode : null,
      latency: s.hls ? s.hls.latency : s.bufferedAhead,
      targetLatency: s.hls ? s.hls.targetLatency : null,
      clockLatency: s.hls && s.hls.playingDate ? (Date.now() - s.hls.playingDate.getTime()) / 1000 : null,
    };
  });

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
    ...(process.env.PLAY_INSECURE === "1" ? ["--ignore-certificate-errors"] : []),
  ],
  timeout: 30000,
});
let exit = 0;
try {
  const page = await browser.newPage();
  const partUrls = [];
  const consoleErrors = [];
  let webSockets = 0;
  page.on("request", (r) => {
    if (/\/p\d+\.\d+\.m4s(\?|$)/.test(r.url())) partUrls.push(r.url());
  });
  page.on("websocket", () => (webSockets += 1));
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  const response = await page.goto(url, { timeout: 15000 });
  const csp = response.headers()["content-security-policy"] || "";

  // Playing: the video's time moves.
  let first = null;
  for (const end = Date.now() + waitSeconds * 1000; Date.now() < end; await sleep(200)) {
    const s = await state(page);
    if (s && s.currentTime > 0) {
      first = s;
      break;
    }
  }
  let last = first;
  if (first) {
    for (const end = Date.now() + playSeconds * 1000 + 20000; Date.now() < end; await sleep(200)) {
      last = await state(page);
      if (last.currentTime - first.currentTime >= playSeconds) break;
    }
  }
  let replayed = null;
  if (first && process.env.PLAY_RESTART === "1") {
    console.log("restart");
    await new Promise((resolve) => process.stdin.once("data", resolve));
    replayed = 0;
    let before = (await state(page)).currentTime;
    for (const end = Date.now() + 60000; Date.now() < end && replayed < playSeconds; await sleep(200)) {
      const now = (await state(page)).currentTime;
      if (now > before) replayed += now - before;
      before = now;
    }
  }
  const samples = [];
  for (const end = Date.now() + sampleSeconds * 1000; first && Date.now() < end; await sleep(250)) {
    const s = await state(page);
    samples.push({ latency: s.latency, clockLatency: s.clockLatency, targetLatency: s.targetLatency });
  }
  const final = (await state(page)) || {};
  const played = first && last ? last.currentTime - first.currentTime : 0;
  console.log(
    JSON.stringify({
      mode: final.mode,
      status: final.status,
      played,
      replayed,
      restarts: final.restarts,
      lowLatencyMode: final.lowLatencyMode,
      parts: final.parts,
      fragments: final.fragments,
      partUrls: partUrls.length,
      webSockets,
      errors: final.errors,
      consoleErrors,
      csp,
      samples,
    }),
  );
  if (!first) exit = 1;
} finally {
  await browser.close();
}
process.exit(exit);
