#include "json/bounded_json.h"

#include <string>
#include <vector>

namespace sb::json {
namespace {

using nlohmann::json;

// Builds the DOM like nlohmann's own DOM parser, but refuses to go deeper
// or wider than the limits. `stack_` holds the containers being filled;
// a pointer stays valid while it is on the stack because a container only
// grows after its open child has been closed (popped).
class BoundedDomBuilder final : public nlohmann::json_sax<json> {
 public:
  explicit BoundedDomBuilder(const Limits& limits) : limits_(limits) {}

  bool null() override { return Add(json(nullptr)) != nullptr; }
  bool boolean(bool v) override { return Add(json(v)) != nullptr; }
  bool number_integer(number_integer_t v) override { return Add(json(v)) != nullptr; }
  bool number_unsigned(number_unsigned_t v) override { return Add(json(v)) != nullptr; }
  bool number_float(number_float_t v, const string_t&) override { return Add(json(v)) != nullptr; }
  bool string(string_t& v) override { return Add(json(std::move(v))) != nullptr; }
  bool binary(binary_t&) override {
    error_ = "binary values are not JSON";
    return false;
  }
  bool start_object(std::size_t) override { return Open(json::object()); }
  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }
  bool end_object() override {
    stack_.pop_back();
    return true;
  }
  bool start_array(std::size_t) override { return Open(json::array()); }
  bool end_array() override {
    stack_.pop_back();
    return true;
  }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception&) override {
    error_ = "the request body is not valid JSON (at byte " + std::to_string(position) + ")";
    return false;
  }

  json& root() { return root_; }
  const std::string& error() const { return error_; }

 private:
  json* Add(json value) {
    if (++values_ > limits_.max_values) {
      error_ =
          "the request body has more than " + std::to_string(limits_.max_values) + " JSON values";
      return nullptr;
    }
    if (stack_.empty()) {
      root_ = std::move(value);
      return &root_;
    }
    json& parent = *stack_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(value));
      return &parent.back();
    }
    json& slot = parent[key_];
    slot = std::move(value);
    return &slot;
  }

  bool Open(json container) {
    if (static_cast<int>(stack_.size()) >= limits_.max_depth) {
      error_ =
          "the request body nests deeper than " + std::to_string(limits_.max_depth) + " levels";
      return false;
    }
    json* added = Add(std::move(container));
    if (added == nullptr) return false;
    stack_.push_back(added);
    return true;
  }

  const Limits& limits_;
  json root_;
  std::vector<json*> stack_;
  std::string key_;
  size_t values_ = 0;
  std::string error_;
};

}  // namespace

absl::StatusOr<nlohmann::json> Parse(std::string_view text, const Limits& limits) {
  BoundedDomBuilder builder(limits);
  const bool ok = json::sax_parse(text.begin(), text.end(), &builder, json::input_format_t::json,
                                  /*strict=*/true);
  if (!ok) {
    return absl::InvalidArgumentError(builder.error().empty() ? "the request body is not valid JSON"
                                                              : builder.error());
  }
  return std::move(builder.root());
}

absl::StatusOr<nlohmann::json> ParseObject(std::string_view text, const Limits& limits) {
  auto parsed = Parse(text, limits);
  if (!parsed.ok()) return parsed;
  if (!parsed->is_object())
    return absl::InvalidArgumentError("the request body must be a JSON object");
  return parsed;
}

std::string Dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace sb::json
