#include "runtime/job_queue.hpp"
#include "core/task_access.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdint>

namespace bulwark::detail {

JobQueue::JobQueue(std::size_t capacity, unsigned max_retries, unsigned retry_priority_offset, std::vector<Named> queues,
                   bool strict)
    : capacity_(capacity),
      max_retries_(std::max(1u, max_retries)),
      retry_priority_offset_(static_cast<int>(retry_priority_offset)) {
  if (queues.empty()) queues.push_back(Named{std::string(kDefaultQueue)});
  std::sort(queues.begin(), queues.end(), [](const Named& a, const Named& b) { return a.name < b.name; });
  for (Named& n : queues) {
    auto q = std::make_unique<Lanes>();
    q->name = std::move(n.name);
    q->weight = std::max(1u, n.weight);
    q->capacity = n.capacity;
    queues_.push_back(std::move(q));
  }
  several_ = queues_.size() > 1 || queues_[0]->capacity > 0;
  strict_ = strict;
  for (std::size_t i = 0; i < queues_.size(); ++i) by_weight_.push_back(i);
  std::stable_sort(by_weight_.begin(), by_weight_.end(),
                   [&](std::size_t a, std::size_t b) { return queues_[a]->weight > queues_[b]->weight; });
  home_ = by_weight_.front();
  for (std::size_t i = 0; i < queues_.size(); ++i) {
    if (queues_[i]->name == kDefaultQueue) home_ = i;
  }
  scheduler_ = std::jthread([this](std::stop_token stop) { run_scheduler(std::move(stop)); });
}

JobQueue::~JobQueue() { close(); }

JobQueue::Lanes& JobQueue::lanes_of(const Task& task) const noexcept {
  if (!several_) return *queues_[0];
  const std::string& name = task.spec().queue;
  if (!name.empty()) {
    for (const auto& q : queues_) {
      if (q->name == name) return *q;
    }
  }
  return *queues_[home_];  // no queue named (a post, or "default"): its home
}

bool JobQueue::takes_queue(std::string_view name) const {
  for (const auto& q : queues_) {
    if (q->name == name) return true;
  }
  return false;
}

bool JobQueue::set_paused(std::string_view name, bool paused) {
  bool changed = false;
  bool any = false;
  for (const auto& q : queues_) {
    if (q->name == name) changed = q->paused.exchange(paused, std::memory_order_seq_cst) != paused;
    any = any || q->paused.load(std::memory_order_seq_cst);
  }
  any_paused_.store(any, std::memory_order_seq_cst);
  if (changed && !paused) wake(INT32_MAX);  // its jobs can be taken again
  return changed;
}

std::size_t JobQueue::takeable() const noexcept {
  if (!any_paused_.load(std::memory_order_seq_cst)) return ready();
  std::int64_t n = 0;
  for (const auto& q : queues_) {
    if (q->paused.load(std::memory_order_seq_cst)) continue;
    for (const auto& c : q->counts) n += c.load(std::memory_order_relaxed);
  }
  return static_cast<std::size_t>(std::max<std::int64_t>(0, n));
}

bool JobQueue::try_reserve(const Task& task) noexcept {
  if (closed_.load(std::memory_order_acquire)) return false;
  Lanes* named = nullptr;
  if (several_) {
    named = &lanes_of(task);
    const auto before = named->waiting.fetch_add(1, std::memory_order_acq_rel);
    if (named->capacity > 0 && before >= static_cast<std::int64_t>(named->capacity)) {
      named->waiting.fetch_sub(1, std::memory_order_acq_rel);
      return false;
    }
  }
  const auto before = static_cast<std::int64_t>(added_.fetch_add(1, std::memory_order_acq_rel));
  const auto cap = static_cast<std::int64_t>(capacity_);
  if (before - static_cast<std::int64_t>(removed_seen_.load(std::memory_order_relaxed)) < cap) return true;
  const std::uint64_t removed = removed_.load(std::memory_order_acquire);
  removed_seen_.store(removed, std::memory_order_relaxed);  // a racing older store only makes it lag more
  if (before - static_cast<std::int64_t>(removed) < cap) return true;
  // Taken back from the producers' count, not added to the workers': a
  // place refused here was never there for a later reservation to reuse.
  added_.fetch_sub(1, std::memory_order_acq_rel);
  if (named != nullptr) named->waiting.fetch_sub(1, std::memory_order_acq_rel);
  return false;
}

void JobQueue::unreserve(const Task& task) noexcept {
  added_.fetch_sub(1, std::memory_order_acq_rel);
  if (several_) lanes_of(task).waiting.fetch_sub(1, std::memory_order_acq_rel);
}

void JobQueue::took(Lanes& q) noexcept {
  removed_.fetch_add(1, std::memory_order_acq_rel);
  if (several_) q.waiting.fetch_sub(1, std::memory_order_acq_rel);
}

std::optional<Clock::time_point> JobQueue::next_due() {
  MutexLock lock(mutex_);
  std::optional<Clock::time_point> due;
  if (!fresh_heap_.empty()) due = fresh_heap_.top().due;
  if (!retry_heap_.empty() && (!due || retry_heap_.top().due < *due)) due = retry_heap_.top().due;
  return due;
}

std::size_t JobQueue::size() const noexcept {
  const std::uint64_t removed = removed_.load(std::memory_order_acquire);
  const std::uint64_t added = added_.load(std::memory_order_acquire);
  return added > removed ? static_cast<std::size_t>(added - removed) : 0;
}

void JobQueue::enqueue(TaskPtr task, Clock::time_point due, Clock::time_point now) {
  if (due > now) {
    schedule(std::move(task), due, false);
  } else {
    push_ready(std::move(task), false);
  }
}

bool JobQueue::try_push(TaskPtr task, Clock::time_point due) {
  if (!try_reserve(*task)) return false;
  enqueue(std::move(task), due, Clock::now());
  return true;
}

void JobQueue::push_retry(TaskPtr task, Clock::time_point due) {
  added_.fetch_add(1, std::memory_order_acq_rel);
  if (several_) lanes_of(*task).waiting.fetch_add(1, std::memory_order_acq_rel);
  schedule(std::move(task), due, true);
}

void JobQueue::push_deferred(TaskPtr task, Clock::time_point due, bool retry) {
  added_.fetch_add(1, std::memory_order_acq_rel);
  if (several_) lanes_of(*task).waiting.fetch_add(1, std::memory_order_acq_rel);
  schedule(std::move(task), due, retry);
}

void JobQueue::set_retry_limit(unsigned limit) {
  {
    MutexLock lock(mutex_);
    max_retries_ = limit;
    ++generation_;
  }
  wake_.notify_one();
}

void JobQueue::push_ready(TaskPtr task, bool retry) {
  const int lane = lane_for(*task, retry);
  Lanes& q = lanes_of(*task);
  if (several_) q.ready.fetch_add(1, std::memory_order_seq_cst);
  const std::int64_t waiting = q.counts[lane].fetch_add(1, std::memory_order_seq_cst);
  q.lanes[lane].enqueue(std::move(task));
  // A searching worker will take it, unless jobs pile up meanwhile (the
  // searcher may have lost its CPU): then, or with no searcher, wake one.
  if (sleepers_.load(std::memory_order_seq_cst) > 0 &&
      (waiting > 0 || searching_.load(std::memory_order_seq_cst) == 0)) {
    wake(1);
  }
}

void JobQueue::schedule(TaskPtr task, Clock::time_point due, bool retry) {
  {
    MutexLock lock(mutex_);
    (retry ? retry_heap_ : fresh_heap_).push(Delayed{due, order_++, std::move(task)});
    ++generation_;
  }
  wake_.notify_one();
}

Lease JobQueue::take_from(Lanes& q, bool& pending) {
  for (int lane = kLanes - 1; lane >= 0; --lane) {
    if (q.counts[lane].load(std::memory_order_seq_cst) <= 0) continue;
    TaskPtr task;
    if (q.lanes[lane].try_dequeue(task)) {
      q.counts[lane].fetch_sub(1, std::memory_order_relaxed);
      if (several_) q.ready.fetch_sub(1, std::memory_order_relaxed);
      took(q);
      return Lease{std::move(task), lane % 2 == 0 ? RetrySlot(this) : RetrySlot()};
    }
    pending = true;
  }
  return {};
}

namespace {

// A worker's own random numbers for the weighted pick (xorshift: cheap,
// and good enough to share out picks).
std::uint64_t next_random() noexcept {
  thread_local std::uint64_t state = 0x9E3779B97F4A7C15ULL ^ reinterpret_cast<std::uintptr_t>(&state);
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}

}  // namespace

Lease JobQueue::take() {
  // A lane count is raised before the enqueue: a count whose task is not
  // visible yet is retried briefly.
  for (int round = 0; round < 64; ++round) {
    bool pending = false;
    const bool any_paused = any_paused_.load(std::memory_order_seq_cst);
    if (!several_) {
      if (any_paused && queues_[0]->paused.load(std::memory_order_seq_cst)) return {};
      if (Lease lease = take_from(*queues_[0], pending); lease.task) return lease;
    } else {
      // Weighted: one queue drawn among those with a job ready, in
      // proportion to its weight; then (or strict: only) by weight.
      if (!strict_) {
        std::uint64_t total = 0;
        const auto open = [&](const Lanes& q) {
          return q.ready.load(std::memory_order_relaxed) > 0 && !(any_paused && q.paused.load(std::memory_order_relaxed));
        };
        for (const auto& q : queues_) {
          if (open(*q)) total += q->weight;
        }
        if (total > 0) {
          std::uint64_t draw = next_random() % total;
          for (const auto& q : queues_) {
            if (!open(*q)) continue;
            if (draw < q->weight) {
              if (Lease lease = take_from(*q, pending); lease.task) return lease;
              break;
            }
            draw -= q->weight;
          }
        }
      }
      for (const std::size_t i : by_weight_) {
        if (queues_[i]->ready.load(std::memory_order_seq_cst) <= 0) continue;
        if (any_paused && queues_[i]->paused.load(std::memory_order_seq_cst)) continue;
        if (Lease lease = take_from(*queues_[i], pending); lease.task) return lease;
      }
    }
    if (!pending) return {};
    if (round > 8) std::this_thread::yield();
  }
  return {};
}

void JobQueue::wake(int n) {
  epoch_.fetch_add(1, std::memory_order_seq_cst);
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&epoch_), FUTEX_WAKE_PRIVATE, n, nullptr, nullptr, 0);
}

