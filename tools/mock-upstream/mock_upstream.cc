#include "tools/mock-upstream/mock_upstream.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "core/timers.h"
#include "http/http_server.h"

namespace sb::mock {

using json = nlohmann::json;

const char* const kMockReply[10] = {"The",   " quick", " brown", " fox", " jumps",
                                    " over", " the",   " lazy",  " dog", "."};

std::vector<std::string> MockReplyTokens(int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(kMockReply[i % 10]);
  return out;
}

namespace {

constexpr size_t kAbortsKept = 1000;

struct Mode {
  int fail = 0;
  int ttft_ms = -1;  // -1: the server's default
  double tps = -1;
  int tokens = -1;
  int truncate = -1;
  int stall = -1;
  bool no_done = false;  // end a complete OpenAI stream without "data: [DONE]"
  std::string error_event;
  // Prompt tokens reported as read from / written to a prompt cache (of the
  // prompt's words): OpenAI's prompt_tokens_details.cached_tokens,
  // Anthropic's cache_read_ and cache_creation_input_tokens.
  int cached = 0;
  int cache_written = 0;
  // "email" or "card": the reply carries one, split across tokens.
  std::string pii;
};

// The tokens of an e-mail address or card number cut mid-way, as a model's
// tokenizer would, after "write to" / "pay with".
std::vector<std::string> PiiTokens(const std::string& kind) {
  if (kind == "email") return {" write", " to", " jane", ".doe", "@exa", "mple", ".com", " today"};
  if (kind == "card") return {" pay", " with", " 4111", " 11", "11 1111", " 1111", " today"};
  return {};
}

// Applies `spec` over `mode` (later keys win).
void ParseMode(std::string_view spec, Mode& mode) {
  for (absl::string_view item :
       absl::StrSplit(absl::string_view(spec.data(), spec.size()), ',', absl::SkipWhitespace())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    auto& [k, v] = kv;
    k.erase(std::remove(k.begin(), k.end(), ' '), k.end());
    v.erase(std::remove(v.begin(), v.end(), ' '), v.end());
    int n = 0;
    double d = 0;
    if (k == "fail" && absl::SimpleAtoi(v, &n)) mode.fail = n;
    if (k == "ttft" && absl::SimpleAtoi(v, &n)) mode.ttft_ms = n;
    if (k == "tps" && absl::SimpleAtod(v, &d)) mode.tps = d;
    if (k == "tokens" && absl::SimpleAtoi(v, &n)) mode.tokens = n;
    if (k == "truncate" && absl::SimpleAtoi(v, &n)) mode.truncate = n;
    if (k == "stall" && absl::SimpleAtoi(v, &n)) mode.stall = n;
    if (k == "error_event") mode.error_event = v;
    if (k == "nodone") mode.no_done = true;
    if (k == "cached" && absl::SimpleAtoi(v, &n)) mode.cached = n;
    if (k == "cache_written" && absl::SimpleAtoi(v, &n)) mode.cache_written = n;
    if (k == "pii") mode.pii = v;
  }
}

// The text of a message's content: a string, or text blocks.
std::string ContentText(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  std::string out;
  if (content.is_array()) {
    for (const auto& block : content) {
      if (block.is_object() && block.value("type", "") == "text" && block.contains("text") &&
          block["text"].is_string()) {
        out += block["text"].get<std::string>();
      }
    }
  }
  return out;
}

int CountWords(std::string_view text) {
  int n = 0;
  bool in_word = false;
  for (char c : text) {
    const bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r';
    if (!space && !in_word) ++n;
    in_word = !space;
  }
  return n;
}

std::string Sse(const json& data) { return "data: " + data.dump() + "\n\n"; }
std::string Sse(const std::string& event, const json& data) {
  return "event: " + event + "\ndata: " + data.dump() + "\n\n";
}

int64_t UnixMs() { return absl::ToUnixMillis(absl::Now()); }

}  // namespace

struct MockUpstream::State : std::enable_shared_from_this<MockUpstream::State> {
  MockUpstreamOptions options;
  std::unique_ptr<http::Server> server;
  TimerThread timers;

