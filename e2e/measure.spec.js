// Figures for docs/performance.md: bytes a first visit transfers (as served,
// compressed) and time to interactive. Printed, never asserted on speed.
const fs = require('fs');
const path = require('path');
const { test, expect } = require('@playwright/test');

test('first visit: transfer size and time to interactive', async ({ page, browser }) => {
  const context = await browser.newContext();
  const fresh = await context.newPage();
  const client = await context.newCDPSession(fresh);
  await client.send('Network.enable');
  await client.send('Network.setCacheDisabled', { cacheDisabled: true });
  const sizes = new Map();
  client.on('Network.responseReceived', (event) => sizes.set(event.requestId, { url: event.response.url, encoding: event.response.headers['content-encoding'] || event.response.headers['Content-Encoding'] || 'identity' }));
  client.on('Network.loadingFinished', (event) => {
    const entry = sizes.get(event.requestId);
    if (entry) entry.bytes = event.encodedDataLength;
  });

  const timings = [];
  for (let run = 0; run < 5; run += 1) {
    sizes.clear();
    await fresh.goto('/', { waitUntil: 'commit' });
    await fresh.getByRole('button', { name: 'Add entry' }).waitFor();
    timings.push(await fresh.evaluate(() => performance.now()));
  }
  await fresh.waitForLoadState('networkidle');
  const resources = [...sizes.values()].filter((entry) => entry.bytes !== undefined);
  const total = resources.reduce((sum, entry) => sum + entry.bytes, 0);
  timings.sort((a, b) => a - b);
  const figures = {
    first_visit_bytes: total,
    resources: resources.map((entry) => ({ url: new URL(entry.url).pathname, bytes: entry.bytes, encoding: entry.encoding })),
    time_to_interactive_ms_median: Math.round(timings[Math.floor(timings.length / 2)]),
    time_to_interactive_ms_runs: timings.map(Math.round),
  };
  console.log(JSON.stringify(figures, null, 2));
  const out = process.env.BROWSER_OUT || 'target/browser';
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 'web-metrics.json'), JSON.stringify(figures, null, 2));
  await fresh.screenshot({ path: path.join(out, 'screenshot.png'), fullPage: true });
  expect(resources.length).toBeGreaterThan(2);
  // The budget for a first visit; a size, not a timing.
  expect(total).toBeLessThanOrEqual(150 * 1024);
  await context.close();
});
