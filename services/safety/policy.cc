#include "safety/policy.h"

#include <re2/re2.h>

#include <set>

#include "safety/normalize.h"

namespace sb::safety {
namespace {

struct Heuristic {
  const char* category;
  const char* pattern;
};

// Over normalised (case-folded) text.
constexpr Heuristic kHeuristics[] = {
    {"injection.override",
     R"(\b(?:ignore|disregard|forget|override|bypass)\s+(?:all\s+|any\s+|every\s+)?)"
     R"((?:of\s+)?(?:the\s+|your\s+|my\s+|these\s+|those\s+)?)"
     R"((?:previous|prior|above|earlier|preceding|system|original|initial)\s+)"
     R"((?:instructions?|prompts?|rules|directions|guidelines|messages))"},
    {"injection.override", R"(\b(?:reveal|print|show|repeat|output)\s+(?:me\s+)?(?:your|the)\s+)"
                           R"((?:system\s+prompt|hidden\s+instructions|initial\s+instructions))"},
    {"injection.override", R"(\byou\s+are\s+now\s+(?:dan\b|in\s+developer\s+mode|jailbroken))"},
    {"injection.role", R"((?:^|\n)[ \t]*(?:system|assistant)[ \t]*:)"},
    {"injection.role", R"(<\|(?:im_start|im_end|system|assistant|user|endoftext)\|>)"},
    {"injection.role", R"(\[/?inst\]|<</?sys>>)"},
    {"injection.role", R"((?:^|\n)[ \t]*#{1,3}[ \t]*(?:system|instructions?)[ \t]*(?:\n|:))"},
};

const std::vector<std::pair<const char*, std::unique_ptr<RE2>>>& Compiled() {
  static const auto* compiled = [] {
    auto* out = new std::vector<std::pair<const char*, std::unique_ptr<RE2>>>();
    for (const Heuristic& h : kHeuristics) {
      out->emplace_back(h.category, std::make_unique<RE2>(h.pattern));
    }
    return out;
  }();
  return *compiled;
}

}  // namespace

std::vector<Finding> FindInjection(std::string_view text) {
  std::vector<Finding> out;
  for (const auto& heuristic : Compiled()) {
    const char* category = heuristic.first;
    ForEachMatch(*heuristic.second, text, [&](size_t start, size_t end) {
      out.push_back({category, start, end});
    });
  }
  return out;
}

Verdict Evaluate(std::string_view text, Direction direction, const Policy& policy) {
  const Action size_action = direction == Direction::kInput && policy.max_input_bytes() > 0 &&
                                     text.size() > policy.max_input_bytes()
                                 ? policy.ActionFor("input.size", direction)
                                 : Action::kAllow;
  if (size_action == Action::kBlock) {
    // Refused whatever else it holds: not read further.
    const Finding size{"input.size", 0, text.size()};
    return {.allowed = false,
            .reason = Explain({size}, direction),
            .decisions = {{size, Action::kBlock}},
            .policy_version = policy.version(),
            .platform_policy_version = policy.platform_version()};
  }
  const Normalized n = Normalize(text);
  std::vector<Finding> found = FindAll(n.text);
  for (Finding& f : policy.FindBlocklisted(n.text)) found.push_back(std::move(f));
  if (direction == Direction::kInput) {
    for (Finding& f : FindInjection(n.text)) found.push_back(std::move(f));
  }
  found = Actionable(std::move(found), policy, direction);
  Verdict v;
  v.policy_version = policy.version();
  v.platform_policy_version = policy.platform_version();
  for (Finding& f : found) {
    const size_t end = n.OriginalEnd(f.end);
    f.start = n.OriginalStart(f.start);
    f.end = end;
  }
  if (size_action != Action::kAllow) found.insert(found.begin(), {"input.size", 0, text.size()});
  std::vector<Finding> blocked;
  for (Finding& f : found) {
    const Action action = policy.ActionFor(f.category, direction);
    if (action == Action::kBlock || action == Action::kRedact) blocked.push_back(f);
    v.decisions.push_back({std::move(f), action});
  }
  if (!blocked.empty()) {
    v.allowed = false;
    v.reason = Explain(blocked, direction);
  }
  return v;
}

std::string Explain(const std::vector<Finding>& blocked, Direction direction) {
  std::set<std::string> kinds;
  for (const auto& f : blocked) kinds.insert(Describe(f.category));
  std::string list;
  for (const auto& k : kinds) list += (list.empty() ? "" : " and ") + k;
  return (direction == Direction::kInput ? "the input contains " : "the output contained ") + list +
         ", which this platform's safety policy does not allow";
}

}  // namespace sb::safety
