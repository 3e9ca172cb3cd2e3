// The platform's GenerateRequest as an engine sees it. Shared by the worker
// and the scheduler, which hashes the same prompt to route a request to the
// worker that has its prefix cached.
#pragma once

#include "inference-worker/engine.h"
#include "switchboard/inference/v1/inference.pb.h"

namespace sb::worker {

// Structures a request for an engine and, given one, counts its input
// tokens: every text block, with the engine's tokenizer (CountTokens
// answers with the same count, so it always equals the usage the request
// reports). Interactive requests get priority 1, batch ones 0.
EngineRequest ToEngineRequest(const switchboard::inference::v1::GenerateRequest& req,
                              const Engine* engine);
inline EngineRequest ToEngineRequest(const switchboard::inference::v1::GenerateRequest& req,
                                     const Engine& engine) {
  return ToEngineRequest(req, &engine);
}

}  // namespace sb::worker
