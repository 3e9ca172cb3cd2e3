#include "inference-worker/sim/replica.h"

#include <algorithm>
#include <thread>

#include "inference-worker/sim/tokenizer.h"

namespace sb::worker::sim {
namespace {

// vLLM's buckets (vllm/v1/metrics/loggers.py).
const std::vector<double>& TtftBuckets() {
  static const std::vector<double> b = {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
                                        0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
                                        20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
  return b;
}
const std::vector<double>& TokenLatencyBuckets() {
  static const std::vector<double> b = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
                                        0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
  return b;
}
const std::vector<double>& RequestLatencyBuckets() {
  static const std::vector<double> b = {0.3,  0.5,   0.8,   1.0,   1.5,   2.0,    2.5,
                                        5.0,  10.0,  15.0,  20.0,  30.0,  40.0,   50.0,
                                        60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
  return b;
}

int BlocksFor(int64_t tokens) { return static_cast<int>((tokens + kBlockSize - 1) / kBlockSize); }

}  // namespace

struct Replica::Sequence {
  EngineRequest request;
  std::shared_ptr<TokenObserver> observer;
  std::vector<std::string> reply;
  std::vector<uint32_t> reply_ids;
  std::vector<uint32_t> ids;  // prompt, then the output sampled so far
  int prompt_tokens = 0;
  int generated = 0;
  int num_computed = 0;  // tokens whose KV entries exist
  std::vector<int> blocks;
  std::vector<uint64_t> hashes;  // of ids' full blocks, as far as computed
  size_t num_cached_blocks = 0;  // blocks[0, n) are registered in the cache
  int cache_hit = 0;             // prompt tokens found in the prefix cache when first admitted
  int cache_breakpoint = 0;      // prompt tokens up to the request's last cache breakpoint
  uint64_t arrival_order = 0;
  bool cancel_requested = false;
  bool started = false;
  absl::Time arrival;
  absl::Time last_token;
  // The reply's text and how much of it the observer has: the last
  // (longest stop - 1) bytes are held back while a stop could begin there.
  std::string text;
  size_t released = 0;

  int Length() const { return static_cast<int>(ids.size()); }
};

Replica::Metrics::Metrics(const std::string& model)
    : running(metrics::Default().GetGauge("vllm:num_requests_running",
                                          "Number of requests in model execution batches.",
                                          {{"model_name", model}})),
      waiting(metrics::Default().GetGauge("vllm:num_requests_waiting",
                                          "Number of requests waiting to be processed.",
                                          {{"model_name", model}})),
      kv_usage(metrics::Default().GetGauge("vllm:kv_cache_usage_perc",
                                           "KV-cache usage. 1 means 100 percent usage.",
                                           {{"model_name", model}})),
      prefix_queries(metrics::Default().GetCounter(
          "vllm:prefix_cache_queries_total",
          "Prefix cache queries, in terms of number of queried tokens.", {{"model_name", model}})),
      prefix_hits(metrics::Default().GetCounter(
          "vllm:prefix_cache_hits_total", "Prefix cache hits, in terms of number of cached tokens.",
          {{"model_name", model}})),
      preemptions(metrics::Default().GetCounter("vllm:num_preemptions_total",
                                                "Cumulative number of preemption from the engine.",
                                                {{"model_name", model}})),
      prompt_tokens(metrics::Default().GetCounter("vllm:prompt_tokens_total",
                                                  "Number of prefill tokens processed.",
                                                  {{"model_name", model}})),
      generation_tokens(metrics::Default().GetCounter("vllm:generation_tokens_total",
                                                      "Number of generation tokens processed.",
                                                      {{"model_name", model}})),
      tokens_generated(metrics::Default().GetCounter("sb_worker_tokens_generated_total",
                                                     "Output tokens produced by the engine")),
      ttft(metrics::Default().GetHistogram("vllm:time_to_first_token_seconds",
                                           "Histogram of time to first token in seconds.",
                                           {{"model_name", model}}, TtftBuckets())),
      itl(metrics::Default().GetHistogram("vllm:inter_token_latency_seconds",
                                          "Histogram of inter-token latency in seconds.",
                                          {{"model_name", model}}, TokenLatencyBuckets())),
      e2e(metrics::Default().GetHistogram("vllm:e2e_request_latency_seconds",
                                          "Histogram of e2e request latency in seconds.",
                                          {{"model_name", model}}, RequestLatencyBuckets())),
      queue_time(
          metrics::Default().GetHistogram("vllm:request_queue_time_seconds",
                                          "Histogram of time spent in WAITING phase for request.",
                                          {{"model_name", model}}, RequestLatencyBuckets())) {}

Replica::Replica(CostModel cost, int64_t kv_blocks, SchedulerOptions options, StepClock& clock)
    : cost_(std::move(cost)),
      options_(options),
      clock_(clock),
      metrics_(cost_.deployment().served_name),
      kv_(kv_blocks) {}

Replica::~Replica() = default;

absl::Status Replica::Submit(EngineRequest request, std::shared_ptr<TokenObserver> observer,
                             std::string_view prompt, std::vector<std::string> reply) {
  auto s = std::make_unique<Sequence>();
  s->ids = WordTokenIds(prompt);
  if (s->ids.empty()) s->ids.push_back(TokenId(""));  // a prefill needs one token
  s->prompt_tokens = s->Length();
  if (const size_t bp = request.CacheBreakpointBytes(); bp > 0) {
    s->cache_breakpoint = static_cast<int>(WordTokenIds(prompt.substr(0, bp)).size());
  }
  s->reply_ids.reserve(reply.size());
  for (const auto& t : reply) {
    const std::vector<uint32_t> word = WordTokenIds(t);
    s->reply_ids.push_back(word.empty() ? TokenId(t) : word.front());
  }
  s->reply = std::move(reply);
  const int longest =
      s->Length() + std::min<int>(request.max_tokens, static_cast<int>(s->reply.size()));
  s->request = std::move(request);
  s->observer = std::move(observer);
  std::lock_guard<std::mutex> lock(mu_);
  if (BlocksFor(longest) > kv_.total()) {
    return absl::InvalidArgumentError("the request needs " + std::to_string(BlocksFor(longest)) +
                                      " KV blocks; the cache has " + std::to_string(kv_.total()));
  }
  // Room for a full batch and a queue behind it (the worker registers
  // their sum as its capacity).
  if (live_.size() >= static_cast<size_t>(options_.max_num_seqs) + options_.max_waiting) {
    return absl::ResourceExhaustedError("engine queue is full");
  }
  s->arrival = clock_.Now();
  s->arrival_order = next_arrival_++;
  Sequence* raw = s.get();
  live_.emplace(raw, std::move(s));
  // Behind every waiting request of the same or a higher priority.
  auto pos = std::find_if(waiting_.begin(), waiting_.end(), [&](const Sequence* w) {
    return w->request.priority < raw->request.priority;
  });
  waiting_.insert(pos, raw);
  UpdateGauges();
  return absl::OkStatus();
}

void Replica::Cancel(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [raw, s] : live_) {
    if (s->request.id == id) s->cancel_requested = true;
  }
}

bool Replica::HasWork() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !running_.empty() || !waiting_.empty();
}

bool Replica::Reserve(Sequence& s, int tokens) {
  const int need = BlocksFor(tokens) - static_cast<int>(s.blocks.size());
  if (need <= 0) return true;
  if (kv_.free() < need) return false;
  for (int i = 0; i < need; ++i) s.blocks.push_back(*kv_.Allocate());
  return true;
}

void Replica::ReleaseBlocks(Sequence& s) {
  // Tail first, so that a sequence's last blocks are evicted before its
  // first ones (which other requests are likelier to share).
  for (auto it = s.blocks.rbegin(); it != s.blocks.rend(); ++it) kv_.Release(*it);
  s.blocks.clear();
  s.num_cached_blocks = 0;
  s.num_computed = 0;
}

void Replica::CacheFullBlocks(Sequence& s) {
  if (!options_.enable_prefix_caching) return;
  const size_t full = static_cast<size_t>(s.num_computed / kBlockSize);
  if (full <= s.num_cached_blocks) return;
  ExtendBlockHashes(s.ids, full, s.hashes);
  for (size_t b = s.num_cached_blocks; b < full; ++b) kv_.MarkCached(s.blocks[b], s.hashes[b]);
  s.num_cached_blocks = full;
}

bool Replica::LessDeserving(const Sequence* a, const Sequence* b) {
  // "Less" = more deserving: higher priority, then earlier arrival.
  if (a->request.priority != b->request.priority) return a->request.priority > b->request.priority;
  return a->arrival_order < b->arrival_order;
}

void Replica::Preempt(Sequence* victim) {
  ReleaseBlocks(*victim);
  running_.erase(std::find(running_.begin(), running_.end(), victim));
  waiting_.push_front(victim);
  ++preemptions_;
  metrics_.preemptions.Inc();
}

std::optional<absl::Time> Replica::Plan() {
  std::vector<Event> events;
  std::optional<absl::Time> end;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (planned_) return planned_->start + planned_->duration;
    const absl::Time now = clock_.Now();
    std::vector<Sequence*> cancelled;
    for (Sequence* s : running_) {
      if (s->cancel_requested) cancelled.push_back(s);
    }
    for (Sequence* s : waiting_) {
      if (s->cancel_requested) cancelled.push_back(s);
    }
    for (Sequence* s : cancelled) Finish(s, "cancelled", now, events);

    Planned p;
    p.start = now;
    // vLLM's priority policy: a full batch makes room for a waiting request
    // of a higher priority than some running one, preempting the least
    // deserving (lowest priority, then latest arrival).
    while (!waiting_.empty() && running_.size() >= static_cast<size_t>(options_.max_num_seqs)) {
      Sequence* victim = *std::max_element(running_.begin(), running_.end(), LessDeserving);
      if (victim->request.priority >= waiting_.front()->request.priority) break;
      p.preempted.push_back(victim->request.id);
      ReleaseBlocks(*victim);
      running_.erase(std::find(running_.begin(), running_.end(), victim));
      // At the head of its own priority: it arrived before the others there.
      auto pos = std::find_if(waiting_.begin(), waiting_.end(), [&](const Sequence* w) {
        return w->request.priority <= victim->request.priority;
      });
      waiting_.insert(pos, victim);
      ++preemptions_;
      metrics_.preemptions.Inc();
    }
    // Preemptions for memory (below) stop the queue's admission this step;
    // these do not.
    const size_t priority_preemptions = p.preempted.size();
    int budget = options_.max_num_batched_tokens;
    // Running sequences first.
    size_t i = 0;
    while (i < running_.size() && budget > 0) {
      Sequence* s = running_[i];
      const int n = std::min(s->Length() - s->num_computed, budget);
      bool preempted_self = false;
      while (!Reserve(*s, s->num_computed + n)) {
        Sequence* victim = *std::max_element(running_.begin(), running_.end(), LessDeserving);
        const size_t at = std::find(running_.begin(), running_.end(), victim) - running_.begin();
        auto planned = std::find_if(p.work.begin(), p.work.end(),
                                    [&](const auto& w) { return w.first == victim; });
        if (planned != p.work.end()) {
          budget += planned->second;
          p.work.erase(planned);
        }
        p.preempted.push_back(victim->request.id);
        Preempt(victim);
        if (victim == s) {
          preempted_self = true;
          break;
        }
        if (at < i) --i;
      }
      if (preempted_self) break;
      p.work.emplace_back(s, n);
      budget -= n;
      ++i;
    }
    // Then the queue, unless memory is short.
    while (p.preempted.size() == priority_preemptions && !waiting_.empty() &&
           running_.size() < static_cast<size_t>(options_.max_num_seqs) && budget > 0) {
      Sequence* s = waiting_.front();
      const int length = s->Length();
      std::vector<int> hits;
      if (options_.enable_prefix_caching) {
        // The last token is always computed: its logits are needed.
        const size_t max_hit = static_cast<size_t>((length - 1) / kBlockSize);
        ExtendBlockHashes(s->ids, max_hit, s->hashes);
        hits = kv_.LookupPrefix(s->hashes, max_hit);
      }
      const int computed = static_cast<int>(hits.size()) * kBlockSize;
      const int n = std::min(length - computed, budget);
      const int64_t need = BlocksFor(computed + n) - static_cast<int64_t>(hits.size());
      if (kv_.free() - kv_.CountUnreferenced(hits) < need) break;
      kv_.Ref(hits);
      s->blocks = hits;
      s->num_cached_blocks = hits.size();
      s->num_computed = computed;
      Reserve(*s, computed + n);
      if (options_.enable_prefix_caching) {
        metrics_.prefix_queries.Inc(length);
        metrics_.prefix_hits.Inc(computed);
      }
      waiting_.pop_front();
      running_.push_back(s);
      if (!s->started) {
        s->started = true;
        s->cache_hit = computed;
        metrics_.queue_time.Observe(absl::ToDoubleSeconds(now - s->arrival));
      }
      p.work.emplace_back(s, n);
      budget -= n;
    }
    if (!p.work.empty()) {
      std::vector<SequenceWork> work;
      work.reserve(p.work.size());
      for (const auto& [s, n] : p.work)
        work.push_back({.new_tokens = n, .context = s->num_computed});
      p.duration = std::max(cost_.StepTime(work), options_.min_step_time);
      // Delivering the last step's tokens took the time since it ended: that
      // much of this step is already done, but no more than all of it.
      if (busy_until_ != absl::InfinitePast() && busy_until_ < now) {
        p.start = std::max(busy_until_, now - p.duration);
      }
      planned_ = std::move(p);
      end = planned_->start + planned_->duration;
    } else if (!p.preempted.empty()) {
      // Everything running was preempted; the queue runs next step. Keep
      // the preemptions visible with a zero-length step.
      planned_ = std::move(p);
      end = planned_->start;
    }
    UpdateGauges();
  }
  Deliver(events);
  return end;
}

