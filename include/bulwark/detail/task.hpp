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
#include <memory>
#include <optional>
#include <stop_token>
#include <type_traits>
#include <variant>
#include <vector>

#include "bulwark/job.hpp"
#include "bulwark/job_context.hpp"
#include "bulwark/retry_policy.hpp"

namespace bulwark::detail {

struct TypeState;  // the runtime's per-type state (policy, breaker); private

class Task {
 public:
  virtual ~Task() = default;

  // Runs one attempt; throws whatever the job throws. Stores its result
  // through commit(), so an abandoned attempt cannot overwrite a later one's.
  virtual void run(JobContext& ctx) = 0;

  // Runs `write` under the mutex if `ctx`'s attempt is still the task's
  // current one (the supervisor fences off attempts it abandons).
  template <class F>
  void commit(const JobContext& ctx, F&& write);

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
  std::chrono::milliseconds timeout{0};       // soft; 0: none
  std::chrono::milliseconds hard_timeout{0};  // 0: none
  const RetryPolicy* policy = nullptr;  // owned by the runtime
  TypeState* type_state = nullptr;      // owned by the runtime; null for posted callables
  bool stored = false;                  // reachable by id through the JobStore
  bool isolated = false;                // runs in a child worker process
  std::uint64_t seq = 0;                // submit order, for listings
  std::uint32_t finishes = 0;           // guarded by the JobStore shard holding the task
  nlohmann::json payload;               // read-only once shared

  std::atomic<JobState> state{JobState::queued};
  std::atomic<bool> in_retry_lane{false};       // holds one of recovery.max_concurrent_retries
  std::atomic<std::int64_t> heartbeat_ns{0};    // steady clock, last sign of progress
  std::atomic<std::int64_t> enqueued_ns{0};     // steady clock, when it last became ready to run
  bool breaker_trial = false;                   // used by the worker running it only
  // Why the current attempt's stop was requested (timeout, cancelled,
  // shutdown); written before request_stop(), read by Stopped.
  std::atomic<FailureKind> stop_reason{FailureKind::cancelled};

  mutable std::mutex mutex;
  // Guarded by mutex:
  std::stop_source stop{std::nostopstate};  // the current attempt's
  std::uint32_t epoch = 0;         // bumped when an attempt is abandoned
  bool cancel_requested = false;   // no further attempts
  std::unique_ptr<RawTrace> stuck_trace;  // on the heap: most jobs never get one
  int breaker_deferrals = 0;
  int attempts = 0;
  nlohmann::json result;
  std::unique_ptr<Failure> error;         // the last attempt's; on the heap: the happy path never needs it
  std::vector<Failure> cleanup_errors;
  std::exception_ptr exception;  // the last attempt's thrown value, for JobHandle::get()
  double duration_ms = 0;
  WallClock::time_point created_at{};  // set when accepted
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
    if constexpr (std::is_void_v<R>) {
      call(ctx);
      this->commit(ctx, [&] { this->value.emplace(); });
    } else {
      R r = call(ctx);
      this->commit(ctx, [&] { this->value.emplace(std::move(r)); });
    }
  }

 private:
  decltype(auto) call(JobContext& ctx) {
    if constexpr (std::is_invocable_v<F&, JobContext&>) {
      return fn_(ctx);
    } else {
      return fn_();
    }
  }

  F fn_;
};

template <class F>
void Task::commit(const JobContext& ctx, F&& write) {
  std::lock_guard lock(mutex);
  if (ctx.epoch_ == epoch) write();
}

template <class F>
using post_result_t = typename std::conditional_t<std::is_invocable_v<F&, JobContext&>,
                                                  std::invoke_result<F&, JobContext&>, std::invoke_result<F&>>::type;

}  // namespace bulwark::detail
