#include "safety/org_policy.h"

#include <re2/re2.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "safety/normalize.h"

namespace sb::safety {
namespace {

using Json = nlohmann::json;

constexpr size_t kMaxTerms = 1000;
constexpr size_t kMaxTermBytes = 200;
constexpr size_t kMaxPatterns = 100;
constexpr size_t kMaxPatternBytes = 1000;
constexpr size_t kMaxMatchBytes = 256;  // the gate's default window

bool IsWordByte(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

bool InputOnly(std::string_view category) {
  return category.substr(0, 10) == "injection." || category == "input.size";
}

std::pair<Action, Action> DefaultActions(std::string_view category) {
  if (category.substr(0, 10) == "injection.") return {Action::kFlag, Action::kAllow};
  if (category == "input.size") return {Action::kBlock, Action::kAllow};
  return {Action::kBlock, Action::kBlock};
}

absl::StatusOr<Action> ParseAction(const Json& value, const std::string& where, bool input) {
  if (!value.is_string()) return absl::InvalidArgumentError(absl::StrCat(where, ": a string"));
  const std::string& s = value.get_ref<const std::string&>();
  if (s == "allow") return Action::kAllow;
  if (s == "flag") return Action::kFlag;
  if (s == "block") return Action::kBlock;
  if (s == "redact") {
    if (input) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": redact is an output action; on input use block or flag"));
    }
    return Action::kRedact;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": \"", s, "\" is not an action (block, redact, flag, allow)"));
}

// Sets `category`'s actions from an object with "input" and/or "output".
absl::Status ParseDirections(const Json& spec, const std::string& category,
                             const std::string& where, std::pair<Action, Action>& actions) {
  for (const auto& [key, value] : spec.items()) {
    if (key == "input") {
      auto a = ParseAction(value, where + ".input", true);
      if (!a.ok()) return a.status();
      actions.first = *a;
    } else if (key == "output" && !InputOnly(category)) {
      auto a = ParseAction(value, where + ".output", false);
      if (!a.ok()) return a.status();
      actions.second = *a;
    } else if (key != "terms" && key != "patterns" && key != "max_match_bytes") {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown field \"", key, "\"",
                                                     InputOnly(category) ? " (input only)" : ""));
    }
  }
  return absl::OkStatus();
}

}  // namespace

const char* DirectionName(Direction direction) {
  return direction == Direction::kInput ? "input" : "output";
}

std::string_view ActionName(Action action) {
  switch (action) {
    case Action::kAllow:
      return "allow";
    case Action::kFlag:
      return "flag";
    case Action::kRedact:
      return "redact";
    case Action::kBlock:
      return "block";
  }
  return "block";
}

const std::vector<std::string>& PolicyCategories() {
  static const std::vector<std::string> categories = [] {
    std::vector<std::string> all = Categories();
    for (const char* c : {"blocklist.term", "blocklist.pattern", "injection.override",
                          "injection.role", "input.size"}) {
      all.emplace_back(c);
    }
    return all;
  }();
  return categories;
}

Policy::~Policy() = default;

std::shared_ptr<const Policy> Policy::Default() {
  static const std::shared_ptr<const Policy> policy = *Parse("{}", 0);
  return policy;
}

absl::StatusOr<std::shared_ptr<const Policy>> Policy::Layered(const Policy& platform,
                                                              const Policy& org) {
  Json merged = Json::parse(platform.json_);
  const Json own = Json::parse(org.json_);
  for (const auto& [key, value] : own.items()) {
    if (key != "rules" || !merged.contains("rules")) {
      merged[key] = value;
      continue;
    }
    for (const auto& [category, spec] : value.items()) {
      Json& into = merged["rules"][category];
      for (const auto& [direction, action] : spec.items()) into[direction] = action;
    }
  }
  return Parse(merged.dump(), org.version_, platform.platform_version_);
}

