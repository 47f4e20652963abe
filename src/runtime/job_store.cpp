#include "runtime/job_store.hpp"

#include "core/flow_link.hpp"
#include "core/task_access.hpp"

#include <algorithm>
#include <charconv>
#include <functional>

namespace bulwark::detail {

MemoryJobStore::MemoryJobStore(std::size_t max_finished, std::size_t max_dead, std::chrono::milliseconds finished_ttl,
                               std::chrono::milliseconds dead_ttl) {
  done_.limit = max_finished;
  dead_.limit = max_dead;
  done_.ttl = finished_ttl;
  dead_.ttl = dead_ttl;
}

MemoryJobStore::Shard& MemoryJobStore::shard_of(const JobId& id) const {
  return shards_[std::hash<JobId>{}(id) % kShards];
}

bool MemoryJobStore::insert(const std::shared_ptr<Task>& task) {
  Shard& s = shard_of(task->id());
  MutexLock lock(s.mutex);
  return s.tasks.emplace(task->id(), task).second;
}

std::shared_ptr<Task> MemoryJobStore::find(const JobId& id) const {
  Shard& s = shard_of(id);
  MutexLock lock(s.mutex);
  auto it = s.tasks.find(id);
  return it == s.tasks.end() ? nullptr : it->second;
}

std::optional<JobRecord> MemoryJobStore::record(const JobId& id) const {
  std::shared_ptr<Task> task = find(id);
  if (!task) return std::nullopt;
  return task->snapshot();
}

void MemoryJobStore::evict(Retained& list, Clock::time_point now, std::vector<Entry>& out) {
  while (!list.jobs.empty() &&
         (list.jobs.size() > list.limit || (list.ttl.count() > 0 && now - list.jobs.front().at > list.ttl))) {
    out.push_back(std::move(list.jobs.front()));
    list.jobs.pop_front();
  }
}

void MemoryJobStore::finished(const std::shared_ptr<Task>& task) {
  const std::uint32_t finish_no = TaskAccess::count_finish(*task);
  const Clock::time_point now = Clock::now();
  const bool dead = task->state() == JobState::failed;
  Retained& list = dead ? dead_ : done_;
  std::vector<Entry> evicted;
  {
    MutexLock lock(list.mutex);
    list.jobs.push_back(Entry{task, finish_no, now});
    evict(list, now, evicted);
  }
  // The other list ages too, though nothing is added to it: looked at once
  // a second at most (or once per its age limit, if shorter), so a finish
  // takes one lock as a rule.
  Retained& other = dead ? done_ : dead_;
  Clock::rep due = other_sweep_.load(std::memory_order_relaxed);
  const auto every = std::min<Clock::duration>(std::chrono::seconds(1), other.ttl);
  if (other.ttl.count() > 0 && now.time_since_epoch().count() >= due &&
      other_sweep_.compare_exchange_strong(due, (now + every).time_since_epoch().count(),
                                           std::memory_order_relaxed)) {
    MutexLock lock(other.mutex);
    evict(other, now, evicted);
  }
  for (const Entry& e : evicted) forget(e);
}

void MemoryJobStore::forget(const Entry& entry) {
  std::shared_ptr<Task> oldest = entry.task.lock();
  if (!oldest) return;
  Shard& s = shard_of(oldest->id());
  MutexLock lock(s.mutex);
  // A requeued job is live again; a job that finished again since has a
  // later entry that decides for it.
  if (oldest->finishes() != entry.finish_no || !is_terminal(oldest->state())) return;
  auto it = s.tasks.find(oldest->id());
  if (it != s.tasks.end() && it->second == oldest) s.tasks.erase(it);
}

std::vector<std::shared_ptr<Task>> MemoryJobStore::all() const {
  std::vector<std::shared_ptr<Task>> out;
  for (Shard& s : shards_) {
    MutexLock lock(s.mutex);
    for (const auto& [id, task] : s.tasks) out.push_back(task);
  }
  return out;
}

// The cursor here is the submit sequence number of the last job of the
// previous page, in decimal: jobs older than it come next.
std::optional<StorePage> MemoryJobStore::list(const StoreQuery& query) const {
  std::uint64_t before = 0;
  if (!query.cursor.empty()) {
    const char* end = query.cursor.data() + query.cursor.size();
    auto [ptr, ec] = std::from_chars(query.cursor.data(), end, before);
    if (ec != std::errc() || ptr != end || before == 0) return std::nullopt;
  }
  std::vector<std::shared_ptr<Task>> tasks = all();
  std::erase_if(tasks, [&](const std::shared_ptr<Task>& t) {
    if (before != 0 && t->spec().seq >= before) return true;
    if (!query.type.empty() && t->type() != query.type) return true;
    if (!query.queue.empty() && (t->spec().queue.empty() ? kDefaultQueue : std::string_view(t->spec().queue)) != query.queue) {
      return true;
    }
    return query.state && t->state() != *query.state;
  });
  const std::size_t n = std::min(query.limit, tasks.size());
  std::partial_sort(tasks.begin(), tasks.begin() + static_cast<std::ptrdiff_t>(n), tasks.end(),
                    [](const auto& a, const auto& b) { return a->spec().seq > b->spec().seq; });
  StorePage page;
  page.jobs.reserve(n);
  for (std::size_t i = 0; i < n; ++i) page.jobs.push_back(tasks[i]->snapshot());
  if (n > 0 && tasks.size() > n) page.next_cursor = std::to_string(tasks[n - 1]->spec().seq);
  return page;
}

std::optional<std::pair<std::vector<JobRecord>, std::size_t>> MemoryJobStore::children_of(const JobId& id,
                                                                                          std::size_t offset,
                                                                                          std::size_t limit) const {
  const std::shared_ptr<Task> task = find(id);
  if (!task) return std::nullopt;
  std::pair<std::vector<JobRecord>, std::size_t> out{{}, 0};
  const FlowLink* flow = task->spec().flow.get();
  if (flow == nullptr) return out;
  out.second = flow->children.size();
  for (std::size_t i = offset; i < flow->children.size() && out.first.size() < limit; ++i) {
    if (auto r = record(flow->children[i])) out.first.push_back(std::move(*r));
  }
  return out;
}

std::map<JobState, std::size_t> MemoryJobStore::count_by_state() const {
  std::map<JobState, std::size_t> out;
  for (Shard& s : shards_) {
    MutexLock lock(s.mutex);
    for (const auto& [id, task] : s.tasks) ++out[task->state()];
  }
  return out;
}

}  // namespace bulwark::detail
