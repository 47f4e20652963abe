// Completion: the one writer of terminal states, and of the decision between
// another attempt and the dead-letter list.
//
// Every way a job can end goes through here: an attempt that returned
// (attempt_ended), one the supervisor or shutdown abandoned (abandoned), a
// cancel (cancel, cancelled_before_start) and a job shutdown never ran
// (end_unrun). Each updates the record, the type's counters, its circuit
// breaker and the log in one place, acks the lease with the broker, then
// publishes: state, store retention, the on_finished listener, and the
// counts that wait_idle() compares.
//
// Called by worker threads (after winning the owner handshake), the
// supervisor thread, API threads (cancel) and the shutdown thread. Thread-
// safe: it keeps no state but atomic counters; each task's record is
// guarded by the task's own mutex. Nothing blocks except wait_idle() and
// the on_finished listener (user code, run on the caller's thread).
#pragma once

#include <atomic>
#include <functional>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bulwark/config.hpp"
#include "bulwark/detail/thread_annotations.hpp"
#include "bulwark/runtime.hpp"
#include "runtime/attempt.hpp"
#include "runtime/broker.hpp"
#include "runtime/event_log.hpp"
#include "runtime/job_store.hpp"
#include "runtime/reporter.hpp"
#include "runtime/stats.hpp"

namespace bulwark::detail {

struct CompletionCounts {
  std::uint64_t succeeded = 0, failed = 0, cancelled = 0, attempts_failed = 0, retried = 0;
  std::uint64_t hard_timeouts = 0, breaker_opened = 0;
};

class Completion {
 public:
  Completion(const RuntimeOptions& options, Reporter& reporter, EventLog& events, Broker& broker,
             JobStore& store);

  // The event stream every part that changes a job's state writes to.
  EventLog& events() noexcept { return events_; }

  // An accepted or requeued job that will end here some day.
  void count_accepted() noexcept { accepted_.fetch_add(1, std::memory_order_seq_cst); }
  // A job newly accepted into `queue` ("" or "default" for the default
  // queue, which is not counted apart: its counts are the totals less
  // the named queues').
  void count_submitted(const std::string& queue);
  // Jobs of each named queue other than the default this process accepted
  // and ended (a copy).
  std::map<std::string, QueueJobCounts> queue_counts() const;
  // Blocks until every accepted job has ended, or `timeout` passes.
  bool wait_idle(std::chrono::milliseconds timeout);
  // How many jobs have ended here so far; and a wait until that count moves
  // past `seen` or `until` comes (Runtime::wait).
  std::uint64_t ended() const noexcept { return ended_.load(std::memory_order_seq_cst); }
  void wait_for_end(std::uint64_t seen, Clock::time_point until);

  // The worker's attempt returned and the worker won the owner handshake.
  void attempt_ended(Running running, AttemptEnd end);
  // The supervisor or shutdown won the handshake of attempt `attempt`: it
  // fails with `failure`; another attempt follows if allowed and left.
  void abandoned(Running running, int attempt, Failure failure, double duration_ms, bool allow_retry);
  // A shared queue's lease taken over from a process that died or stalled
  // while it ran attempt `attempt`: that attempt fails with `failure` (kind
  // lease_lost) under the job's retry policy, as any failed attempt does,
  // except that no breaker here hears of it (the job did not fail here).
  void lease_lost(Lease lease, int attempt, Failure failure);
  // The worker took a job whose cancel came while its start was put off.
  void cancelled_before_start(Lease lease, Clock::time_point now);
  // A user's cancel: ends a waiting job; asks a running one to stop.
  CancelResult cancel(const TaskPtr& task);
  // Shutdown: a job that was still waiting ends failed with kind shutdown.
  // False if it had ended meanwhile.
  bool end_unrun(const TaskPtr& task);

  // A job of a shared queue ended by a transition in the backend rather
  // than by an attempt here (a cancel of a waiting job): counted and handed
  // to the on_finished listener like the others.
  void ended_elsewhere(const JobRecord& record);

  // Submits a succeeded job's follow-up (TaskSpec::then); called on the
  // worker, after the result is stored and before the success is
  // published, so whoever sees the success finds the follow-up. Set before
  // the workers start.
  void set_follow_up(std::function<void(const Task&)> submit) { follow_up_ = std::move(submit); }

