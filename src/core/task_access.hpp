// Internal: every change to a Task, for the runtime only. The public
// header (bulwark/detail/task.hpp) lets embedding code read a task; this is
// the one door through which the runtime's parts (intake, completion, the
// executor, the brokers, the supervisor, child worker processes) write it.
//
// The rules of Task hold here: spec() and record_unlocked() only before the
// task is shared; the state changes by compare-exchange (transition) or by
// its one owner (set_state); the record only under the task's mutex
// (with_record, commit). Thread-safe as Task is; nothing here blocks for long.
#pragma once

#include <cstdint>

#include "bulwark/detail/task.hpp"

namespace bulwark::detail {

struct TaskAccess {
  // The spec, writable: only before the task is shared.
  static TaskSpec& spec(Task& task) noexcept { return task.spec_; }
  // The record without its lock: only before the task is shared.
  static TaskRecord& record_unlocked(Task& task) noexcept BULWARK_NO_THREAD_SAFETY_ANALYSIS {
    return task.record_;
  }
  // The runtime's entry for the job's type; set before the task is shared.
  static void set_type_entry(Task& task, TypeEntry* type) noexcept { task.type_ = type; }

  // Runs `fn(TaskRecord&)` with the task's mutex held and returns what it
  // returns.
  template <class F>
  static decltype(auto) with_record(Task& task, F&& fn) {
    MutexLock lock(task.mutex_);
    return fn(task.record_);
  }
  // Task::commit, for the runtime's own tasks.
  template <class F>
  static void commit(Task& task, const JobContext& ctx, F&& write) {
    task.commit(ctx, std::forward<F>(write));
  }

  // Moves the state from `from` to `to`; false if it was not `from`.
  static bool transition(Task& task, JobState from, JobState to) noexcept {
    return task.state_.compare_exchange_strong(from, to, std::memory_order_acq_rel);
  }
  // Sets the state outright: only its current owner (see Completion).
  static void set_state(Task& task, JobState s) noexcept { task.state_.store(s, std::memory_order_release); }
  // Wakes Task::wait() after a terminal state was set.
  static void notify_terminal(Task& task) noexcept { task.state_.notify_all(); }

  static void heartbeat(Task& task, Clock::time_point at) noexcept {
    task.heartbeat_ns_.store(at.time_since_epoch().count(), std::memory_order_relaxed);
  }
  static void set_ready_at(Task& task, Clock::time_point at) noexcept {
    task.ready_ns_.store(at.time_since_epoch().count(), std::memory_order_relaxed);
  }
  // Written before the attempt's request_stop(), read by Stopped.
  static void set_stop_reason(Task& task, FailureKind kind) noexcept {
    task.stop_reason_.store(kind, std::memory_order_release);
  }

  // Its type's rate limit gave it a start time of its own (TypeGate): the
  // next admission uses it instead of a token. True once per reservation.
  static void reserve_rate_slot(Task& task) noexcept { task.rate_slot_.store(true, std::memory_order_relaxed); }
  static bool take_rate_slot(Task& task) noexcept { return task.rate_slot_.exchange(false, std::memory_order_relaxed); }

  // Counts the job's terminal states, for a store's retention bookkeeping.
  static std::uint32_t count_finish(Task& task) noexcept {
    return task.finishes_.fetch_add(1, std::memory_order_acq_rel) + 1;
  }
};

}  // namespace bulwark::detail
