#include "inference-worker/sim_engine.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>

#include "core/hash.h"

namespace sb::worker {
namespace {

constexpr const char* kVocabulary[] = {
    "the",       "switchboard", "routes",  "tokens",   "through",  "a",       "fair",    "queue",
    "and",       "every",       "request", "finds",    "its",      "worker",  "streams", "arrive",
    "in",        "order",       "while",   "safety",   "checks",   "each",    "word",    "before",
    "it",        "reaches",     "you",     "model",    "capacity", "is",      "shared",  "by",
    "weight",    "so",          "no",      "tenant",   "waits",    "long",    "cache",   "pages",
    "hold",      "context",     "batches", "grow",     "shrink",   "with",    "load",    "ledger",
    "counts",    "once",        "replies", "resume",   "after",    "drop",    "quiet",   "steady",
    "simulated", "accelerator", "answers", "politely", "today",    "clearly", "here",    "now"};
constexpr size_t kVocabularySize = sizeof(kVocabulary) / sizeof(kVocabulary[0]);

constexpr size_t kMaxCachedPrefixes = 256;

}  // namespace

std::vector<std::string> SimulatedEngine::ReplyTokens(const std::string& model,
                                                      const std::string& prompt) {
  const uint64_t seed = Fnv1a(model + "\n" + prompt);
  const size_t length = 12 + seed % 40;
  std::vector<std::string> tokens;
  tokens.reserve(length);
  for (size_t i = 0; i < length; ++i) {
    std::string word = kVocabulary[sim::Mix64(seed + i) % kVocabularySize];
    if (i == 0) {
      word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
      tokens.push_back(std::move(word));
    } else {
      tokens.push_back(" " + word);
    }
  }
  return tokens;
}

SimulatedEngine::SimulatedEngine(SimOptions options, bool run_thread)
    : options_(std::move(options)), run_thread_(run_thread) {
  if (run_thread_) {
    clock_ = std::make_unique<sim::RealStepClock>();
  } else {
    clock_ = std::make_unique<sim::VirtualClock>();
  }
  const sim::SchedulerOptions scheduler{
      .min_step_time = options_.max_steps_per_second > 0
                           ? absl::Seconds(1) / options_.max_steps_per_second
                           : absl::ZeroDuration(),
      .max_num_seqs = options_.max_num_seqs,
      .max_num_batched_tokens = options_.max_num_batched_tokens,
      .max_waiting = options_.max_waiting,
      .enable_prefix_caching = options_.enable_prefix_caching};
  for (const std::string& model : options_.models) {
    absl::StatusOr<sim::Deployment> deployment = sim::DeploymentFor(model, options_.num_gpus);
    if (!deployment.ok()) {
      std::fprintf(stderr, "simulated engine: %s\n", deployment.status().ToString().c_str());
      std::abort();
    }
    sim::CostModel cost(*std::move(deployment));
    const int64_t blocks =
        options_.kv_cache_blocks > 0
            ? options_.kv_cache_blocks
            : cost.KvCacheBlocks(options_.gpu_memory_utilization, sim::kBlockSize);
    replicas_.push_back(
        std::make_unique<sim::Replica>(std::move(cost), blocks, scheduler, *clock_));
  }
  if (run_thread_) {
    for (auto& r : replicas_) threads_.emplace_back([this, r = r.get()] { Loop(*r); });
  }
}

SimulatedEngine::~SimulatedEngine() {
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
  for (auto& r : replicas_) r->CancelAll();
}

sim::Replica* SimulatedEngine::Find(std::string_view model) const {
  for (const auto& r : replicas_) {
    if (r->model() == model) return r.get();
  }
  return nullptr;
}

const sim::Replica* SimulatedEngine::replica(std::string_view model) const { return Find(model); }

absl::Status SimulatedEngine::Submit(EngineRequest request,
                                     std::shared_ptr<TokenObserver> observer) {
  if (draining_.load()) return absl::FailedPreconditionError("the engine is draining");
  sim::Replica* r = Find(request.model);
  if (r == nullptr)
    return absl::InvalidArgumentError("model " + request.model + " is not served here");
  if (request.max_tokens <= 0) return absl::InvalidArgumentError("max_tokens must be positive");
  const std::string prompt = request.Flatten();
  std::vector<std::string> reply = ReplyTokens(request.model, prompt);
  absl::Status s = r->Submit(std::move(request), std::move(observer), prompt, std::move(reply));
  if (s.ok() && run_thread_) {
    std::lock_guard<std::mutex> lock(wake_mu_);
    wake_.notify_all();
  }
  return s;
}

void SimulatedEngine::Cancel(uint64_t id) {
  for (auto& r : replicas_) r->Cancel(id);
}

EngineLoad SimulatedEngine::Load() const {
  EngineLoad load;
  for (const auto& r : replicas_) {
    const sim::ReplicaStats st = r->Stats();
    load.running += st.running;
    load.waiting += st.waiting;
    load.kv_blocks_total += st.blocks_total;
    load.kv_blocks_free += st.blocks_free;
  }
  if (load.kv_blocks_total > 0) {
    load.kv_cache_usage =
        1.0 - static_cast<double>(load.kv_blocks_free) / static_cast<double>(load.kv_blocks_total);
  }
  for (const auto& r : replicas_) {
    const size_t room = kMaxCachedPrefixes - load.cached_prefixes.size();
    if (room == 0) break;
    for (uint64_t h : r->CachedPrefixes(room)) load.cached_prefixes.push_back(h);
  }
  return load;
}

bool SimulatedEngine::HasWork() const {
  return std::any_of(replicas_.begin(), replicas_.end(),
                     [](const auto& r) { return r->HasWork(); });
}

sim::StepResult SimulatedEngine::Step() {
  if (run_thread_) return {};
  std::lock_guard<std::mutex> lock(step_mu_);
  // A discrete-event simulation: every model with work has a step planned
  // from now; the one that ends first completes, and the clock moves there.
  sim::Replica* next = nullptr;
  absl::Time next_end = absl::InfiniteFuture();
  for (auto& r : replicas_) {
    const std::optional<absl::Time> end = r->Plan();
    if (end && *end < next_end) {
      next = r.get();
      next_end = *end;
    }
  }
  if (next == nullptr) return {};
  static_cast<sim::VirtualClock&>(*clock_).AdvanceTo(next_end);
  return next->Apply();
}

void SimulatedEngine::Loop(sim::Replica& replica) {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(wake_mu_);
      wake_.wait(lock, [&] { return stop_ || replica.HasWork(); });
      if (stop_) return;
    }
    replica.RunStep();
  }
}

void SimulatedEngine::Drain(absl::Time deadline) {
  draining_.store(true);
  if (run_thread_) {
    while (HasWork() && absl::Now() < deadline) {
      absl::SleepFor(std::min(absl::Milliseconds(1), deadline - absl::Now()));
    }
  } else {
    while (HasWork() && clock_->Now() < deadline) Step();
  }
  for (auto& r : replicas_) r->CancelAll();
}

size_t SimulatedEngine::running() const {
  size_t n = 0;
  for (const auto& r : replicas_) n += r->Stats().running;
  return n;
}

size_t SimulatedEngine::waiting() const {
  size_t n = 0;
  for (const auto& r : replicas_) n += r->Stats().waiting;
  return n;
}

}  // namespace sb::worker
