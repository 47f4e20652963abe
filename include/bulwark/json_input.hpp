// Reading JSON that came from outside the program (HTTP bodies, JSON lines,
// configuration files, the child-process wire) with every limit explicit.
//
// nlohmann's parser builds values of any depth, and copying, printing or
// destroying a value recurses once per level: a body of 100,000 '[' is a
// stack overflow later. parse_json() counts the depth while it parses and
// stops at `max_depth`, and turns every error nlohmann can raise (syntax, a
// number past the range of a double, invalid UTF-8) into one InputError.
//
//   try {
//     nlohmann::json j = bulwark::parse_json(body, 128);
//   } catch (const bulwark::InputError& e) {
//     reply(400, e.what());  // "parse error at line 1, column 7: ..."
//   }
//
// Thread-safe (no shared state); never blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <stdexcept>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

namespace bulwark {

// Bad outside JSON; what() says what is wrong and, for syntax errors, where.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Outside JSON nested deeper than the limit (a kind of InputError).
class JsonDepthError : public InputError {
 public:
  using InputError::InputError;
};

// The default nesting limit for outside JSON (limits.json_depth).
inline constexpr std::size_t kDefaultJsonDepth = 128;

// Parses `text` as one JSON value. Throws InputError for malformed JSON, a
// number outside the range of a double, and JsonDepthError for arrays or
// objects nested deeper than `max_depth` (the top-level value is depth 1).
nlohmann::json parse_json(std::string_view text, std::size_t max_depth = kDefaultJsonDepth);

// `v` as an integer if it is one within [lo, hi] (an unsigned 2^64 - 1 is
// out of range, not -1); nullopt otherwise.
std::optional<std::int64_t> integer_in_range(const nlohmann::json& v, std::int64_t lo, std::int64_t hi) noexcept;
// Why integer_in_range() refused `v`: "expected an integer", or "expected an
// integer from lo to hi, got <v as sent>". Callers put the field's name first.
std::string integer_problem(const nlohmann::json& v, std::int64_t lo, std::int64_t hi);

// The depth of an already built value (0 for a scalar, 1 for [] or {}),
// counted without recursion; stops counting once past `stop_after`.
std::size_t json_depth(const nlohmann::json& value, std::size_t stop_after);

}  // namespace bulwark
