// Test helpers shared by the suites.
#pragma once

#include <thread>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "builtin_workers.hpp"
#include "bulwark/config.hpp"
#include "bulwark/failure.hpp"
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

// With BULWARK_TEST_BACKEND=redis, runtimes under test use the shared
// queue on one redis-server started for the test process, each runtime in
// a namespace of its own; test_redis_url() says where.
std::string test_redis_url();
bool test_backend_is_redis();

// The innermost function of a failure's trace, whether raw (caught in this
// process) or symbolized already (read back from a shared queue).
inline std::string top_function(const Failure& f) {
  if (!f.frames.empty()) return f.frames.front().function;
  return top_function(f.trace);
}

// Options for runtimes under test: no log output, fast retries, a quick
// supervisor tick and a short shutdown grace; the backend the environment
// names.
inline RuntimeOptions test_options(unsigned workers) {
  using namespace std::chrono_literals;
  RuntimeOptions o;
  if (test_backend_is_redis()) {
    static std::atomic<int> next{0};
    o.backend = QueueBackend::redis;
    o.redis.url = test_redis_url();
    o.redis.ns = std::string("rt").append(std::to_string(next.fetch_add(1)));
    o.redis.lease = 5s;
  }
  o.workers = workers;
  o.logging.level = "off";
  o.retry.initial = 1ms;
  o.retry.max = 5ms;
  o.supervisor.tick = 10ms;
  o.shutdown_grace = 100ms;
  return o;
}

// The built-in workers; "context": answers what its JobContext says
// (also from a child process, when the type is isolated); "progress":
// reports {"steps"} steps of progress {"gap_ms"} apart ("step i of n"),
// then stays {"hold_ms"} (until asked to stop).
inline Registry builtins() {
  Registry r;
  workers::register_builtin(r);
  r.add("context", [](JobContext& ctx, const nlohmann::json&) -> nlohmann::json {
    return {{"id", ctx.id()}, {"attempt", ctx.attempt()}, {"trace_id", ctx.trace_id()}, {"span_id", ctx.span_id()},
            {"traceparent", ctx.traceparent()}, {"pid", static_cast<long>(::getpid())}};
  });
  r.add("progress", [](JobContext& ctx, const nlohmann::json& p) -> nlohmann::json {
    const int steps = p.value("steps", 1);
    for (int i = 1; i <= steps; ++i) {
      ctx.progress(static_cast<double>(i) / steps, "step " + std::to_string(i) + " of " + std::to_string(steps));
      std::this_thread::sleep_for(std::chrono::milliseconds(p.value("gap_ms", 0)));
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(p.value("hold_ms", 0));
    while (std::chrono::steady_clock::now() < until && !ctx.stop_requested()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return steps;
  });
  return r;
}

}  // namespace bulwark::testing
