// Handlers of the inference API: generations (both dialects), token
// counting and the model list. Each runs after its route's filters.
#pragma once

#include <memory>

#include "gateway/gateway.h"

namespace sb::gateway {

// POST /v1/messages and /v1/chat/completions: runs ctx->api on the
// pipeline with an HttpSink; a client that leaves cancels the generation.
void HandleGenerate(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx);
// POST /v1/messages/count_tokens: {"input_tokens": N}, counted by a worker
// serving the model with the tokenizer the generation would use.
void HandleCountTokens(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx);
// GET /v1/models (?limit, after_id, before_id for the Anthropic shape).
void HandleListModels(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx);
// GET /v1/models/{model_id}
void HandleGetModel(GatewayDeps& deps, const std::shared_ptr<RequestContext>& ctx);

}  // namespace sb::gateway
