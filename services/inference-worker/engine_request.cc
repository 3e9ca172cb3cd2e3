#include "inference-worker/engine_request.h"

namespace sb::worker {

EngineRequest ToEngineRequest(const switchboard::inference::v1::GenerateRequest& req,
                              const Engine* engine) {
  EngineRequest out;
  out.request_id = req.request_id();
  out.model = req.model();
  out.max_tokens = req.max_tokens();
  out.stop_sequences.assign(req.stop_sequences().begin(), req.stop_sequences().end());
  if (req.has_temperature()) out.sampling.temperature = req.temperature();
  if (req.has_top_p()) out.sampling.top_p = req.top_p();
  if (req.has_top_k()) out.sampling.top_k = req.top_k();
  out.end_user_id = req.end_user_id();
  out.priority = req.priority() == "batch" ? 0 : 1;
  int tokens = 0;
  for (const auto& b : req.system()) {
    out.system += b.text();
    out.system_cache_breakpoint |= b.cache_control();
    if (engine != nullptr) tokens += engine->CountTokens(b.text());
  }
  for (const auto& m : req.messages()) {
    EngineMessage& msg = out.messages.emplace_back();
    msg.role = m.role();
    for (const auto& b : m.content()) {
      msg.text += b.text();
      msg.cache_breakpoint |= b.cache_control();
      if (engine != nullptr) tokens += engine->CountTokens(b.text());
    }
  }
  out.input_tokens = tokens;
  return out;
}

}  // namespace sb::worker
