-- wrk script: POST one small non-streaming OpenAI chat completion, again and
-- again, and print the summary as one JSON line (after wrk's own report,
-- prefixed "JSON ").
--
--   BODY='{"model":...}' WRK_HEADERS='authorization: Bearer K|x-foo: bar' \
--     wrk -t1 -c10 -d10s -s chat.lua http://127.0.0.1:PORT/v1/chat/completions
--
-- Latency is wrk's: from writing a request to reading its whole response, per
-- kept-alive connection, percentiles from its histogram.
wrk.method = "POST"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = "application/json"
for h in string.gmatch(os.getenv("WRK_HEADERS") or "", "[^|]+") do
  local name, value = string.match(h, "^%s*([^:]+):%s*(.-)%s*$")
  if name then wrk.headers[name] = value end
end

function done(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  local ok = summary.requests - e.status
  io.write(string.format(
    'JSON {"requests":%d,"non2xx":%d,"socket_errors":%d,"seconds":%.3f,"rps":%.1f,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f}\n',
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout, seconds, ok / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
end
