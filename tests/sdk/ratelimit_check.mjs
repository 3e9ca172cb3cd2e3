// The official Anthropic and OpenAI TypeScript SDKs against a gateway whose
// org has limits of 60 requests a minute and one request at a time: a
// refusal is the SDK's typed RateLimitError carrying retry-after, and a
// client left to retry (as the SDKs do by default) succeeds by itself. Also: an Idempotency-Key sent through
// the SDKs gets the same reply twice. Run by tests/e2e with SWITCHBOARD_URL
// and SWITCHBOARD_KEY set; exits non-zero on the first failed check.
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import assert from 'node:assert/strict';

const base = process.env.SWITCHBOARD_URL;
const apiKey = process.env.SWITCHBOARD_KEY;

// Counts the HTTP calls an SDK makes (its retries included).
function counting() {
  const counter = { calls: 0 };
  counter.fetch = (url, init) => {
    counter.calls += 1;
    return fetch(url, init);
  };
  return counter;
}

// Holds the org's one concurrency slot: a long stream, read up to its
// first event. Returns a function that reads the rest.
async function hold(stream) {
  const it = (await stream)[Symbol.asyncIterator]();
  assert.equal((await it.next()).done, false);
  return async () => { while (!(await it.next()).done) { /* drain */ } };
}

// Sends with no retries until the limit refuses one; returns that error.
async function exhaust(send, isRateLimit) {
  for (let i = 0; i < 200; i += 1) {
    try {
      await send();
    } catch (e) {
      if (isRateLimit(e)) return e;
      throw e;
    }
  }
  throw new Error('200 requests and no rate limit');
}

// Anthropic.
{
  const params = { model: 'sim-small', max_tokens: 1, messages: [{ role: 'user', content: 'hi' }] };
  const counter = counting();
  const patient = new Anthropic({ baseURL: base, apiKey, maxRetries: 6, fetch: counter.fetch });

  // Refused while the slot is held (429, concurrency); the SDK's own
  // retries, after retry-after, get through once it is free.
  const release = await hold(patient.messages.create({ ...params, max_tokens: 150, stream: true }));
  counter.calls = 0;
  const waiting = patient.messages.create(params).withResponse();
  await release();
  const { data, response } = await waiting;
  assert.equal(data.type, 'message');
  assert.ok(counter.calls >= 2, `the SDK retried (${counter.calls} calls)`);
  assert.equal(response.headers.get('anthropic-ratelimit-requests-limit'), '60');
  assert.match(response.headers.get('anthropic-ratelimit-requests-reset'), /^\d{4}-\d\d-\d\dT/);

  // Requests per minute: the typed error, with retry-after.
  const strict = new Anthropic({ baseURL: base, apiKey, maxRetries: 0 });
  const refused = await exhaust(() => strict.messages.create(params),
                                (e) => e instanceof Anthropic.RateLimitError);
  assert.equal(refused.status, 429);
  assert.equal(refused.headers.get('retry-after'), '1', 'one request a second comes back');
  assert.equal(refused.error?.error?.type, 'rate_limit_error');
  assert.match(refused.error?.error?.message, /requests per minute \(60\)/);
  assert.equal(refused.headers.get('anthropic-ratelimit-requests-limit'), '60');
  assert.equal(refused.headers.get('anthropic-ratelimit-requests-remaining'), '0');

  // An Idempotency-Key through the SDK: its 429s do not consume the key,
  // and the second call is the first's reply.
  const key = `sdk-${Date.now()}`;
  const first = await patient.messages.create(params, { headers: { 'Idempotency-Key': key } });
  const again = await patient.messages.create(params, { headers: { 'Idempotency-Key': key } })
    .withResponse();
  assert.equal(again.data.id, first.id);
  assert.equal(again.response.headers.get('idempotent-replayed'), 'true');
}

// OpenAI (the same org: the same buckets).
{
  const params = { model: 'sim-small', max_tokens: 1, messages: [{ role: 'user', content: 'hi' }] };
  const counter = counting();
  const patient = new OpenAI({ baseURL: `${base}/v1`, apiKey, maxRetries: 6, fetch: counter.fetch });

  const release = await hold(patient.chat.completions.create({ ...params, max_tokens: 150, stream: true }));
  counter.calls = 0;
  const waiting = patient.chat.completions.create(params).withResponse();
  await release();
  const { data, response } = await waiting;
  assert.equal(data.object, 'chat.completion');
  assert.ok(counter.calls >= 2, `the SDK retried (${counter.calls} calls)`);
  assert.equal(response.headers.get('x-ratelimit-limit-requests'), '60');
  assert.match(response.headers.get('x-ratelimit-reset-requests'), /^(\d+m)?[0-9.]+m?s$/);

  const strict = new OpenAI({ baseURL: `${base}/v1`, apiKey, maxRetries: 0 });
  const refused = await exhaust(() => strict.chat.completions.create(params),
                                (e) => e instanceof OpenAI.RateLimitError);
  assert.equal(refused.status, 429);
  assert.equal(refused.headers.get('retry-after'), '1');
  assert.equal(refused.code, 'rate_limit_exceeded');
  assert.equal(refused.type, 'requests');
  assert.equal(refused.headers.get('x-ratelimit-limit-requests'), '60');
}

console.log('ratelimit sdk checks passed');
