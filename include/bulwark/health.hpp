// HealthReport: the supervisor's verdict on a runtime, and what it is based on.
//
//   bulwark::HealthReport h = runtime.health();
//   if (h.verdict == bulwark::Verdict::unhealthy) alert(h.reasons);
//
// `healthy`: nothing to report. `degraded`: work is slow (queue wait p99 above
// supervisor.max_queue_wait_ms, or every worker busy longer than
// supervisor.stall_ms); retries are held back so fresh work goes first.
// `unhealthy`: the process should be restarted (too many worker replacements
// within supervisor.restart_window_ms, or the cap on abandoned threads reached).
//
// A plain value; not synchronized.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "bulwark/job.hpp"

namespace bulwark {

enum class Verdict { healthy, degraded, unhealthy };
std::string_view to_string(Verdict v) noexcept;

// What a worker position is doing. `vacant`: its thread was abandoned and
// not replaced (supervisor.max_abandoned_threads reached).
enum class WorkerState { idle, busy, abandoned, vacant };
std::string_view to_string(WorkerState s) noexcept;

// A child worker process position. `not_started`: no isolated job ran yet;
// `stopped`: shut down.
enum class ProcessState { not_started, idle, busy, stopped };
std::string_view to_string(ProcessState s) noexcept;

// A job type's circuit breaker; `off` when circuit_breaker.failures is 0.
enum class BreakerState : std::uint8_t { off, closed, open, half_open };
std::string_view to_string(BreakerState s) noexcept;

struct WorkerHealth {
  unsigned id = 0;            // pool position; a replacement keeps the id
  WorkerState state = WorkerState::idle;
  std::optional<JobId> job{};   // the job it is running
  std::optional<double> ms_since_heartbeat{};  // while running a job
  unsigned restarts = 0;      // replacements at this position
  bool abandoned = false;     // a stuck thread left behind after a hard timeout
};

// A child worker process of process isolation (see isolation.hpp).
struct ProcessHealth {
  unsigned id = 0;           // pool position; a replacement keeps the id
  int pid = 0;               // 0 while none is running at this position
  ProcessState state = ProcessState::not_started;
  std::optional<JobId> job{};  // the job it is running
  unsigned restarts = 0;     // children started to replace dead ones here
  std::string last_exit{};     // why the previous child here ended; empty if none did
};

struct BreakerHealth {
  std::string type{};
  BreakerState state = BreakerState::closed;
  std::uint64_t opened = 0;  // times it opened
};

// The recovery governor: the limit on retries running at once, and why.
struct RecoveryHealth {
  unsigned limit = 0;
  unsigned min = 0, max = 0;
  bool adaptive = true;
  std::string reason{};        // the last adjustment's cause; empty before the first
  std::uint64_t raised = 0;    // adjustments up
  std::uint64_t lowered = 0;   // adjustments down
  // Child worker process replacements put off by the limit (at most `limit`
  // start in any second; the rest at a later tick or when a job needs one).
  std::uint64_t restarts_deferred = 0;
};

struct HealthReport {
  Verdict verdict = Verdict::healthy;
  std::vector<std::string> reasons{};  // one sentence each; empty when healthy
  std::vector<WorkerHealth> workers{};  // pool positions first, then abandoned threads
  std::vector<ProcessHealth> processes{};  // child worker processes, when a type is isolated
  std::vector<BreakerHealth> breakers{};  // job types whose breaker is enabled
  std::optional<double> queue_wait_p99_ms{};  // over the last 30 s, if any job started
  RecoveryHealth recovery{};
};

nlohmann::ordered_json to_json(const HealthReport& report);

}  // namespace bulwark
