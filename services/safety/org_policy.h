// An org's safety policy: what each rule family does in each direction,
// the org's own blocklists, and a size limit on input. Stored as JSON,
// versioned per org (PolicyStore); the platform's default applies to an org
// that has none.
//
//   {
//     "rules": {"pii.email": {"input": "flag", "output": "redact"},
//               "pii.phone": {"output": "allow"}},
//     "blocklist": {"terms": ["project bluebird"], "patterns": ["bb-[0-9]{4}"],
//                   "input": "block", "output": "redact", "max_match_bytes": 64},
//     "max_input_bytes": 100000
//   }
//
// The platform has a policy of the same form, versioned too
// (PolicyStore::SetPlatform): an org's policy is layered on it (Layered), so
// "the default" below is the platform policy's action where it names one.
//
// Actions: "block" (input: the request is refused; output: the reply stops
// before the match), "redact" (output only: the match is replaced),
// "flag" (allowed and recorded), "allow". A rule not named keeps the
// default: block both ways for personal data, secrets and the blocklist;
// flag for the input-only prompt-injection heuristics. Terms match whole
// words, normalised as the text is (normalize.h: case, width, marks); a
// pattern is RE2 (linear time) over the normalised text, and a match is at
// most `max_match_bytes` long: that much of a reply waits while it could
// still be one.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "safety/rules.h"

namespace re2 {
class RE2;
}

namespace sb::safety {

enum class Direction { kInput, kOutput };
enum class Action { kAllow, kFlag, kRedact, kBlock };

std::string_view ActionName(Action action);
// "input" or "output", as policies, metrics and the audit trail name them.
const char* DirectionName(Direction direction);

// The categories a policy can name: Categories() (rules.h), the blocklist
// ("blocklist.term", "blocklist.pattern"), the injection heuristics
// ("injection.override", "injection.role") and "input.size".
const std::vector<std::string>& PolicyCategories();

class Policy {
 public:
  // `version`: the org's policy version, 0 for none (a platform policy, or
  // the built-in default); `platform_version`: the platform policy's, 0 for
  // the built-in default.
  static absl::StatusOr<std::shared_ptr<const Policy>> Parse(std::string_view json, int64_t version,
                                                             int64_t platform_version = 0);
  // The built-in default (no platform policy, no org policy).
  static std::shared_ptr<const Policy> Default();
  // `org` (an org's own policy) layered on `platform`: each rule's action
  // per direction is the org's where its document names it, else the
  // platform's; the org's blocklist and max_input_bytes, where it has them,
  // replace the platform's. Versions: the org's and the platform's.
  static absl::StatusOr<std::shared_ptr<const Policy>> Layered(const Policy& platform,
                                                               const Policy& org);
  ~Policy();

  int64_t version() const { return version_; }
  int64_t platform_version() const { return platform_version_; }
  Action ActionFor(std::string_view category, Direction direction) const;
  size_t max_input_bytes() const { return max_input_bytes_; }  // 0: none
  // The document as stored (canonical JSON).
  const std::string& json() const { return json_; }

  // Blocklist matches in normalised text, ordered by start.
  std::vector<Finding> FindBlocklisted(std::string_view normalized) const;
  // Where a blocklist match may still be in progress at the end of `text`
  // (rules.h Pending's contract).
  size_t BlocklistPending(std::string_view normalized) const;
  bool has_blocklist() const { return !terms_.empty() || !patterns_.empty(); }

 private:
  Policy() = default;

  int64_t version_ = 0;
  int64_t platform_version_ = 0;
  std::map<std::string, std::pair<Action, Action>, std::less<>> actions_;  // input, output
  std::vector<std::string> terms_;                                         // normalised
  std::vector<std::unique_ptr<re2::RE2>> patterns_;
  size_t max_match_bytes_ = 64;
  size_t max_input_bytes_ = 0;
  std::string json_;
};

// Calls found(start, end) for each non-empty match of `re` in `text`, left
// to right, none overlapping.
void ForEachMatch(const re2::RE2& re, std::string_view text,
                  const std::function<void(size_t start, size_t end)>& found);

// What `policy` acts on in `found` (any offsets): what it allows left
// out, overlaps merged (Resolve) among the matches of one action only — a
// flagged match never hides one to block or redact — ordered by start.
std::vector<Finding> Actionable(std::vector<Finding> found, const Policy& policy,
                                Direction direction);

}  // namespace sb::safety
