// The hold-back gate on a reply's text: text goes to the client only once
// no rule can still match a span that includes it, so however the reply is
// split into tokens no byte of a match is released. What a match does is
// the org's policy's output action (org_policy.h): block stops the reply
// before it (everything before it is released, nothing after), redact
// replaces it in place ("[REDACTED:pii.email]", a card number as
// "•••• 4242"), flag lets it through and records it, allow ignores it. The
// rules (rules.h) and the org's blocklist read the text normalised
// (normalize.h), so "ｂｏｂ＠ｃｏｒｐ．ｉｏ" or an address with zero-width spaces
// in it is caught, and what is cut is the text as written. Held back is only
// what may still grow into a match (Pending), and at most `window` bytes:
// older text goes out, so a match longer than the window is not caught
// whole.
//
//   OutputGate gate({.policy = org_policy});
//   for (const auto& piece : tokens) {
//     GateResult r = gate.Push(piece);
//     Send(r.release);
//     if (r.stopped) break;  // block: the reply ends here
//   }
//   Send(gate.Finish().release);
//
// Not thread-safe: one gate per reply.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "safety/org_policy.h"
#include "safety/rules.h"

namespace sb::safety {

struct GateOptions {
  std::shared_ptr<const Policy> policy = Policy::Default();
  size_t window = 256;  // bytes held back at most
  // Called once for each match acted on (flag, redact, block) when it is
  // decided, with its offsets in the reply and its text as written: the
  // audit trail hashes the span, which the gate may release (flag) or drop.
  std::function<void(const Finding& in_reply, Action action, std::string_view span)> on_decision;
};

struct GateResult {
  std::string release;  // follows what earlier results released
  // Block: the match the reply stopped before (offsets in the whole reply
  // as the model wrote it); nothing more is released.
  std::optional<Finding> stopped;
};

class OutputGate {
 public:
  explicit OutputGate(GateOptions options = {});

  GateResult Push(std::string_view piece);
  // The reply ended: what was held is decided and released.
  GateResult Finish();

  size_t held() const { return held_.size(); }
  const Policy& policy() const { return *options_.policy; }
  bool stopped() const { return stopped_; }
  // The matches replaced, and those flagged, so far (offsets in the whole
  // reply as written).
  const std::vector<Finding>& redacted() const { return redacted_; }
  const std::vector<Finding>& flagged() const { return flagged_; }

 private:
  GateResult Decide(bool final);
  void Decided(const Finding& in_reply, Action action, std::string_view text,
               const Finding& in_text) const;

  GateOptions options_;
  // The last bytes released, as written: the rules look behind the held
  // text (a card number must not follow a letter).
  std::string context_;
  std::string held_;
  size_t held_at_ = 0;  // offset of held_[0] in the reply
  bool stopped_ = false;
  std::vector<Finding> redacted_, flagged_;
};

// What a redacted match is replaced with.
std::string Redaction(const Finding& f, std::string_view normalized_span);

}  // namespace sb::safety
