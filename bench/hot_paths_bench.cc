// Per-token and per-request costs on the gateway's path, to compare with
// each other (the machines are shared: read ratios, not absolutes).
//
//   ninja -C build hot_paths_bench && build/bench/hot_paths_bench
#include <benchmark/benchmark.h>

#include <string>

#include "core/metrics.h"
#include "core/ulid.h"
#include "gateway/budgets/budgets.h"
#include "gateway/dialects/anthropic.h"
#include "gateway/dialects/openai.h"
#include "json/bounded_json.h"
#include "safety/gate.h"
#include "safety/rules.h"

namespace {

// One streamed token framed as an Anthropic content_block_delta event.
void BM_SseTextDelta(benchmark::State& state) {
  const std::string token = " ledger";
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        sb::gateway::anthropic_events::TextDelta(token, "01JD0000000000000000000000:42"));
  }
}
BENCHMARK(BM_SseTextDelta);

// The same token as an OpenAI chat.completion.chunk.
void BM_OpenAiChunk(benchmark::State& state) {
  sb::gateway::OpenAiDialect dialect;
  auto stream = dialect.NewStream({"chatcmpl-01JD0000000000000000000000", 1700000000}, {});
  stream->Start({"sim-small", 3});
  for (auto _ : state) benchmark::DoNotOptimize(stream->Text(" ledger"));
}
BENCHMARK(BM_OpenAiChunk);

// The rules over a window of text: normalised (normalize.h), then every
// rule family (rules.h).
void BM_PiiScanWindow(benchmark::State& state) {
  std::string window;
  while (window.size() < static_cast<size_t>(state.range(0))) {
    window += "the quick brown fox mails nobody at 4111 and jumps ";
  }
  window.resize(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(sb::safety::Scan(window));
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_PiiScanWindow)->Arg(64)->Arg(256)->Arg(1024);

// The hold-back gate on a reply, token by token (5-byte tokens of English
// with digits and a word or two that keep text waiting): its throughput in
// bytes of reply a second, what one core of safety moderates.
void BM_OutputGate(benchmark::State& state) {
  std::string reply;
  while (reply.size() < 4096) {
    reply += "Your order 10442 ships on 2026-11-30; reply to this note or call the desk. ";
  }
  for (auto _ : state) {
    sb::safety::OutputGate gate;
    size_t released = 0;
    for (size_t at = 0; at < reply.size(); at += 5) {
      released += gate.Push(std::string_view(reply).substr(at, 5)).release.size();
    }
    released += gate.Finish().release.size();
    benchmark::DoNotOptimize(released);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(reply.size()));
}
BENCHMARK(BM_OutputGate);

void BM_ParseMessagesRequest(benchmark::State& state) {
  const std::string body =
      R"({"model":"sim-small","max_tokens":256,"stream":true,"system":"be brief",)"
      R"("messages":[{"role":"user","content":"hello there"},)"
      R"({"role":"assistant","content":[{"type":"text","text":"hi, how can I help?"}]},)"
      R"({"role":"user","content":"tell me about ledgers"}]})";
  sb::gateway::AnthropicDialect dialect;
  for (auto _ : state) {
    auto json = sb::json::ParseObject(body);
    benchmark::DoNotOptimize(dialect.Parse(*json, sb::gateway::ParseMode::kGenerate));
  }
}
BENCHMARK(BM_ParseMessagesRequest);

// What a hostile body costs: 4 MiB of '[' (refused at the nesting cap).
void BM_ParseNestingBomb(benchmark::State& state) {
  const std::string bomb(4 << 20, '[');
  for (auto _ : state) benchmark::DoNotOptimize(sb::json::ParseObject(bomb));
}
BENCHMARK(BM_ParseNestingBomb);

void BM_UlidNext(benchmark::State& state) {
  sb::UlidGenerator ids;
  const absl::Time now = absl::Now();
  for (auto _ : state) benchmark::DoNotOptimize(ids.Next(now));
}
BENCHMARK(BM_UlidNext);

// The gateway's budget check on every generation (issue 13): a lookup of
// the org's and the key's budgets among `range(0)` budgets (half of them
// per key), for an org with both and one with none.
void BM_BudgetCheck(benchmark::State& state) {
  struct NoSource final : sb::gateway::BudgetSource {
    absl::StatusOr<std::vector<sb::gateway::BudgetRow>> Load() override {
      return std::vector<sb::gateway::BudgetRow>{};
    }
  } source;
  sb::gateway::BudgetCache cache(source);
  std::vector<sb::gateway::BudgetRow> rows;
  for (int i = 0; i < state.range(0); ++i) {
    const std::string org = "org-" + std::to_string(i / 2);
    rows.push_back({org, i % 2 ? "key-" + std::to_string(i) : "", 500'000'000, 1'000});
  }
  cache.Replace(std::move(rows));
  const std::string with = "org-" + std::to_string(state.range(0) / 4), key = "key-1";
  const std::string without = "org-unbudgeted";
  bool odd = false;
  for (auto _ : state) {
    benchmark::DoNotOptimize(cache.Exhausted(odd ? with : without, key));
    odd = !odd;
  }
}
BENCHMARK(BM_BudgetCheck)->Arg(10)->Arg(10'000);

void BM_CounterInc(benchmark::State& state) {
  auto& c = sb::metrics::Default().GetCounter("bench_total", "bench");
  for (auto _ : state) c.Inc();
}
BENCHMARK(BM_CounterInc)->Threads(1)->Threads(2);

void BM_HistogramObserve(benchmark::State& state) {
  auto& h = sb::metrics::Default().GetHistogram("bench_seconds", "bench");
  double v = 0.001;
  for (auto _ : state) {
    h.Observe(v);
    v = v > 10 ? 0.001 : v * 1.7;
  }
}
BENCHMARK(BM_HistogramObserve)->Threads(1)->Threads(2);

}  // namespace

BENCHMARK_MAIN();