  mutable std::mutex mu;
  MockStats stats;
  std::deque<MockAbort> aborts;
  std::string last_body;
  std::map<std::string, std::string> last_headers;
  std::string default_mode;
  int reported_waiting = 0;
  double reported_kv = 0;
  uint64_t next_request = 0;
  // Streams in progress, held here (a stalled one has nothing else holding
  // it) until they end, the client leaves or the mock stops.
  std::map<uint64_t, std::shared_ptr<void>> live;

  void Handle(std::shared_ptr<http::Exchange> ex);
  void Generate(std::shared_ptr<http::Exchange> ex, bool anthropic);
  void Control(std::shared_ptr<http::Exchange> ex);
  std::string Metrics() const;
  std::string StatsJson() const;
  void RecordAbort(uint64_t request, const std::string& path, int tokens) {
    std::lock_guard<std::mutex> lock(mu);
    ++stats.aborted;
    aborts.push_back({request, path, tokens, std::chrono::steady_clock::now(), UnixMs()});
    if (aborts.size() > kAbortsKept) aborts.pop_front();
  }
};

namespace {

// One generation in progress. Events are written one at a time: the next
// is scheduled only when the previous write has completed, so a client
// that leaves is noticed at once (OnClientGone) or at the next write.
class Generation : public std::enable_shared_from_this<Generation> {
 public:
  Generation(std::shared_ptr<MockUpstream::State> state, std::shared_ptr<http::Exchange> ex,
             uint64_t number, bool anthropic, std::string model, int prompt_tokens,
             std::vector<std::string> stops, int max_tokens, const Mode& mode)
      : state_(std::move(state)),
        ex_(std::move(ex)),
        number_(number),
        anthropic_(anthropic),
        model_(std::move(model)),
        prompt_tokens_(prompt_tokens),
        stops_(std::move(stops)),
        mode_(mode) {
    const auto& o = state_->options;
    ttft_ms_ = mode.ttft_ms >= 0 ? mode.ttft_ms : o.ttft_ms;
    tps_ = mode.tps >= 0 ? mode.tps : o.tokens_per_second;
    int n = mode.tokens >= 0 ? mode.tokens : o.reply_tokens;
    tokens_ = MockReplyTokens(n);
    if (const auto pii = PiiTokens(mode.pii); !pii.empty()) {
      tokens_.insert(tokens_.begin() + std::min<size_t>(3, tokens_.size()), pii.begin(), pii.end());
      n = static_cast<int>(tokens_.size());
    }
    limit_ = max_tokens > 0 && max_tokens < n ? max_tokens : n;
    hit_length_ = max_tokens > 0 && max_tokens < n;
    id_ = (anthropic_ ? "msg_mock_" : "chatcmpl-mock-") + std::to_string(number_);
  }

  // Runs the reply to the end and returns its pieces (text per token and
  // the finish), applying stop sequences.
  void Plan() {
    std::string text;
    for (int i = 0; i < limit_; ++i) {
      const size_t before = text.size();
      text += tokens_[i];
      ++generated_;
      for (const auto& s : stops_) {
        if (s.empty()) continue;
        const size_t from = before >= s.size() ? before - s.size() + 1 : 0;
        const size_t at = text.find(s, from);
        if (at != std::string::npos && (stop_at_ == std::string::npos || at < stop_at_)) {
          stop_at_ = at;
          stop_ = s;
        }
      }
      if (stop_at_ != std::string::npos) {
        pieces_.push_back(
            text.substr(std::min(before, stop_at_), stop_at_ - std::min(before, stop_at_)));
        return;
      }
      pieces_.push_back(tokens_[i]);
    }
  }