void Replica::Sample(Sequence& s, absl::Time at, std::vector<Event>& events) {
  const std::string& token = s.reply[s.generated];
  std::string candidate = s.text + token;
  size_t longest = 0;
  size_t hit = std::string::npos;
  std::string stop_hit;
  for (const auto& stop : s.request.stop_sequences) {
    if (stop.empty()) continue;
    longest = std::max(longest, stop.size());
    const size_t pos = candidate.find(stop, s.released);
    if (pos < hit) {
      hit = pos;
      stop_hit = stop;
    }
  }
  size_t end = hit;
  if (hit == std::string::npos) {
    const size_t keep = std::min(longest > 0 ? longest - 1 : 0, candidate.size() - s.released);
    end = candidate.size() - keep;
  }
  std::string piece;
  if (end > s.released) {
    piece = candidate.substr(s.released, end - s.released);
    s.released = end;
  }
  events.push_back({.observer = s.observer, .text = std::move(piece), .tokens = 1});
  s.text = std::move(candidate);
  s.ids.push_back(s.reply_ids[s.generated]);
  ++s.generated;
  metrics_.generation_tokens.Inc();
  metrics_.tokens_generated.Inc();
  if (s.generated == 1) {
    metrics_.ttft.Observe(absl::ToDoubleSeconds(at - s.arrival));
    metrics_.prompt_tokens.Inc(s.prompt_tokens);
  } else {
    metrics_.itl.Observe(absl::ToDoubleSeconds(at - s.last_token));
  }
  s.last_token = at;
  if (!stop_hit.empty()) {
    s.text.resize(hit);
    Finish(&s, "stop_sequence", at, events);
    events.back().finish->stop_sequence = stop_hit;
  } else if (s.generated >= s.request.max_tokens) {
    Finish(&s, "max_tokens", at, events);
  } else if (s.generated >= static_cast<int>(s.reply.size())) {
    Finish(&s, "end_turn", at, events);
  }
}

