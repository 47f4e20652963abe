// JobStore: every submitted job reachable by id, and the bounds on how many
// finished ones are kept.
//
// Sharded by id hash so submit and lookups on different threads rarely
// share a lock. Finished jobs are remembered in two lists in completion
// order, each with its own exact bound: dead letters (failed jobs,
// `max_dead`) and the rest (succeeded and cancelled, `max_finished`). Past a
// bound the oldest job of that list is forgotten, so a flood of successes
// never pushes out a dead letter. A job that was requeued after it finished
// is never forgotten while it is live again.
//
// Thread-safe; every call takes one shard lock briefly (all() takes each);
// finished() also takes its list's lock, for a push and at most a few pops.
#pragma once

#include <array>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "bulwark/detail/task.hpp"
#include "bulwark/detail/thread_annotations.hpp"

namespace bulwark::detail {

class JobStore {
 public:
  JobStore(std::size_t max_finished, std::size_t max_dead);

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
    mutable Mutex mutex;
    std::unordered_map<JobId, std::shared_ptr<Task>> tasks BULWARK_GUARDED_BY(mutex);
  };
  // Finished jobs of one kind, oldest first, with the finish they were
  // entered for (a later finish of the same job supersedes the entry).
  struct Retained {
    Mutex mutex;
    std::deque<std::pair<std::weak_ptr<Task>, std::uint32_t>> jobs BULWARK_GUARDED_BY(mutex);
    std::size_t limit = 0;
  };
  Shard& shard_of(const JobId& id) const;
  void forget(const std::weak_ptr<Task>& weak, std::uint32_t finish_no);

  mutable std::array<Shard, kShards> shards_;
  Retained done_;  // succeeded and cancelled
  Retained dead_;  // failed
};

}  // namespace bulwark::detail