  std::string FinishReason() const {
    if (!stop_.empty()) return anthropic_ ? "stop_sequence" : "stop";
    if (hit_length_) return anthropic_ ? "max_tokens" : "length";
    return anthropic_ ? "end_turn" : "stop";
  }

  std::string Text() const {
    std::string out;
    for (const auto& p : pieces_) out += p;
    return out;
  }

  json Usage() const {
    if (anthropic_) {
      json u = InputUsage();
      u["output_tokens"] = generated_;
      return u;
    }
    json u = {{"prompt_tokens", prompt_tokens_},
              {"completion_tokens", generated_},
              {"total_tokens", prompt_tokens_ + generated_}};
    if (mode_.cached > 0) u["prompt_tokens_details"] = {{"cached_tokens", mode_.cached}};
    return u;
  }

  // Anthropic's: input_tokens leaves out what was read from or written to
  // the cache.
  json InputUsage() const {
    return {{"input_tokens", prompt_tokens_ - mode_.cached - mode_.cache_written},
            {"cache_creation_input_tokens", mode_.cache_written},
            {"cache_read_input_tokens", mode_.cached}};
  }

  std::string WholeBody() const {
    json j;
    if (anthropic_) {
      j = {{"id", id_},
           {"type", "message"},
           {"role", "assistant"},
           {"model", model_},
           {"content", json::array({{{"type", "text"}, {"text", Text()}}})},
           {"stop_reason", FinishReason()},
           {"stop_sequence", stop_.empty() ? json(nullptr) : json(stop_)},
           {"usage", Usage()}};
    } else {
      j = {{"id", id_},
           {"object", "chat.completion"},
           {"created", UnixMs() / 1000},
           {"model", model_},
           {"choices",
            json::array({{{"index", 0},
                          {"message", {{"role", "assistant"}, {"content", Text()}}},
                          {"logprobs", nullptr},
                          {"finish_reason", FinishReason()},
                          {"stop_reason", stop_.empty() ? json(nullptr) : json(stop_)}}})},
           {"usage", Usage()}};
    }
    return j.dump();
  }

  // A whole response, after the time its tokens would have taken.
  void RespondWhole() {
    const double ms = ttft_ms_ + (tps_ > 0 ? 1000.0 * generated_ / tps_ : 0);
    auto self = shared_from_this();
    auto respond = [self] {
      self->ex_->Respond(200, {{"content-type", "application/json"}}, self->WholeBody());
      std::lock_guard<std::mutex> lock(self->state_->mu);
      ++self->state_->stats.completed;
    };
    if (ms <= 0) {
      respond();
    } else {
      state_->timers.After(absl::Milliseconds(ms), respond);
    }
  }

  void StartStream() {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      ++state_->stats.active;
      state_->live[number_] = shared_from_this();
    }
    ex_->OnClientGone([weak = weak_from_this()] {
      if (auto self = weak.lock()) self->Gone();
    });
    ex_->StartStream(200, {{"content-type", "text/event-stream"}, {"cache-control", "no-cache"}});
    std::string head;
    if (anthropic_) {
      head = Sse("message_start", {{"type", "message_start"},
                                   {"message",
                                    {{"id", id_},
                                     {"type", "message"},
                                     {"role", "assistant"},
                                     {"model", model_},
                                     {"content", json::array()},
                                     {"stop_reason", nullptr},
                                     {"stop_sequence", nullptr},
                                     {"usage",
                                      [&] {
                                        json u = InputUsage();
                                        u["output_tokens"] = 1;
                                        return u;
                                      }()}}}}) +
             Sse("content_block_start", {{"type", "content_block_start"},
                                         {"index", 0},
                                         {"content_block", {{"type", "text"}, {"text", ""}}}}) +
             Sse("ping", {{"type", "ping"}});
    } else {
      head = Sse(Chunk({{"role", "assistant"}, {"content", ""}}, nullptr));
    }
    const bool paced = ttft_ms_ > 0 || tps_ > 0 || mode_.stall >= 0;
    if (!paced) {
      // The fast path: everything in one write.
      std::string all = head;
      for (int i = 0; i < static_cast<int>(pieces_.size()); ++i) {
        if (mode_.truncate >= 0 && i >= mode_.truncate) break;
        all += TokenEvent(i);
        if (i == 0 && !mode_.error_event.empty()) break;
      }
      sent_ = static_cast<int>(pieces_.size());
      if (mode_.truncate >= 0 || !mode_.error_event.empty()) {
        sent_ = std::min(sent_, mode_.truncate >= 0 ? mode_.truncate : 1);
        if (!mode_.error_event.empty()) all += ErrorEvent();
      } else {
        all += Tail();
      }
      Write(std::move(all), [self = shared_from_this()] { self->End(); });
      return;
    }
    Write(std::move(head),
          [self = shared_from_this()] { self->After(self->ttft_ms_, [self] { self->Next(); }); });
  }

