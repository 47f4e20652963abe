// TypeTable: every job type a runtime runs, with its settings merged once
// (the handler's HandlerOptions from code, overridden by handlers.<type>
// from config, over the runtime-wide retry and supervisor settings), its
// counters and its circuit breaker. Posted callables share one entry, "post".
//
// Built once by the runtime, then read-only in shape: lookups take no lock.
// An entry's counters and breaker are thread-safe. Entries live as long as
// the TypeTable; tasks point at theirs (Task::type_entry()).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "bulwark/config.hpp"
#include "bulwark/registry.hpp"
#include "runtime/attempt.hpp"
#include "runtime/circuit_breaker.hpp"
#include "runtime/stats.hpp"
#include "runtime/type_gate.hpp"

namespace bulwark::detail {

struct TypeEntry {
  TypeEntry(CircuitBreakerOptions cb, std::optional<unsigned> concurrency, std::optional<RateLimit> rate)
      : breaker(cb), gate(concurrency, rate) {}

  std::string name;
  const Handler* handler = nullptr;  // null for posted callables
  std::function<void(const nlohmann::json&)> validate;
  RetryPolicy policy;
  std::chrono::milliseconds timeout{0};       // soft default for the type; 0: none
  std::chrono::milliseconds hard_timeout{0};  // 0: none
  Isolation isolation = Isolation::thread;
  std::size_t memory_limit_mb = 0;            // isolated attempts; 0: none
  // How attempts run: null on a worker thread; a ChildRunner when isolated
  // and processes were plugged in (use_processes).
  std::shared_ptr<AttemptRunner> runner;
  TypeCounters counters;
  // Attempts run in another process: a worker thread only waits for them,
  // so its stack says nothing, and the runner enforces hard timeouts.
  bool runs_elsewhere() const noexcept { return runner && runner->remote(); }
  CircuitBreaker breaker;
  TypeGate gate;  // pause, concurrency and rate (handlers.<type>)
  // A job's progress to publish (events, Redis); set by the runtime before
  // the workers start, called on the job's thread.
  std::function<void(const Task&, const JobProgress&)> on_progress;
};

class TypeTable {
 public:
  // Throws ConfigError when options.handlers names a type the registry lacks.
  TypeTable(const Registry& registry, const RuntimeOptions& options);

  TypeEntry* find(std::string_view type) const noexcept;
  TypeEntry& posts() noexcept { return *posts_; }
  const TypeEntry& posts() const noexcept { return *posts_; }
  bool any_isolated() const noexcept;
  // Isolated types run their attempts through `processes` from now on.
  // Call before the workers start.
  void use_processes(const std::shared_ptr<ProcessRunner>& processes);
  // Registered types in name order (not "post").
  template <class F>
  void for_each(F&& fn) const {
    for (const auto& [name, entry] : types_) fn(*entry);
  }

 private:
  std::map<std::string, std::unique_ptr<TypeEntry>, std::less<>> types_;
  std::unique_ptr<TypeEntry> posts_;
};

}  // namespace bulwark::detail
