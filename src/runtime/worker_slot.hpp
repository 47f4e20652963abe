// WorkerSlot: one worker thread's position in the pool and the attempt it is
// running, shared by the thread itself, the Executor and the Supervisor.
// Shared (shared_ptr) so that an abandoned thread can still finish against
// its slot after the runtime has moved on, or is gone.
//
// The owner handshake decides who ends an attempt. The worker marks it
// running (begin); when it ends, exactly one side wins: the worker
// (finish: running -> idle) or the supervisor or shutdown (claim_abandon:
// running -> abandoned). The winner takes the Running record (vacate) and
// ends the attempt; the loser touches nothing of it.
//
// Thread-safe: the Running record is guarded by the slot's mutex; the
// handshake, exit flags and stack-dump protocol are atomics. `thread` is
// guarded by the Executor's mutex. Nothing here blocks for long.
#pragma once

#include <pthread.h>

#include <atomic>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>

#include "bulwark/detail/thread_annotations.hpp"
#include "bulwark/trace.hpp"
#include "runtime/broker.hpp"
#include "runtime/circuit_breaker.hpp"
#include "runtime/type_gate.hpp"

namespace bulwark::detail {

// An attempt in progress on a worker: its lease, its hold on the type's
// breaker and what the supervisor noted about it.
struct Running {
  Lease lease;
  BreakerTicket breaker;
  GateTicket gate;  // its place under the type's concurrency limit, if any
  Clock::time_point started{};
  bool soft_fired = false;      // soft timeout acted on
  bool stuck_reported = false;  // no-heartbeat report written
  const TaskPtr& task() const noexcept { return lease.task; }
};

// What the supervisor reads of a running attempt.
struct RunningView {
  TaskPtr task;
  Clock::time_point started;
  bool soft_fired = false;
  bool stuck_reported = false;
};

class WorkerSlot {
 public:
  WorkerSlot(unsigned id, unsigned generation) noexcept : id_(id), generation_(generation) {}

  unsigned id() const noexcept { return id_; }                  // pool position
  unsigned generation() const noexcept { return generation_; }  // replacements before this one here

  // The owner handshake (see above).
  void begin() noexcept { owner_.store(kRunning, std::memory_order_release); }
  bool finish() noexcept { return swap_owner(kIdle); }
  bool claim_abandon() noexcept { return swap_owner(kAbandoned); }
  bool is_running() const noexcept { return owner_.load(std::memory_order_acquire) == kRunning; }

  // The worker, before begin(): the attempt it is about to run.
  void occupy(Running running) {
    MutexLock lock(mutex_);
    running_ = std::move(running);
  }
  // The winner of the handshake: takes the record (then the slot is idle).
  std::optional<Running> vacate() {
    MutexLock lock(mutex_);
    return std::exchange(running_, std::nullopt);
  }
  std::optional<RunningView> view() const {
    MutexLock lock(mutex_);
    if (!running_) return std::nullopt;
    return RunningView{running_->task(), running_->started, running_->soft_fired, running_->stuck_reported};
  }
  TaskPtr current() const {
    MutexLock lock(mutex_);
    return running_ ? running_->task() : nullptr;
  }
  // True the first time for the current attempt.
  bool mark_soft_fired() { return mark(&Running::soft_fired); }
  bool mark_stuck_reported() { return mark(&Running::stuck_reported); }

  // The stop source lent to each attempt this worker runs (no allocation per
  // job); replaced once a stop was requested on it. Only the worker uses it.
  std::stop_source& stop_source() noexcept {
    if (stop_.stop_requested()) stop_ = std::stop_source();
    return stop_;
  }

  // Why the thread function returned; empty when it returned at shutdown.
  void set_exit_reason(std::string reason) {
    MutexLock lock(mutex_);
    exit_reason_ = std::move(reason);
  }
  std::string exit_reason() const {
    MutexLock lock(mutex_);
    return exit_reason_;
  }

  std::thread thread;                       // guarded by the Executor's mutex
  std::atomic<bool> exited{false};          // the thread function has returned
  std::atomic<pthread_t> native{};          // for the stack-dump signal

  // Stack dump by signal: the requester sets dump_state to 1 and signals the
  // thread; its handler writes `dump` and sets 2 (see Executor::dump_stack).
  std::atomic<int> dump_state{0};
  RawTrace dump;

 private:
  static constexpr int kIdle = 0, kRunning = 1, kAbandoned = 2;
  bool swap_owner(int to) noexcept {
    int expected = kRunning;
    return owner_.compare_exchange_strong(expected, to, std::memory_order_acq_rel);
  }
  bool mark(bool Running::*flag) {
    MutexLock lock(mutex_);
    if (!running_ || (*running_).*flag) return false;
    (*running_).*flag = true;
    return true;
  }

  const unsigned id_;
  const unsigned generation_;
  std::atomic<int> owner_{kIdle};
  std::stop_source stop_;
  mutable Mutex mutex_;
  std::optional<Running> running_ BULWARK_GUARDED_BY(mutex_);
  std::string exit_reason_ BULWARK_GUARDED_BY(mutex_);
};

}  // namespace bulwark::detail
