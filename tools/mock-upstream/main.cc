// mock-upstream: a stand-in for vLLM's OpenAI-compatible server (and for
// Anthropic's Messages API) for tests and benchmarks. See mock_upstream.h
// for the routes and the modes.
//
//   mock-upstream --port=8000 --ttft_ms=50 --tokens_per_second=100
#include <csignal>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "core/log.h"
#include "tools/mock-upstream/mock_upstream.h"

ABSL_FLAG(std::string, host, "127.0.0.1", "Address to listen on");
ABSL_FLAG(int, port, 8000, "Port to listen on (0: any free port, printed at start)");
ABSL_FLAG(int, threads, 2, "Server threads");
ABSL_FLAG(std::string, models, "mock-model", "Comma-separated models listed by /v1/models");
ABSL_FLAG(int, reply_tokens, 32, "Tokens in a reply when max_tokens and stop allow");
ABSL_FLAG(int, ttft_ms, 0, "Time to the first token, ms");
ABSL_FLAG(double, tokens_per_second, 0,
          "Tokens per second per stream after the first (0: unpaced)");
ABSL_FLAG(std::string, mode, "", "Default mode for requests that name none (see x-mock-mode)");
ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn, error");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  sb::InitLogging("mock-upstream", absl::GetFlag(FLAGS_log_level));
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // the server threads inherit the mask

  sb::mock::MockUpstreamOptions options;
  options.host = absl::GetFlag(FLAGS_host);
  options.port = absl::GetFlag(FLAGS_port);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.models = absl::StrSplit(absl::GetFlag(FLAGS_models), ',', absl::SkipEmpty());
  options.reply_tokens = absl::GetFlag(FLAGS_reply_tokens);
  options.ttft_ms = absl::GetFlag(FLAGS_ttft_ms);
  options.tokens_per_second = absl::GetFlag(FLAGS_tokens_per_second);
  options.default_mode = absl::GetFlag(FLAGS_mode);
  sb::mock::MockUpstream mock(options);
  if (auto st = mock.Start(); !st.ok()) {
    spdlog::critical("cannot start: {}", st.ToString());
    return 1;
  }
  spdlog::info("listening on {}:{} (upstream_url {})", options.host, mock.port(), mock.base_url());
  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("signal {}: stopping", sig);
  mock.Stop();
  return 0;
}
