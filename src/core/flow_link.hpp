// Internal: a job's place in a flow (JobSpec::children), kept on its task.
//
// As a child it names its parent and how the parent takes its failure; as
// a parent it lists its children's ids and, once they have ended, their
// outcomes. The fixed parts are written before the task is shared; the
// rest (ChildTally) only under `mutex`. The memory backend counts a
// parent's children here as they end (Completion); the redis backend
// counts them in Redis and fills `outcomes` when it builds the parent to
// run.
//
// Thread-safe as described; nothing blocks for long.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bulwark/detail/thread_annotations.hpp"
#include "bulwark/job.hpp"

namespace bulwark::detail {

class Task;

struct FlowLink {
  // As a child: its parent (empty id: not a child).
  JobId parent_id;
  std::string parent_queue;  // empty: the default queue
  ChildFailure policy = ChildFailure::fail;  // how the parent takes this job's failure
  std::size_t index = 0;                     // its place in the parent's list
  std::weak_ptr<Task> parent;                // the memory backend's parent task
  JobId root_id;                             // the flow's root (retention keeps the flow until it ends)
  std::string root_queue;                    // and its queue

  // As a parent: its children, in order (empty: not a parent).
  std::vector<JobId> children;
  ChildFailure on_child_failure = ChildFailure::fail;

  // How the parent's children have ended so far.
  struct ChildTally {
    std::vector<std::optional<ChildOutcome>> ended;  // by index
    std::vector<bool> removed;                       // ended failed with policy remove: left out of the list
    ChildCounts counts;
    bool settled = false;  // released to run, or failed: later ends change nothing
  };
  mutable Mutex mutex;
  ChildTally tally BULWARK_GUARDED_BY(mutex);
  // The list the parent's handler sees (payload.children), set once when
  // it is released to run; null before.
  std::shared_ptr<const nlohmann::json> outcomes BULWARK_GUARDED_BY(mutex);

  // Entered into the store's retention (the memory backend: once its
  // flow's root has ended).
  mutable std::atomic<bool> retained{false};

  bool is_child() const noexcept { return !parent_id.empty(); }
  bool is_parent() const noexcept { return !children.empty(); }

  // The children's counts (a parent only).
  ChildCounts counts() const {
    MutexLock lock(mutex);
    return tally.counts;
  }
  std::shared_ptr<const nlohmann::json> released() const {
    MutexLock lock(mutex);
    return outcomes;
  }
};

// The payload a flow's parent's handler gets: its own with "children" (the
// released outcomes) added; the payload as it is for every other job.
nlohmann::json payload_with_children(const nlohmann::json& payload, const FlowLink* flow);

}  // namespace bulwark::detail
