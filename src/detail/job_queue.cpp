#include "detail/job_queue.hpp"

namespace bulwark::detail {

JobQueue::JobQueue(std::size_t capacity, unsigned max_retries)
    : capacity_(capacity),
      max_retries_(std::max(1u, max_retries)),
      scheduler_([this](std::stop_token stop) { run_scheduler(std::move(stop)); }) {}

JobQueue::~JobQueue() { close(); }

bool JobQueue::try_reserve() noexcept {
  if (closed_.load(std::memory_order_acquire)) return false;
  const auto before = static_cast<std::int64_t>(added_.fetch_add(1, std::memory_order_acq_rel));
  const auto cap = static_cast<std::int64_t>(capacity_);
  if (before - static_cast<std::int64_t>(removed_seen_.load(std::memory_order_relaxed)) < cap) return true;
  const std::uint64_t removed = removed_.load(std::memory_order_acquire);
  removed_seen_.store(removed, std::memory_order_relaxed);  // a racing older store only makes it lag more
  if (before - static_cast<std::int64_t>(removed) < cap) return true;
  // Taken back from the producers' count, not added to the workers': a
  // place refused here was never there for a later reservation to reuse.
  added_.fetch_sub(1, std::memory_order_acq_rel);
  return false;
}

void JobQueue::unreserve() noexcept { added_.fetch_sub(1, std::memory_order_acq_rel); }

std::size_t JobQueue::size() const noexcept {
  const std::uint64_t removed = removed_.load(std::memory_order_acquire);
  const std::uint64_t added = added_.load(std::memory_order_acquire);
  return added > removed ? static_cast<std::size_t>(added - removed) : 0;
}

void JobQueue::push(TaskPtr task, Clock::time_point due, Clock::time_point now) {
  if (due > now) {
    schedule(std::move(task), due, false);
  } else {
    push_ready(std::move(task), false);
  }
}

bool JobQueue::try_push(TaskPtr task, Clock::time_point due) {
  if (!try_reserve()) return false;
  push(std::move(task), due);
  return true;
}

void JobQueue::push_retry(TaskPtr task, Clock::time_point due) {
  added_.fetch_add(1, std::memory_order_acq_rel);
  schedule(std::move(task), due, true);
}

void JobQueue::push_deferred(TaskPtr task, Clock::time_point due, bool retry) {
  added_.fetch_add(1, std::memory_order_acq_rel);
  schedule(std::move(task), due, retry);
}

void JobQueue::set_retry_limit(unsigned limit) {
  {
    std::lock_guard lock(mutex_);
    max_retries_ = limit;
    ++generation_;
  }
  wake_.notify_one();
}

void JobQueue::push_ready(TaskPtr task, bool retry) {
  const int lane = lane_of(task->priority, retry);
  task->in_retry_lane.store(retry, std::memory_order_relaxed);
  lane_counts_[lane].fetch_add(1, std::memory_order_release);
  lanes_[lane].enqueue(std::move(task));
  items_.signal();
}

void JobQueue::schedule(TaskPtr task, Clock::time_point due, bool retry) {
  {
    std::lock_guard lock(mutex_);
    (retry ? retry_heap_ : fresh_heap_).push(Delayed{due, order_++, std::move(task)});
    ++generation_;
  }
  wake_.notify_one();
}

TaskPtr JobQueue::pop() {
  for (;;) {
    items_.wait();
    if (closed_.load(std::memory_order_acquire)) {
      items_.signal();  // pass the wake-up on to the next consumer
      return nullptr;
    }
    // A count on the semaphore means a task was enqueued; its enqueue may not
    // be visible yet, so scan until it is.
    for (int spins = 0;; ++spins) {
      for (int lane = kLanes - 1; lane >= 0; --lane) {
        if (lane_counts_[lane].load(std::memory_order_acquire) <= 0) continue;
        TaskPtr task;
        if (lanes_[lane].try_dequeue(task)) {
          lane_counts_[lane].fetch_sub(1, std::memory_order_relaxed);
          removed_.fetch_add(1, std::memory_order_acq_rel);
          return task;
        }
      }
      if (closed_.load(std::memory_order_acquire)) {
        items_.signal();
        return nullptr;
      }
      if (spins > 64) std::this_thread::yield();
    }
  }
}

std::size_t JobQueue::ready() const noexcept {
  std::int64_t n = 0;
  for (const auto& c : lane_counts_) n += c.load(std::memory_order_relaxed);
  return static_cast<std::size_t>(std::max<std::int64_t>(0, n));
}

std::vector<std::size_t> JobQueue::ready_by_priority() const {
  std::vector<std::size_t> out(kMaxPriority + 1, 0);
  for (int lane = 0; lane < kLanes; ++lane) {
    out[static_cast<std::size_t>(lane / 2)] +=
        static_cast<std::size_t>(std::max<std::int64_t>(0, lane_counts_[lane].load(std::memory_order_relaxed)));
  }
  return out;
}

void JobQueue::release_retry_slot() {
  {
    std::lock_guard lock(mutex_);
    if (retries_admitted_ > 0) --retries_admitted_;
    ++generation_;
  }
  wake_.notify_one();
}

void JobQueue::close() {
  if (closed_.exchange(true, std::memory_order_acq_rel)) return;
  scheduler_.request_stop();
  wake_.notify_all();
  if (scheduler_.joinable()) scheduler_.join();
  items_.signal();  // each consumer that exits passes it on
}

std::vector<TaskPtr> JobQueue::drain() {
  std::vector<TaskPtr> out;
  for (int lane = kLanes - 1; lane >= 0; --lane) {
    TaskPtr task;
    while (lanes_[lane].try_dequeue(task)) {
      lane_counts_[lane].fetch_sub(1, std::memory_order_relaxed);
      out.push_back(std::move(task));
    }
  }
  std::lock_guard lock(mutex_);
  for (Heap* heap : {&fresh_heap_, &retry_heap_}) {
    while (!heap->empty()) {
      out.push_back(heap->top().task);
      heap->pop();
    }
  }
  removed_.fetch_add(out.size(), std::memory_order_acq_rel);
  return out;
}

void JobQueue::run_scheduler(std::stop_token stop) {
  std::unique_lock lock(mutex_);
  while (!stop.stop_requested()) {
    const auto now = Clock::now();
    std::vector<std::pair<TaskPtr, bool>> due;
    while (!fresh_heap_.empty() && fresh_heap_.top().due <= now) {
      due.emplace_back(fresh_heap_.top().task, false);
      fresh_heap_.pop();
    }
    while (!retry_heap_.empty() && retry_heap_.top().due <= now && retries_admitted_ < max_retries_) {
      due.emplace_back(retry_heap_.top().task, true);
      retry_heap_.pop();
      ++retries_admitted_;
    }
    Clock::time_point next = Clock::time_point::max();
    if (!fresh_heap_.empty()) next = fresh_heap_.top().due;
    if (!retry_heap_.empty() && retries_admitted_ < max_retries_) next = std::min(next, retry_heap_.top().due);
    if (!due.empty()) {
      lock.unlock();
      for (auto& [task, retry] : due) {
        // A job cancelled while it waited is dropped here, its place freed.
        if (task->transition(JobState::scheduled, JobState::queued)) {
          push_ready(std::move(task), retry);
        } else {
          removed_.fetch_add(1, std::memory_order_acq_rel);
          if (retry) {
            std::lock_guard relock(mutex_);
            --retries_admitted_;
          }
        }
      }
      lock.lock();
      continue;  // the heaps may have changed meanwhile
    }
    const std::uint64_t seen = generation_;
    const auto changed = [&] { return generation_ != seen; };
    if (next == Clock::time_point::max()) {
      wake_.wait(lock, stop, changed);
    } else {
      wake_.wait_until(lock, stop, next, changed);
    }
  }
}

}  // namespace bulwark::detail
