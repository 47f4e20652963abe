// Test helpers shared by the suites.
#pragma once

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "bulwark/trace.hpp"

namespace bulwark::testing {

// True if some frame of `trace` names a function containing `name`.
inline bool trace_names(const RawTrace& trace, const std::string& name) {
  const std::vector<Frame> frames = symbolize(trace);
  return std::any_of(frames.begin(), frames.end(),
                     [&](const Frame& f) { return f.function.find(name) != std::string::npos; });
}

// The function name of the innermost frame, or "" for an empty trace.
inline std::string top_function(const RawTrace& trace) {
  const std::vector<Frame> frames = symbolize(trace);
  return frames.empty() ? std::string() : frames.front().function;
}

// Quiet logging for tests that fail many jobs on purpose.
inline constexpr const char* kQuiet = "off";

}  // namespace bulwark::testing
