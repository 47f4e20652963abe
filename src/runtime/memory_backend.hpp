// MemoryBackend: the Backend of one process (queue.backend "memory", the
// default): jobs wait in a JobQueue and are recorded in a MemoryJobStore;
// periodic jobs' last runs are kept in memory. Every job ends in this
// process, so its ends are all the ends there are.
//
// Thread-safe once attached; nothing blocks except wait_idle().
#pragma once

#include "bulwark/config.hpp"
#include "runtime/backend.hpp"
#include "runtime/job_queue.hpp"

namespace bulwark::detail {

// The `queues` setting as a JobQueue takes it (empty: "default" alone).
std::vector<JobQueue::Named> named_queues(const RuntimeOptions& options);

class MemoryBackend final : public Backend {
 public:
  explicit MemoryBackend(const RuntimeOptions& options);

  Broker& broker() noexcept override { return queue_; }
  JobStore& store() noexcept override { return store_; }
  ScheduleStore& schedules() noexcept override { return schedules_; }

  CancelResult cancel(const JobId& id) override;
  RequeueResult requeue(const JobId& id) override;
  PauseResult set_paused(TypeEntry& type, bool paused) override;
  PauseResult set_queue_paused(const std::string& name, bool paused) override;
  std::vector<QueueProcess> processes() const override;
  bool wait_idle(std::chrono::milliseconds timeout) override;
  std::size_t waiting(const std::map<JobState, std::size_t>&) const override { return queue_.size(); }
  std::vector<QueueDepth> queue_depths() const override { return queue_.queue_depths(); }
  void follow_ends(EndListener listener, Wanted wanted) override;

 private:
  void attached() override;
  const unsigned workers_;
  const WallClock::time_point started_at_ = WallClock::now();
  JobQueue queue_;
  MemoryJobStore store_;
  MemoryScheduleStore schedules_;
};

}  // namespace bulwark::detail
