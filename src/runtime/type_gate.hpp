// TypeGate: one job type's controls on when its attempts may start in this
// process: paused or not, at most `concurrency` at once, and a token bucket
// of `rate` starts a second (handlers.<type>.concurrency / .rate).
//
// The executor asks admit() before each attempt. A job that may not start
// now waits without failing and without churning through the queue:
//   - paused or at the concurrency limit: the gate keeps (parks) its lease,
//     in arrival order, until a place frees (the worker that ends an attempt
//     of the type takes the next parked one: take_runnable) or the type is
//     resumed (the supervisor and resume give them back to the broker:
//     take_released);
//   - over the rate: it is given a start time of its own (a reservation, so
//     that n waiting jobs do not all wake for one token) and waits in the
//     broker until then.
// An admitted attempt holds a GateTicket, which gives its place back when
// the attempt ends.
//
// Thread-safe. Never blocks beyond its own short lock; a type without
// limits that is not paused takes no lock at all.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <deque>
#include <optional>
#include <utility>
#include <vector>

#include "bulwark/detail/thread_annotations.hpp"
#include "bulwark/handler_options.hpp"
#include "runtime/broker.hpp"

namespace bulwark::detail {

enum class GateVerdict {
  run,   // start it (holding a place if the type has a concurrency limit)
  park,  // the gate kept the lease
  wait,  // over the rate: defer the lease until `until`, then it runs
};

struct GateDecision {
  GateVerdict verdict = GateVerdict::run;
  Clock::time_point until{};
  bool counted = false;  // holds a place: the attempt's GateTicket gives it back
};

// What the gate is doing now, for Runtime::types().
struct GateState {
  bool paused = false;
  std::size_t parked = 0;    // leases waiting here (paused or at the concurrency limit)
  std::optional<double> tokens{};  // with a rate: starts allowed now without waiting
  std::uint64_t rate_waits = 0;    // cumulative: starts put off by the rate
  std::uint64_t parks = 0;         // cumulative: leases parked
};

class TypeGate {
 public:
  TypeGate(std::optional<unsigned> concurrency, std::optional<RateLimit> rate) noexcept;

  // A lease about to start. On park the gate takes `lease` (it is left
  // empty). `counted`: the lease already holds a place (take_runnable).
  GateDecision admit(Lease& lease, Clock::time_point now, bool counted = false);
  // An admitted attempt ended: its place is free.
  void leave() noexcept;

  // The next parked lease that may start now, holding a place (pass
  // counted = true to admit); none while paused or full.
  std::optional<Lease> take_runnable();
  // Parked leases that may start now, without places: they go back through
  // the broker and admit() again. Up to the free places; all when unlimited.
  std::vector<Lease> take_released();
  // Every parked lease (shutdown).
  std::vector<Lease> take_all();

  // True if that changed anything.
  bool pause() noexcept;
  bool resume() noexcept;
  bool paused() const noexcept { return paused_.load(std::memory_order_acquire); }

  std::optional<unsigned> concurrency() const noexcept { return concurrency_; }
  std::optional<RateLimit> rate() const noexcept { return rate_; }
  std::size_t parked() const noexcept { return parked_count_.load(std::memory_order_acquire); }
  GateState state(Clock::time_point now) const;

 private:
  bool full() const BULWARK_REQUIRES(mutex_) { return concurrency_ && admitted_ >= *concurrency_; }
  // The rate's verdict for one start; reserves a time for a deferred one.
  GateDecision rate_check(Task& task, Clock::time_point now) BULWARK_REQUIRES(mutex_);

  const std::optional<unsigned> concurrency_;
  const std::optional<RateLimit> rate_;
  const bool limited_;  // any limit configured
  const Clock::duration interval_{};   // 1 / per_second
  const Clock::duration tolerance_{};  // (burst - 1) * interval
  std::atomic<bool> paused_{false};
  std::atomic<std::size_t> parked_count_{0};
  mutable Mutex mutex_;
  std::deque<Lease> parked_ BULWARK_GUARDED_BY(mutex_);
  std::size_t admitted_ BULWARK_GUARDED_BY(mutex_) = 0;
  Clock::time_point tat_ BULWARK_GUARDED_BY(mutex_){};  // GCRA: theoretical arrival time of the next start
  std::uint64_t rate_waits_ BULWARK_GUARDED_BY(mutex_) = 0;
  std::uint64_t parks_ BULWARK_GUARDED_BY(mutex_) = 0;
};

// An admitted attempt's place at its gate; gives it back when destroyed.
// Move-only.
class GateTicket {
 public:
  GateTicket() = default;
  explicit GateTicket(TypeGate* gate) noexcept : gate_(gate) {}
  GateTicket(GateTicket&& o) noexcept : gate_(std::exchange(o.gate_, nullptr)) {}
  GateTicket& operator=(GateTicket&& o) noexcept {
    if (this != &o) {
      release();
      gate_ = std::exchange(o.gate_, nullptr);
    }
    return *this;
  }
  GateTicket(const GateTicket&) = delete;
  GateTicket& operator=(const GateTicket&) = delete;
  ~GateTicket() { release(); }
  void release() noexcept {
    if (gate_ != nullptr) std::exchange(gate_, nullptr)->leave();
  }

 private:
  TypeGate* gate_ = nullptr;
};

}  // namespace bulwark::detail
