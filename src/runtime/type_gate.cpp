#include "runtime/type_gate.hpp"
#include "core/task_access.hpp"

#include <algorithm>
#include <cmath>

namespace bulwark::detail {

namespace {

Clock::duration interval_of(const std::optional<RateLimit>& rate) {
  if (!rate) return {};
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / rate->per_second));
}

}  // namespace

TypeGate::TypeGate(std::optional<unsigned> concurrency, std::optional<RateLimit> rate) noexcept
    : concurrency_(concurrency),
      rate_(rate),
      limited_(concurrency.has_value() || rate.has_value()),
      interval_(interval_of(rate)),
      tolerance_(rate ? interval_of(rate) * static_cast<long>(std::max(1u, rate->burst) - 1) : Clock::duration{}) {}

GateDecision TypeGate::admit(Lease& lease, Clock::time_point now, bool counted) {
  if (!limited_ && !paused()) return {};
  MutexLock lock(mutex_);
  if (!counted) {
    if (paused() || full()) {
      if (paused()) lease.give_back_retry();  // a paused type holds no retry place
      parked_.push_back(std::move(lease));
      parked_count_.store(parked_.size(), std::memory_order_release);
      ++parks_;
      return {GateVerdict::park};
    }
    ++admitted_;
  }
  GateDecision d = rate_check(*lease.task, now);
  if (d.verdict == GateVerdict::wait) {
    --admitted_;
    return d;
  }
  d.counted = true;
  return d;
}

// GCRA (the virtual-scheduling form of a token bucket): a start is allowed
// while the theoretical arrival time is at most `tolerance` ahead of now;
// each start moves it one interval on. A start that is not allowed takes
// the next free time at once, so waiting jobs are spread one interval
// apart instead of all waking for the same token.
GateDecision TypeGate::rate_check(Task& task, Clock::time_point now) {
  if (!rate_ || TaskAccess::take_rate_slot(task)) return {};
  const Clock::time_point t = std::max(tat_, now);
  tat_ = t + interval_;
  if (t - now <= tolerance_) return {};
  TaskAccess::reserve_rate_slot(task);
  ++rate_waits_;
  return {GateVerdict::wait, t - tolerance_};
}

void TypeGate::leave() noexcept {
  MutexLock lock(mutex_);
  if (admitted_ > 0) --admitted_;
}

std::optional<Lease> TypeGate::take_runnable() {
  if (parked() == 0) return std::nullopt;
  MutexLock lock(mutex_);
  if (parked_.empty() || paused() || full()) return std::nullopt;
  Lease lease = std::move(parked_.front());
  parked_.pop_front();
  parked_count_.store(parked_.size(), std::memory_order_release);
  ++admitted_;
  return lease;
}

std::vector<Lease> TypeGate::take_released() {
  std::vector<Lease> out;
  if (parked() == 0 || paused()) return out;
  MutexLock lock(mutex_);
  if (paused()) return out;
  std::size_t n = parked_.size();
  if (concurrency_) n = std::min(n, *concurrency_ > admitted_ ? *concurrency_ - admitted_ : std::size_t{0});
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back(std::move(parked_.front()));
    parked_.pop_front();
  }
  parked_count_.store(parked_.size(), std::memory_order_release);
  return out;
}

std::vector<Lease> TypeGate::take_all() {
  MutexLock lock(mutex_);
  std::vector<Lease> out(std::make_move_iterator(parked_.begin()), std::make_move_iterator(parked_.end()));
  parked_.clear();
  parked_count_.store(0, std::memory_order_release);
  return out;
}

bool TypeGate::pause() noexcept {
  if (paused_.exchange(true, std::memory_order_acq_rel)) return false;
  // Retries parked at the concurrency limit give their places back too.
  MutexLock lock(mutex_);
  for (Lease& lease : parked_) lease.give_back_retry();
  return true;
}
bool TypeGate::resume() noexcept { return paused_.exchange(false, std::memory_order_acq_rel); }

GateState TypeGate::state(Clock::time_point now) const {
  GateState s;
  s.paused = paused();
  MutexLock lock(mutex_);
  s.parked = parked_.size();
  s.rate_waits = rate_waits_;
  s.parks = parks_;
  if (rate_) {
    // Starts allowed now: how far the arrival time is below its tolerance.
    const auto ahead = std::max(tat_, now) - now;
    const double free = static_cast<double>((tolerance_ - ahead).count()) / static_cast<double>(interval_.count()) + 1;
    s.tokens = std::clamp(std::floor(free * 100) / 100, 0.0, static_cast<double>(rate_->burst));
  }
  return s;
}

}  // namespace bulwark::detail
