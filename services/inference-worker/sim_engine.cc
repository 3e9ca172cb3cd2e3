#include "inference-worker/sim_engine.h"

#include <cctype>
#include <chrono>

#include "absl/time/clock.h"
#include "core/metrics.h"

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

uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

}  // namespace

int CountWordTokens(std::string_view text) {
  int n = 0;
  bool in_word = false;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c >= 0x80) {  // UTF-8 bytes count with the word
      if (!in_word) ++n;
      in_word = true;
    } else {
      in_word = false;
      if (!std::isspace(c)) ++n;
    }
  }
  return n;
}

std::vector<std::string> SimulatedEngine::ReplyTokens(const std::string& model,
                                                      const std::string& prompt) {
  const uint64_t seed = Fnv1a(model + "\n" + prompt);
  const size_t length = 12 + seed % 40;
  std::vector<std::string> tokens;
  tokens.reserve(length);
  for (size_t i = 0; i < length; ++i) {
    std::string word = kVocabulary[Mix(seed + i) % kVocabularySize];
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
    : options_(std::move(options)) {
  if (run_thread) thread_ = std::thread([this] { Loop(); });
}

SimulatedEngine::~SimulatedEngine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::Status SimulatedEngine::Submit(EngineRequest request, std::shared_ptr<TokenObserver> sink) {
  bool known = false;
  for (const auto& m : options_.models) known = known || m == request.model;
  if (!known) return absl::InvalidArgumentError("model " + request.model + " is not served here");
  if (request.max_tokens <= 0) return absl::InvalidArgumentError("max_tokens must be positive");
  Sequence seq;
  seq.tokens = ReplyTokens(request.model, request.Flatten());
  seq.request = std::move(request);
  seq.sink = std::move(sink);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_) return absl::FailedPreconditionError("the engine is draining");
    // Room for a batch and a queue behind it; a request waits for the next
    // step even when the batch has room.
    if (waiting_.size() + running_.size() >=
        static_cast<size_t>(options_.max_batch) + options_.max_waiting) {
      return absl::ResourceExhaustedError("engine queue is full");
    }
    waiting_.push_back(std::move(seq));
  }
  cv_.notify_all();
  return absl::OkStatus();
}

bool SimulatedEngine::Advance(Sequence& seq) {
  FinishInfo finish;
  finish.input_tokens = seq.request.input_tokens;
  auto done = [&](std::string reason) {
    finish.stop_reason = std::move(reason);
    finish.output_tokens = static_cast<int>(seq.next);
    seq.sink->OnFinished(finish);
    return true;
  };
  if (seq.cancelled) return done("cancelled");
  // A stop sequence ends the reply before it and is never shown, not even
  // its start: the last (longest stop - 1) bytes are held back until they
  // cannot begin one.
  std::string candidate = seq.generated + seq.tokens[seq.next];
  size_t longest = 0, hit = std::string::npos;
  std::string stop_hit;
  for (const auto& stop : seq.request.stop_sequences) {
    if (stop.empty()) continue;
    longest = std::max(longest, stop.size());
    const size_t pos = candidate.find(stop, seq.released);
    if (pos < hit) {
      hit = pos;
      stop_hit = stop;
    }
  }
  size_t end = hit;
  if (hit == std::string::npos) {
    const size_t keep = std::min(longest > 0 ? longest - 1 : 0, candidate.size() - seq.released);
    end = candidate.size() - keep;
  }
  seq.sink->OnToken(std::string_view(candidate).substr(seq.released, end - seq.released), 1);
  seq.released = end;
  seq.generated = std::move(candidate);
  ++seq.next;
  std::string reason;
  if (!stop_hit.empty()) {
    seq.generated.resize(hit);
    finish.stop_sequence = stop_hit;
    reason = "stop_sequence";
  } else if (static_cast<int>(seq.next) >= seq.request.max_tokens) {
    reason = "max_tokens";
  } else if (seq.next >= seq.tokens.size()) {
    reason = "end_turn";
  } else {
    return false;
  }
  // What was held back goes out before the end.
  if (seq.released < seq.generated.size()) {
    seq.sink->OnToken(std::string_view(seq.generated).substr(seq.released), 0);
  }
  return done(reason);
}

int SimulatedEngine::Step() {
  std::list<Sequence> batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    while (!waiting_.empty() && running_.size() < static_cast<size_t>(options_.max_batch)) {
      running_.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
    }
    batch.splice(batch.end(), running_);
    for (uint64_t id : cancels_) {
      for (auto& seq : batch) seq.cancelled = seq.cancelled || seq.request.id == id;
    }
    cancels_.clear();
  }
  int emitted = 0;
  for (auto it = batch.begin(); it != batch.end();) {
    const size_t before = it->next;
    const bool done = Advance(*it);
    emitted += static_cast<int>(it->next - before);
    it = done ? batch.erase(it) : std::next(it);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_.splice(running_.begin(), batch);
  }
  static auto& tokens = metrics::Default().GetCounter("sb_worker_tokens_generated_total",
                                                      "Output tokens produced by the engine");
  tokens.Inc(emitted);
  return emitted;
}

void SimulatedEngine::Loop() {
  const auto interval = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(1.0 / options_.tokens_per_second));
  auto next = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait(lock, [this] { return stop_ || !waiting_.empty() || !running_.empty(); });
    if (stop_) break;
    lock.unlock();
    Step();
    next += interval;
    const auto now = std::chrono::steady_clock::now();
    if (next < now) next = now;  // fell behind: do not burst to catch up
    lock.lock();
    cv_.wait_until(lock, next, [this] { return stop_; });
  }
}

void SimulatedEngine::Cancel(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& seq : waiting_) seq.cancelled = seq.cancelled || seq.request.id == id;
  cancels_.push_back(id);  // a running one may be in the step's batch now
}

EngineLoad SimulatedEngine::Load() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineLoad load;
  load.running = static_cast<int>(running_.size());
  load.waiting = static_cast<int>(waiting_.size());
  return load;
}

void SimulatedEngine::Drain(absl::Time deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  draining_ = true;
  const auto idle = [this] { return waiting_.empty() && running_.empty(); };
  while (!idle() && absl::Now() < deadline) {
    lock.unlock();
    absl::SleepFor(absl::Milliseconds(5));
    lock.lock();
  }
  for (auto& seq : waiting_) seq.cancelled = true;
  for (auto& seq : running_) cancels_.push_back(seq.request.id);
  if (!thread_.joinable()) return;  // the caller steps
  while (!idle()) {
    lock.unlock();
    absl::SleepFor(absl::Milliseconds(5));
    lock.lock();
  }
}

size_t SimulatedEngine::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_.size();
}

size_t SimulatedEngine::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiting_.size();
}

}  // namespace sb::worker
