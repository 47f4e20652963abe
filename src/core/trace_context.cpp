#include "bulwark/trace_context.hpp"

#include <algorithm>
#include <array>
#include <random>

namespace bulwark {
namespace {

bool lower_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool all_zero(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == '0'; });
}

std::optional<TraceContext> fail(std::string* problem, const char* what) {
  if (problem != nullptr) *problem = what;
  return std::nullopt;
}

std::string hex2(std::uint8_t v) {
  static constexpr char kDigits[] = "0123456789abcdef";
  return {kDigits[v >> 4], kDigits[v & 15]};
}

}  // namespace

std::optional<TraceContext> TraceContext::parse(std::string_view tp, std::string_view state, std::string* problem) {
  // version "-" trace-id "-" parent-id "-" flags: 2 + 1 + 32 + 1 + 16 + 1 + 2
  constexpr std::size_t kLength = 55;
  if (tp.size() < kLength || tp[2] != '-' || tp[35] != '-' || tp[52] != '-') {
    return fail(problem, "expected a W3C traceparent: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>");
  }
  const std::string_view version = tp.substr(0, 2);
  const std::string_view trace_id = tp.substr(3, 32);
  const std::string_view parent_id = tp.substr(36, 16);
  const std::string_view flags = tp.substr(53, 2);
  if (!lower_hex(version) || !lower_hex(trace_id) || !lower_hex(parent_id) || !lower_hex(flags)) {
    return fail(problem, "expected lowercase hexadecimal digits in traceparent");
  }
  if (version == "ff") return fail(problem, "traceparent version ff is invalid");
  // Version 00 is exactly 55 characters; a later version may add fields after a '-'.
  if (tp.size() > kLength && (version == "00" || tp[kLength] != '-')) {
    return fail(problem, "unexpected characters after the traceparent's flags");
  }
  if (all_zero(trace_id)) return fail(problem, "the trace id in traceparent is all zeros");
  if (all_zero(parent_id)) return fail(problem, "the parent id in traceparent is all zeros");
  if (state.size() > kMaxStateBytes) return fail(problem, "tracestate is longer than 512 bytes");
  if (!std::all_of(state.begin(), state.end(), [](char c) { return c >= 0x20 && c <= 0x7e; })) {
    return fail(problem, "tracestate holds characters that are not printable ASCII");
  }
  TraceContext c;
  c.trace_id = std::string(trace_id);
  c.parent_id = std::string(parent_id);
  c.flags = static_cast<std::uint8_t>(std::stoi(std::string(flags), nullptr, 16));
  c.state = std::string(state);
  return c;
}

std::string TraceContext::traceparent() const { return traceparent(parent_id); }

std::string TraceContext::traceparent(std::string_view span_id) const {
  std::string out = "00-";
  out.append(trace_id).append("-").append(span_id).append("-").append(hex2(flags));
  return out;
}

std::string new_span_id() {
  thread_local std::mt19937_64 random{std::random_device{}()};
  std::uint64_t v = 0;
  while (v == 0) v = random();
  std::string out(16, '0');
  static constexpr char kDigits[] = "0123456789abcdef";
  for (int i = 15; i >= 0; --i, v >>= 4) out[static_cast<std::size_t>(i)] = kDigits[v & 15];
  return out;
}

}  // namespace bulwark
