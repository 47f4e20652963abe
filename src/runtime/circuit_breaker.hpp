// CircuitBreaker: quarantine for one job type that keeps failing.
//
// Closed, it lets every job start and counts failed attempts; `failures` of
// them within `window` open it. Open, jobs of the type are not started: they
// wait, scheduled, until `cooldown` has passed. Then one job is let through as
// the trial (half-open); its success closes the breaker, its failure opens it
// for another cooldown. Other types are not affected.
//
//   CircuitBreaker b({.failures = 5, .window = 10s, .cooldown = 5s});
//   auto d = b.admit(now);
//   if (!d.run) reschedule(task, d.retry_at);
//
// Thread-safe. The closed-state check on the hot path is one atomic load;
// recording a failure takes the breaker's mutex.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <utility>

#include "bulwark/detail/thread_annotations.hpp"

#include "bulwark/config.hpp"
#include "bulwark/health.hpp"
#include "bulwark/job.hpp"

namespace bulwark::detail {

class CircuitBreaker {
 public:
  using State = BreakerState;  // never `off` here: enabled() says that
  struct Decision {
    bool run = true;
    bool trial = false;              // this job decides whether to close
    Clock::time_point retry_at{};    // when !run: when to try again
  };

  explicit CircuitBreaker(CircuitBreakerOptions options) : options_(options) {}

  bool enabled() const noexcept { return options_.failures > 0; }
  Decision admit(Clock::time_point now);
  // Results of attempts that admit() let run. Both return true when the
  // call changed the state (for logging).
  bool on_success(bool trial);
  bool on_failure(bool trial, Clock::time_point now);
  // The trial job admitted will not run after all (it was cancelled).
  void release_trial();

  State state() const noexcept { return state_.load(std::memory_order_acquire); }
  std::uint64_t opened() const noexcept { return opened_.load(std::memory_order_relaxed); }

 private:
  void open(Clock::time_point now) BULWARK_REQUIRES(mutex_);

  const CircuitBreakerOptions options_;
  std::atomic<State> state_{State::closed};
  std::atomic<std::uint64_t> opened_{0};
  Mutex mutex_;
  std::deque<Clock::time_point> failures_ BULWARK_GUARDED_BY(mutex_);  // within the window
  Clock::time_point open_until_ BULWARK_GUARDED_BY(mutex_){};
  bool trial_running_ BULWARK_GUARDED_BY(mutex_) = false;
};

// One admitted attempt's hold on its breaker: reports the attempt's result
// once (succeeded / failed), or, if it never ran, gives a trial place back
// when destroyed. Move-only; used by whoever ends the attempt.
class BreakerTicket {
 public:
  BreakerTicket() = default;
  BreakerTicket(CircuitBreaker& breaker, bool trial) noexcept : breaker_(&breaker), trial_(trial) {}
  BreakerTicket(BreakerTicket&& o) noexcept
      : breaker_(std::exchange(o.breaker_, nullptr)), trial_(o.trial_) {}
  BreakerTicket& operator=(BreakerTicket&& o) noexcept {
    if (this != &o) {
      abandon();
      breaker_ = std::exchange(o.breaker_, nullptr);
      trial_ = o.trial_;
    }
    return *this;
  }
  ~BreakerTicket() { abandon(); }

  bool trial() const noexcept { return trial_; }
  // The attempt succeeded / failed; true if that changed the breaker's state.
  bool succeeded() { return std::exchange(breaker_, nullptr)->on_success(trial_); }
  bool failed(Clock::time_point now) { return std::exchange(breaker_, nullptr)->on_failure(trial_, now); }
  explicit operator bool() const noexcept { return breaker_ != nullptr; }

 private:
  void abandon() noexcept {
    if (breaker_ != nullptr && trial_) breaker_->release_trial();
    breaker_ = nullptr;
  }
  CircuitBreaker* breaker_ = nullptr;
  bool trial_ = false;
};

}  // namespace bulwark::detail
