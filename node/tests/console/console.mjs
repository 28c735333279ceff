// Drives the console page in headless Chromium (Debian's `chromium`) with playwright-core:
// sign in with the API token, create a livestream, read the server URL and the stream key the
// page shows, keep a screenshot. Prints {"name", "ingest", "key", "listed"} as JSON.
//
//   node console.mjs BASE_URL TOKEN SCREENSHOT_PATH
import { chromium } from "playwright-core";

const [base, token, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu"],
  timeout: 30000,
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  await page.goto(`${base}/console`);
  await page.fill("#token", token);
  await page.click("#sign-in button[type=submit]");
  await page.waitForSelector("#app:not(.hidden)");
  const name = "from the console";
  await page.fill("#name", name);
  await page.click("#create button[type=submit]");
  await page.waitForSelector("#created:not(.hidden)");
  await page.waitForSelector(`#list tr td:text-is("${name}")`);
  const ingest = await page.textContent("#ingest");
  const key = await page.textContent("#key");
  const listed = await page.$$eval("#list tr", (rows) => rows.length);
  const cookies = await page.context().cookies();
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ name, ingest, key, listed, cookies }));
} finally {
  await browser.close();
}