void Replica::CacheUsage(const Sequence& s, FinishInfo& info) const {
  if (!s.started || !options_.enable_prefix_caching) return;
  // Written: the full blocks up to the breakpoint that were not found (the
  // last prompt token is always computed, never cached before it runs).
  const int written = std::min(s.cache_breakpoint, s.prompt_tokens - 1) / kBlockSize * kBlockSize;
  const int created = std::max(0, written - s.cache_hit);
  // The engine's prompt also holds the role markers, which the API's token
  // count leaves out: report in the API's tokens, in proportion.
  auto api_tokens = [&](int engine_tokens) {
    return static_cast<int>(static_cast<int64_t>(engine_tokens) * info.input_tokens /
                            std::max(1, s.prompt_tokens));
  };
  info.cache_read_tokens = api_tokens(s.cache_hit);
  info.cache_creation_tokens =
      std::min(api_tokens(created), info.input_tokens - info.cache_read_tokens);
}

void Replica::Finish(Sequence* s, std::string reason, absl::Time at, std::vector<Event>& events) {
  // What was held back goes out before the end (not after a cancel: nobody
  // reads it).
  if (reason != "cancelled" && s->text.size() > s->released) {
    events.push_back({.observer = s->observer, .text = s->text.substr(s->released), .tokens = 0});
    s->released = s->text.size();
  }
  FinishInfo info;
  info.stop_reason = std::move(reason);
  info.input_tokens = s->request.input_tokens;
  info.output_tokens = s->generated;
  CacheUsage(*s, info);
  events.push_back({.observer = s->observer, .finish = std::move(info)});
  metrics_.e2e.Observe(absl::ToDoubleSeconds(at - s->arrival));
  ReleaseBlocks(*s);
  if (auto it = std::find(running_.begin(), running_.end(), s); it != running_.end()) {
    running_.erase(it);
  }
  if (auto it = std::find(waiting_.begin(), waiting_.end(), s); it != waiting_.end()) {
    waiting_.erase(it);
  }
  live_.erase(s);
}

