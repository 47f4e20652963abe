#include "runtime/circuit_breaker.hpp"

namespace bulwark::detail {


CircuitBreaker::Decision CircuitBreaker::admit(Clock::time_point now) {
  if (!enabled() || state_.load(std::memory_order_acquire) == State::closed) return {};
  MutexLock lock(mutex_);
  switch (state_.load(std::memory_order_relaxed)) {
    case State::off:
    case State::closed:
      return {};
    case State::open:
      if (now < open_until_) return {false, false, open_until_};
      state_.store(State::half_open, std::memory_order_release);
      trial_running_ = true;
      return {true, true, {}};
    case State::half_open:
      if (!trial_running_) {
        trial_running_ = true;
        return {true, true, {}};
      }
      // Wait for the trial's verdict; look again shortly.
      return {false, false, now + std::min<Clock::duration>(options_.cooldown, std::chrono::milliseconds(100))};
  }
  return {};
}

void CircuitBreaker::open(Clock::time_point now) {
  open_until_ = now + options_.cooldown;
  trial_running_ = false;
  failures_.clear();
  state_.store(State::open, std::memory_order_release);
  opened_.fetch_add(1, std::memory_order_relaxed);
}

bool CircuitBreaker::on_success(bool trial) {
  if (!enabled() || !trial) return false;
  MutexLock lock(mutex_);
  trial_running_ = false;
  failures_.clear();
  state_.store(State::closed, std::memory_order_release);
  return true;
}

void CircuitBreaker::release_trial() {
  MutexLock lock(mutex_);
  trial_running_ = false;
}

bool CircuitBreaker::on_failure(bool trial, Clock::time_point now) {
  if (!enabled()) return false;
  MutexLock lock(mutex_);
  if (trial) {
    open(now);
    return true;
  }
  if (state_.load(std::memory_order_relaxed) != State::closed) return false;
  failures_.push_back(now);
  while (!failures_.empty() && now - failures_.front() > options_.window) failures_.pop_front();
  if (failures_.size() < options_.failures) return false;
  open(now);
  return true;
}

}  // namespace bulwark::detail