void JobQueue::pass_baton() {
  // Work left behind, nobody searching, somebody asleep: wake one. Each
  // worker that takes a job does this, so a chain of wake-ups follows a
  // burst that producers pushed while a searcher was about.
  if (sleepers_.load(std::memory_order_seq_cst) > 0 && searching_.load(std::memory_order_seq_cst) == 0 &&
      takeable() > 0) {
    wake(1);
  }
}

std::size_t JobQueue::fetch(std::vector<Lease>& out, std::size_t max) {
  if (max == 0) return 0;
  Lease first = pop();
  if (!first.task) return 0;
  out.push_back(std::move(first));
  std::size_t n = 1;
  for (; n < max; ++n) {
    Lease more = take();
    if (!more.task) break;
    out.push_back(std::move(more));
  }
  return n;
}

void JobQueue::ack(Lease lease, Ack how, Clock::time_point due) {
  switch (how) {
    case Ack::done: break;
    case Ack::retry: push_retry(std::move(lease.task), due); break;
    case Ack::defer: push_deferred(std::move(lease.task), due, lease.is_retry()); break;
  }
  // The lease's retry slot, if any, goes back as `lease` ends.
}

Lease JobQueue::pop() {
  for (;;) {
    if (closed_.load(std::memory_order_acquire)) return {};
    if (Lease lease = take(); lease.task) {
      pass_baton();
      return lease;
    }
    // Out of work. One worker at a time searches for a while before it
    // sleeps: the next job usually comes soon, and a searcher takes it
    // without anybody paying for a wake-up.
    if (searching_.fetch_add(1, std::memory_order_seq_cst) == 0) {
      const auto until = Clock::now() + kSearch;
      for (int i = 1; !closed_.load(std::memory_order_acquire); ++i) {
        if (Lease lease = take(); lease.task) {
          searching_.fetch_sub(1, std::memory_order_seq_cst);
          pass_baton();
          return lease;
        }
        if (i % 8 == 0 && Clock::now() >= until) break;
        std::this_thread::yield();  // with more threads than cores, the producer may need this CPU
      }
    }
    // Sleep until a producer (or close) moves the epoch. Announcing first
    // and then looking again means a producer either sees us or we see its
    // job (both sides use sequentially consistent operations).
    const std::uint32_t seen = epoch_.load(std::memory_order_seq_cst);
    searching_.fetch_sub(1, std::memory_order_seq_cst);
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    if (takeable() == 0 && !closed_.load(std::memory_order_seq_cst)) {
      syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&epoch_), FUTEX_WAIT_PRIVATE, seen, nullptr, nullptr, 0);
    }
    sleepers_.fetch_sub(1, std::memory_order_seq_cst);
  }
}

