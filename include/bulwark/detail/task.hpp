// Internal: one job as the runtime holds it. Public only because
// Runtime::post() and JobHandle<R> are templates; not part of the API.
//
// A Task is shared (shared_ptr) by the broker, the store, the worker running
// it and any JobHandle. Three kinds of state, each with one rule:
//   - spec(): what the job is (id, type, priority, payload, ...). Written
//     before the task is shared; read-only afterwards.
//   - state(), heartbeat, ready time, stop reason: atomics. The state is the
//     single source of truth for where the job is and changes only by
//     compare-exchange (transition) or by the one writer of terminal states.
//   - the record (attempts, result, error, timestamps, the stop source): in
//     a TaskRecord guarded by the task's mutex, reached only through
//     with_record(), which holds it.
// A JobHandle sees the small result core: state(), wait(), failure(),
// exception() and, for posted callables, the value. Everything that changes
// a task is private to the runtime (TaskAccess); this header only reads.
//
// Thread-safe as described; wait() blocks, nothing else does for long.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string_view>
#include <stop_token>
#include <type_traits>
#include <variant>
#include <vector>

#include "bulwark/detail/thread_annotations.hpp"
#include "bulwark/job.hpp"
#include "bulwark/job_context.hpp"

namespace bulwark {
template <class R>
class JobHandle;
}  // namespace bulwark

namespace bulwark::detail {

struct TypeEntry;  // the runtime's per-type settings and counters; private
struct FlowLink;   // a job's place in a flow (core/flow_link.hpp); private

// A unique job's lock: no other job of its type with `key` for `window`
// after it was submitted (JobSpec::unique_key).
struct UniqueLock {
  std::string key;
  std::chrono::milliseconds window{0};
};

// What a job is; fixed once the task is shared.
struct TaskSpec {
  JobId id;
  std::string type;
  std::string queue;  // empty: kDefaultQueue (and for posted callables)
  int priority = 0;
  int max_attempts = 1;
  std::chrono::milliseconds timeout{0};       // soft; 0: none
  std::chrono::milliseconds hard_timeout{0};  // 0: none
  std::uint64_t seq = 0;                      // submit order in this process
  bool stored = false;                        // reachable by id through the store
  nlohmann::json payload;
  std::shared_ptr<const TraceContext> trace;  // null for most jobs: a pointer keeps the spec small
  std::shared_ptr<const UniqueLock> unique;   // null unless submitted with a unique_key
  // The follow-up spec (JobSpec::then) with its "id" filled in at admission;
  // null for none.
  std::shared_ptr<nlohmann::json> then;
  // Its place in a flow (JobSpec::children): null for a job in none.
  std::shared_ptr<FlowLink> flow;
};

// What changes while the job runs; guarded by the task's mutex.
struct TaskRecord {
  std::stop_source stop{std::nostopstate};  // the current attempt's
  std::uint32_t epoch = 0;                  // bumped when an attempt is abandoned
  std::uint64_t fence = 0;                  // the current lease's fencing token (JobContext::fencing_token)
  bool lease_lost = false;                  // a shared queue took the current lease over
  bool cancel_requested = false;            // no further attempts
  int attempts = 0;
  int breaker_deferrals = 0;
  nlohmann::json result;
  std::unique_ptr<Failure> error;         // the last attempt's; on the heap: the happy path never needs it
  std::unique_ptr<RawTrace> stuck_trace;  // on the heap: most jobs never get one
  std::vector<Failure> cleanup_errors;
  std::exception_ptr exception;  // the last attempt's thrown value, for JobHandle::get()
  double duration_ms = 0;
  std::string span_id;  // with a trace: the current (or last) attempt's span
  std::unique_ptr<JobProgress> progress;  // on the heap: most jobs never report any
  Clock::time_point progress_published{};  // when it last went to the event stream
  WallClock::time_point created_at{};
  std::optional<WallClock::time_point> started_at;
  std::optional<WallClock::time_point> finished_at;
};

class Task {
 public:
  virtual ~Task() = default;

  // Runs one attempt on this thread; throws whatever the job throws. Stores
  // its result through commit(), so an abandoned attempt cannot overwrite a
  // later one's.
  virtual void run(JobContext& ctx) = 0;

  // JobContext::progress, checked and clamped: kept on the record (for the
  // current attempt only) and, at most every 100 ms and always at 1, handed
  // to the type's progress listener. A child worker process's task sends
  // it to the parent instead.
  virtual void report_progress(const JobContext& ctx, double fraction, std::string_view note);