 private:
  json Chunk(json delta, json finish, json stop_reason = nullptr) const {
    json choice = {{"index", 0},
                   {"delta", std::move(delta)},
                   {"logprobs", nullptr},
                   {"finish_reason", std::move(finish)}};
    if (!finish.is_null() || !stop_reason.is_null()) choice["stop_reason"] = stop_reason;
    return {{"id", id_},
            {"object", "chat.completion.chunk"},
            {"created", UnixMs() / 1000},
            {"model", model_},
            {"choices", json::array({std::move(choice)})}};
  }

  std::string TokenEvent(int i) const {
    if (anthropic_) {
      return Sse("content_block_delta",
                 {{"type", "content_block_delta"},
                  {"index", 0},
                  {"delta", {{"type", "text_delta"}, {"text", pieces_[i]}}}});
    }
    return Sse(Chunk({{"content", pieces_[i]}}, nullptr));
  }

  std::string ErrorEvent() const {
    return Sse("error", {{"type", "error"},
                         {"error", {{"type", mode_.error_event}, {"message", "Overloaded"}}}});
  }

  std::string Tail() const {
    if (anthropic_) {
      return Sse("content_block_stop", {{"type", "content_block_stop"}, {"index", 0}}) +
             Sse("message_delta",
                 {{"type", "message_delta"},
                  {"delta",
                   {{"stop_reason", FinishReason()},
                    {"stop_sequence", stop_.empty() ? json(nullptr) : json(stop_)}}},
                  {"usage", {{"output_tokens", generated_}}}}) +
             Sse("message_stop", {{"type", "message_stop"}});
    }
    std::string out =
        Sse(Chunk({{"content", ""}}, FinishReason(), stop_.empty() ? json(nullptr) : json(stop_)));
    if (include_usage_) {
      out += Sse(json{{"id", id_},
                      {"object", "chat.completion.chunk"},
                      {"created", UnixMs() / 1000},
                      {"model", model_},
                      {"choices", json::array()},
                      {"usage", Usage()}});
    }
    return mode_.no_done ? out : out + "data: [DONE]\n\n";
  }

 public:
  bool include_usage_ = false;

 private:
  void After(double ms, std::function<void()> fn) {
    if (ms <= 0) {
      fn();
    } else {
      state_->timers.After(absl::Microseconds(static_cast<int64_t>(ms * 1000)), std::move(fn));
    }
  }

  void Next() {
    if (Finished()) return;
    const int i = sent_;
    if (mode_.stall >= 0 && i >= mode_.stall) return;  // hold the connection, send nothing
    if (mode_.truncate >= 0 && i >= mode_.truncate) return End();
    if (i >= static_cast<int>(pieces_.size())) {
      return Write(Tail(), [self = shared_from_this()] { self->End(); });
    }
    ++sent_;
    std::string event = TokenEvent(i);
    if (i == 0 && !mode_.error_event.empty()) {
      return Write(event + ErrorEvent(), [self = shared_from_this()] { self->End(); });
    }
    Write(std::move(event), [self = shared_from_this()] {
      self->After(self->tps_ > 0 ? 1000.0 / self->tps_ : 0, [self] { self->Next(); });
    });
  }

