#include "inference-worker/engine.h"

namespace sb::worker {

std::string EngineRequest::Flatten() const {
  std::string out = system;
  for (const auto& m : messages) {
    out += "\n" + m.role + ": " + m.text;
  }
  return out;
}

size_t EngineRequest::CacheBreakpointBytes() const {
  size_t at = system.size();
  size_t breakpoint = system_cache_breakpoint ? at : 0;
  for (const auto& m : messages) {
    at += 1 + m.role.size() + 2 + m.text.size();  // as Flatten()
    if (m.cache_breakpoint) breakpoint = at;
  }
  return breakpoint;
}

}  // namespace sb::worker
