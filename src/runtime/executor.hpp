// Executor: the worker threads. Each runs a loop that fetches a lease from
// the broker, admits it through its type's circuit breaker, runs it as an
// Attempt and hands the end to Completion. The Executor also starts,
// replaces and abandons workers (the supervisor decides when), answers for
// their health, and carries out the worker phases of shutdown.
//
// Threads: one per worker position, plus abandoned ones still finishing a
// job. A worker thread is a plain std::thread, not a jthread, on purpose: an
// abandoned thread is detached at shutdown (it may never return), and it
// holds only its slot, its task and shared state, never the Executor.
//
// Thread-safe. `mutex_` guards the positions, the abandoned list, restart
// counts and replacement times; a slot's own state is the slot's (see
// worker_slot.hpp). The shutdown phases block for at most their deadline;
// nothing else blocks for long.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bulwark/config.hpp"
#include "bulwark/detail/thread_annotations.hpp"
#include "bulwark/health.hpp"
#include "runtime/attempt.hpp"
#include "runtime/broker.hpp"
#include "runtime/completion.hpp"
#include "runtime/reporter.hpp"
#include "runtime/stats.hpp"

namespace bulwark::detail {

using SlotPtr = std::shared_ptr<WorkerSlot>;

struct TypeEntry;

struct ExecutorCounts {
  std::size_t running = 0;
  unsigned live = 0;       // positions with a thread that has not exited
  unsigned vacant = 0;     // positions left empty at the abandoned-thread cap
  unsigned positions = 0;
  std::size_t abandoned = 0;  // abandoned threads not yet finished
  std::uint64_t replacements = 0;
  std::uint64_t breaker_deferred = 0;
};

class Executor {
 public:
  Executor(const RuntimeOptions& options, Broker& broker, Completion& completion, Reporter& reporter,
           std::shared_ptr<ProcessRunner> processes);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Starts options.effective_workers() threads.
  void start();

  // The slots of the current positions (not vacant ones).
  std::vector<SlotPtr> live_slots() const;
  // The stack of the thread in `slot`, taken by signal; nullopt if it did
  // not answer within 200 ms. Blocks up to that long.
  std::optional<RawTrace> dump_stack(WorkerSlot& slot);
  // Ends the slot's current attempt with `failure` if this call wins the
  // owner handshake (false if the attempt had ended), leaves its thread
  // behind and starts a replacement unless shutting down or at the cap.
  bool abandon(const SlotPtr& slot, Failure failure, bool allow_retry, Clock::time_point now);
  // Replaces workers whose thread died and retires abandoned threads that
  // finished; returns a sentence for each thing done.
  std::vector<std::string> replace_exited(Clock::time_point now);
  // Replacement times since the last call (for restart intensity).
  std::vector<Clock::time_point> take_replacement_times();

  std::vector<WorkerHealth> health() const;
  // Attempts running now, by job type.
  std::map<std::string, std::size_t, std::less<>> running_by_type() const;
  ExecutorCounts counts() const;
  const WaitSamples& waits() const noexcept { return waits_; }
  HistogramSnapshot run_time() const { return run_time_.snapshot(); }
  HistogramSnapshot queue_wait() const { return queue_wait_.snapshot(); }

  // Shutdown, in this order (the broker is closed between 1 and 2):
  void begin_stopping() noexcept { stopping_.store(true, std::memory_order_release); }  // 1: exits are not deaths
  void request_stops();                        // 2: every running job's stop token
  void await_exit(std::chrono::milliseconds grace);  // 3: until all threads returned or grace ends
  // Jobs parked at `type`'s gate that may start now (resumed, places
  // freed by attempts another thread ended) go back to the broker, ready
  // at `now`. The supervisor, each tick, and resume.
  void release_parked(TypeEntry& type, Clock::time_point now);
  // Every job parked at `type`'s gate goes back to the broker (shutdown,
  // after the workers stopped: the broker's drain then has them).
  void return_parked(TypeEntry& type, Clock::time_point now);

  void close_children();                       // 4: kill child processes, let their waiters return
  void abandon_stragglers();                   // 5: jobs still running end with kind shutdown
  void join_threads();                         // 6: join what returned, detach the rest

 private:
  void start_worker(unsigned position, unsigned generation) BULWARK_REQUIRES(mutex_);
  void replaced(unsigned position, unsigned generation, Clock::time_point now) BULWARK_REQUIRES(mutex_);
  void worker_main(const SlotPtr& slot);
  void worker_loop(const SlotPtr& slot);
  // Runs one lease; false if the attempt was abandoned (the thread must go).
  // `counted`: it already holds a place at its type's gate.
  bool serve(const SlotPtr& slot, Lease lease, bool counted);
  void defer(Lease lease, Clock::time_point until, bool by_breaker);
  std::string leave_behind(const SlotPtr& slot, Clock::time_point now);

  const RuntimeOptions& options_;
  Broker& broker_;
  Completion& completion_;
  Reporter& reporter_;
  const std::shared_ptr<ProcessRunner> processes_;  // null when no type is isolated

  WaitSamples waits_;
  Histogram run_time_;
  Histogram queue_wait_;
  Striped<std::int64_t> running_;  // attempts running now (a sum of stripes)
  std::atomic<std::uint64_t> replacements_{0};
  std::atomic<std::uint64_t> breaker_deferred_{0};
  std::atomic<bool> stopping_{false};

  mutable Mutex mutex_;
  std::vector<SlotPtr> slots_ BULWARK_GUARDED_BY(mutex_);      // one per position, null when vacant
  std::vector<SlotPtr> abandoned_ BULWARK_GUARDED_BY(mutex_);  // left behind, not yet finished
  std::vector<unsigned> restarts_ BULWARK_GUARDED_BY(mutex_);  // per position
  std::vector<Clock::time_point> replacement_times_ BULWARK_GUARDED_BY(mutex_);
};

}  // namespace bulwark::detail