  void Write(std::string data, std::function<void()> then) {
    ex_->Write(std::move(data), [self = shared_from_this(), then = std::move(then)](bool ok) {
      if (!ok) return self->Gone();
      then();
    });
  }

  bool Finished() {
    std::lock_guard<std::mutex> lock(mu_);
    return finished_;
  }

  // True for the first caller only.
  bool MarkFinished() {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return false;
    finished_ = true;
    return true;
  }

  void End() {
    if (!MarkFinished()) return;
    ex_->EndStream();
    std::shared_ptr<void> keep;  // released after the lock
    std::lock_guard<std::mutex> lock(state_->mu);
    --state_->stats.active;
    ++state_->stats.completed;
    keep = std::move(state_->live[number_]);
    state_->live.erase(number_);
  }

  void Gone() {
    if (!MarkFinished()) return;
    state_->RecordAbort(number_, ex_->request().path, sent_);
    std::shared_ptr<void> keep;  // released after the lock
    std::lock_guard<std::mutex> lock(state_->mu);
    --state_->stats.active;
    keep = std::move(state_->live[number_]);
    state_->live.erase(number_);
  }

  const std::shared_ptr<MockUpstream::State> state_;
  const std::shared_ptr<http::Exchange> ex_;
  const uint64_t number_;
  const bool anthropic_;
  const std::string model_;
  const int prompt_tokens_;
  const std::vector<std::string> stops_;
  const Mode mode_;
  int ttft_ms_ = 0;
  double tps_ = 0;
  int limit_ = 0;
  bool hit_length_ = false;
  std::vector<std::string> tokens_;
  std::string id_;
  std::vector<std::string> pieces_;  // text of each token sent
  int generated_ = 0;
  size_t stop_at_ = std::string::npos;
  std::string stop_;
  int sent_ = 0;
  std::mutex mu_;
  bool finished_ = false;
};

}  // namespace

void MockUpstream::State::Handle(std::shared_ptr<http::Exchange> ex) {
  const auto& req = ex->request();
  if (req.method == "POST" && req.path == "/v1/chat/completions") return Generate(ex, false);
  if (req.method == "POST" && req.path == "/v1/messages") return Generate(ex, true);
  if (req.method == "GET" && req.path == "/v1/models") {
    json data = json::array();
    for (const auto& m : options.models) {
      data.push_back({{"id", m}, {"object", "model"}, {"owned_by", "mock"}, {"created", 0}});
    }
    return ex->Respond(200, {{"content-type", "application/json"}},
                       json{{"object", "list"}, {"data", data}}.dump());
  }
  if (req.method == "GET" && req.path == "/metrics") {
    return ex->Respond(200, {{"content-type", "text/plain; version=0.0.4"}}, Metrics());
  }
  if (req.method == "GET" && req.path == "/mock/stats") {
    return ex->Respond(200, {{"content-type", "application/json"}}, StatsJson());
  }
  if (req.method == "POST" && (req.path == "/mock/config" || req.path == "/mock/reset")) {
    return Control(ex);
  }
  ex->Respond(404, {{"content-type", "application/json"}},
              http::ErrorJson("not_found_error", "no route " + req.path));
}