  // Flows counted here (the memory backend): a child's end is tallied on
  // its parent, which is released to run, or fails, when the tally says
  // so; a flow's records enter retention once its root has ended. A
  // backend that counts children itself (redis) leaves this off. Set before
  // the workers start.
  void set_counts_children(bool on) noexcept { counts_children_ = on; }

  // One more listener of every job ended here, after on_finished (the
  // memory backend's on_finished_anywhere). Set before the workers start.
  void set_end_listener(std::function<void(const JobRecord&)> listener) { end_listener_ = std::move(listener); }

  CompletionCounts counts() const noexcept;
  void count_hard_timeout() noexcept { hard_timeouts_.fetch_add(1, std::memory_order_relaxed); }

 private:
  void succeed(Running running, const AttemptEnd& end);
  void fail(Running running, int attempt, Failure failure, std::exception_ptr exception,
            std::vector<Failure> cleanup_errors, double duration_ms);
  void note_breaker_failure(const Task& task, bool trial);
  void drop(Running running);
  // The last step of every ending: publishes `terminal` (already stored on
  // the task) to waiters, the store, the listener and wait_idle().
  void publish(const TaskPtr& task, JobState terminal);
  // Hands `record` to the on_finished listeners, each in a guarded frame.
  void notify_listeners(const JobRecord& record);
  // A flow member's end (counts_children_): its parent's tally, and its
  // place in retention.
  void flow_ended(const TaskPtr& task, JobState terminal);
  void child_ended(const TaskPtr& child, const FlowLink& link, JobState terminal);
  void release_parent(const TaskPtr& parent);
  // Ends a flow's waiting parent whose child `child` ended failed or
  // cancelled under policy fail: the parent fails with kind child_failed
  // and its children not started yet are cancelled. False if the parent
  // was no longer waiting.
  bool fail_parent(const TaskPtr& parent, const ChildOutcome& child);
  // Cancels `parent`'s children that have not ended (and theirs): all of
  // them, or only those not started.
  void cancel_children(const Task& parent, bool running_too);
  // Enters a flow's finished records into retention once its root ended.
  void retain_flow(const TaskPtr& task);
  void retain(const TaskPtr& task);
  // Counts an end of a job of `queue` (nothing for the default queue).
  void count_end(const std::string& queue, JobState terminal);
  struct QueueTally {
    std::atomic<std::uint64_t> submitted{0}, succeeded{0}, failed{0}, cancelled{0};
  };
  QueueTally& tally(const std::string& queue);

  const RuntimeOptions& options_;
  Reporter& reporter_;
  EventLog& events_;
  Broker& broker_;
  JobStore& store_;
  std::function<void(const Task&)> follow_up_;
  std::function<void(const JobRecord&)> end_listener_;
  bool counts_children_ = false;

  // Jobs not yet ended are `accepted_ - ended_`, one count on each side;
  // the submit side's line is apart from the workers'.
  alignas(64) std::atomic<std::uint64_t> accepted_{0};
  alignas(64) std::atomic<std::uint64_t> ended_{0};
  Striped<std::uint64_t> succeeded_;
  std::atomic<std::uint64_t> failed_{0}, cancelled_{0};
  std::atomic<std::uint64_t> attempts_failed_{0}, retried_{0}, hard_timeouts_{0}, breaker_opened_{0};
  // The named queues this process runs, made at start and never changed:
  // a job run here finds its tally without a lock. Other queues (a job
  // submitted here for another process's queue) are added under the mutex.
  std::map<std::string, std::unique_ptr<QueueTally>, std::less<>> own_tallies_;
  mutable Mutex tallies_mutex_;
  std::map<std::string, std::unique_ptr<QueueTally>> tallies_ BULWARK_GUARDED_BY(tallies_mutex_);
  std::atomic<int> idle_waiters_{0};  // threads in wait_idle; publish() notifies only if any
  std::atomic<int> end_waiters_{0};   // threads in wait_for_end; likewise
  std::mutex idle_mutex_;  // guards no data: only the wait on idle_cv_
  std::condition_variable idle_cv_;
  std::condition_variable end_cv_;  // waits on idle_mutex_ too
};

}  // namespace bulwark::detail