  const TaskSpec& spec() const noexcept { return spec_; }
  const JobId& id() const noexcept { return spec_.id; }
  const std::string& type() const noexcept { return spec_.type; }
  // The runtime's entry for the job's type.
  TypeEntry* type_entry() const noexcept { return type_; }

  JobState state() const noexcept { return state_.load(std::memory_order_acquire); }
  // Blocks until the state is terminal.
  void wait() const noexcept {
    JobState s = state();
    while (!is_terminal(s)) {
      state_.wait(s, std::memory_order_acquire);
      s = state();
    }
  }

  // Progress, for the supervisor: the last sign of life (steady clock).
  Clock::time_point last_heartbeat() const noexcept {
    return Clock::time_point(Clock::duration(heartbeat_ns_.load(std::memory_order_relaxed)));
  }
  // When it last became (or becomes) ready to run, for the queue-wait measure.
  Clock::time_point ready_at() const noexcept {
    return Clock::time_point(Clock::duration(ready_ns_.load(std::memory_order_relaxed)));
  }
  // Why the current attempt's stop was requested (timeout, cancelled,
  // shutdown, lease_lost).
  FailureKind stop_reason() const noexcept { return stop_reason_.load(std::memory_order_acquire); }
  // How many times the job reached a terminal state.
  std::uint32_t finishes() const noexcept { return finishes_.load(std::memory_order_acquire); }

  // Runs `fn(const TaskRecord&)` with the mutex held and returns what it
  // returns.
  template <class F>
  decltype(auto) with_record(F&& fn) const {
    MutexLock lock(mutex_);
    return fn(static_cast<const TaskRecord&>(record_));
  }

  // Whether `ctx`'s attempt still holds the job's lease: it is the current
  // attempt, under the current fence, and no other process took it over.
  bool holds_lease(const JobContext& ctx) const {
    MutexLock lock(mutex_);
    return ctx.epoch_ == record_.epoch && ctx.fence_ == record_.fence && !record_.lease_lost;
  }

  // The result core.
  std::optional<Failure> failure() const {
    return with_record([](const TaskRecord& r) { return r.error ? std::optional<Failure>(*r.error) : std::nullopt; });
  }
  std::exception_ptr exception() const {
    return with_record([](const TaskRecord& r) { return r.exception; });
  }

  // A copy of the record. Does not block long.
  JobRecord snapshot() const;

 protected:
  // Runs `write` with the mutex held if `ctx`'s attempt is still the task's
  // current one (the supervisor fences off attempts it abandons).
  template <class F>
  void commit(const JobContext& ctx, F&& write) {
    MutexLock lock(mutex_);
    if (ctx.epoch_ == record_.epoch) write(record_);
  }

 private:
  // Every change to a task goes through the runtime's TaskAccess
  // (src/core/task_access.hpp), which keeps the rules above.
  friend struct TaskAccess;

  TaskSpec spec_;
  TypeEntry* type_ = nullptr;
  std::atomic<JobState> state_{JobState::queued};
  std::atomic<std::int64_t> heartbeat_ns_{0};
  std::atomic<std::int64_t> ready_ns_{0};
  std::atomic<FailureKind> stop_reason_{FailureKind::cancelled};
  std::atomic<std::uint32_t> finishes_{0};
  std::atomic<bool> rate_slot_{false};
  mutable Mutex mutex_;
  TaskRecord record_ BULWARK_GUARDED_BY(mutex_);
};

// A posted callable's task with room for its typed result.
template <class R>
class ResultTask : public Task {
 public:
  using value_type = std::conditional_t<std::is_void_v<R>, std::monostate, R>;

 protected:
  // Written by the worker before the terminal state is published; read after.
  std::optional<value_type> value;
  // A move-only value was moved out by JobHandle::get (once).
  std::atomic<bool> taken{false};

 private:
  template <class>
  friend class bulwark::JobHandle;
};

template <class F, class R>
class PostedTask final : public ResultTask<R> {
 public:
  explicit PostedTask(F&& f) : fn_(std::move(f)) {}
  explicit PostedTask(const F& f) : fn_(f) {}

  void run(JobContext& ctx) override {
    if constexpr (std::is_void_v<R>) {
      call(ctx);
      this->commit(ctx, [&](TaskRecord&) { this->value.emplace(); });
    } else {
      R r = call(ctx);
      this->commit(ctx, [&](TaskRecord&) { this->value.emplace(std::move(r)); });
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
using post_result_t = typename std::conditional_t<std::is_invocable_v<F&, JobContext&>,
                                                  std::invoke_result<F&, JobContext&>, std::invoke_result<F&>>::type;

}  // namespace bulwark::detail