void MockUpstream::State::Control(std::shared_ptr<http::Exchange> ex) {
  if (ex->request().path == "/mock/reset") {
    std::lock_guard<std::mutex> lock(mu);
    const int active = stats.active;
    stats = {};
    stats.active = active;
    aborts.clear();
    last_body.clear();
    last_headers.clear();
    return ex->Respond(200, {{"content-type", "application/json"}}, "{}");
  }
  json body = json::parse(ex->request().body, nullptr, false);
  if (!body.is_object()) {
    return ex->Respond(400, {{"content-type", "application/json"}},
                       http::ErrorJson("invalid_request_error", "body must be a JSON object"));
  }
  std::lock_guard<std::mutex> lock(mu);
  if (body.contains("mode") && body["mode"].is_string()) default_mode = body["mode"];
  if (body.contains("waiting") && body["waiting"].is_number()) reported_waiting = body["waiting"];
  if (body.contains("kv_cache_usage") && body["kv_cache_usage"].is_number()) {
    reported_kv = body["kv_cache_usage"];
  }
  ex->Respond(200, {{"content-type", "application/json"}}, json{{"mode", default_mode}}.dump());
}

void MockUpstream::State::Generate(std::shared_ptr<http::Exchange> ex, bool anthropic) {
  const auto& req = ex->request();
  json body = json::parse(req.body, nullptr, false);
  uint64_t number;
  std::string mode_spec;
  {
    std::lock_guard<std::mutex> lock(mu);
    number = ++next_request;
    ++stats.requests;
    last_body = req.body;
    last_headers = req.headers;
    mode_spec = default_mode;
  }
  auto error = [&](int status, const std::string& type, const std::string& message) {
    {
      std::lock_guard<std::mutex> lock(mu);
      ++stats.failed;
      ++stats.completed;
    }
    const std::string out =
        anthropic
            ? http::ErrorJson(type, message)
            : json{{"error", {{"message", message}, {"type", type}, {"code", status}}}}.dump();
    http::Headers headers = {{"content-type", "application/json"}};
    if (status == 429 || status == 503 || status == 529) headers.push_back({"retry-after", "1"});
    ex->Respond(status, std::move(headers), out);
  };
  if (!body.is_object() || !body.contains("messages") || !body["messages"].is_array()) {
    return error(400, "invalid_request_error", "mock: messages must be an array");
  }

  std::string prompt;
  if (anthropic && body.contains("system")) prompt += ContentText(body["system"]) + "\n";
  for (const auto& m : body["messages"]) {
    if (m.is_object() && m.contains("content")) prompt += ContentText(m["content"]) + "\n";
  }
  Mode mode;
  ParseMode(mode_spec, mode);
  if (const size_t tag = prompt.find("[mock:"); tag != std::string::npos) {
    const size_t end = prompt.find(']', tag);
    if (end != std::string::npos)
      ParseMode(std::string_view(prompt).substr(tag + 6, end - tag - 6), mode);
  }
  ParseMode(req.Header("x-mock-mode"), mode);
  if (mode.fail > 0) {
    const int s = mode.fail;
    const std::string type = s == 429   ? "rate_limit_error"
                             : s == 529 ? "overloaded_error"
                             : s >= 500 ? "api_error"
                                        : "invalid_request_error";
    return error(s, type, "mock upstream failure as asked (internal detail 7f3a)");
  }

  std::vector<std::string> stops;
  const char* stop_key = anthropic ? "stop_sequences" : "stop";
  if (body.contains(stop_key)) {
    const auto& s = body[stop_key];
    if (s.is_string()) stops.push_back(s.get<std::string>());
    if (s.is_array()) {
      for (const auto& x : s) {
        if (x.is_string()) stops.push_back(x.get<std::string>());
      }
    }
  }
  int max_tokens = 0;
  for (const char* key : {"max_completion_tokens", "max_tokens"}) {
    if (body.contains(key) && body[key].is_number_integer()) {
      max_tokens = body[key].get<int>();
      break;
    }
  }
  const std::string model = body.value("model", "");
  auto gen = std::make_shared<Generation>(shared_from_this(), ex, number, anthropic, model,
                                          CountWords(prompt), std::move(stops), max_tokens, mode);
  gen->Plan();
  if (!body.value("stream", false)) return gen->RespondWhole();
  if (!anthropic && body.contains("stream_options") && body["stream_options"].is_object()) {
    gen->include_usage_ = body["stream_options"].value("include_usage", false);
  }
  gen->StartStream();
}

