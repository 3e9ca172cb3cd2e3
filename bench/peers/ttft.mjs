// Time to the first content delta of streamed OpenAI chat completions.
//
//   node ttft.mjs --url=http://127.0.0.1:28000/v1/chat/completions \
//     --header='authorization: Bearer KEY' --model=mock-model --max_tokens=16 \
//     --requests=1000 --warmup=50 --concurrency=1
//
// Each of --concurrency loops sends one request at a time on its own
// kept-alive connection. TTFT is measured from just before the request is
// written to the arrival of the first `data:` event whose
// choices[0].delta.content is non-empty (a role-only first chunk does not
// count). The rest of the stream is read to [DONE] before the next request.
// Prints one JSON line: requests, errors, ttft_p50_ms, ttft_p99_ms (nearest
// rank), mean, max.
import http from 'node:http';

function arg(name, fallback) {
  const hit = process.argv.find((a) => a.startsWith(`--${name}=`));
  return hit === undefined ? fallback : hit.slice(name.length + 3);
}
const url = new URL(arg('url'));
const headers = {'content-type': 'application/json'};
for (const a of process.argv.filter((x) => x.startsWith('--header='))) {
  const h = a.slice('--header='.length);
  const i = h.indexOf(':');
  headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
}
const requests = Number(arg('requests', '1000'));
const warmup = Number(arg('warmup', '50'));
const concurrency = Number(arg('concurrency', '1'));
const body = JSON.stringify({
  model: arg('model', 'mock-model'),
  max_tokens: Number(arg('max_tokens', '16')),
  stream: true,
  messages: [{role: 'user', content: arg('prompt', 'Say hello in one short sentence.')}],
});
headers['content-length'] = Buffer.byteLength(body);

// One socket per loop: keep-alive, never more than one request on it.
function oneRequest(agent) {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    let ttft = null;
    let buf = '';
    let done = false;
    const finish = (err) => {
      if (done) return;
      done = true;
      resolve(err ? {err} : ttft === null ? {err: 'no content delta'} : {ttft});
    };
    const req = http.request(
        {host: url.hostname, port: url.port, path: url.pathname, method: 'POST', headers, agent},
        (res) => {
          if (res.statusCode !== 200) {
            res.resume();
            res.on('end', () => finish(`HTTP ${res.statusCode}`));
            return;
          }
          res.setEncoding('utf8');
          res.on('data', (chunk) => {
            if (ttft !== null) return;  // only the first content delta matters; drain the rest
            buf += chunk;
            let nl;
            while (ttft === null && (nl = buf.indexOf('\n')) >= 0) {
              const line = buf.slice(0, nl).trim();
              buf = buf.slice(nl + 1);
              if (!line.startsWith('data:')) continue;
              const data = line.slice(5).trim();
              if (data === '[DONE]') continue;
              try {
                const content = JSON.parse(data).choices?.[0]?.delta?.content;
                if (typeof content === 'string' && content.length > 0) {
                  ttft = Number(process.hrtime.bigint() - t0) / 1e6;
                }
              } catch { /* a partial or foreign event: ignore */ }
            }
          });
          res.on('end', () => finish(null));
          res.on('error', (e) => finish(String(e)));
        });
    req.on('error', (e) => finish(String(e)));
    req.end(body);
  });
}

async function loop(count, out, errors) {
  const agent = new http.Agent({keepAlive: true, maxSockets: 1});
  for (let i = 0; i < count; i++) {
    const r = await oneRequest(agent);
    if (r.err) errors.push(r.err); else out.push(r.ttft);
  }
  agent.destroy();
}

async function run(total) {
  const out = [];
  const errors = [];
  const per = Math.ceil(total / concurrency);
  await Promise.all(Array.from({length: concurrency}, () => loop(per, out, errors)));
  return {out, errors};
}

await run(warmup);
const {out, errors} = await run(requests);
out.sort((a, b) => a - b);
const rank = (p) => out.length ? out[Math.max(0, Math.ceil((p / 100) * out.length) - 1)] : null;
const r3 = (x) => (x === null ? null : Math.round(x * 1000) / 1000);
console.log(JSON.stringify({
  requests: out.length,
  errors: errors.length,
  first_error: errors[0] ?? null,
  concurrency,
  ttft_p50_ms: r3(rank(50)),
  ttft_p99_ms: r3(rank(99)),
  ttft_mean_ms: r3(out.length ? out.reduce((a, b) => a + b, 0) / out.length : null),
  ttft_max_ms: r3(out.length ? out[out.length - 1] : null),
}));
