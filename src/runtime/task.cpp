#include "bulwark/detail/task.hpp"

namespace bulwark::detail {

JobRecord Task::snapshot() const {
  JobRecord r;
  r.id = spec_.id;
  r.seq = spec_.seq;
  r.type = spec_.type;
  r.priority = spec_.priority;
  r.max_attempts = spec_.max_attempts;
  r.payload = spec_.payload;
  if (spec_.trace) r.trace = *spec_.trace;
  if (spec_.unique) r.unique_key = spec_.unique->key;
  if (spec_.then) {
    r.then_type = spec_.then->value("type", "");
    r.then_id = spec_.then->value("id", "");
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
  return r;
}

}  // namespace bulwark::detail
