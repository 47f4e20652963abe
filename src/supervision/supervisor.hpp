// Supervisor: its own thread, which every supervisor.tick_ms looks at every
// worker and acts. A job past its soft timeout gets its stack recorded and
// its stop token set; a job without a heartbeat for supervisor.stuck_ms gets
// a stack report; a job past its hard timeout has its thread abandoned and
// replaced (Executor::abandon). Dead workers are replaced. From restart
// intensity, vacant positions, queue-wait p99 and stalls it forms the
// health verdict, and while the pool is saturated it slows retries to one
// at a time (fresh work first).
//
// It reads the Executor's snapshots and acts through the Executor, the
// Broker and the tasks; it writes no terminal state itself.
//
// Thread-safe: health() may be called from any thread; the verdict is
// guarded by `mutex_`; everything else belongs to the supervisor thread.
// stop() blocks until the thread has ended (at most one tick).
#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bulwark/config.hpp"
#include "bulwark/detail/thread_annotations.hpp"
#include "bulwark/health.hpp"
#include "runtime/broker.hpp"
#include "runtime/event_log.hpp"
#include "runtime/executor.hpp"
#include "runtime/process_runner.hpp"
#include "runtime/reporter.hpp"
#include "runtime/type_table.hpp"
#include "supervision/recovery_governor.hpp"

namespace bulwark::detail {

struct SupervisorCounts {
  std::uint64_t soft_timeouts = 0, stuck_reports = 0;
};

class Supervisor {
 public:
  Supervisor(const RuntimeOptions& options, Executor& executor, Broker& broker, const TypeTable& types,
             Reporter& reporter, EventLog& events, std::shared_ptr<ProcessRunner> processes);
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  void start();
  void stop();

  HealthReport health() const;
  SupervisorCounts counts() const noexcept;

 private:
  struct Findings {
    std::vector<std::string> unhealthy;
    std::vector<std::string> degraded;
    std::optional<double> wait_p99_ms;
  };

  void run(std::stop_token stop);
  void tick(Clock::time_point now);
  void watch(const SlotPtr& slot, Clock::time_point now);
  void report_stack(const SlotPtr& slot, const TaskPtr& task, std::string message, bool request_stop);
  void note_restarts(Clock::time_point now);
  void check_restarts(Clock::time_point now, Findings& f);
  void check_positions(const ExecutorCounts& c, Findings& f) const;
  void check_waits(const ExecutorCounts& c, Clock::time_point now, Findings& f);
  void govern(const ExecutorCounts& c, Clock::time_point now);
  LoadSignals read_signals(const ExecutorCounts& c, Clock::time_point now);
  void publish_verdict(Findings f);

  const RuntimeOptions& options_;
  Executor& executor_;
  Broker& broker_;
  const TypeTable& types_;
  Reporter& reporter_;
  EventLog& events_;
  const std::shared_ptr<ProcessRunner> processes_;

  std::atomic<std::uint64_t> soft_timeouts_{0}, stuck_reports_{0};
  // Owned by the supervisor thread:
  std::deque<Clock::time_point> restart_times_;
  std::uint64_t process_deaths_seen_ = 0;
  std::optional<Clock::time_point> all_busy_since_;
  RecoveryGovernor governor_;
  LoadProbe probe_;
  Clock::time_point next_adjust_{};
  std::int64_t last_adjust_ms_ = 0;
  std::uint64_t last_failed_attempts_ = 0, last_ended_attempts_ = 0;
  std::atomic<unsigned> recovery_limit_{0};
  std::atomic<std::uint64_t> recovery_raised_{0}, recovery_lowered_{0};

  mutable Mutex mutex_;
  Verdict verdict_ BULWARK_GUARDED_BY(mutex_) = Verdict::healthy;
  std::vector<std::string> reasons_ BULWARK_GUARDED_BY(mutex_);
  std::optional<double> wait_p99_ms_ BULWARK_GUARDED_BY(mutex_);
  std::string recovery_reason_ BULWARK_GUARDED_BY(mutex_);

  std::jthread thread_;  // last: stopped and joined first
};

}  // namespace bulwark::detail
