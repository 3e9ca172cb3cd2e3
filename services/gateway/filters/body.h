// Request filters. JsonBodyFilter parses the body as a JSON object with the
// bounds of libs/json (nesting depth 64, at most 262,144 values) into
// ctx->body; ParseFilter turns it into the route dialect's ApiRequest in
// ctx->api. Both answer 400 naming what is wrong.
#pragma once

#include "gateway/dialects/dialect.h"
#include "gateway/filters/filter.h"

namespace sb::gateway {

class JsonBodyFilter final : public Filter {
 public:
  std::string_view name() const override { return "json_body"; }
  void Handle(const std::shared_ptr<RequestContext>& ctx, Next next) override;
};

// Chat routes: the user whose conversations are addressed — the key's own
// user, or for an org-wide key the `x-switchboard-user` header (default
// "default") — into ctx->user_id; a bad header is a 400.
class ChatUserFilter final : public Filter {
 public:
  std::string_view name() const override { return "chat_user"; }
  void Handle(const std::shared_ptr<RequestContext>& ctx, Next next) override;
};

class ParseFilter final : public Filter {
 public:
  explicit ParseFilter(ParseMode mode) : mode_(mode) {}
  std::string_view name() const override { return "parse"; }
  void Handle(const std::shared_ptr<RequestContext>& ctx, Next next) override;

 private:
  ParseMode mode_;
};

}  // namespace sb::gateway
