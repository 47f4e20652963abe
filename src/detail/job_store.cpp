#include "detail/job_store.hpp"

#include <functional>

namespace bulwark::detail {

JobStore::JobStore(std::size_t max_finished, std::size_t max_dead) {
  done_.limit = max_finished;
  dead_.limit = max_dead;
}

JobStore::Shard& JobStore::shard_of(const JobId& id) const { return shards_[std::hash<JobId>{}(id) % kShards]; }

bool JobStore::insert(const std::shared_ptr<Task>& task) {
  Shard& s = shard_of(task->id);
  MutexLock lock(s.mutex);
  return s.tasks.emplace(task->id, task).second;
}

std::shared_ptr<Task> JobStore::find(const JobId& id) const {
  Shard& s = shard_of(id);
  MutexLock lock(s.mutex);
  auto it = s.tasks.find(id);
  return it == s.tasks.end() ? nullptr : it->second;
}

void JobStore::finished(const std::shared_ptr<Task>& task) {
  std::uint32_t finish_no = 0;
  {
    Shard& s = shard_of(task->id);
    MutexLock lock(s.mutex);
    finish_no = ++task->finishes;
  }
  Retained& list = task->state.load(std::memory_order_acquire) == JobState::failed ? dead_ : done_;
  std::vector<std::pair<std::weak_ptr<Task>, std::uint32_t>> evicted;
  {
    MutexLock lock(list.mutex);
    list.jobs.emplace_back(task, finish_no);
    while (list.jobs.size() > list.limit) {
      evicted.push_back(std::move(list.jobs.front()));
      list.jobs.pop_front();
    }
  }
  for (const auto& [weak, n] : evicted) forget(weak, n);
}

void JobStore::forget(const std::weak_ptr<Task>& weak, std::uint32_t finish_no) {
  std::shared_ptr<Task> oldest = weak.lock();
  if (!oldest) return;
  Shard& s = shard_of(oldest->id);
  MutexLock lock(s.mutex);
  // A requeued job is live again; a job that finished again since has a
  // later entry that decides for it.
  if (oldest->finishes != finish_no || !is_terminal(oldest->state.load(std::memory_order_acquire))) return;
  auto it = s.tasks.find(oldest->id);
  if (it != s.tasks.end() && it->second == oldest) s.tasks.erase(it);
}

std::vector<std::shared_ptr<Task>> JobStore::all() const {
  std::vector<std::shared_ptr<Task>> out;
  for (Shard& s : shards_) {
    MutexLock lock(s.mutex);
    for (const auto& [id, task] : s.tasks) out.push_back(task);
  }
  return out;
}

std::size_t JobStore::size() const {
  std::size_t n = 0;
  for (Shard& s : shards_) {
    MutexLock lock(s.mutex);
    n += s.tasks.size();
  }
  return n;
}

}  // namespace bulwark::detail
