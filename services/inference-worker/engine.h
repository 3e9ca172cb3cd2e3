// The one interface every engine implements: the simulated accelerator
// (sim_engine.h) and the adapters to OpenAI-compatible and Anthropic
// upstreams (upstream_engine.h).
//
// An engine takes structured requests and pushes what it generates to the
// request's observer, from its own threads. An observer never refuses a
// token: an upstream cannot be asked to offer it again later, so a slow
// consumer buffers (bounded by max_tokens) rather than holding the engine.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace sb::worker {

struct EngineMessage {
  std::string role;  // "user", "assistant" or "system"
  std::string text;  // its text blocks, joined
  // One of its blocks had cache_control: the prompt through this message is
  // to be cached (a breakpoint inside a message moves to its end).
  bool cache_breakpoint = false;
};

struct Sampling {
  std::optional<float> temperature;
  std::optional<float> top_p;
  std::optional<int> top_k;
};

struct EngineRequest {
  uint64_t id = 0;  // unique within the worker; Cancel() names it
  std::string request_id;
  std::string model;
  std::string system;
  bool system_cache_breakpoint = false;
  std::vector<EngineMessage> messages;
  int input_tokens = 0;  // under CountTokens; an upstream's own usage wins
  int max_tokens = 0;
  std::vector<std::string> stop_sequences;
  Sampling sampling;
  // Higher runs first and is preempted last; ties go to the earlier arrival.
  int priority = 0;
  std::string end_user_id;
  // `traceparent` for an engine reached over HTTP (its spans join the
  // request's trace); empty when the call carried no trace context.
  std::string traceparent;

  // The conversation as one text, for engines that need a single prompt.
  std::string Flatten() const;
  // How much of Flatten() lies up to the last cache breakpoint (0: none).
  size_t CacheBreakpointBytes() const;
};

struct FinishInfo {
  // end_turn, max_tokens, stop_sequence, cancelled, or error (see `error`).
  std::string stop_reason;
  std::string stop_sequence;
  int input_tokens = 0;  // every prompt token, the cached ones included
  int output_tokens = 0;
  // Of input_tokens: read from the engine's prompt cache, and written to it
  // at the request's cache breakpoints (Anthropic's cache_control).
  int cache_read_tokens = 0;
  int cache_creation_tokens = 0;
  // Set when stop_reason is "error": Unavailable for an overloaded upstream,
  // DeadlineExceeded for a timeout, Internal for anything else. Its message
  // is for the log, never for a client.
  absl::Status error;
};

class TokenObserver {
 public:
  virtual ~TokenObserver() = default;
  // Each piece of output in order, `tokens` tokens of it (an upstream may
  // send several in one chunk, or text with no token count of its own: 0).
  virtual void OnToken(std::string_view text, int tokens) = 0;
  // Exactly once, last, from any engine thread.
  virtual void OnFinished(const FinishInfo& info) = 0;
};

// What the engine holds now, reported to the scheduler with each heartbeat.
struct EngineLoad {
  int running = 0;
  int waiting = 0;
  int64_t kv_blocks_total = 0;  // 0: the engine does not know
  int64_t kv_blocks_free = 0;
  double kv_cache_usage = 0;  // 0..1
  // Hashes of the prefix blocks the engine has cached, most recent first.
  std::vector<uint64_t> cached_prefixes;
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual std::vector<std::string> Models() const = 0;
  // Token count of `text` under this engine's tokenizer (an estimate for an
  // upstream, whose usage report is then what is billed).
  virtual int CountTokens(std::string_view text) const = 0;
  // InvalidArgument for a model this engine does not serve or a request it
  // cannot run; ResourceExhausted when its queue is full (overload, not a
  // failure: the scheduler must not take the worker for dead);
  // FailedPrecondition once draining. On OK the observer gets OnFinished
  // exactly once; otherwise never.
  virtual absl::Status Submit(EngineRequest request, std::shared_ptr<TokenObserver> observer) = 0;
  // The consumer has gone: the engine stops the generation soon (an
  // upstream request is closed) and finishes it as "cancelled". Unknown or
  // finished ids are ignored.
  virtual void Cancel(uint64_t id) = 0;
  virtual EngineLoad Load() const = 0;
  // Refuses new work, lets what runs finish until `deadline`, cancels the
  // rest, and returns once every observer has had OnFinished.
  virtual void Drain(absl::Time deadline) = 0;
};

}  // namespace sb::worker