StepResult Replica::Apply() {
  std::vector<Event> events;
  StepResult r;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!planned_) return r;
    Planned p = std::move(*planned_);
    planned_.reset();
    const absl::Time at = p.start + p.duration;
    r.model = model();
    r.start = p.start;
    r.duration = p.duration;
    r.preempted = std::move(p.preempted);
    for (auto& [s, n] : p.work) {
      const bool decode = n == 1 && s->generated > 0 && s->num_computed == s->Length() - 1;
      r.scheduled.push_back(
          {.id = s->request.id, .tokens = n, .context = s->num_computed, .decode = decode});
      (decode ? r.decode_tokens : r.prefill_tokens) += n;
      s->num_computed += n;
      CacheFullBlocks(*s);
      if (s->num_computed == s->Length()) {
        Sample(*s, at, events);  // may finish (and free) s
        ++r.tokens_emitted;
      }
    }
    busy_until_ = running_.empty() && waiting_.empty() ? absl::InfinitePast() : at;
    UpdateGauges();
  }
  Deliver(events);
  return r;
}

StepResult Replica::RunStep() {
  // A CancelAll waiting for the step lock goes first: the stepping thread
  // would otherwise take the lock back at once, step after step (a mutex is
  // not fair), and a drain would wait for every sequence to end.
  if (cancel_waiters_.load() > 0) {
    std::this_thread::yield();
    return {};
  }
  std::lock_guard<std::mutex> step(step_mu_);
  const std::optional<absl::Time> end = Plan();
  if (!end) return {};
  clock_.Sleep(*end - clock_.Now());
  return Apply();
}

