// The official OpenAI TypeScript SDK against a Switchboard gateway, with
// only the base URL changed. Run by tests/e2e (OpenAiSdkTest) with
// OPENAI_BASE_URL and OPENAI_API_KEY set; exits non-zero on the first failed
// check and prints what it saw.
import OpenAI from 'openai';
import assert from 'node:assert/strict';

// SB_MODEL: the model to use (sim-small by default; an upstream engine's in
// the engines' end-to-end test).
const MODEL = process.env.SB_MODEL ?? 'sim-small';

const client = new OpenAI({ maxRetries: 0, timeout: 30_000 });
const params = {
  model: MODEL,
  max_completion_tokens: 64,
  messages: [
    { role: 'system', content: 'be brief' },
    { role: 'developer', content: 'be kind' },
    { role: 'user', content: [{ type: 'text', text: 'hello from the official OpenAI SDK' }] },
  ],
};

// Non-streaming.
const completion = await client.chat.completions.create(params);
assert.equal(completion.object, 'chat.completion');
assert.ok(completion.id.startsWith('chatcmpl-'), completion.id);
assert.equal(completion.model, MODEL);
const choice = completion.choices[0];
assert.equal(choice.message.role, 'assistant');
assert.ok(choice.message.content.length > 0);
assert.ok(['stop', 'length'].includes(choice.finish_reason), choice.finish_reason);
assert.ok(completion.usage.prompt_tokens > 0 && completion.usage.completion_tokens > 0);
assert.equal(completion.usage.total_tokens,
             completion.usage.prompt_tokens + completion.usage.completion_tokens);

// Streaming with the usage chunk before [DONE]: the same text and counts.
const stream = await client.chat.completions.create({
  ...params, stream: true, stream_options: { include_usage: true } });
let streamed = '';
let usage = null;
let finish = null;
let chunks = 0;
for await (const chunk of stream) {
  ++chunks;
  assert.equal(chunk.object, 'chat.completion.chunk');
  if (chunk.usage) {
    assert.equal(chunk.choices.length, 0, 'the usage chunk has no choices');
    usage = chunk.usage;
    continue;
  }
  const c = chunk.choices[0];
  streamed += c.delta.content ?? '';
  if (c.finish_reason) finish = c.finish_reason;
}
assert.equal(streamed, choice.message.content);
assert.equal(finish, choice.finish_reason);
assert.ok(usage, 'include_usage sends a usage chunk');
assert.equal(usage.completion_tokens, completion.usage.completion_tokens);
assert.equal(usage.prompt_tokens, completion.usage.prompt_tokens);

// The SDK's stream helper accumulates the same message.
const runner = client.chat.completions.stream({ ...params });
const final = await runner.finalChatCompletion();
assert.equal(final.choices[0].message.content, choice.message.content);

// Stop sequences (a string, or a list): the reply ends before the first one.
const words = choice.message.content.split(' ');
const stop = ' ' + words[Math.min(3, words.length - 1)];
const cut = choice.message.content.indexOf(stop);
const stopped = await client.chat.completions.create({ ...params, stop });
assert.equal(stopped.choices[0].finish_reason, 'stop');
assert.equal(stopped.choices[0].message.content, choice.message.content.slice(0, cut));
const stoppedList = await client.chat.completions.create({ ...params, stop: [stop, 'never'] });
assert.equal(stoppedList.choices[0].message.content, choice.message.content.slice(0, cut));

// Models.
const models = [];
for await (const m of client.models.list()) models.push(m);
assert.ok(models.some((m) => m.id === MODEL && m.object === 'model'), JSON.stringify(models));
assert.equal((await client.models.retrieve(MODEL)).id, MODEL);

// Typed errors, each with the shape {error: {message, type, param, code}}.
await assert.rejects(
  new OpenAI({ apiKey: 'sk-sb-wrong', maxRetries: 0 }).chat.completions.create(params),
  (e) => e instanceof OpenAI.AuthenticationError && e.status === 401 && e.code === 'invalid_api_key');
await assert.rejects(
  client.chat.completions.create({ ...params, n: 2 }),
  (e) => e instanceof OpenAI.BadRequestError && e.param === 'n' && typeof e.message === 'string');
await assert.rejects(
  client.chat.completions.create({
    ...params,
    messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://x/y.png' } }] }] }),
  (e) => e instanceof OpenAI.BadRequestError && e.param === 'messages[0].content[0]');
await assert.rejects(
  client.chat.completions.create({ ...params, tools: [{ type: 'function', function: { name: 'f' } }] }),
  (e) => e instanceof OpenAI.BadRequestError && e.param === 'tools');
await assert.rejects(
  client.chat.completions.create({ ...params, model: 'no-such-model' }),
  (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
await assert.rejects(client.models.retrieve('no-such-model'), (e) => e instanceof OpenAI.NotFoundError);

console.log(`openai sdk checks passed: ${completion.usage.completion_tokens} tokens, ${chunks} chunks, ` +
            `${models.length} models`);
