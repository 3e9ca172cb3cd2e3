#include "safety/gate.h"

#include <algorithm>
#include <cctype>
#include <vector>

#include "safety/normalize.h"

namespace sb::safety {
namespace {

// How much released text the rules see behind the held text.
constexpr size_t kContextBytes = 64;

bool IsContinuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// A byte a rule may read as part of a word, number, address or key: the
// context behind the held text never starts inside one (the rules look
// behind a match to see where it starts).
bool IsTokenByte(char c) {
  const auto u = static_cast<unsigned char>(c);
  return std::isalnum(u) || u >= 0x80 || c == '_' || c == '-' || c == '.' || c == '%' || c == '+' ||
         c == '@';
}

struct Match {
  Finding finding;  // offsets in the gate's text as written
  Action action;
  // More text may still change it: it reaches `pending` or beyond, where
  // a match may still grow or begin (and one that begins inside it would
  // merge with it).
  bool unsettled;
  size_t normalized_start, normalized_end;
};

// What the policy acts on in the normalised text, with original offsets,
// ordered by start. Overlapping matches of one action become one (no part
// of either goes out), unsettled while any part of it is.
std::vector<Match> Matches(const Normalized& n, const Policy& policy, size_t pending) {
  std::vector<Finding> found = FindAll(n.text);
  for (Finding& f : policy.FindBlocklisted(n.text)) found.push_back(std::move(f));
  std::vector<Match> matches;
  for (Finding& m : found) {
    const Action action = policy.ActionFor(m.category, Direction::kOutput);
    if (action == Action::kAllow) continue;
    const size_t start = n.OriginalStart(m.start), end = n.OriginalEnd(m.end);
    matches.push_back({{std::move(m.category), start, end}, action, end > pending, m.start, m.end});
  }
  std::sort(matches.begin(), matches.end(), [](const Match& a, const Match& b) {
    if (a.action != b.action) return a.action < b.action;
    if (a.finding.start != b.finding.start) return a.finding.start < b.finding.start;
    return a.finding.end > b.finding.end;
  });
  size_t kept = 0;
  for (size_t i = 0; i < matches.size(); ++i) {
    Match& last = matches[kept > 0 ? kept - 1 : 0];
    if (kept > 0 && last.action == matches[i].action &&
        matches[i].finding.start < last.finding.end) {
      last.finding.end = std::max(last.finding.end, matches[i].finding.end);
      last.normalized_end = std::max(last.normalized_end, matches[i].normalized_end);
      last.unsettled = last.unsettled || matches[i].unsettled;
      continue;
    }
    if (kept != i) matches[kept] = std::move(matches[i]);
    ++kept;
  }
  matches.resize(kept);
  std::stable_sort(matches.begin(), matches.end(), [](const Match& a, const Match& b) {
    return a.finding.start < b.finding.start;
  });
  return matches;
}

}  // namespace

std::string Redaction(const Finding& f, std::string_view normalized_span) {
  if (f.category == "pii.card_number") {
    std::string last4;
    for (auto it = normalized_span.rbegin(); it != normalized_span.rend() && last4.size() < 4;
         ++it) {
      if (*it >= '0' && *it <= '9') last4.insert(last4.begin(), *it);
    }
    return "\u2022\u2022\u2022\u2022 " + last4;  // "•••• 4242"
  }
  return "[REDACTED:" + f.category + "]";
}

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

void OutputGate::Decided(const Finding& in_reply, Action action, std::string_view text,
                         const Finding& in_text) const {
  if (options_.on_decision) {
    options_.on_decision(in_reply, action, text.substr(in_text.start, in_text.end - in_text.start));
  }
}

GateResult OutputGate::Decide(bool final) {
  GateResult r;
  const std::string text = context_ + held_;
  const size_t base = context_.size();        // where the held text starts in `text`
  const size_t reply_base = held_at_ - base;  // `text`'s offset in the reply
  // The rules read normalised text; what they find is cut from `text`.
  const Normalized n = Normalize(text);
  // Nothing before `pending` can be part of a match still to come (an
  // incomplete UTF-8 sequence at the end waits for its next bytes).
  size_t pending = final ? text.size() : std::max(n.OriginalStart(Pending(n.text)), base);
  const Policy& policy = *options_.policy;
  if (policy.has_blocklist() && !final) {
    pending = std::max(std::min(pending, n.OriginalStart(policy.BlocklistPending(n.text))), base);
  }
  std::vector<Match> matches = Matches(n, policy, pending);
  size_t cursor = base;  // released up to here
  size_t unsettled = text.size();
  for (const Match& m : matches) {
    const Finding& f = m.finding;
    if (f.end <= cursor) continue;  // released before (a window overflow) or redacted
    if (m.unsettled) {
      // It may still grow (a complete address more text could extend).
      unsettled = std::min(unsettled, f.start);
      break;
    }
    const Finding in_reply{f.category, reply_base + f.start, reply_base + f.end};
    if (m.action == Action::kFlag) {
      // Seen again while part of it is held (whole, or cut where part of it
      // went out): recorded once. Flagged matches never overlap (Resolve).
      if (flagged_.empty() || flagged_.back().end <= in_reply.start) {
        flagged_.push_back(in_reply);
        Decided(in_reply, m.action, text, f);
      }
      continue;  // released as it is
    }
    // Part of a match may have gone out already when it outgrew the window.
    const size_t start = std::max(f.start, cursor);
    r.release.append(text, cursor, start - cursor);
    Decided(in_reply, m.action, text, f);
    if (m.action == Action::kBlock) {
      stopped_ = true;
      r.stopped = in_reply;
      held_.clear();
      return r;
    }
    r.release += Redaction(f, std::string_view(n.text).substr(
                                  m.normalized_start, m.normalized_end - m.normalized_start));
    redacted_.push_back(in_reply);
    cursor = f.end;
  }
  size_t safe = std::max(cursor, std::min(pending, unsettled));
  // At most `window` bytes wait: the oldest go out, whole code points.
  if (text.size() - safe > options_.window) {
    safe = text.size() - options_.window;
    while (safe < text.size() && IsContinuation(text[safe])) ++safe;
  }
  r.release.append(text, cursor, safe > cursor ? safe - cursor : 0);
  safe = std::max(safe, cursor);
  // The context the rules see behind the held text: the last 64 bytes,
  // from the start of the word (number, address, key) they begin inside.
  size_t keep_from = safe - std::min(safe, kContextBytes);
  while (keep_from > 0 && IsTokenByte(text[keep_from - 1]) &&
         safe - keep_from < kContextBytes + options_.window) {
    --keep_from;
  }
  while (keep_from < safe && IsContinuation(text[keep_from])) ++keep_from;
  context_ = text.substr(keep_from, safe - keep_from);
  held_ = text.substr(safe);
  held_at_ = reply_base + safe;
  return r;
}

}  // namespace sb::safety
