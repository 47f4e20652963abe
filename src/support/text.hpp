// Support: small text helpers every layer uses.
//
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace bulwark::detail {

// "0x7f..." in lower case.
std::string hex(std::uintptr_t value);

// `n` random characters of 0-9a-z (ids that must not collide across
// processes or restarts).
std::string random_tag(std::size_t n);

// This machine's host name (gethostname); empty if it has none.
std::string host_name();

// True if `s` is valid UTF-8.
bool is_valid_utf8(const std::string& s);

// One line of JSON; invalid UTF-8 in strings becomes U+FFFD instead of
// throwing (job payloads and failure messages are outside bytes).
std::string dump_line(const nlohmann::json& j);
std::string dump_line(const nlohmann::ordered_json& j);

}  // namespace bulwark::detail
