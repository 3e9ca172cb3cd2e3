// A mock model server that speaks like vLLM's OpenAI-compatible server and
// like Anthropic's Messages API, for tests of the upstream engines and as
// the baseline of the gateway benchmark. It runs in-process (tests start it
// on port 0 and query what it saw) or as the `mock-upstream` binary.
//
// Routes:
//   POST /v1/chat/completions   OpenAI chat completions, streamed (SSE, with the
//                               include_usage chunk and [DONE]) or whole
//   POST /v1/messages           Anthropic Messages, streamed or whole
//   GET  /v1/models             the configured models
//   GET  /metrics               vllm:num_requests_running / _waiting /
//                               kv_cache_usage_perc reflecting live streams
//   GET  /mock/stats            counters and recent aborts as JSON
//   POST /mock/config           {"mode": "...", "waiting": N, "kv_cache_usage": x}
//   POST /mock/reset            zeroes counters and forgets aborts and bodies
//
// The reply is deterministic: the words of kMockReply, cycled, one token
// each, `reply_tokens` long unless max_tokens or a stop sequence ends it
// first (finish "length" / "stop" with vLLM's stop_reason = the string).
//
// Modes, per request: the header `x-mock-mode`, else a `[mock:...]` tag in
// the prompt, else the default mode (MockUpstreamOptions / /mock/config). A
// mode is a comma-separated list of
//   fail=N          answer status N (429, 500, 503, 529, ...) with an error body
//   ttft=MS         wait MS before the first token
//   tps=N           N tokens per second after it (0: as fast as possible)
//   tokens=N        reply length
//   truncate=K      end the body after K tokens with no [DONE] / message_stop
//   stall=K         after K tokens send nothing more and hold the connection
//   error_event=T   (Anthropic) after the first token send an error event of type T
//   cached=N        report N prompt tokens read from a prompt cache
//   cache_written=N (Anthropic) report N prompt tokens written to it
//   pii=email|card  the reply carries an e-mail address or card number after
//                   its third token, split across tokens
// e.g. `x-mock-mode: ttft=200,tps=50` or a prompt containing `[mock:fail=503]`.
//
// A client that leaves before the end is recorded as an abort with the time
// the mock noticed it (Aborts(), /mock/stats).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace sb::mock {

struct MockUpstreamOptions {
  std::string host = "127.0.0.1";
  int port = 0;
  int threads = 2;
  // Listed by /v1/models and used as model_name in /metrics; a request may
  // name any model.
  std::vector<std::string> models = {"mock-model"};
  int reply_tokens = 32;
  int ttft_ms = 0;
  double tokens_per_second = 0;  // 0: as fast as possible
  std::string default_mode;      // as x-mock-mode
};

struct MockAbort {
  uint64_t request = 0;  // the mock's own sequence number of the request
  std::string path;
  int tokens_sent = 0;
  std::chrono::steady_clock::time_point at;  // when the mock noticed
  int64_t unix_ms = 0;
};

struct MockStats {
  uint64_t requests = 0;   // generation requests received
  uint64_t completed = 0;  // answered in full (including failures it was told to produce)
  uint64_t aborted = 0;    // the client left first
  uint64_t failed = 0;     // answered with an error status by mode
  int active = 0;          // streams in progress
};

// The words of every reply, cycled.
extern const char* const kMockReply[10];
// The first `n` tokens of the reply.
std::vector<std::string> MockReplyTokens(int n);

class MockUpstream {
 public:
  explicit MockUpstream(MockUpstreamOptions options = {});
  ~MockUpstream();  // Stop()
  MockUpstream(const MockUpstream&) = delete;
  MockUpstream& operator=(const MockUpstream&) = delete;

  absl::Status Start();
  void Stop();
  int port() const;
  // http://host:port/v1, the value of --upstream_url.
  std::string base_url() const;

  MockStats Stats() const;
  std::vector<MockAbort> Aborts() const;
  // The last generation request's body and headers (names lower-cased).
  std::string LastRequestBody() const;
  std::map<std::string, std::string> LastRequestHeaders() const;
  void SetDefaultMode(std::string mode);
  // Reported by /metrics next to the live running count.
  void SetReportedLoad(int waiting, double kv_cache_usage);
  void Reset();

  struct State;  // internal

 private:
  std::shared_ptr<State> state_;
};

}  // namespace sb::mock
