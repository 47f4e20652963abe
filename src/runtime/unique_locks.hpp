// UniqueLocks: the unique-job locks of a runtime whose broker does not keep
// them itself (the memory backend): for each (type, unique_key) the job that
// holds it and until when (JobSpec::unique_key, unique_for).
//
// Expired locks are swept as new ones are claimed, so the table holds at
// most the locks still in force plus those that ran out since the last claim.
//
// Thread-safe: one mutex, held for a hash lookup and the sweep.
#pragma once

#include <functional>
#include <optional>
#include <queue>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bulwark/detail/thread_annotations.hpp"
#include "bulwark/job.hpp"

namespace bulwark::detail {

class UniqueLocks {
 public:
  // The lock's name for a job type and key (no two pairs share one).
  static std::string name(const std::string& type, const std::string& key);

  // If `name` is held at `now` by a job that `known` still answers for,
  // that job's id; otherwise `id` takes it until `until` and nullopt.
  std::optional<JobId> claim(const std::string& name, const JobId& id, Clock::time_point until, Clock::time_point now,
                             const std::function<bool(const JobId&)>& known);
  // Gives `name` back if `id` holds it (its admission was refused after all).
  void release(const std::string& name, const JobId& id);

 private:
  struct Held {
    JobId id;
    Clock::time_point until;
  };
  using Expiry = std::pair<Clock::time_point, std::string>;
  void sweep(Clock::time_point now) BULWARK_REQUIRES(mutex_);

  mutable Mutex mutex_;
  std::unordered_map<std::string, Held> held_ BULWARK_GUARDED_BY(mutex_);
  std::priority_queue<Expiry, std::vector<Expiry>, std::greater<>> expiry_ BULWARK_GUARDED_BY(mutex_);
};

}  // namespace bulwark::detail
