// JobQueue: the in-memory Broker (broker.hpp), where accepted jobs wait for a
// worker in this process.
//
// Ready jobs sit in lock-free lanes (moodycamel::ConcurrentQueue), two per
// priority: fresh jobs and admitted retries. pop() takes from the highest
// priority first and, within a priority, a fresh job before a retry, so
// recovery work never starves new work. Jobs with a run time in the future
// (delay_ms, retry backoff) wait in a heap that the queue's own scheduler
// thread moves into the lanes when they are due. A retry enters its lane only
// while fewer than `max_retries` retries are admitted (in a lane or running);
// the lease's RetrySlot gives the slot back.
//
// Named queues (the `queues` setting): each queue has lanes of its own.
// A worker picks a queue first, at random in proportion to the weights of
// the queues that have a job ready (or, strict, the one of the greatest
// weight that has one), then the job within it as above. With one queue
// (the usual case) there is no pick: a worker looks at that queue's lanes
// alone, and no per-queue count is kept.
//
// Capacity bounds everything waiting (lanes and heaps), and a named queue's
// own capacity its jobs. try_push() of a new job fails when full;
// push_retry() never fails, since that job was accepted already and must
// not be lost.
//
//   JobQueue q(1000, 2);
//   q.try_push(task, Clock::now());
//   while (Lease l = q.pop()) run(l);   // on each worker
//
// Leases never expire here: the process that holds one is the process that
// would notice it lost. fetch() hands out up to N ready jobs.
//
// Thread-safe. pop() and fetch() block; everything else returns at once.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <concurrentqueue.h>

#include "bulwark/detail/thread_annotations.hpp"
#include "runtime/broker.hpp"

namespace bulwark::detail {

class JobQueue final : public Broker {
 public:
  struct Named {
    std::string name;
    unsigned weight = 1;
    std::size_t capacity = 0;  // 0: only the queue's capacity bounds it
  };
  // `retry_priority_offset`: a retry waits in the retry lane of its
  // priority minus this (at least 0), so recovery yields to fresh work of
  // lower priorities too (recovery.priority_offset). `queues`: the named
  // queues (empty: "default" alone); `strict`: by weight, not at random.
  JobQueue(std::size_t capacity, unsigned max_retries, unsigned retry_priority_offset = 0,
           std::vector<Named> queues = {}, bool strict = false);
  ~JobQueue() override;
  JobQueue(const JobQueue&) = delete;
  JobQueue& operator=(const JobQueue&) = delete;

  // Accepts a new job to run at `due` (now or earlier: at once). False when
  // the queue holds `capacity` jobs already or is closed.
  bool try_push(TaskPtr task, Clock::time_point due);

  // Broker (see broker.hpp).
  bool try_reserve(const Task& task) noexcept override;
  void unreserve(const Task& task) noexcept override;
  bool takes_queue(std::string_view name) const override;
  // Pauses or resumes the named queue `name`: its jobs wait and none is
  // taken while paused. False if this queue has no queue of that name or
  // it was so already.
  bool set_paused(std::string_view name, bool paused);
  void enqueue(TaskPtr task, Clock::time_point due, Clock::time_point now) override;
  std::size_t fetch(std::vector<Lease>& out, std::size_t max) override;
  void ack(Lease lease, Ack how, Clock::time_point due = {}) override;
  void set_retry_limit(unsigned limit) override;
  void close() override;
  std::vector<TaskPtr> drain() override;
  std::optional<Clock::time_point> next_due() override;

  // The next ready job; blocks until there is one. Empty once close() was
  // called. fetch() of one.
  Lease pop();

  // Re-queues an accepted job for another attempt at `due`, outside any
  // lease (ack(retry) does this for a lease). Always succeeds.
  void push_retry(TaskPtr task, Clock::time_point due);

  std::size_t size() const noexcept override;
  std::size_t ready() const noexcept override;
  std::size_t capacity() const noexcept override { return capacity_; }
  // Ready jobs per priority (fresh and retry lanes together), index = priority.
  std::vector<std::size_t> ready_by_priority() const override;
  // Ready and waiting jobs by named queue.
  std::vector<QueueDepth> queue_depths() const;

 private:
  void release_retry_slot() noexcept override;
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
  int lane_for(const Task& task, bool retry) const noexcept {
    const int p = task.spec().priority;
    return retry ? lane_of(std::max(0, p - retry_priority_offset_), true) : lane_of(p, false);
  }
  // One named queue's lanes. `ready` and `waiting` are kept only with
  // several queues (with one, ready() and size() say the same).
  struct Lanes {
    std::string name;
    unsigned weight = 1;
    std::size_t capacity = 0;
    std::array<moodycamel::ConcurrentQueue<TaskPtr>, kLanes> lanes;
    // The lane counts are written by both sides; each has a line of its
    // own so that one write does not also evict the others.
    alignas(64) std::array<std::atomic<std::int64_t>, kLanes> counts{};  // ready per lane; lets take() skip empty ones
    alignas(64) std::atomic<std::int64_t> ready{0};
    std::atomic<std::int64_t> waiting{0};  // reserved, ready or scheduled
    std::atomic<bool> paused{false};
  };
  std::size_t takeable() const noexcept;  // ready jobs of the queues not paused
  Lanes& lanes_of(const Task& task) const noexcept;
  Lease take();         // a ready task, by queue, then highest priority first; empty if none
  // One look at `q`'s lanes; `pending` set if a counted task was not visible yet.
  Lease take_from(Lanes& q, bool& pending);
  void took(Lanes& q) noexcept;  // a task left q (taken, dropped, drained)
  void wake(int n);     // wakes up to n sleeping workers
  void pass_baton();    // after a take: wakes a sleeper if work is left and nobody searches
  void push_ready(TaskPtr task, bool retry);
  void push_deferred(TaskPtr task, Clock::time_point due, bool retry);
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
  // The named queues (one with the usual config); `several_` when more.
  std::vector<std::unique_ptr<Lanes>> queues_;
  bool several_ = false;
  std::atomic<bool> any_paused_{false};  // some queue is paused: take() and pop() look at each
  bool strict_ = false;
  std::vector<std::size_t> by_weight_;  // indexes of queues_, greatest weight first (ties by name)
  std::size_t home_ = 0;                // where a task naming no queue goes: "default", else the greatest weight
  // Waking: workers out of work sleep on a futex word (epoch_). At most one
  // worker at a time searches (for kSearch, yielding its CPU between looks)
  // before it sleeps. A producer wakes a sleeper only if nobody searches or
  // jobs pile up in its lane; a worker that takes a job wakes another if work
  // is left and nobody searches. So while one worker keeps up the others
  // sleep and nobody pays for wake-ups, and a backlog wakes them all.
  alignas(64) std::atomic<std::uint32_t> epoch_{0};
  alignas(64) std::atomic<int> searching_{0};
  std::atomic<int> sleepers_{0};

  Mutex mutex_;
  std::condition_variable_any wake_;
  Heap fresh_heap_ BULWARK_GUARDED_BY(mutex_);
  Heap retry_heap_ BULWARK_GUARDED_BY(mutex_);
  std::uint64_t order_ BULWARK_GUARDED_BY(mutex_) = 0;
  unsigned retries_admitted_ BULWARK_GUARDED_BY(mutex_) = 0;
  unsigned max_retries_ BULWARK_GUARDED_BY(mutex_);
  const int retry_priority_offset_;
  std::uint64_t generation_ BULWARK_GUARDED_BY(mutex_) = 0;  // bumped on every change the scheduler must see
  std::jthread scheduler_;         // last: started after everything above exists
};

}  // namespace bulwark::detail
