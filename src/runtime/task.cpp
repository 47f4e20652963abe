#include "bulwark/detail/task.hpp"

#include "core/flow_link.hpp"
#include "runtime/type_table.hpp"

namespace bulwark::detail {

JobRecord Task::snapshot() const {
  JobRecord r;
  r.id = spec_.id;
  r.seq = spec_.seq;
  r.type = spec_.type;
  if (!spec_.queue.empty()) r.queue = spec_.queue;
  r.priority = spec_.priority;
  r.max_attempts = spec_.max_attempts;
  r.payload = spec_.payload;
  if (spec_.trace) r.trace = *spec_.trace;
  if (spec_.unique) r.unique_key = spec_.unique->key;
  if (spec_.then) {
    r.then_type = spec_.then->value("type", "");
    r.then_id = spec_.then->value("id", "");
  }
  if (spec_.flow) {
    r.parent = spec_.flow->parent_id;
    if (spec_.flow->is_parent()) r.children = spec_.flow->counts();
  }
  MutexLock lock(mutex_);
  r.span_id = record_.span_id;
  r.state = state();
  r.attempts = record_.attempts;
  r.result = record_.result;
  if (record_.error) r.error = *record_.error;
  r.cleanup_errors = record_.cleanup_errors;
  if (record_.stuck_trace) r.stuck_trace = *record_.stuck_trace;
  r.breaker_deferrals = record_.breaker_deferrals;
  r.duration_ms = record_.duration_ms;
  r.created_at = record_.created_at;
  r.started_at = record_.started_at;
  r.finished_at = record_.finished_at;
  if (record_.progress) r.progress = *record_.progress;
  return r;
}

void Task::report_progress(const JobContext& ctx, double fraction, std::string_view note) {
  const auto now = Clock::now();
  JobProgress p{fraction, std::string(note), WallClock::now()};
  bool publish = false;
  commit(ctx, [&](TaskRecord& r) {
    if (!r.progress) r.progress = std::make_unique<JobProgress>();
    *r.progress = p;
    if (fraction >= 1.0 || now - r.progress_published >= std::chrono::milliseconds(100)) {
      r.progress_published = now;
      publish = true;
    }
  });
  if (publish && type_ != nullptr && type_->on_progress) type_->on_progress(*this, p);
}

}  // namespace bulwark::detail