absl::StatusOr<std::shared_ptr<const Policy>> Policy::Parse(std::string_view text, int64_t version,
                                                            int64_t platform_version) {
  const Json doc = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return absl::InvalidArgumentError("a safety policy is a JSON object");
  }
  std::shared_ptr<Policy> p(new Policy());
  p->version_ = version;
  p->platform_version_ = platform_version;
  for (const std::string& c : PolicyCategories()) p->actions_[c] = DefaultActions(c);
  for (const auto& [key, value] : doc.items()) {
    if (key == "rules") {
      if (!value.is_object()) return absl::InvalidArgumentError("rules: an object");
      for (const auto& [category, spec] : value.items()) {
        auto it = p->actions_.find(category);
        if (it == p->actions_.end() || category.substr(0, 10) == "blocklist.") {
          return absl::InvalidArgumentError(
              absl::StrCat("rules: \"", category, "\" is not a rule (see the README's list)"));
        }
        if (!spec.is_object()) {
          return absl::InvalidArgumentError(absl::StrCat("rules.", category, ": an object"));
        }
        if (auto st = ParseDirections(spec, category, "rules." + category, it->second); !st.ok())
          return st;
        if (spec.contains("terms") || spec.contains("patterns") ||
            spec.contains("max_match_bytes")) {
          return absl::InvalidArgumentError(
              absl::StrCat("rules.", category, ": only \"input\" and \"output\""));
        }
      }
    } else if (key == "blocklist") {
      if (!value.is_object()) return absl::InvalidArgumentError("blocklist: an object");
      std::pair<Action, Action> actions = DefaultActions("blocklist.term");
      if (auto st = ParseDirections(value, "blocklist.term", "blocklist", actions); !st.ok())
        return st;
      p->actions_["blocklist.term"] = p->actions_["blocklist.pattern"] = actions;
      if (auto terms = value.find("terms"); terms != value.end()) {
        if (!terms->is_array() || terms->size() > kMaxTerms) {
          return absl::InvalidArgumentError(
              absl::StrCat("blocklist.terms: an array of at most ", kMaxTerms, " strings"));
        }
        for (const Json& t : *terms) {
          if (!t.is_string() || t.get_ref<const std::string&>().size() > kMaxTermBytes) {
            return absl::InvalidArgumentError(absl::StrCat(
                "blocklist.terms: each a string of at most ", kMaxTermBytes, " bytes"));
          }
          std::string term = Normalize(t.get<std::string>()).text;
          const size_t first = term.find_first_not_of(" \t\n");
          if (first == std::string::npos) {
            return absl::InvalidArgumentError("blocklist.terms: an empty term");
          }
          term = term.substr(first, term.find_last_not_of(" \t\n") - first + 1);
          if (term.size() > kMaxTermBytes) {  // normalising may lengthen it
            return absl::InvalidArgumentError(
                absl::StrCat("blocklist.terms: \"", t.get<std::string>(), "\" is over ",
                             kMaxTermBytes, " bytes once normalised"));
          }
          p->terms_.push_back(std::move(term));
        }
      }
      if (auto patterns = value.find("patterns"); patterns != value.end()) {
        if (!patterns->is_array() || patterns->size() > kMaxPatterns) {
          return absl::InvalidArgumentError(
              absl::StrCat("blocklist.patterns: an array of at most ", kMaxPatterns, " strings"));
        }
        for (const Json& pat : *patterns) {
          if (!pat.is_string() || pat.get_ref<const std::string&>().size() > kMaxPatternBytes) {
            return absl::InvalidArgumentError(absl::StrCat(
                "blocklist.patterns: each a string of at most ", kMaxPatternBytes, " bytes"));
          }
          RE2::Options options;
          options.set_log_errors(false);
          options.set_case_sensitive(false);  // the text is case folded
          options.set_max_mem(1 << 20);       // per pattern; RE2's default is 8 MiB
          // Normalised as the text is, so that its letters are the text's
          // ("é" is "e" there).
          auto re = std::make_unique<RE2>(Normalize(pat.get<std::string>()).text, options);
          if (!re->ok()) {
            return absl::InvalidArgumentError(absl::StrCat(
                "blocklist.patterns: \"", pat.get<std::string>(), "\" is not RE2: ", re->error()));
          }
          p->patterns_.push_back(std::move(re));
        }
      }
      if (auto most = value.find("max_match_bytes"); most != value.end()) {
        if (!most->is_number_integer() || most->get<int64_t>() < 1 ||
            most->get<int64_t>() > static_cast<int64_t>(kMaxMatchBytes)) {
          return absl::InvalidArgumentError(
              absl::StrCat("blocklist.max_match_bytes: 1 to ", kMaxMatchBytes));
        }
        p->max_match_bytes_ = most->get<size_t>();
      }
    } else if (key == "max_input_bytes") {
      if (!value.is_number_integer() || value.get<int64_t>() < 0) {
        return absl::InvalidArgumentError("max_input_bytes: a whole number, 0 for no limit");
      }
      p->max_input_bytes_ = value.get<size_t>();
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown field \"", key, "\" (rules, blocklist, max_input_bytes)"));
    }
  }
  p->json_ = doc.dump();
  return std::shared_ptr<const Policy>(std::move(p));
}