std::size_t JobQueue::ready() const noexcept {
  std::int64_t n = 0;
  for (const auto& q : queues_) {
    for (const auto& c : q->counts) n += c.load(std::memory_order_relaxed);
  }
  return static_cast<std::size_t>(std::max<std::int64_t>(0, n));
}

std::vector<std::size_t> JobQueue::ready_by_priority() const {
  std::vector<std::size_t> out(kMaxPriority + 1, 0);
  for (const auto& q : queues_) {
    for (int lane = 0; lane < kLanes; ++lane) {
      out[static_cast<std::size_t>(lane / 2)] +=
          static_cast<std::size_t>(std::max<std::int64_t>(0, q->counts[lane].load(std::memory_order_relaxed)));
    }
  }
  return out;
}

std::vector<QueueDepth> JobQueue::queue_depths() const {
  if (!several_) {
    return {QueueDepth{queues_[0]->name, ready(), size(), queues_[0]->paused.load(std::memory_order_relaxed)}};
  }
  std::vector<QueueDepth> out;
  for (const auto& q : queues_) {
    std::int64_t ready = 0;
    for (const auto& c : q->counts) ready += c.load(std::memory_order_relaxed);
    out.push_back(QueueDepth{q->name, static_cast<std::size_t>(std::max<std::int64_t>(0, ready)),
                             static_cast<std::size_t>(std::max<std::int64_t>(0, q->waiting.load(std::memory_order_relaxed))),
                             q->paused.load(std::memory_order_relaxed)});
  }
  return out;
}

