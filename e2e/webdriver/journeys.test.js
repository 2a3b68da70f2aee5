// The user journeys of e2e/app.spec.js in WebKit and Firefox, over W3C
// WebDriver (selenium-webdriver), run by `cargo xtask test` with:
//   ENGINE       webkit | firefox
//   DRIVER_PATH  WebKitWebDriver or geckodriver
//   BROWSER_PATH MiniBrowser (WebKitGTK) or firefox
//   BASE_URL     the api, serving the release build of the client
// The browser loads the app through a fault proxy (fault-proxy.js) that
// records every request and makes the failures the journeys need.
const { after, afterEach, before, describe, test } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { Builder, By, Key, error: webdriverErrors } = require('selenium-webdriver');
const LogInspector = require('selenium-webdriver/bidi/logInspector');
const { FaultProxy } = require('./fault-proxy');

const ENGINE = process.env.ENGINE;
const WAIT_MS = 10_000;

/** The session capabilities of each engine: headless, nothing downloaded. */
const CAPABILITIES = {
  webkit: (binary) => ({
    browserName: 'MiniBrowser',
    // MiniBrowser has no headless mode: `cargo xtask test` runs it in Xvfb.
    'webkitgtk:browserOptions': { binary, args: ['--automation'] },
  }),
  firefox: (binary) => ({
    browserName: 'firefox',
    // WebDriver BiDi: the journeys read the console (see `consoleErrors`).
    webSocketUrl: true,
    'moz:firefoxOptions': {
      binary,
      // A fresh copy of firefox-profile/ (see its userChrome.css).
      args: ['-headless', '-profile', firefoxProfile()],
      prefs: { 'toolkit.legacyUserProfileCustomizations.stylesheets': true },
    },
  }),
};

let driver;
let driverProcess;
let profileCopy;
let proxy;
let driverLog = '';
/**
 * Console errors and uncaught exceptions (a CSP refusal or a panic in the
 * WASM app shows up as one), read over WebDriver BiDi. WebKitWebDriver
 * (WebKitGTK 2.50) has no BiDi, so in WebKit this stays null and the
 * journeys prove the app ran by what it shows.
 */
let consoleErrors = null;

/** A throwaway copy of firefox-profile/, removed after the journeys. */
function firefoxProfile() {
  profileCopy = fs.mkdtempSync(path.join(os.tmpdir(), 'journeys-firefox-'));
  fs.cpSync(path.join(__dirname, 'firefox-profile'), profileCopy, { recursive: true });
  return profileCopy;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    }).on('error', reject);
  });
}

