// Test helpers for the simulator: an observer that records what it is told.
#pragma once

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "inference-worker/engine.h"
#include "inference-worker/sim_engine.h"

namespace sb::worker::sim::testing {

class Recorder : public TokenObserver {
 public:
  explicit Recorder(const SimulatedEngine* engine = nullptr) : engine_(engine) {}

  void OnToken(std::string_view text, int tokens) override {
    EXPECT_FALSE(finished) << "a token after the end";
    if (tokens > 0 && token_calls == 0 && engine_ != nullptr) first_token_at = engine_->Now();
    pieces.emplace_back(text);
    token_calls += tokens;
  }
  void OnFinished(const FinishInfo& f) override {
    EXPECT_FALSE(finished) << "finished twice";
    finished = true;
    info = f;
    if (engine_ != nullptr) finished_at = engine_->Now();
  }

  std::string Text() const {
    std::string s;
    for (const auto& p : pieces) s += p;
    return s;
  }

  std::vector<std::string> pieces;
  int token_calls = 0;
  bool finished = false;
  FinishInfo info;
  absl::Time first_token_at = absl::InfinitePast();
  absl::Time finished_at = absl::InfinitePast();

 private:
  const SimulatedEngine* engine_;
};

inline EngineRequest Req(int max_tokens, std::string user = "hello", std::string system = "",
                         uint64_t id = 0) {
  EngineRequest r;
  r.id = id;
  r.request_id = "r" + std::to_string(id);
  r.model = "sim-small";
  r.system = std::move(system);
  r.messages = {{"user", std::move(user)}};
  r.input_tokens = CountWordTokens(r.Flatten());
  r.max_tokens = max_tokens;
  return r;
}

// `n` distinct word tokens, "<tag>0 <tag>1 ...".
inline std::string Words(int n, const std::string& tag = "w") {
  std::string s;
  for (int i = 0; i < n; ++i) {
    if (i > 0) s += ' ';
    s += tag + std::to_string(i);
  }
  return s;
}

inline std::string Joined(const std::vector<std::string>& tokens) {
  std::string s;
  for (const auto& t : tokens) s += t;
  return s;
}

inline void RunUntilIdle(SimulatedEngine& e, int max_steps = 1000000) {
  for (int i = 0; i < max_steps && e.HasWork(); ++i) e.Step();
}

}  // namespace sb::worker::sim::testing