std::string MockUpstream::State::Metrics() const {
  std::lock_guard<std::mutex> lock(mu);
  const std::string label =
      "{model_name=\"" + (options.models.empty() ? std::string() : options.models[0]) + "\"}";
  std::string out;
  out += "# HELP vllm:num_requests_running Number of requests in model execution batches.\n";
  out += "# TYPE vllm:num_requests_running gauge\n";
  out += "vllm:num_requests_running" + label + " " + std::to_string(stats.active) + "\n";
  out += "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n";
  out += "# TYPE vllm:num_requests_waiting gauge\n";
  out += "vllm:num_requests_waiting" + label + " " + std::to_string(reported_waiting) + "\n";
  out += "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n";
  out += "# TYPE vllm:kv_cache_usage_perc gauge\n";
  out += "vllm:kv_cache_usage_perc" + label + " " + std::to_string(reported_kv) + "\n";
  return out;
}

std::string MockUpstream::State::StatsJson() const {
  std::lock_guard<std::mutex> lock(mu);
  json recent = json::array();
  for (auto it = aborts.rbegin(); it != aborts.rend() && recent.size() < 100; ++it) {
    recent.push_back({{"request", it->request},
                      {"path", it->path},
                      {"tokens_sent", it->tokens_sent},
                      {"unix_ms", it->unix_ms}});
  }
  return json{{"requests", stats.requests},
              {"completed", stats.completed},
              {"aborted", stats.aborted},
              {"failed", stats.failed},
              {"active", stats.active},
              {"last_abort_unix_ms", aborts.empty() ? json(nullptr) : json(aborts.back().unix_ms)},
              {"aborts", recent}}
      .dump();
}

MockUpstream::MockUpstream(MockUpstreamOptions options) : state_(std::make_shared<State>()) {
  state_->options = std::move(options);
  state_->default_mode = state_->options.default_mode;
}

MockUpstream::~MockUpstream() { Stop(); }

absl::Status MockUpstream::Start() {
  std::weak_ptr<State> weak = state_;
  state_->server = std::make_unique<http::Server>(
      http::ServerOptions{.host = state_->options.host,
                          .port = state_->options.port,
                          .threads = state_->options.threads,
                          .keepalive_timeout = std::chrono::milliseconds(600'000)},
      [weak](std::shared_ptr<http::Exchange> ex) {
        if (auto state = weak.lock()) state->Handle(std::move(ex));
      });
  return state_->server->Start();
}

void MockUpstream::Stop() {
  state_->timers.Stop();
  if (state_->server) state_->server->Stop();
  std::map<uint64_t, std::shared_ptr<void>> live;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    live.swap(state_->live);
  }
}

int MockUpstream::port() const { return state_->server ? state_->server->port() : 0; }

std::string MockUpstream::base_url() const {
  return "http://" + state_->options.host + ":" + std::to_string(port()) + "/v1";
}

MockStats MockUpstream::Stats() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->stats;
}

std::vector<MockAbort> MockUpstream::Aborts() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return {state_->aborts.begin(), state_->aborts.end()};
}

std::string MockUpstream::LastRequestBody() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->last_body;
}

std::map<std::string, std::string> MockUpstream::LastRequestHeaders() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->last_headers;
}

void MockUpstream::SetDefaultMode(std::string mode) {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->default_mode = std::move(mode);
}

void MockUpstream::SetReportedLoad(int waiting, double kv_cache_usage) {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->reported_waiting = waiting;
  state_->reported_kv = kv_cache_usage;
}

void MockUpstream::Reset() {
  std::lock_guard<std::mutex> lock(state_->mu);
  const int active = state_->stats.active;
  state_->stats = {};
  state_->stats.active = active;
  state_->aborts.clear();
  state_->last_body.clear();
  state_->last_headers.clear();
}

}  // namespace sb::mock