void Replica::CancelAll() {
  cancel_waiters_.fetch_add(1);
  std::lock_guard<std::mutex> step(step_mu_);
  cancel_waiters_.fetch_sub(1);
  std::vector<Event> events;
  {
    std::lock_guard<std::mutex> lock(mu_);
    planned_.reset();
    const absl::Time now = clock_.Now();
    while (!running_.empty()) Finish(running_.back(), "cancelled", now, events);
    while (!waiting_.empty()) Finish(waiting_.back(), "cancelled", now, events);
    UpdateGauges();
  }
  Deliver(events);
}

void Replica::UpdateGauges() {
  metrics_.running.Set(static_cast<double>(running_.size()));
  metrics_.waiting.Set(static_cast<double>(waiting_.size()));
  metrics_.kv_usage.Set(kv_.total() == 0 ? 0
                                         : 1.0 - static_cast<double>(kv_.free()) /
                                                     static_cast<double>(kv_.total()));
}

void Replica::Deliver(std::vector<Event>& events) {
  for (Event& e : events) {
    if (e.finish) {
      e.observer->OnFinished(*e.finish);
    } else {
      e.observer->OnToken(e.text, e.tokens);
    }
  }
}

ReplicaStats Replica::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  ReplicaStats st;
  st.running = static_cast<int>(running_.size());
  st.waiting = static_cast<int>(waiting_.size());
  st.blocks_total = kv_.total();
  st.blocks_free = kv_.free();
  st.blocks_cached = kv_.cached();
  st.blocks_in_use = kv_.total() - kv_.free();
  for (const Sequence* s : running_) st.tokens_stored += s->num_computed;
  st.preemptions = preemptions_;
  return st;
}

std::vector<uint64_t> Replica::CachedPrefixes(size_t limit) const {
  std::lock_guard<std::mutex> lock(mu_);
  return kv_.RecentHashes(limit);
}

}  // namespace sb::worker::sim
