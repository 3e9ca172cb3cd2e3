// The one interface every engine implements: the built-in simulated
// accelerator now, an OpenAI-compatible upstream adapter later.
//
// An engine takes requests, produces tokens on its own threads and hands
// them to the request's sink. A sink may refuse a token (its consumer is
// slow); the engine then offers the same token again on a later step, so a
// slow client holds back only its own sequence.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace sb::worker {

struct EngineRequest {
  std::string request_id;
  std::string model;
  std::string prompt;  // the conversation, flattened
  int input_tokens = 0;
  int max_tokens = 0;
  std::vector<std::string> stop_sequences;
};

struct FinishInfo {
  std::string stop_reason;  // end_turn, max_tokens, stop_sequence, cancelled
  std::string stop_sequence;
  int input_tokens = 0;
  int output_tokens = 0;
};

class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  // False: no room now, offer it again later.
  virtual bool OnToken(const std::string& text, int index) = 0;
  // False: no room now, offer it again later. Called exactly once with true.
  virtual bool OnFinished(const FinishInfo& info) = 0;
  // The consumer has gone away: the engine finishes the sequence as
  // "cancelled" at its next step and frees its resources.
  virtual bool cancelled() const = 0;
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual std::vector<std::string> Models() const = 0;
  // Exact token count of `text` under this engine's tokenizer.
  virtual int CountTokens(std::string_view text) const = 0;
  // InvalidArgument for a model this engine does not serve,
  // ResourceExhausted when its queue is full (overload, not a failure: the
  // scheduler must not take the worker for dead).
  virtual absl::Status Submit(EngineRequest request, std::shared_ptr<GenerationSink> sink) = 0;
};

}  // namespace sb::worker
