// Test helpers shared by the suites.
#pragma once

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "builtin_workers.hpp"
#include "bulwark/config.hpp"
#include "bulwark/registry.hpp"
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

// Options for runtimes under test: no log output, fast retries, a quick
// supervisor tick and a short shutdown grace.
inline RuntimeOptions test_options(unsigned workers) {
  using namespace std::chrono_literals;
  RuntimeOptions o;
  o.workers = workers;
  o.logging.level = "off";
  o.retry.initial = 1ms;
  o.retry.max = 5ms;
  o.supervisor.tick = 10ms;
  o.shutdown_grace = 100ms;
  return o;
}

// A registry with the built-in workers.
inline Registry builtins() {
  Registry r;
  workers::register_builtin(r);
  return r;
}

}  // namespace bulwark::testing
