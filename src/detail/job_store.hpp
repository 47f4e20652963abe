// JobStore: every submitted job reachable by id, and the bound on how many
// finished ones are kept.
//
// Sharded by id hash so submit and completion on different workers rarely
// share a lock. Each shard keeps its finished jobs in completion order and
// forgets the oldest beyond its share of `max_finished`; a job that was
// requeued after it finished is never forgotten while it is live again.
//
// Thread-safe; every call takes one shard lock briefly (all() takes each).
#pragma once

#include <array>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "bulwark/detail/task.hpp"

namespace bulwark::detail {

class JobStore {
 public:
  explicit JobStore(std::size_t max_finished);

  // False if a job with this id is still known.
  bool insert(const std::shared_ptr<Task>& task);
  std::shared_ptr<Task> find(const JobId& id) const;
  // Call once each time the task reaches a terminal state.
  void finished(const std::shared_ptr<Task>& task);
  std::vector<std::shared_ptr<Task>> all() const;
  std::size_t size() const;

 private:
  static constexpr std::size_t kShards = 16;
  struct Shard {
    mutable std::mutex mutex;
    std::unordered_map<JobId, std::shared_ptr<Task>> tasks;  // guarded by mutex
    std::deque<std::pair<std::weak_ptr<Task>, std::uint32_t>> finished;  // guarded by mutex, oldest first
  };
  Shard& shard_of(const JobId& id) const;

  std::size_t per_shard_limit_;
  mutable std::array<Shard, kShards> shards_;
};

}  // namespace bulwark::detail
