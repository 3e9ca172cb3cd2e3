#include "chat/turn_runner.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "absl/time/clock.h"
#include "core/metrics.h"
#include "safety/output_window.h"

namespace sb::chat {

namespace cpb = switchboard::chat::v1;
namespace inf = switchboard::inference::v1;
namespace spb = switchboard::safety::v1;

namespace {

constexpr auto kSafetyDeadline = std::chrono::seconds(2);
constexpr auto kGenerationDeadline = std::chrono::minutes(10);
std::string ErrorTypeFor(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::NOT_FOUND:
      return "not_found_error";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "invalid_request_error";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::UNAVAILABLE:
      return "overloaded_error";
    default:
      return "api_error";
  }
}

}  // namespace

TurnRunner::TurnRunner(ChatStore& store, TokenStreamWriter& stream,
                       switchboard::scheduler::v1::TenantScheduler::StubInterface& scheduler,
                       spb::Safety::StubInterface& safety, EventPublisher publish, int threads)
    : store_(store),
      stream_(stream),
      scheduler_(scheduler),
      safety_(safety),
      publish_(std::move(publish)),
      pool_(threads, 1024) {}

bool TurnRunner::Submit(TurnSpec spec) {
  return pool_.Submit([this, spec = std::move(spec)] { Run(spec); });
}

void TurnRunner::Fail(const TurnSpec& spec, int64_t offset, const std::string& type,
                      const std::string& message, const std::string& partial) {
  spdlog::warn("request_id={} turn {} failed: {}: {}", spec.request_id, spec.assistant_message_id,
               type, message);
  StreamEntry e;
  e.kind = StreamEntry::Kind::kError;
  e.offset = offset;
  e.error_type = type;
  e.error_message = message;
  if (auto st = stream_.Append(spec.assistant_message_id, e); !st.ok()) {
    spdlog::error("request_id={} stream error entry: {}", spec.request_id, st.ToString());
  }
  TurnResult r;
  r.status = "failed";
  r.content = partial;
  r.stop_reason = "error";
  r.model = spec.model;
  if (auto st = store_.CompleteReply(spec.conversation_id, spec.assistant_message_id, r); !st.ok()) {
    spdlog::error("request_id={} persisting failed reply: {}", spec.request_id, st.ToString());
  }
  metrics::Default()
      .GetCounter("sb_chat_turns_total", "Chat turns by outcome", {{"outcome", "failed"}})
      .Inc();
}

void TurnRunner::Run(const TurnSpec& spec) {
  auto history = store_.History(spec.conversation_id, spec.user_message_id);
  if (!history.ok()) {
    Fail(spec, 1, "api_error", "loading the conversation: " + history.status().ToString());
    return;
  }
  inf::GenerateRequest req;
  req.set_request_id(spec.request_id);
  req.set_org_id(spec.scope.org_id);
  req.set_model(spec.model);
  req.set_max_tokens(spec.max_tokens);
  req.set_source("chat");
  for (const auto& [role, content] : *history) {
    auto* m = req.add_messages();
    m->set_role(role);
    m->set_content(content);
  }

  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kGenerationDeadline);
  auto reader = scheduler_.Generate(&ctx, req);
  inf::GenerateEvent event;
  std::string text;
  int64_t offset = 0;
  TurnResult result;
  result.model = spec.model;
  bool blocked = false;
  while (reader->Read(&event)) {
    if (event.has_started()) {
      result.model = event.started().model();
      result.input_tokens = event.started().input_tokens();
    } else if (event.has_token()) {
      const std::string& piece = event.token().text();
      spb::CheckRequest check;
      check.set_request_id(spec.request_id);
      check.set_org_id(spec.scope.org_id);
      check.set_text(safety::OutputCheckText(text, piece));
      spb::CheckResponse verdict;
      grpc::ClientContext sctx;
      sctx.set_deadline(std::chrono::system_clock::now() + kSafetyDeadline);
      grpc::Status sst = safety_.CheckOutput(&sctx, check, &verdict);
      if (!sst.ok() || verdict.verdict() != spb::CheckResponse::ALLOW) {
        // Fail closed: nothing unchecked reaches the buffer.
        ctx.TryCancel();
        Fail(spec, offset + 1, sst.ok() ? "safety_error" : "api_error",
             sst.ok() ? verdict.reason() : "output safety unavailable: " + sst.error_message(), text);
        blocked = true;
        break;
      }
      text += piece;
      StreamEntry e;
      e.offset = ++offset;
      e.text = piece;
      if (auto st = stream_.Append(spec.assistant_message_id, e); !st.ok()) {
        // The reply still completes and is persisted; live readers fall back
        // to the stored message.
        spdlog::error("request_id={} stream append: {}", spec.request_id, st.ToString());
      }
    } else if (event.has_finished()) {
      result.stop_reason = event.finished().stop_reason();
      result.input_tokens = event.finished().input_tokens();
      result.output_tokens = event.finished().output_tokens();
    }
  }
  grpc::Status st = reader->Finish();
  if (blocked) return;
  if (!st.ok() || result.stop_reason.empty()) {
    Fail(spec, offset + 1, ErrorTypeFor(st.error_code()),
         st.ok() ? "generation ended without a result" : st.error_message(), text);
    return;
  }
  result.content = text;
  result.status = "complete";
  result.safety_result = "allow";
  StreamEntry end;
  end.kind = StreamEntry::Kind::kEnd;
  end.offset = offset + 1;
  end.stop_reason = result.stop_reason;
  end.input_tokens = result.input_tokens;
  end.output_tokens = result.output_tokens;
  end.model = result.model;
  // Persist before announcing the end: a reader that sees the end and then
  // asks for the message finds it complete.
  if (auto s = store_.CompleteReply(spec.conversation_id, spec.assistant_message_id, result);
      !s.ok()) {
    spdlog::error("request_id={} persisting reply: {}", spec.request_id, s.ToString());
  }
  if (auto s = stream_.Append(spec.assistant_message_id, end); !s.ok()) {
    spdlog::error("request_id={} stream end: {}", spec.request_id, s.ToString());
  }
  cpb::ChatEvent ev;
  ev.set_type("message.completed");
  ev.set_org_id(spec.scope.org_id);
  ev.set_user_id(spec.scope.user_id);
  ev.set_conversation_id(spec.conversation_id);
  ev.set_at_unix_ms(absl::ToUnixMillis(absl::Now()));
  auto* m = ev.mutable_message();
  m->set_id(spec.assistant_message_id);
  m->set_conversation_id(spec.conversation_id);
  m->set_parent_id(spec.user_message_id);
  m->set_role("assistant");
  m->set_content(result.content);
  m->set_status("complete");
  m->set_stop_reason(result.stop_reason);
  m->set_input_tokens(result.input_tokens);
  m->set_output_tokens(result.output_tokens);
  m->set_model(result.model);
  publish_(ev);
  metrics::Default()
      .GetCounter("sb_chat_turns_total", "Chat turns by outcome", {{"outcome", "complete"}})
      .Inc();
  spdlog::info("request_id={} turn {} complete: {} tokens", spec.request_id,
               spec.assistant_message_id, result.output_tokens);
}

}  // namespace sb::chat
