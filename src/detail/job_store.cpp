#include "detail/job_store.hpp"

#include <functional>

namespace bulwark::detail {

JobStore::JobStore(std::size_t max_finished) : per_shard_limit_((max_finished + kShards - 1) / kShards) {}

JobStore::Shard& JobStore::shard_of(const JobId& id) const { return shards_[std::hash<JobId>{}(id) % kShards]; }

bool JobStore::insert(const std::shared_ptr<Task>& task) {
  Shard& s = shard_of(task->id);
  std::lock_guard lock(s.mutex);
  return s.tasks.emplace(task->id, task).second;
}

std::shared_ptr<Task> JobStore::find(const JobId& id) const {
  Shard& s = shard_of(id);
  std::lock_guard lock(s.mutex);
  auto it = s.tasks.find(id);
  return it == s.tasks.end() ? nullptr : it->second;
}

void JobStore::finished(const std::shared_ptr<Task>& task) {
  Shard& s = shard_of(task->id);
  std::lock_guard lock(s.mutex);
  s.finished.emplace_back(task, ++task->finishes);
  while (s.finished.size() > per_shard_limit_) {
    auto [weak, finish_no] = std::move(s.finished.front());
    s.finished.pop_front();
    std::shared_ptr<Task> oldest = weak.lock();
    // A requeued job is live again; a job that finished again since has a
    // later entry that decides for it.
    if (!oldest || oldest->finishes != finish_no || !is_terminal(oldest->state.load(std::memory_order_acquire))) {
      continue;
    }
    auto it = s.tasks.find(oldest->id);
    if (it != s.tasks.end() && it->second == oldest) s.tasks.erase(it);
  }
}

std::vector<std::shared_ptr<Task>> JobStore::all() const {
  std::vector<std::shared_ptr<Task>> out;
  for (Shard& s : shards_) {
    std::lock_guard lock(s.mutex);
    for (const auto& [id, task] : s.tasks) out.push_back(task);
  }
  return out;
}

std::size_t JobStore::size() const {
  std::size_t n = 0;
  for (Shard& s : shards_) {
    std::lock_guard lock(s.mutex);
    n += s.tasks.size();
  }
  return n;
}

}  // namespace bulwark::detail
