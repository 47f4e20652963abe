#include "bulwark/job_context.hpp"

#include "bulwark/detail/task.hpp"

namespace bulwark {

const JobId& JobContext::id() const noexcept { return task_.id; }

const std::string& JobContext::type() const noexcept { return task_.type; }

void JobContext::heartbeat() noexcept {
  task_.heartbeat_ns.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
}

const char* Stopped::what() const noexcept {
  switch (reason_) {
    case FailureKind::timeout: return "the job stopped at its soft timeout (timeout_ms)";
    case FailureKind::shutdown: return "the job stopped because the runtime is shutting down";
    default: return "the job stopped because it was cancelled";
  }
}

void JobContext::throw_if_stop_requested() const {
  if (stop_.stop_requested()) throw Stopped(task_.stop_reason.load(std::memory_order_acquire));
}

void JobContext::defer(std::function<void()> fn) { cleanups_.push_back({std::move(fn), false}); }

void JobContext::on_failure(std::function<void()> fn) { cleanups_.push_back({std::move(fn), true}); }

namespace detail {

JobRecord Task::snapshot() const {
  JobRecord r;
  r.id = id;
  r.seq = seq;
  r.type = type;
  r.priority = priority;
  r.max_attempts = max_attempts;
  r.payload = payload;
  std::lock_guard lock(mutex);
  r.state = state.load(std::memory_order_acquire);
  r.attempts = attempts;
  r.result = result;
  if (error) r.error = *error;
  r.cleanup_errors = cleanup_errors;
  if (stuck_trace) r.stuck_trace = *stuck_trace;
  r.breaker_deferrals = breaker_deferrals;
  r.duration_ms = duration_ms;
  r.created_at = created_at;
  r.started_at = started_at;
  r.finished_at = finished_at;
  return r;
}

}  // namespace detail
}  // namespace bulwark