Action Policy::ActionFor(std::string_view category, Direction direction) const {
  auto it = actions_.find(category);
  if (it == actions_.end()) return Action::kBlock;  // unknown: the strict choice
  return direction == Direction::kInput ? it->second.first : it->second.second;
}

std::vector<Finding> Policy::FindBlocklisted(std::string_view text) const {
  std::vector<Finding> out;
  for (const std::string& term : terms_) {
    for (size_t at = text.find(term); at != std::string_view::npos; at = text.find(term, at + 1)) {
      const size_t end = at + term.size();
      const bool whole = (at == 0 || !IsWordByte(text[at - 1]) || !IsWordByte(term.front())) &&
                         (end == text.size() || !IsWordByte(text[end]) || !IsWordByte(term.back()));
      if (whole) out.push_back({"blocklist.term", at, end});
    }
  }
  for (const auto& re : patterns_) {
    ForEachMatch(*re, text, [&](size_t start, size_t end) {
      // A longer match than the policy promised is none: the gate holds
      // only max_match_bytes back, so a reply cut into tokens could not
      // have caught it whole.
      if (end - start <= max_match_bytes_) out.push_back({"blocklist.pattern", start, end});
    });
  }
  std::sort(out.begin(), out.end(),
            [](const Finding& a, const Finding& b) { return a.start < b.start; });
  return out;
}

size_t Policy::BlocklistPending(std::string_view text) const {
  size_t pending = text.size();
  if (!patterns_.empty()) {
    pending = text.size() - std::min(text.size(), max_match_bytes_);
  }
  for (const std::string& term : terms_) {
    // The longest end of `text` that begins the term (or is all of it: a
    // word may still follow and make it no match).
    for (size_t k = std::min(term.size(), text.size()); k > 0; --k) {
      const size_t at = text.size() - k;
      if (at >= pending) break;
      if (text.compare(at, k, term, 0, k) == 0 &&
          (at == 0 || !IsWordByte(text[at - 1]) || !IsWordByte(term.front()))) {
        pending = at;
        break;
      }
    }
  }
  return pending;
}

void ForEachMatch(const RE2& re, std::string_view text,
                  const std::function<void(size_t start, size_t end)>& found) {
  const re2::StringPiece whole(text.data(), text.size());
  re2::StringPiece match;
  size_t pos = 0;
  while (pos <= text.size() && re.Match(whole, pos, text.size(), RE2::UNANCHORED, &match, 1)) {
    const size_t start = static_cast<size_t>(match.data() - text.data());
    if (!match.empty()) found(start, start + match.size());
    pos = start + std::max<size_t>(match.size(), 1);
  }
}

std::vector<Finding> Actionable(std::vector<Finding> found, const Policy& policy,
                                Direction direction) {
  std::vector<Finding> out;
  for (Action action : {Action::kBlock, Action::kRedact, Action::kFlag}) {
    std::vector<Finding> group;
    for (const Finding& f : found) {
      if (policy.ActionFor(f.category, direction) == action) group.push_back(f);
    }
    Resolve(group);
    for (Finding& f : group) out.push_back(std::move(f));
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const Finding& a, const Finding& b) { return a.start < b.start; });
  return out;
}

}  // namespace sb::safety
