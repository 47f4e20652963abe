#include "bulwark/json_input.hpp"

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace bulwark {
namespace {

using nlohmann::json;

// nlohmann's own DOM builder with a depth count in front of it. sax_parse
// is a template on the handler type, so these members shadow the base's.
class DepthLimitedBuilder : public nlohmann::detail::json_sax_dom_parser<json> {
 public:
  DepthLimitedBuilder(json& out, std::size_t max_depth) : json_sax_dom_parser(out, true), max_depth_(max_depth) {}

  bool start_object(std::size_t n) { return enter() && json_sax_dom_parser::start_object(n); }
  bool start_array(std::size_t n) { return enter() && json_sax_dom_parser::start_array(n); }
  bool end_object() {
    --depth_;
    return json_sax_dom_parser::end_object();
  }
  bool end_array() {
    --depth_;
    return json_sax_dom_parser::end_array();
  }

  bool key(std::string& k) {
    last_key_ = k;
    return json_sax_dom_parser::key(k);
  }

  bool too_deep() const noexcept { return too_deep_; }
  // The last object key read, so an error can say where it is ("1e309"
  // alone does not tell which of a config's keys holds it).
  const std::string& last_key() const noexcept { return last_key_; }

 private:
  bool enter() {
    if (++depth_ <= max_depth_) return true;
    too_deep_ = true;
    return false;  // stops the parser at once
  }

  std::size_t max_depth_;
  std::size_t depth_ = 0;
  bool too_deep_ = false;
  std::string last_key_;
};

// "[json.exception.parse_error.101] parse error at ..." -> "parse error at ..."
std::string without_prefix(const char* what) {
  std::string text = what;
  if (auto pos = text.find("] "); pos != std::string::npos && text.rfind("[json.exception", 0) == 0) {
    text.erase(0, pos + 2);
  }
  return text;
}

}  // namespace

json parse_json(std::string_view text, std::size_t max_depth) {
  json out;
  DepthLimitedBuilder builder(out, max_depth);
  try {
    if (!json::sax_parse(text.begin(), text.end(), &builder) && builder.too_deep()) {
      throw JsonDepthError("nested deeper than " + std::to_string(max_depth) + " levels (limits.json_depth)");
    }
  } catch (const json::exception& e) {
    // parse_error for syntax, out_of_range for 1e309, type_error never, but
    // all of them are bad input here.
    std::string message = without_prefix(e.what());
    if (!builder.last_key().empty()) message += " (after the key '" + builder.last_key().substr(0, 64) + "')";
    throw InputError(message);
  }
  return out;
}

std::optional<std::int64_t> integer_in_range(const nlohmann::json& v, std::int64_t lo, std::int64_t hi) noexcept {
  if (v.is_number_unsigned()) {
    // Compared as unsigned: 2^64 - 1 is not -1.
    const auto u = v.get<std::uint64_t>();
    if (hi < 0 || u > static_cast<std::uint64_t>(hi) || (lo > 0 && u < static_cast<std::uint64_t>(lo))) {
      return std::nullopt;
    }
    return static_cast<std::int64_t>(u);
  }
  if (!v.is_number_integer()) return std::nullopt;
  const auto n = v.get<std::int64_t>();
  if (n < lo || n > hi) return std::nullopt;
  return n;
}

std::string integer_problem(const json& v, std::int64_t lo, std::int64_t hi) {
  if (!v.is_number_integer()) return "expected an integer";
  return "expected an integer from " + std::to_string(lo) + " to " + std::to_string(hi) + ", got " + v.dump();
}

std::size_t json_depth(const json& value, std::size_t stop_after) {
  std::size_t deepest = 0;
  std::vector<std::pair<const json*, std::size_t>> todo{{&value, 0}};
  while (!todo.empty()) {
    auto [v, depth] = todo.back();
    todo.pop_back();
    if (!v->is_structured()) continue;
    ++depth;
    if (depth > deepest) deepest = depth;
    if (deepest > stop_after) break;
    for (const json& child : *v) todo.emplace_back(&child, depth);
  }
  return deepest;
}

}  // namespace bulwark
