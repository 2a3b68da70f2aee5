// What a person does with the app, in a real browser against the real API.
const { test, expect } = require('@playwright/test');

// Every test fails on a console error or an uncaught exception (a CSP
// violation or a panic in the WASM app shows up as one).
test.beforeEach(async ({ page }) => {
  page.errors = [];
  page.on('console', (message) => {
    if (message.type() === 'error') page.errors.push(message.text());
  });
  page.on('pageerror', (error) => page.errors.push(String(error)));
});

test.afterEach(async ({ page }) => {
  expect(page.errors, 'no console errors').toEqual([]);
});

/** A string no other test uses. */
function unique(label) {
  return `${label} ${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
}

async function addEntry(page, notes, greeting) {
  await page.getByLabel('Notes').fill(notes);
  await page.getByLabel('Greeting').fill(greeting);
  await page.getByRole('button', { name: 'Add entry' }).click();
  await expect(page.getByRole('status')).toContainText(`You added this to the database: ${notes}`);
}

test('the page is served with its security headers', async ({ page }) => {
  const response = await page.goto('/');
  const headers = response.headers();
  expect(response.status()).toBe(200);
  expect(headers['content-security-policy']).toContain("frame-ancestors 'none'");
  expect(headers['content-security-policy']).toContain("'wasm-unsafe-eval'");
  expect(headers['content-security-policy']).not.toContain('unsafe-inline');
  expect(headers['x-content-type-options']).toBe('nosniff');
  expect(headers['referrer-policy']).toBeTruthy();
  expect(headers['cache-control']).toBe('no-cache');
  await expect(page.getByRole('heading', { name: 'Add an entry' })).toBeVisible();
});

test('adding an entry confirms it, clears the form and returns focus', async ({ page }) => {
  await page.goto('/');
  const notes = unique('First note');

  await addEntry(page, notes, 'Hello from the browser');

  await expect(page.getByRole('status')).toContainText('Hello from the browser');
  await expect(page.getByLabel('Notes')).toHaveValue('');
  await expect(page.getByLabel('Greeting')).toHaveValue('');
  await expect(page.getByLabel('Notes')).toBeFocused();
});

test('retrieving entries shows the newest first with local times', async ({ page }) => {
  await page.goto('/');
  const older = unique('older');
  const newer = unique('newer');
  await addEntry(page, older, 'one');
  await addEntry(page, newer, 'two');

  await page.getByLabel('Number of entries to get').fill('2');
  await page.getByRole('button', { name: 'Get entries' }).click();

  await expect(page.getByRole('heading', { name: '2 most recent entries' })).toBeVisible();
  const rows = page.getByRole('table').getByRole('row');
  await expect(rows).toHaveCount(3);
  await expect(rows.nth(1)).toContainText(newer);
  await expect(rows.nth(2)).toContainText(older);
  const stamp = await rows.nth(1).locator('time').getAttribute('datetime');
  const shown = await rows.nth(1).locator('time').innerText();
  const expected = await page.evaluate((iso) => new Date(iso).toLocaleString(), stamp);
  expect(shown).toBe(expected);
  await page.screenshot({ path: `${process.env.BROWSER_OUT || 'target/browser'}/screenshot-table.png`, fullPage: true });
});

test('show older pages back through the entries below the table', async ({ page }) => {
  await page.goto('/');
  const notes = [unique('oldest'), unique('middle'), unique('newest')];
  for (const note of notes) await addEntry(page, note, 'paged');
  const older = [];
  page.on('request', (request) => { if (request.url().includes('before=')) older.push(request.url()); });

  await page.getByLabel('Number of entries to get').fill('1');
  await page.getByRole('button', { name: 'Get entries' }).click();
  await expect(page.getByRole('heading', { name: '1 most recent entry' })).toBeVisible();
  await page.getByRole('button', { name: 'Show older' }).click();
  await expect(page.getByRole('heading', { name: '2 most recent entries' })).toBeVisible();
  await page.getByRole('button', { name: 'Show older' }).click();
  await expect(page.getByRole('heading', { name: '3 most recent entries' })).toBeVisible();

  const rows = page.getByRole('table').getByRole('row');
  await expect(rows.nth(1)).toContainText(notes[2]);
  await expect(rows.nth(2)).toContainText(notes[1]);
  await expect(rows.nth(3)).toContainText(notes[0]);
  expect(older).toHaveLength(2);
  for (const url of older) expect(url).toMatch(/[?&]n=1&before=\d+$/);
});

test('a failed older page keeps the table and trying again adds the page', async ({ page }) => {
  await page.goto('/');
  await addEntry(page, unique('kept'), 'one');
  await addEntry(page, unique('kept'), 'two');
  let aborts = 1;
  await page.route('**/data?n=*&before=*', async (route) => {
    if (aborts > 0) {
      aborts -= 1;
      await route.abort('connectionrefused');
    } else {
      await route.continue();
    }
  });

  await page.getByLabel('Number of entries to get').fill('1');
  await page.getByRole('button', { name: 'Get entries' }).click();
  await page.getByRole('button', { name: 'Show older' }).click();
  await expect(page.getByRole('alert')).toContainText('could not be reached');
  await expect(page.getByRole('heading', { name: '1 most recent entry' })).toBeVisible();
  page.errors = page.errors.filter((text) => !text.includes('ERR_CONNECTION_REFUSED'));
  await page.getByRole('button', { name: 'Try again' }).click();

  await expect(page.getByRole('heading', { name: '2 most recent entries' })).toBeVisible();
  await expect(page.getByRole('alert')).toHaveCount(0);
});

test('the count field uses the same rules as the server', async ({ page }) => {
  await page.goto('/');
  const requests = [];
  page.on('request', (request) => { if (request.url().includes('/data')) requests.push(request.url()); });

  await expect(page.getByLabel('Number of entries to get')).toHaveValue('10');
  await page.getByLabel('Number of entries to get').fill('101');
  await page.getByRole('button', { name: 'Get entries' }).click();

  await expect(page.locator('#count-error')).toHaveText('Number of entries must be an integer from 1 to 100.');
  await expect(page.getByLabel('Number of entries to get')).toHaveAttribute('aria-invalid', 'true');
  expect(requests).toEqual([]);
});

test('invalid fields are explained next to each field and nothing is sent', async ({ page }) => {
  await page.goto('/');
  const posts = [];
  page.on('request', (request) => { if (request.method() === 'POST') posts.push(request.url()); });

  await page.getByLabel('Notes').fill('   ');
  await page.getByLabel('Greeting').fill('é'.repeat(129));
  await expect(page.locator('#greeting-count')).toHaveText('129 / 128');
  await page.getByRole('button', { name: 'Add entry' }).click();

  await expect(page.locator('#notes-error')).toHaveText('Notes must not be empty or only whitespace.');
  await expect(page.locator('#greeting-error')).toHaveText('Greeting must be at most 128 characters (got 129).');
  await expect(page.getByLabel('Notes')).toBeFocused();
  expect(posts).toEqual([]);

  await page.getByLabel('Greeting').fill('é'.repeat(128));
  await expect(page.locator('#greeting-count')).toHaveText('128 / 128');
  await expect(page.locator('#greeting-error')).toHaveText('');
});

test('a server failure shows a message and trying again succeeds', async ({ page }) => {
  await page.goto('/');
  let failures = 1;
  await page.route('**/data', async (route) => {
    if (failures > 0 && route.request().method() === 'POST') {
      failures -= 1;
      await route.fulfill({
        status: 503,
        contentType: 'application/problem+json',
        body: JSON.stringify({ type: '/problems/database-unavailable', title: 'Database unavailable', status: 503, detail: 'The database cannot be reached right now; try again shortly.' }),
      });
    } else {
      await route.continue();
    }
  });
  const notes = unique('retried');

  await page.getByLabel('Notes').fill(notes);
  await page.getByLabel('Greeting').fill('after a 503');
  await page.getByRole('button', { name: 'Add entry' }).click();
  await expect(page.getByRole('alert')).toContainText('Database unavailable');
  page.errors = page.errors.filter((text) => !text.includes('503'));
  await page.getByRole('button', { name: 'Try again' }).click();

  await expect(page.getByRole('status')).toContainText(`You added this to the database: ${notes}`);
  await expect(page.getByRole('alert')).toHaveCount(0);
});

test('an entry whose answer was lost is stored once when sent again', async ({ page, request }) => {
  await page.goto('/');
  const keys = [];
  let lost = 1;
  await page.route('**/data', async (route) => {
    if (route.request().method() !== 'POST') return route.continue();
    keys.push(route.request().headers()['idempotency-key']);
    if (lost > 0) {
      lost -= 1;
      // The server stores the entry; its answer never reaches the page.
      const answer = await route.fetch();
      expect(answer.status()).toBe(201);
      return route.abort('connectionreset');
    }
    return route.continue();
  });
  const notes = unique('lost answer');

  await page.getByLabel('Notes').fill(notes);
  await page.getByLabel('Greeting').fill('sent twice');
  await page.getByRole('button', { name: 'Add entry' }).click();
  await expect(page.getByRole('alert')).toContainText('could not be reached');
  page.errors = page.errors.filter((text) => !text.includes('ERR_CONNECTION_RESET'));
  await page.getByRole('button', { name: 'Try again' }).click();

  await expect(page.getByRole('status')).toContainText(`You added this to the database: ${notes}`);
  expect(keys).toHaveLength(2);
  expect(keys[0]).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  expect(keys[1], 'Try again sends the same key').toBe(keys[0]);
  const listed = await (await request.get('/data?n=100')).json();
  expect(listed.items.filter((item) => item.notes === notes), 'stored once').toHaveLength(1);
});

test('each new entry gets a key of its own', async ({ page }) => {
  await page.goto('/');
  const keys = [];
  page.on('request', (sent) => {
    if (sent.method() === 'POST') keys.push(sent.headers()['idempotency-key']);
  });

  await addEntry(page, unique('first key'), 'one');
  await addEntry(page, unique('second key'), 'two');

  expect(keys).toHaveLength(2);
  expect(keys[0]).not.toBe(keys[1]);
});

test('a network failure while listing offers a retry', async ({ page }) => {
  await page.goto('/');
  let aborts = 1;
  await page.route('**/data?n=*', async (route) => {
    if (aborts > 0) {
      aborts -= 1;
      await route.abort('connectionrefused');
    } else {
      await route.continue();
    }
  });

  await page.getByRole('button', { name: 'Get entries' }).click();
  await expect(page.getByRole('alert')).toContainText('could not be reached');
  page.errors = page.errors.filter((text) => !text.includes('ERR_CONNECTION_REFUSED'));
  await page.getByRole('button', { name: 'Try again' }).click();

  await expect(page.getByRole('heading', { name: /most recent entr/ })).toBeVisible();
});

test('an empty table and the loading state are announced', async ({ page }) => {
  await page.goto('/');
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  await page.route('**/data?n=*', async (route) => {
    await held;
    await route.fulfill({ status: 200, contentType: 'application/json', body: '{"items":[]}' });
  });

  await page.getByRole('button', { name: 'Get entries' }).click();
  await expect(page.getByText('Loading entries…')).toBeVisible();
  await expect(page.locator('.results')).toHaveAttribute('aria-busy', 'true');
  release();

  await expect(page.getByText('No entries yet.')).toBeVisible();
  await expect(page.locator('.results')).toHaveAttribute('aria-busy', 'false');
});

test('everything works from the keyboard alone', async ({ page }) => {
  await page.goto('/');
  const notes = unique('typed');
  // The WASM app mounts after the load event: a Tab pressed before its form
  // exists moves focus nowhere (seen once in CI, 2026-12-02).
  await expect(page.getByLabel('Notes')).toBeVisible();

  await page.keyboard.press('Tab');
  await expect(page.getByLabel('Notes')).toBeFocused();
  await page.keyboard.type(notes);
  await page.keyboard.press('Tab');
  await expect(page.getByLabel('Greeting')).toBeFocused();
  await page.keyboard.type('no mouse');
  await page.keyboard.press('Enter');
  await expect(page.getByRole('status')).toContainText(notes);

  await page.getByLabel('Number of entries to get').focus();
  await page.keyboard.press('Control+A');
  await page.keyboard.type('1');
  await page.keyboard.press('Enter');
  await expect(page.getByRole('heading', { name: '1 most recent entry' })).toBeVisible();
  await expect(page.getByRole('table')).toContainText(notes);
});

test('a 360 px wide screen needs no horizontal scrolling', async ({ page }) => {
  await page.setViewportSize({ width: 360, height: 740 });
  await page.goto('/');
  await addEntry(page, unique('W'.repeat(100)), 'x'.repeat(120));

  await page.getByRole('button', { name: 'Get entries' }).click();
  await expect(page.getByRole('table')).toBeVisible();

  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  expect(width).toBeLessThanOrEqual(360);
});

test('client-side routes get the app, unknown API paths a JSON 404', async ({ page, request }) => {
  const route = await page.goto('/some/client/route');
  expect(route.status()).toBe(200);
  await expect(page.getByRole('heading', { name: 'Add an entry' })).toBeVisible();

  const api = await request.get('/data/missing/path');
  expect(api.status()).toBe(404);
  expect(api.headers()['content-type']).toBe('application/problem+json');
});

test('the API documentation renders under its content security policy', async ({ page }) => {
  const response = await page.goto('/docs/');
  expect(response.headers()['content-security-policy']).toContain("script-src 'self';");

  await expect(page.getByRole('heading', { name: /Notes and greetings API/ })).toBeVisible();
  await expect(page.getByText('/data/{id}')).toBeVisible();
});
