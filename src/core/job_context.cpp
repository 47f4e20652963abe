#include "bulwark/job_context.hpp"

#include <algorithm>
#include <cmath>

#include "bulwark/detail/task.hpp"
#include "core/task_access.hpp"

namespace bulwark {

const JobId& JobContext::id() const noexcept { return task_.id(); }

const std::string& JobContext::type() const noexcept { return task_.type(); }

bool JobContext::lease_valid() const { return task_.holds_lease(*this); }

const std::string& JobContext::trace_id() const noexcept {
  static const std::string kNone;
  const auto& trace = task_.spec().trace;
  return trace ? trace->trace_id : kNone;
}

std::string JobContext::traceparent() const {
  const auto& trace = task_.spec().trace;
  return trace ? trace->traceparent(span_id_) : std::string();
}

void JobContext::heartbeat() noexcept {
  detail::TaskAccess::heartbeat(task_, Clock::now());
}

void JobContext::progress(double fraction, std::string_view note) {
  if (std::isnan(fraction)) return;
  heartbeat();
  task_.report_progress(*this, std::clamp(fraction, 0.0, 1.0), note.substr(0, JobProgress::kMaxNoteBytes));
}

const char* Stopped::what() const noexcept {
  switch (reason_) {
    case FailureKind::timeout: return "the job stopped at its soft timeout (timeout_ms)";
    case FailureKind::shutdown: return "the job stopped because the runtime is shutting down";
    case FailureKind::lease_lost: return "the job stopped because another process took its lease over";
    case FailureKind::child_failed: return "the job did not run because one of its children failed";
    default: return "the job stopped because it was cancelled";
  }
}

void JobContext::throw_if_stop_requested() const {
  if (stop_.stop_requested()) throw Stopped(task_.stop_reason());
}

void JobContext::defer(std::function<void()> fn) { cleanups_.push_back({std::move(fn), false}); }

void JobContext::on_failure(std::function<void()> fn) { cleanups_.push_back({std::move(fn), true}); }

}  // namespace bulwark
