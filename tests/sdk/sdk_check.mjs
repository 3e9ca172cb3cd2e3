// The official Anthropic TypeScript SDK against a Switchboard gateway, with
// only the base URL changed: messages (whole and streamed), stop sequences,
// token counting, models and typed errors. Run by tests/e2e (SdkTest) with
// ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY set; exits non-zero on the first
// failed check and prints what it saw.
import Anthropic from '@anthropic-ai/sdk';
import assert from 'node:assert/strict';

// SB_MODEL: the model to use (sim-small by default; an upstream engine's in
// the engines' end-to-end test).
const MODEL = process.env.SB_MODEL ?? 'sim-small';

const client = new Anthropic({ maxRetries: 0, timeout: 30_000 });
const params = {
  model: MODEL,
  max_tokens: 64,
  messages: [{ role: 'user', content: 'hello from the official SDK' }],
};

// Non-streaming.
const message = await client.messages.create(params);
assert.equal(message.type, 'message');
assert.equal(message.role, 'assistant');
assert.equal(message.model, MODEL);
assert.equal(message.content[0].type, 'text');
assert.ok(message.content[0].text.length > 0);
assert.ok(['end_turn', 'max_tokens'].includes(message.stop_reason), message.stop_reason);
assert.ok(message.usage.input_tokens > 0 && message.usage.output_tokens > 0);

// Streaming through the SDK's event accumulator: the same text and usage.
const stream = client.messages.stream(params);
let streamed = '';
stream.on('text', (t) => { streamed += t; });
const final = await stream.finalMessage();
assert.equal(streamed, message.content[0].text);
assert.equal(final.content[0].text, message.content[0].text);
assert.equal(final.stop_reason, message.stop_reason);
assert.equal(final.usage.output_tokens, message.usage.output_tokens);

// Raw events, in the documented order.
const raw = await client.messages.create({ ...params, stream: true });
const types = [];
for await (const event of raw) types.push(event.type);
assert.equal(types[0], 'message_start');
assert.equal(types[1], 'content_block_start');
assert.deepEqual(types.slice(-3), ['content_block_stop', 'message_delta', 'message_stop']);
assert.ok(types.slice(2, -3).every((t) => t === 'content_block_delta'));

// Stop sequences: the reply ends before the first occurrence, and says so.
const words = message.content[0].text.split(' ');
const stop = ' ' + words[Math.min(3, words.length - 1)];
const cut = message.content[0].text.indexOf(stop);
const stopped = await client.messages.create({ ...params, stop_sequences: [stop] });
assert.equal(stopped.stop_reason, 'stop_sequence');
assert.equal(stopped.stop_sequence, stop);
assert.equal(stopped.content[0].text, message.content[0].text.slice(0, cut));

// Token counting agrees with what the generation reports, system prompt
// (as text blocks) included. An upstream engine's count is an estimate
// (SB_EXACT_COUNTS=0): the upstream's own usage is what is billed.
const exact = process.env.SB_EXACT_COUNTS !== '0';
const counted = await client.messages.countTokens({ model: params.model, messages: params.messages });
if (exact) assert.equal(counted.input_tokens, message.usage.input_tokens);
const withSystem = { ...params, system: [{ type: 'text', text: 'You are terse, and kind.' }] };
const systemCounted = await client.messages.countTokens({
  model: withSystem.model, system: withSystem.system, messages: withSystem.messages });
const systemReply = await client.messages.create(withSystem);
if (exact) assert.equal(systemCounted.input_tokens, systemReply.usage.input_tokens);
assert.ok(systemCounted.input_tokens > counted.input_tokens, 'the system prompt is counted');

// The model list, through the SDK's pagination.
const models = [];
for await (const m of client.models.list()) models.push(m);
assert.ok(models.some((m) => m.id === MODEL && m.type === 'model'), JSON.stringify(models));
const one = await client.models.retrieve(MODEL);
assert.equal(one.id, MODEL);

// Errors come back as the SDK's typed errors.
await assert.rejects(
  new Anthropic({ apiKey: 'sk-sb-wrong', maxRetries: 0 }).messages.create(params),
  (e) => e instanceof Anthropic.AuthenticationError && e.status === 401);
await assert.rejects(
  client.messages.create({ ...params, model: 'no-such-model' }),
  (e) => e instanceof Anthropic.NotFoundError && e.error?.error?.type === 'not_found_error');
await assert.rejects(
  client.messages.create({ ...params, max_tokens: 0 }),
  (e) => e instanceof Anthropic.BadRequestError);

await assert.rejects(
  client.models.retrieve('no-such-model'),
  (e) => e instanceof Anthropic.NotFoundError);

console.log(`sdk checks passed: ${message.usage.output_tokens} tokens, ${types.length} stream events, ` +
            `${models.length} models`);
