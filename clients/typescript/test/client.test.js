// The client against the real `api` binary: BASE_URL names it (`cargo
// xtask test --only clients` starts one on a fresh database).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ApiProblem, createNotesClient, readProblem } from '../src/client.js';

const baseUrl = process.env.BASE_URL;
if (!baseUrl) {
  throw new Error('BASE_URL names no running api: `cargo xtask test --only clients` starts one');
}
const client = createNotesClient(baseUrl, { maxWaitMs: 200 });

/** A string no other test uses. */
function unique(label) {
  return `${label} ${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
}

/**
 * The problem a call throws.
 * @param {() => Promise<unknown>} call
 */
async function problemOf(call) {
  try {
    await call();
  } catch (error) {
    assert.ok(error instanceof ApiProblem, `an ApiProblem, not ${error}`);
    return error;
  }
  assert.fail('the call succeeded');
}

/** How many stored entries have these notes. */
async function stored(notes) {
  const { items } = await client.listEntries({ n: 100 });
  return items.filter((item) => item.notes === notes).length;
}

test('an entry is created, and sent again with its key it is replayed, not stored again', async () => {
  const notes = unique('typed');
  const first = await client.createEntry({ notes, greeting: 'hello' });
  const again = await client.createEntry(
    { notes, greeting: 'hello' },
    { idempotencyKey: first.idempotencyKey },
  );

  assert.equal(first.replayed, false);
  assert.match(first.idempotencyKey, /^[0-9a-f-]{36}$/);
  assert.equal(first.location, `/data/${first.record.id}`);
  assert.equal(again.replayed, true);
  assert.deepEqual(again.record, first.record);
  assert.equal(await stored(notes), 1);
});

test('a write whose answer is lost is sent again with the same key and stored once', async () => {
  const notes = unique('lost answer');
  const keys = [];
  let lose = 1;
  /** @type {typeof fetch} */
  const flaky = async (input, init) => {
    const request = new Request(input, init);
    keys.push(request.headers.get('idempotency-key'));
    const response = await fetch(request);
    if (lose > 0) {
      lose -= 1;
      // The server stored it; the client never hears.
      throw new TypeError('fetch failed: the connection was reset');
    }
    return response;
  };
  const lossy = createNotesClient(baseUrl, { fetch: flaky, maxWaitMs: 50 });

  const created = await lossy.createEntry({ notes, greeting: 'twice sent' });

  assert.equal(keys.length, 2);
  assert.equal(keys[1], keys[0], 'the same key both times');
  assert.equal(created.replayed, true, 'the second answer replays the first');
  assert.equal(await stored(notes), 1);
});

test('a 503 is retried after Retry-After with the same key', async () => {
  const notes = unique('after a 503');
  let refuse = 1;
  /** @type {typeof fetch} */
  const refusing = async (input, init) => {
    if (refuse > 0) {
      refuse -= 1;
      return new Response(
        JSON.stringify({ type: '/problems/database-unavailable', title: 'Database unavailable', status: 503 }),
        { status: 503, headers: { 'content-type': 'application/problem+json', 'retry-after': '5' } },
      );
    }
    return fetch(new Request(input, init));
  };
  const patient = createNotesClient(baseUrl, { fetch: refusing, maxWaitMs: 50 });

  const created = await patient.createEntry({ notes, greeting: 'hi' });

  assert.equal(created.replayed, false);
  assert.equal(await stored(notes), 1);
});

test('entries are listed newest first, a page at a time, and read by id', async () => {
  const label = unique('paged');
  const ids = [];
  for (const i of [1, 2, 3]) {
    ids.push((await client.createEntry({ notes: `${label} ${i}`, greeting: 'hi' })).record.id);
  }

  const first = await client.listEntries({ n: 2 });
  assert.deepEqual(first.items.map((item) => item.id).slice(0, 2), [ids[2], ids[1]]);
  assert.equal(first.next_before, ids[1]);
  const next = await client.listEntries({ n: 2, before: first.next_before ?? undefined });
  assert.equal(next.items[0].id, ids[0]);
  const read = await client.getEntry(ids[0]);
  assert.equal(read.notes, `${label} 1`);
  assert.match(read.created_at, /Z$/);
});

test('every refusal is a problem document of its type', async () => {
  const invalidFields = await problemOf(() => client.createEntry({ notes: '', greeting: 'hi' }));
  assert.equal(invalidFields.status, 422);
  assert.equal(invalidFields.type, '/problems/invalid-fields');
  assert.deepEqual(invalidFields.problem.errors?.map((error) => error.field), ['notes']);

  const invalidQuery = await problemOf(() => client.listEntries({ n: 0 }));
  assert.equal(invalidQuery.status, 400);
  assert.equal(invalidQuery.type, '/problems/invalid-query');

  const notFound = await problemOf(() => client.getEntry(2 ** 52));
  assert.equal(notFound.status, 404);
  assert.equal(notFound.type, 'about:blank');

  const key = globalThis.crypto.randomUUID();
  await client.createEntry({ notes: unique('keyed'), greeting: 'hi' }, { idempotencyKey: key });
  const reused = await problemOf(() =>
    client.createEntry({ notes: unique('another'), greeting: 'hi' }, { idempotencyKey: key }),
  );
  assert.equal(reused.status, 422);
  assert.equal(reused.type, '/problems/idempotency-key-reused');

  const badKey = await problemOf(() =>
    client.createEntry({ notes: unique('bad key'), greeting: 'hi' }, { idempotencyKey: 'short' }),
  );
  assert.equal(badKey.status, 400);
  assert.equal(badKey.type, '/problems/invalid-idempotency-key');
});

test('problems of requests the typed calls cannot make are read the same way', async () => {
  const cases = [
    { body: '{"notes":', type: 'application/json', status: 400, problem: '/problems/malformed-body' },
    { body: 'notes=hi', type: 'text/plain', status: 415, problem: '/problems/unsupported-media-type' },
    { body: 'x'.repeat(17 * 1024), type: 'application/json', status: 413, problem: '/problems/body-too-large' },
  ];
  for (const { body, type, status, problem } of cases) {
    const response = await fetch(`${baseUrl}/data`, {
      method: 'POST',
      headers: { 'content-type': type },
      body,
    });
    const read = await readProblem(response);
    assert.equal(read.status, status, problem);
    assert.equal(read.type, problem);
  }
  const wrongMethod = await fetch(`${baseUrl}/data`, { method: 'PUT' });
  const read = await readProblem(wrongMethod);
  assert.equal(read.status, 405);
  assert.equal(wrongMethod.headers.get('allow')?.includes('POST'), true);
});
