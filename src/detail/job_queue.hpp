// JobQueue: where accepted jobs wait for a worker.
//
// Ready jobs sit in lock-free lanes (moodycamel::ConcurrentQueue), two per
// priority: fresh jobs and admitted retries. pop() takes from the highest
// priority first and, within a priority, a fresh job before a retry, so
// recovery work never starves new work. Jobs with a run time in the future
// (delay_ms, retry backoff) wait in a heap that the queue's own scheduler
// thread moves into the lanes when they are due. A retry enters its lane only
// while fewer than `max_retries` retries are admitted (in a lane or running);
// the caller gives the slot back with release_retry_slot().
//
// Capacity bounds everything waiting (lanes and heaps). try_push() of a new
// job fails when full; push_retry() never fails, since that job was accepted
// already and must not be lost.
//
//   JobQueue q(1000, 2);
//   q.try_push(task, Clock::now());
//   while (TaskPtr t = q.pop()) run(t);   // on each worker
//
// Thread-safe. pop() blocks; everything else returns at once.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <thread>
#include <vector>

#include <concurrentqueue.h>

#include "bulwark/detail/task.hpp"
#include "bulwark/detail/thread_annotations.hpp"

namespace bulwark::detail {

using TaskPtr = std::shared_ptr<Task>;

class JobQueue {
 public:
  JobQueue(std::size_t capacity, unsigned max_retries);
  ~JobQueue();
  JobQueue(const JobQueue&) = delete;
  JobQueue& operator=(const JobQueue&) = delete;

  // Accepts a new job to run at `due` (now or earlier: at once). False when
  // the queue holds `capacity` jobs already or is closed.
  bool try_push(TaskPtr task, Clock::time_point due);

  // try_push() in two steps, for callers that must do more between deciding
  // and publishing: try_reserve() takes a place (false when full or closed);
  // push() fills it and cannot fail; unreserve() gives it back unused.
  bool try_reserve() noexcept;
  void push(TaskPtr task, Clock::time_point due, Clock::time_point now = Clock::now());
  void unreserve() noexcept;

  // Re-queues an accepted job for another attempt at `due`. Always succeeds.
  void push_retry(TaskPtr task, Clock::time_point due);

  // Puts back a job that was taken but may not start yet (its type's circuit
  // breaker is open), to become ready at `due`. Always succeeds.
  void push_deferred(TaskPtr task, Clock::time_point due, bool retry);

  // Changes how many retries may be admitted at once (0 holds them all back).
  void set_retry_limit(unsigned limit);

  // The next ready job; blocks until there is one. Returns null once close()
  // has been called; what is still waiting then is for drain().
  TaskPtr pop();

  // Gives back the retry slot of a task that came from a retry lane.
  void release_retry_slot();

  // Wakes every pop() for exit and stops the scheduler; later pushes fail.
  void close();

  // Removes and returns everything still waiting (lanes and heaps). Call
  // after the consumers have stopped.
  std::vector<TaskPtr> drain();

  // When the earliest job waiting for its run time (delay, retry backoff,
  // breaker cooldown) or for a retry slot becomes due; nullopt if none.
  std::optional<Clock::time_point> next_due();

  std::size_t size() const noexcept;
  std::size_t ready() const noexcept;
  std::size_t capacity() const noexcept { return capacity_; }
  // Ready jobs per priority (fresh and retry lanes together), index = priority.
  std::vector<std::size_t> ready_by_priority() const;

 private:
  static constexpr int kLanes = (kMaxPriority + 1) * 2;
  struct Delayed {
    Clock::time_point due;
    std::uint64_t order;
    TaskPtr task;
    bool operator>(const Delayed& o) const { return due != o.due ? due > o.due : order > o.order; }
  };
  using Heap = std::priority_queue<Delayed, std::vector<Delayed>, std::greater<>>;

  static constexpr auto kSearch = std::chrono::microseconds(50);
  static int lane_of(int priority, bool retry) noexcept { return priority * 2 + (retry ? 0 : 1); }
  TaskPtr take();       // a ready task, highest priority first; null if none
  void wake(int n);     // wakes up to n sleeping workers
  void pass_baton();    // after a take: wakes a sleeper if work is left and nobody searches
  void push_ready(TaskPtr task, bool retry);
  void schedule(TaskPtr task, Clock::time_point due, bool retry);
  void run_scheduler(std::stop_token stop);

  // The size is two counts, each on its own cache line: places taken (by
  // producers; a refused reservation takes its place back) and places freed
  // (by workers popping; only ever grows). A producer checks the capacity
  // against a recent copy of the second, kept on its own line, and reads the
  // workers' line only when the queue looks full: in the common case a
  // submit touches no line a worker writes. The copy lags behind, so the
  // check errs on the full side and is then redone with the current count.
  const std::size_t capacity_;
  std::atomic<bool> closed_{false};
  alignas(64) std::atomic<std::uint64_t> added_{0};
  std::atomic<std::uint64_t> removed_seen_{0};
  alignas(64) std::atomic<std::uint64_t> removed_{0};
  // The lane counts and the wake-up words are written by both sides; each
  // has a line of its own so that one write does not also evict the others.
  alignas(64) std::array<std::atomic<std::int64_t>, kLanes> lane_counts_{};  // ready per lane; lets pop() skip empty ones
  // Waking: workers out of work sleep on a futex word (epoch_). At most one
  // worker at a time searches (for kSearch, yielding its CPU between looks)
  // before it sleeps. A producer wakes a sleeper only if nobody searches or
  // jobs pile up in its lane; a worker that takes a job wakes another if work
  // is left and nobody searches. So while one worker keeps up the others
  // sleep and nobody pays for wake-ups, and a backlog wakes them all.
  alignas(64) std::atomic<std::uint32_t> epoch_{0};
  alignas(64) std::atomic<int> searching_{0};
  std::atomic<int> sleepers_{0};

  std::array<moodycamel::ConcurrentQueue<TaskPtr>, kLanes> lanes_;

  Mutex mutex_;
  std::condition_variable_any wake_;
  Heap fresh_heap_ BULWARK_GUARDED_BY(mutex_);
  Heap retry_heap_ BULWARK_GUARDED_BY(mutex_);
  std::uint64_t order_ BULWARK_GUARDED_BY(mutex_) = 0;
  unsigned retries_admitted_ BULWARK_GUARDED_BY(mutex_) = 0;
  unsigned max_retries_ BULWARK_GUARDED_BY(mutex_);
  std::uint64_t generation_ BULWARK_GUARDED_BY(mutex_) = 0;  // bumped on every change the scheduler must see
  std::jthread scheduler_;         // last: started after everything above exists
};

}  // namespace bulwark::detail
