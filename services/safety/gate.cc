#include "safety/gate.h"

#include <algorithm>

namespace sb::safety {
namespace {

// How much released text the rules see behind the held text.
constexpr size_t kContextBytes = 64;

}  // namespace

OutputGate::OutputGate(GateOptions options) : options_(options) {}

GateResult OutputGate::Push(std::string_view piece) {
  if (stopped_) return {};
  held_.append(piece);
  return Decide(false);
}

GateResult OutputGate::Finish() {
  if (stopped_) return {};
  return Decide(true);
}

GateResult OutputGate::Decide(bool final) {
  GateResult r;
  const std::string text = context_ + held_;
  const size_t base = context_.size();        // where the held text starts in `text`
  const size_t reply_base = held_at_ - base;  // `text`'s offset in the reply
  // Nothing before `pending` can be part of a match still to come.
  const size_t pending = final ? text.size() : std::max(PiiPending(text), base);
  size_t cursor = base;  // released up to here
  size_t unsettled = text.size();
  for (const PiiFinding& f : FindPii(text)) {
    if (f.end <= cursor) continue;  // released before (a window overflow) or redacted
    if (f.start >= pending) {
      // It may still grow (a complete address more text could extend).
      unsettled = std::min(unsettled, f.start);
      break;
    }
    // Part of a match may have gone out already when it outgrew the window.
    const size_t start = std::max(f.start, cursor);
    r.release.append(text, cursor, start - cursor);
    const PiiFinding in_reply{f.category, reply_base + f.start, reply_base + f.end};
    if (options_.action == GateAction::kBlock) {
      stopped_ = true;
      r.stopped = in_reply;
      held_.clear();
      return r;
    }
    r.release += "[REDACTED:" + f.category + "]";
    redacted_.push_back(in_reply);
    cursor = f.end;
  }
  size_t safe = std::max(cursor, std::min(pending, unsettled));
  // At most `window` bytes wait: the oldest go out.
  if (text.size() - safe > options_.window) safe = text.size() - options_.window;
  r.release.append(text, cursor, safe > cursor ? safe - cursor : 0);
  safe = std::max(safe, cursor);
  const size_t keep = std::min(safe, kContextBytes);
  context_ = text.substr(safe - keep, keep);
  held_ = text.substr(safe);
  held_at_ = reply_base + safe;
  return r;
}

}  // namespace sb::safety
