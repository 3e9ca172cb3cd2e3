#include "gateway/router.h"

#include <algorithm>

#include "absl/strings/str_split.h"

namespace sb::gateway {
namespace {

std::vector<std::string_view> Segments(std::string_view path) {
  std::vector<std::string_view> out;
  for (absl::string_view s :
       absl::StrSplit(absl::string_view(path.data(), path.size()), '/', absl::SkipEmpty())) {
    out.emplace_back(s.data(), s.size());
  }
  return out;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string PercentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      const int hi = HexValue(s[i + 1]), lo = HexValue(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

void Router::Add(Route route) {
  Entry e;
  for (auto seg : Segments(route.pattern)) {
    e.segments.emplace_back(
        seg.size() > 1 && seg.front() == '{' && seg.back() == '}' ? "{}" : std::string(seg));
  }
  e.route = std::move(route);
  entries_.push_back(std::move(e));
}

std::vector<std::string> Router::List() const {
  std::vector<std::string> out;
  for (const auto& e : entries_) out.push_back(e.route.method + " " + e.route.pattern);
  return out;
}

Router::Match Router::Find(std::string_view method, std::string_view path) const {
  Match match;
  const auto segments = Segments(path);
  for (const auto& e : entries_) {
    if (e.segments.size() != segments.size()) continue;
    std::vector<std::string> params;
    bool ok = true;
    for (size_t i = 0; i < segments.size() && ok; ++i) {
      if (e.segments[i] == "{}") {
        params.push_back(PercentDecode(segments[i]));
      } else {
        ok = e.segments[i] == segments[i];
      }
    }
    if (!ok) continue;
    if (e.route.method == method) {
      match.route = &e.route;
      match.params = std::move(params);
      match.path_route = nullptr;
      match.allowed.clear();
      return match;
    }
    if (match.path_route == nullptr) match.path_route = &e.route;
    if (std::find(match.allowed.begin(), match.allowed.end(), e.route.method) ==
        match.allowed.end()) {
      match.allowed.push_back(e.route.method);
    }
  }
  return match;
}

DialectChoice Router::DialectForUnknownPath(std::string_view path) {
  static constexpr std::string_view kOpenAiPrefixes[] = {
      "/v1/chat/",  "/v1/completions", "/v1/embeddings", "/v1/responses",
      "/v1/audio/", "/v1/images/",     "/v1/files",      "/v1/moderations"};
  for (auto prefix : kOpenAiPrefixes) {
    if (path.substr(0, prefix.size()) == prefix) return DialectChoice::kOpenAi;
  }
  return DialectChoice::kAnthropic;
}

}  // namespace sb::gateway
