// Browser tests, run by `cargo xtask test` against a freshly started api
// (BASE_URL) in the system's Chromium (CHROMIUM_PATH): no browser download.
const { defineConfig } = require('@playwright/test');

module.exports = defineConfig({
  testDir: 'e2e',
  // e2e/webdriver/ holds the WebKit and Firefox journeys (node:test).
  testIgnore: 'webdriver/**',
  // Two cores: one browser at a time keeps timings honest.
  workers: 1,
  retries: 0,
  timeout: 30_000,
  reporter: [['list']],
  outputDir: process.env.BROWSER_OUT ? `${process.env.BROWSER_OUT}/results` : 'target/browser/results',
  use: {
    baseURL: process.env.BASE_URL || 'http://127.0.0.1:5000',
    trace: 'retain-on-failure',
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    },
  },
});
