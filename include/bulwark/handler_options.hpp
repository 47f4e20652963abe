// HandlerOptions: the settings of one job type, from code and from config.
//
// Code gives a type its defaults when it registers it (Registry::add); the
// config file's handlers.<type>.* (RuntimeOptions::handlers, the same struct)
// overrides them field by field; a job's own fields override both. An unset
// field falls through to the next source, and finally to the runtime-wide
// `retry` and `supervisor` settings.
//
//   registry.add("resize", handler, {.max_attempts = 5, .timeout = 30s});
//   options.handlers["resize"].isolation = bulwark::Isolation::process;
//
// Plain values; not synchronized.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>

#include <nlohmann/json_fwd.hpp>

namespace bulwark {

// Where a job type's attempts run: on a worker thread of this process (the
// default), or in a child worker process that may crash without taking this
// process down (see bulwark/isolation.hpp).
enum class Isolation { thread, process };

// A token bucket: `per_second` jobs a second on average, up to `burst` at
// once after a quiet spell. Jobs over it wait (state queued); they never fail.
struct RateLimit {
  double per_second = 1;  // > 0
  unsigned burst = 1;     // >= 1
};

struct HandlerOptions {
  // Checks a payload at submit time; throws (any exception) to refuse the job
  // with SubmitError::Code::invalid and the exception's message. Runs on the
  // submitting thread: keep it cheap. Code only (a config file cannot set it).
  std::function<void(const nlohmann::json& payload)> validate{};
  std::optional<int> max_attempts{};
  std::optional<std::chrono::milliseconds> backoff_initial{};
  std::optional<std::chrono::milliseconds> backoff_max{};
  std::optional<std::chrono::milliseconds> timeout{};       // soft timeout: the stop token is set
  std::optional<std::chrono::milliseconds> hard_timeout{};  // the attempt fails with kind timeout
  std::optional<Isolation> isolation{};                     // default: thread
  std::optional<std::size_t> memory_limit_mb{};             // process isolation only; 0: none
  // Job controls (Runtime::types()): at most `concurrency` attempts of the
  // type at once in this process, and starts at most at `rate`. Jobs over a
  // limit wait queued, in order; they never fail for it. Unset: no limit.
  std::optional<unsigned> concurrency{};
  std::optional<RateLimit> rate{};

  // These options with every field that `over` sets taken from `over`.
  HandlerOptions overridden_by(const HandlerOptions& over) const;
};

// The config file's handlers.<type>.* are HandlerOptions too.
using HandlerConfig = HandlerOptions;

}  // namespace bulwark
