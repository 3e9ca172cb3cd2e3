// Routes: method + path pattern -> route. A pattern is literal segments and
// `{name}` placeholders that match one non-empty segment:
//
//   router.Add({.method = "GET", .pattern = "/v1/models/{model_id}", ...});
//   auto m = router.Find("GET", "/v1/models/sim-small");   // params {"sim-small"}
//
// Find() tells a path no route knows (404) from a known path asked with
// another method (405, with the methods it allows). Placeholders are
// percent-decoded. Every route carries its dialect choice, its filters and
// its handler; the gateway runs them.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sb::gateway {

class Filter;
class RequestContext;

// Which API dialect answers on a route (errors included).
enum class DialectChoice {
  kAnthropic,
  kOpenAi,
  // Anthropic when the request carries `anthropic-version` (every Anthropic
  // SDK sends it), OpenAI otherwise: /v1/models serves both SDKs.
  kByHeader,
};

using Handler = std::function<void(const std::shared_ptr<RequestContext>&)>;

struct Route {
  std::string method;
  std::string pattern;
  DialectChoice dialect = DialectChoice::kAnthropic;
  std::vector<Filter*> filters;  // run in order before the handler
  Handler handler;
};

class Router {
 public:
  struct Match {
    const Route* route = nullptr;     // set on a match
    std::vector<std::string> params;  // placeholder values, in order
    // No match, but a route knows the path (405): the first such route and
    // the methods the path allows.
    const Route* path_route = nullptr;
    std::vector<std::string> allowed;
  };

  void Add(Route route);
  Match Find(std::string_view method, std::string_view path) const;
  // "METHOD /pattern" for every route, in the order they were added.
  std::vector<std::string> List() const;

  // The dialect for a path no route matched: the OpenAI one under its own
  // API prefixes (/v1/chat/, /v1/completions, /v1/embeddings, ...), else
  // Anthropic.
  static DialectChoice DialectForUnknownPath(std::string_view path);

 private:
  struct Entry {
    Route route;
    std::vector<std::string> segments;  // "{}" for a placeholder
  };
  std::vector<Entry> entries_;
};

// Percent-decodes `s`; a malformed escape is kept as it is.
std::string PercentDecode(std::string_view s);

}  // namespace sb::gateway