/** Starts the WebDriver server and waits until it answers /status. */
async function startDriver() {
  const port = await freePort();
  const args = ENGINE === 'firefox'
    ? ['--port', String(port), '--host', '127.0.0.1', '--websocket-port', String(await freePort())]
    : [`--port=${port}`];
  // WebKit: MiniBrowser reads GTK's settings from here (see its gtk.css).
  const env = ENGINE === 'webkit'
    ? { ...process.env, XDG_CONFIG_HOME: path.join(__dirname, 'minibrowser-config') }
    : process.env;
  driverProcess = spawn(process.env.DRIVER_PATH, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const keep = (chunk) => { driverLog = (driverLog + chunk).slice(-20_000); };
  driverProcess.stdout.on('data', keep);
  driverProcess.stderr.on('data', keep);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (driverProcess.exitCode !== null) {
      throw new Error(`${process.env.DRIVER_PATH} exited (${driverProcess.exitCode}):\n${driverLog}`);
    }
    try {
      const status = await fetch(`${url}/status`);
      if (status.ok) return url;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`${process.env.DRIVER_PATH} did not answer on ${url} within 30 s:\n${driverLog}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Waits until `check` returns a truthy value; `what` names it in the failure. */
async function until(what, check) {
  let last;
  try {
    return await driver.wait(async () => {
      try {
        return await check();
      } catch (cause) {
        if (cause instanceof webdriverErrors.NoSuchElementError || cause instanceof webdriverErrors.StaleElementReferenceError) {
          last = cause.message;
          return false;
        }
        throw cause;
      }
    }, WAIT_MS);
  } catch (cause) {
    if (!(cause instanceof webdriverErrors.TimeoutError)) throw cause;
    throw new Error(`${ENGINE}: waited ${WAIT_MS} ms for ${what}${last ? ` (last: ${last})` : ''}`);
  }
}

const $ = (css) => driver.findElement(By.css(css));
const text = async (css) => (await $(css)).getText();
const focusedId = async () => (await driver.switchTo().activeElement()).getAttribute('id');

async function untilText(css, expected) {
  await until(`"${css}" to contain ${JSON.stringify(expected)}`, async () => (await text(css)).includes(expected));
}

/** Empties a field the way a person would leave it, then types `value`. */
async function fill(css, value) {
  const field = await $(css);
  await driver.executeScript(
    'arguments[0].value = ""; arguments[0].dispatchEvent(new Event("input", { bubbles: true }));',
    field,
  );
  await field.sendKeys(value);
}

async function open(path = '/') {
  await driver.get(`${proxy.url}${path}`);
  await until('the app to start (its WASM module loaded and mounted)', async () => (await driver.findElements(By.css('#add-heading'))).length > 0);
}

/** A string no other journey uses. */
function unique(label) {
  return `${label} ${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
}

async function addEntry(notes, greeting) {
  await fill('#notes', notes);
  await fill('#greeting', greeting);
  await $('form button[type=submit]').click();
  await untilText('[role=status]', `You added this to the database: ${notes}`);
}

const DATA = /^\/data$/;
const LIST = /^\/data\?n=/;

describe(`the web client in ${ENGINE}`, () => {
  before(async () => {
    assert.ok(CAPABILITIES[ENGINE], `ENGINE must be webkit or firefox, not ${ENGINE}`);
    proxy = new FaultProxy(process.env.BASE_URL);
    await proxy.start();
    const server = await startDriver();
    driver = await new Builder()
      .usingServer(server)
      .withCapabilities(CAPABILITIES[ENGINE](process.env.BROWSER_PATH))
      .build();
    const capabilities = await driver.getCapabilities();
    console.log(`# ${ENGINE}: ${capabilities.get('browserName')} ${capabilities.get('browserVersion')}`);
    if (capabilities.get('webSocketUrl')) {
      consoleErrors = [];
      const inspector = await LogInspector(driver);
      await inspector.onConsoleEntry((entry) => {
        if (entry.level === 'error') consoleErrors.push(entry.text);
      });
      await inspector.onJavascriptException((entry) => consoleErrors.push(entry.text));
    }
  });

  after(async () => {
    await driver?.quit().catch(() => {});
    driverProcess?.kill();
    await proxy?.stop();
    if (profileCopy) fs.rmSync(profileCopy, { recursive: true, force: true });
  });

  afterEach(() => {
    proxy.clear();
    if (consoleErrors) {
      const seen = consoleErrors.splice(0);
      assert.deepEqual(seen, [], 'no console errors');
    }
  });

  /** Forgets the console errors an injected failure causes (the browser logs them). */
  const forgetConsoleErrors = () => consoleErrors?.splice(0);

  test('the app runs under its own content security policy', async () => {
    const mark = proxy.log.length;
    await open('/');
    const [page] = proxy.requests('GET', /^\/$/, mark);
    const policy = page.headers['content-security-policy'];
    assert.match(policy, /'wasm-unsafe-eval'/);
    assert.doesNotMatch(policy, /unsafe-inline|'unsafe-eval'/);
    const wasm = proxy.requests('GET', /\.wasm$/, mark);
    assert.equal(wasm.length, 1, `the page fetched its WASM module once: ${JSON.stringify(wasm.map((entry) => [entry.status, entry.headers['content-length'], entry.headers['content-encoding']]))}`);
    assert.equal(wasm[0].status, 200);
    assert.equal(await text('#add-heading'), 'Add an entry');
  });

  test('adding an entry confirms it, clears the form and returns focus', async () => {
    await open();
    const notes = unique('First note');

    await addEntry(notes, `Hello from ${ENGINE}`);

    await untilText('[role=status]', `Hello from ${ENGINE}`);
    assert.equal(await (await $('#notes')).getAttribute('value'), '');
    assert.equal(await (await $('#greeting')).getAttribute('value'), '');
    await until('the focus to return to Notes', async () => (await focusedId()) === 'notes');
  });

  test('retrieving entries shows the newest first with local times', async () => {
    await open();
    const older = unique('older');
    const newer = unique('newer');
    await addEntry(older, 'one');
    await addEntry(newer, 'two');

    await fill('#count', '2');
    await $('.inline-form button[type=submit]').click();

    await untilText('#results-heading', '2 most recent entries');
    const rows = await driver.findElements(By.css('table tbody tr'));
    assert.equal(rows.length, 2);
    assert.match(await rows[0].getText(), new RegExp(newer));
    assert.match(await rows[1].getText(), new RegExp(older));
    const time = await rows[0].findElement(By.css('time'));
    const expected = await driver.executeScript(
      'return new Date(arguments[0]).toLocaleString();',
      await time.getAttribute('datetime'),
    );
    assert.equal(await time.getText(), expected);
  });

  test('show older pages back through the entries below the table', async () => {
    await open();
    const notes = [unique('oldest'), unique('middle'), unique('newest')];
    for (const note of notes) await addEntry(note, 'paged');
    const mark = proxy.log.length;

    await fill('#count', '1');
    await $('.inline-form button[type=submit]').click();
    await untilText('#results-heading', '1 most recent entry');
    await $('.results button.secondary').click();
    await untilText('#results-heading', '2 most recent entries');
    await $('.results button.secondary').click();
    await untilText('#results-heading', '3 most recent entries');

    const rows = await driver.findElements(By.css('table tbody tr'));
    assert.equal(rows.length, 3);
    for (const [row, note] of [[0, notes[2]], [1, notes[1]], [2, notes[0]]]) {
      assert.match(await rows[row].getText(), new RegExp(note));
    }
    const pages = proxy.requests('GET', LIST, mark).map((entry) => entry.path);
    assert.equal(pages.length, 3);
    assert.ok(pages.slice(1).every((path) => /[?&]n=1&before=\d+$/.test(path)), pages.join(' '));
  });

  test('the count field uses the same rules as the server', async () => {
    await open();
    const mark = proxy.log.length;
    assert.equal(await (await $('#count')).getAttribute('value'), '10');

    await fill('#count', '101');
    await $('.inline-form button[type=submit]').click();

    await untilText('#count-error', 'Number of entries must be an integer from 1 to 100.');
    assert.equal(await (await $('#count')).getAttribute('aria-invalid'), 'true');
    assert.deepEqual(proxy.requests('GET', LIST, mark), [], 'nothing was sent');
  });

  test('invalid fields are explained next to each field and nothing is sent', async () => {
    await open();
    const mark = proxy.log.length;

    await fill('#notes', '   ');
    await fill('#greeting', 'é'.repeat(129));
    await untilText('#greeting-count', '129 / 128');
    await $('form button[type=submit]').click();

    await untilText('#notes-error', 'Notes must not be empty or only whitespace.');
    assert.equal(await text('#greeting-error'), 'Greeting must be at most 128 characters (got 129).');
    assert.equal(await focusedId(), 'notes');
    assert.deepEqual(proxy.requests('POST', DATA, mark), [], 'nothing was sent');

    await fill('#greeting', 'é'.repeat(128));
    await untilText('#greeting-count', '128 / 128');
    assert.equal(await text('#greeting-error'), '');
  });

  test('a server failure shows a message and trying again succeeds', async () => {
    await open();
    const mark = proxy.log.length;
    const clear = proxy.fail('POST', DATA, 503, JSON.stringify({
      type: '/problems/database-unavailable',
      title: 'Database unavailable',
      status: 503,
      detail: 'The database cannot be reached right now; try again shortly.',
    }));
    const notes = unique('retried');

    await fill('#notes', notes);
    await fill('#greeting', 'after a 503');
    await $('form button[type=submit]').click();
    await untilText('[role=alert]', 'Database unavailable');
    clear();
    forgetConsoleErrors();
    await $('[role=alert] button').click();

    await untilText('[role=status]', `You added this to the database: ${notes}`);
    assert.equal((await driver.findElements(By.css('[role=alert]'))).length, 0);
    assert.deepEqual(proxy.requests('POST', DATA, mark).map((entry) => entry.status), [503, 201]);
  });

  test('a network failure while listing offers a retry', async () => {
    await open();
    const clear = proxy.drop('GET', LIST);

    await $('.inline-form button[type=submit]').click();
    await untilText('.results [role=alert]', 'could not be reached');
    clear();
    forgetConsoleErrors();
    await $('.results [role=alert] button').click();

    await until('a results heading', async () => /most recent entr/.test(await text('#results-heading')));
  });

  test('an empty table and the loading state are announced', async () => {
    await open();
    const release = proxy.hold('GET', LIST, 200, '{"items":[]}');

    await $('.inline-form button[type=submit]').click();
    await untilText('.results', 'Loading entries…');
    assert.equal(await (await $('.results')).getAttribute('aria-busy'), 'true');
    release();

    await untilText('.results', 'No entries yet.');
    assert.equal(await (await $('.results')).getAttribute('aria-busy'), 'false');
  });

  test('everything works from the keyboard alone', async () => {
    await open();
    const notes = unique('typed');

    await driver.actions().sendKeys(Key.TAB).perform();
    assert.equal(await focusedId(), 'notes');
    await driver.actions().sendKeys(notes, Key.TAB).perform();
    assert.equal(await focusedId(), 'greeting');
    await driver.actions().sendKeys('no mouse', Key.ENTER).perform();
    await untilText('[role=status]', notes);

    await driver.executeScript('document.getElementById("count").focus();');
    await driver.actions().keyDown(Key.CONTROL).sendKeys('a').keyUp(Key.CONTROL).sendKeys('1', Key.ENTER).perform();
    await untilText('#results-heading', '1 most recent entry');
    assert.match(await text('table'), new RegExp(notes));
  });

  test('a 360 px wide screen needs no horizontal scrolling', async () => {
    await open();
    // The window's frame differs per engine: size it so the page is 360 px
    // wide. WebKit applies a new size after answering, so each size is
    // awaited until the page sees it (read too early, the old 1280 px page
    // made the second size negative: "Invalid width value").
    const before = await driver.executeScript('return window.innerWidth;');
    await driver.manage().window().setRect({ width: 360, height: 740 });
    let inner = 0;
    let width = 0;
    await until('the window to take its new size', async () => {
      inner = await driver.executeScript('return window.innerWidth;');
      ({ width } = await driver.manage().window().getRect());
      return inner > 0 && inner <= width && (inner !== before || width === 360);
    });
    await driver.manage().window().setRect({ width: width + 360 - inner, height: 740 });
    await until('the page to be 360 px wide', async () =>
      (await driver.executeScript('return window.innerWidth;')) === 360);

    await addEntry(unique('W'.repeat(100)), 'x'.repeat(120));
    await $('.inline-form button[type=submit]').click();
    await until('the table', async () => (await driver.findElements(By.css('table'))).length > 0);

    const scrolled = await driver.executeScript('return document.documentElement.scrollWidth;');
    assert.ok(scrolled <= 360, `the page is ${scrolled} px wide at 360 px`);
    await driver.manage().window().setRect({ width: 1280, height: 900 });
  });

  test('client-side routes get the app', async () => {
    const mark = proxy.log.length;
    await open('/some/client/route');
    assert.equal(proxy.requests('GET', /^\/some\/client\/route$/, mark)[0].status, 200);
  });
});
