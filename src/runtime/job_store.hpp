// JobStore: where jobs are recorded, the storage seam's recorded half
// (Broker is the waiting half). Every accepted job is reachable by id until
// retention forgets it; finished jobs are kept within two bounds, one for
// dead letters (failed) and one for the rest, so a flood of successes never
// pushes out a dead letter.
//
// Listings page with an opaque cursor that the store makes and reads back,
// not a process-local number a client must understand, so a networked store
// can page its own way (a score and an id, say).
//
// MemoryJobStore is the in-memory one: sharded by id hash so submits and
// lookups on different threads rarely share a lock; finished jobs are
// remembered in completion order, each list with its own exact bound and
// age limit (applied as jobs finish: the list a job enters at once, the
// other at most once a second, or once per its age limit if shorter). A job
// requeued after it finished is never forgotten while it is live again.
//
// Implementations are thread-safe and do not block for long; list() and
// count_by_state() visit every retained job.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "bulwark/detail/task.hpp"
#include "runtime/clock.hpp"
#include "bulwark/detail/thread_annotations.hpp"

namespace bulwark::detail {

struct StoreQuery {
  std::optional<JobState> state{};
  std::string type{};    // empty: every type
  std::size_t limit = 100;
  std::string cursor{};  // empty: from the newest; else a next_cursor from an earlier page
  std::string queue{};   // empty: every named queue
};

struct StorePage {
  std::vector<JobRecord> jobs;  // newest first
  std::string next_cursor;      // empty: this was the last page
};

class JobStore {
 public:
  virtual ~JobStore() = default;

  // Records a newly accepted job; false if a job with this id is still known.
  virtual bool insert(const std::shared_ptr<Task>& task) = 0;
  // The live job, for control (cancel, requeue); null if unknown.
  virtual std::shared_ptr<Task> find(const JobId& id) const = 0;
  // The job's record; nullopt if unknown.
  virtual std::optional<JobRecord> record(const JobId& id) const = 0;
  // Call each time the task reaches a terminal state (after it is set).
  virtual void finished(const std::shared_ptr<Task>& task) = 0;
  // A page of records, newest first; nullopt if the cursor is not one this
  // store made.
  virtual std::optional<StorePage> list(const StoreQuery& query) const = 0;
  virtual std::map<JobState, std::size_t> count_by_state() const = 0;
  // A flow's job's children `offset`.. (at most `limit`), in order, and how
  // many it has; nullopt if the job is unknown.
  virtual std::optional<std::pair<std::vector<JobRecord>, std::size_t>> children_of(const JobId& id, std::size_t offset,
                                                                                   std::size_t limit) const = 0;
};

class MemoryJobStore final : public JobStore {
 public:
  // Age limits of 0 keep records until the count bound forgets them.
  MemoryJobStore(std::size_t max_finished, std::size_t max_dead, std::chrono::milliseconds finished_ttl = {},
                 std::chrono::milliseconds dead_ttl = {});

  bool insert(const std::shared_ptr<Task>& task) override;
  std::shared_ptr<Task> find(const JobId& id) const override;
  std::optional<JobRecord> record(const JobId& id) const override;
  void finished(const std::shared_ptr<Task>& task) override;
  std::optional<StorePage> list(const StoreQuery& query) const override;
  std::map<JobState, std::size_t> count_by_state() const override;
  std::optional<std::pair<std::vector<JobRecord>, std::size_t>> children_of(const JobId& id, std::size_t offset,
                                                                           std::size_t limit) const override;

 private:
  static constexpr std::size_t kShards = 16;
  struct Shard {
    mutable Mutex mutex;
    std::unordered_map<JobId, std::shared_ptr<Task>> tasks BULWARK_GUARDED_BY(mutex);
  };
  // Finished jobs of one kind, oldest first, with the finish they were
  // entered for (a later finish of the same job supersedes the entry) and
  // when it happened.
  struct Entry {
    std::weak_ptr<Task> task;
    std::uint32_t finish_no = 0;
    Clock::time_point at;
  };
  struct Retained {
    Mutex mutex;
    std::deque<Entry> jobs BULWARK_GUARDED_BY(mutex);
    std::size_t limit = 0;
    std::chrono::milliseconds ttl{0};
  };
  // Takes out entries past the count bound (after adding one) or the age limit.
  static void evict(Retained& list, Clock::time_point now, std::vector<Entry>& out) BULWARK_REQUIRES(list.mutex);
  Shard& shard_of(const JobId& id) const;
  void forget(const Entry& entry);
  std::vector<std::shared_ptr<Task>> all() const;

  mutable std::array<Shard, kShards> shards_;
  Retained done_;  // succeeded and cancelled
  Retained dead_;  // failed
  // When (steady-clock ticks) a finish next ages the list it did not add to.
  std::atomic<Clock::rep> other_sweep_{0};
};

}  // namespace bulwark::detail