void JobQueue::release_retry_slot() noexcept {
  {
    MutexLock lock(mutex_);
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
  wake(INT32_MAX);
}

std::vector<TaskPtr> JobQueue::drain() {
  std::vector<TaskPtr> out;
  for (const auto& q : queues_) {
    for (int lane = kLanes - 1; lane >= 0; --lane) {
      TaskPtr task;
      while (q->lanes[lane].try_dequeue(task)) {
        q->counts[lane].fetch_sub(1, std::memory_order_relaxed);
        if (several_) q->ready.fetch_sub(1, std::memory_order_relaxed);
        took(*q);
        out.push_back(std::move(task));
      }
    }
  }
  MutexLock lock(mutex_);
  for (Heap* heap : {&fresh_heap_, &retry_heap_}) {
    while (!heap->empty()) {
      took(lanes_of(*heap->top().task));
      out.push_back(heap->top().task);
      heap->pop();
    }
  }
  return out;
}

void JobQueue::run_scheduler(std::stop_token stop) {
  MutexLock lock(mutex_);
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
        if (TaskAccess::transition(*task, JobState::scheduled, JobState::queued)) {
          push_ready(std::move(task), retry);
        } else {
          took(lanes_of(*task));
          if (retry) {
            MutexLock relock(mutex_);
            --retries_admitted_;
          }
        }
      }
      lock.lock();
      continue;  // the heaps may have changed meanwhile
    }
    const std::uint64_t seen = generation_;
    const auto changed = [&]() BULWARK_REQUIRES(mutex_) { return generation_ != seen; };
    if (next == Clock::time_point::max()) {
      wake_.wait(lock, stop, changed);
    } else {
      wake_.wait_until(lock, stop, next, changed);
    }
  }
}

}  // namespace bulwark::detail
