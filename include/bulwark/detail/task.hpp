// Internal: the unit a worker runs. Public only because JobHandle<R> and
// Runtime::post() are templates; not part of the API.
//
// A Task is shared (shared_ptr) by the queue, the store, the worker and any
// JobHandle. Its `state` is the single source of truth for where the job is
// and changes only by compare-exchange, so cancel, shutdown and workers can
// race safely. Record fields are guarded by `mutex`.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>
#include <stop_token>
#include <type_traits>
#include <variant>
#include <vector>

#include "bulwark/job.hpp"
#include "bulwark/retry_policy.hpp"

namespace bulwark {
class JobContext;
}

namespace bulwark::detail {

class Task {
 public:
  virtual ~Task() = default;

  // Runs one attempt; throws whatever the job throws.
  virtual void run(JobContext& ctx) = 0;

  // A copy of the record under the mutex. Thread-safe, does not block long.
  JobRecord snapshot() const;

  // Blocks until the state is terminal. Thread-safe.
  void wait() const noexcept {
    JobState s = state.load(std::memory_order_acquire);
    while (!is_terminal(s)) {
      state.wait(s, std::memory_order_acquire);
      s = state.load(std::memory_order_acquire);
    }
  }

  // Moves state from `from` to `to`; false if it was not `from`.
  bool transition(JobState from, JobState to) noexcept {
    return state.compare_exchange_strong(from, to, std::memory_order_acq_rel);
  }

  // Set before the task is shared; read-only afterwards.
  JobId id;
  std::string type;
  int priority = 0;
  int max_attempts = 1;
  std::chrono::milliseconds timeout{0};
  const RetryPolicy* policy = nullptr;  // owned by the runtime
  bool stored = false;                  // reachable by id through the JobStore
  std::uint64_t seq = 0;                // submit order, for listings
  std::uint32_t finishes = 0;           // guarded by the JobStore shard holding the task
  nlohmann::json payload;               // read-only once shared

  std::atomic<JobState> state{JobState::queued};
  std::atomic<bool> in_retry_lane{false};       // holds one of recovery.max_concurrent_retries
  std::atomic<std::int64_t> heartbeat_ns{0};    // steady clock, last sign of progress
  std::stop_source stop;

  mutable std::mutex mutex;
  // Guarded by mutex:
  int attempts = 0;
  nlohmann::json result;
  std::optional<Failure> error;
  std::vector<Failure> cleanup_errors;
  std::exception_ptr exception;  // the last attempt's thrown value, for JobHandle::get()
  double duration_ms = 0;
  WallClock::time_point created_at = WallClock::now();
  std::optional<WallClock::time_point> started_at;
  std::optional<WallClock::time_point> finished_at;
};

// A posted callable's task with room for its typed result.
template <class R>
class ResultTask : public Task {
 public:
  using value_type = std::conditional_t<std::is_void_v<R>, std::monostate, R>;
  // Written by the worker before the terminal state is published; read after.
  std::optional<value_type> value;
};

template <class F, class R>
class PostedTask final : public ResultTask<R> {
 public:
  explicit PostedTask(F&& f) : fn_(std::move(f)) {}
  explicit PostedTask(const F& f) : fn_(f) {}

  void run(JobContext& ctx) override {
    if constexpr (std::is_invocable_v<F&, JobContext&>) {
      if constexpr (std::is_void_v<R>) {
        fn_(ctx);
        this->value.emplace();
      } else {
        this->value.emplace(fn_(ctx));
      }
    } else {
      if constexpr (std::is_void_v<R>) {
        fn_();
        this->value.emplace();
      } else {
        this->value.emplace(fn_());
      }
    }
  }

 private:
  F fn_;
};

template <class F>
using post_result_t = typename std::conditional_t<std::is_invocable_v<F&, JobContext&>,
                                                  std::invoke_result<F&, JobContext&>, std::invoke_result<F&>>::type;

}  // namespace bulwark::detail
