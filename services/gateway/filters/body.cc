#include "gateway/filters/body.h"

#include "gateway/context.h"
#include "gateway/dialects/fields.h"
#include "json/bounded_json.h"

namespace sb::gateway {

void JsonBodyFilter::Handle(const std::shared_ptr<RequestContext>& ctx, Next next) {
  // The body is read only now, after authentication: a request without a
  // valid key never gets a byte of its body buffered.
  ctx->exchange().ReadBody([ctx, next = std::move(next)](absl::Status read) {
    if (!read.ok()) {
      ctx->Fail(read, http::HttpStatusOfBodyError(read));
      return;
    }
    auto parsed = json::ParseObject(ctx->request().body);
    if (!parsed.ok()) {
      ctx->Fail(parsed.status());
      return;
    }
    ctx->body = std::move(*parsed);
    next();
  });
}

void ChatUserFilter::Handle(const std::shared_ptr<RequestContext>& ctx, Next next) {
  if (!ctx->principal->user_id.empty()) {
    ctx->user_id = ctx->principal->user_id;
  } else {
    const std::string header = ctx->request().Header("x-switchboard-user");
    if (auto st = CheckText(header, "x-switchboard-user", kMaxIdBytes); !st.ok()) {
      ctx->Fail(st);
      return;
    }
    ctx->user_id = header.empty() ? "default" : header;
  }
  next();
}

void ParseFilter::Handle(const std::shared_ptr<RequestContext>& ctx, Next next) {
  auto parsed = ctx->dialect->Parse(ctx->body, mode_);
  if (!parsed.ok()) {
    ctx->Fail(parsed.status());
    return;
  }
  ctx->api = std::move(*parsed);
  ctx->body = nullptr;  // the request holds what is needed; free the DOM now
  next();
}

}  // namespace sb::gateway
