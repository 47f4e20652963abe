#include "runtime/memory_backend.hpp"

#include <unistd.h>

#include "runtime/completion.hpp"
#include "runtime/intake.hpp"
#include "support/text.hpp"

namespace bulwark::detail {

std::vector<JobQueue::Named> named_queues(const RuntimeOptions& options) {
  std::vector<JobQueue::Named> out;
  for (const auto& [name, q] : options.queues) out.push_back(JobQueue::Named{name, q.weight, q.capacity});
  return out;
}

MemoryBackend::MemoryBackend(const RuntimeOptions& options)
    : workers_(options.effective_workers()),
      queue_(options.queue_capacity, options.effective_max_concurrent_retries(), options.recovery.priority_offset,
             named_queues(options), options.queue_strict),
      store_(options.retention_max_finished, options.retention_max_dead, options.retention_finished_ttl,
             options.retention_dead_ttl) {}

// Every job of a flow lives here: its children are counted as they end.
void MemoryBackend::attached() { host().completion.set_counts_children(true); }

CancelResult MemoryBackend::cancel(const JobId& id) {
  const TaskPtr task = store_.find(id);
  return task ? host().completion.cancel(task) : CancelResult::not_found;
}

RequeueResult MemoryBackend::requeue(const JobId& id) {
  const TaskPtr task = store_.find(id);
  return task ? host().intake.requeue(task) : RequeueResult::not_found;
}

PauseResult MemoryBackend::set_paused(TypeEntry& type, bool paused) {
  return host().apply_paused(type, paused) ? PauseResult::changed : PauseResult::unchanged;
}

PauseResult MemoryBackend::set_queue_paused(const std::string& name, bool paused) {
  if (!queue_.takes_queue(name)) return PauseResult::not_found;
  return queue_.set_paused(name, paused) ? PauseResult::changed : PauseResult::unchanged;
}

std::vector<QueueProcess> MemoryBackend::processes() const {
  QueueProcess self;
  self.host = host_name();
  self.pid = getpid();
  self.id = self.host + ":" + std::to_string(self.pid);
  self.workers = workers_;
  for (const QueueDepth& q : queue_.queue_depths()) self.queues.push_back(q.name);
  self.started_at = started_at_;
  self.last_seen = WallClock::now();
  self.self = true;
  return {self};
}

bool MemoryBackend::wait_idle(std::chrono::milliseconds timeout) { return host().completion.wait_idle(timeout); }

// Every end is this process's: the listener is one more on Completion.
void MemoryBackend::follow_ends(EndListener listener, Wanted wanted) {
  host().completion.set_end_listener([listener = std::move(listener), wanted = std::move(wanted)](const JobRecord& r) {
    if (!wanted || wanted(r.id)) listener(r);
  });
}

}  // namespace bulwark::detail
