#include "support/text.hpp"

#include <unistd.h>

#include <cstdio>
#include <random>

namespace bulwark::detail {

std::string hex(std::uintptr_t value) {
  char buf[2 + 2 * sizeof value + 1];
  std::snprintf(buf, sizeof buf, "0x%jx", static_cast<std::uintmax_t>(value));
  return buf;
}

std::string host_name() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) return {};
  return host;
}

std::string random_tag(std::size_t n) {
  static const char* kDigits = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::mt19937_64 rng(std::random_device{}());
  std::string tag;
  for (std::size_t i = 0; i < n; ++i) tag += kDigits[rng() % 36];
  return tag;
}

std::string dump_line(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

std::string dump_line(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

bool is_valid_utf8(const std::string& s) {
  try {
    (void)nlohmann::json(s).dump();
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

}  // namespace bulwark::detail
