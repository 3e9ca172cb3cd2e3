// The hold-back gate on a reply's text: text goes to the client only once
// no rule can still match a span that includes it, so however the reply is
// split into tokens no byte of a match is released. A match either stops
// the reply (block: everything before it is released, nothing after) or is
// replaced in place (redact: "[REDACTED:pii.email]"). Held back is only
// what may still grow into a match (FindPii / PiiPending), and at most
// `window` bytes: older text goes out, so a match longer than the window is
// not caught whole.
//
//   OutputGate gate({.action = GateAction::kRedact});
//   for (const auto& piece : tokens) {
//     GateResult r = gate.Push(piece);
//     Send(r.release);
//     if (r.stopped) break;  // kBlock: the reply ends here
//   }
//   Send(gate.Finish().release);
//
// Not thread-safe: one gate per reply.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "safety/pii.h"

namespace sb::safety {

enum class GateAction { kBlock, kRedact };

struct GateOptions {
  GateAction action = GateAction::kBlock;
  size_t window = 256;  // bytes held back at most
};

struct GateResult {
  std::string release;  // follows what earlier results released
  // kBlock: the match the reply stopped before (offsets in the whole reply
  // as the model wrote it); nothing more is released.
  std::optional<PiiFinding> stopped;
};

class OutputGate {
 public:
  explicit OutputGate(GateOptions options = {});

  GateResult Push(std::string_view piece);
  // The reply ended: what was held is decided and released.
  GateResult Finish();

  size_t held() const { return held_.size(); }
  bool stopped() const { return stopped_; }
  // The matches replaced so far (offsets in the whole reply as written).
  const std::vector<PiiFinding>& redacted() const { return redacted_; }

 private:
  GateResult Decide(bool final);

  GateOptions options_;
  // The last bytes released, as written: the rules look behind the held
  // text (a card number must not follow a letter).
  std::string context_;
  std::string held_;
  size_t held_at_ = 0;  // offset of held_[0] in the reply
  bool stopped_ = false;
  std::vector<PiiFinding> redacted_;
};

}  // namespace sb::safety
