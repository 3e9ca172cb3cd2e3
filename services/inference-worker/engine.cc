#include "inference-worker/engine.h"

namespace sb::worker {

std::string EngineRequest::Flatten() const {
  std::string out = system;
  for (const auto& m : messages) {
    out += "\n" + m.role + ": " + m.text;
  }
  return out;
}

}  // namespace sb::worker
