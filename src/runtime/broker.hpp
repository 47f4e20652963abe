// Broker: where accepted jobs wait until a worker takes them, the storage
// seam's waiting half (JobStore is the recorded half).
//
// A job enters through a reserved place (admission: try_reserve, then
// enqueue, which cannot fail), becomes ready by priority when its due time
// comes (delay, retry backoff, breaker cooldown), and leaves through fetch(),
// which hands out Leases. Whoever ends the attempt acks the lease with the
// outcome: done, retry at a time, or defer (not started: its type's breaker
// is open). A retry runs only while fewer than the retry limit are admitted;
// its lease carries that admission as a RetrySlot, which gives itself back
// when the lease is acked or destroyed.
//
// Written for what a networked broker needs as well as for the in-memory
// one (JobQueue): fetch takes up to N jobs at once and every lease is acked
// exactly once. Leases that can expire are the broker's to renew while it
// holds the job (RedisBroker's feeder renews every job leased to its
// process); the in-memory one never expires a lease.
//
//   Broker& b = queue;
//   if (b.try_reserve(*task)) b.enqueue(task, due, now);
//   std::vector<Lease> got;
//   while (b.fetch(got, 1) > 0) { run(got[0]); b.ack(std::move(got[0]), Ack::done); got.clear(); }
//
// Implementations are thread-safe. fetch() blocks; nothing else does.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bulwark/detail/task.hpp"

namespace bulwark::detail {

using TaskPtr = std::shared_ptr<Task>;
class Broker;

// One admitted retry (a place among recovery.max_concurrent_retries). Gives
// itself back when destroyed. Move-only.
class RetrySlot {
 public:
  RetrySlot() = default;
  explicit RetrySlot(Broker* broker) noexcept : broker_(broker) {}
  RetrySlot(RetrySlot&& o) noexcept : broker_(std::exchange(o.broker_, nullptr)) {}
  RetrySlot& operator=(RetrySlot&& o) noexcept {
    if (this != &o) {
      release();
      broker_ = std::exchange(o.broker_, nullptr);
    }
    return *this;
  }
  RetrySlot(const RetrySlot&) = delete;
  RetrySlot& operator=(const RetrySlot&) = delete;
  ~RetrySlot() { release(); }

  explicit operator bool() const noexcept { return broker_ != nullptr; }
  void release() noexcept;

 private:
  Broker* broker_ = nullptr;
};

// A job handed to one worker, until acked.
struct Lease {
  TaskPtr task;
  RetrySlot retry;  // set when the job came in as a retry
  // A retry that gave its slot back while its type was paused: it takes
  // one again through the broker before it runs.
  bool retry_given_back = false;
  bool is_retry() const noexcept { return static_cast<bool>(retry) || retry_given_back; }
  void give_back_retry() noexcept {
    if (!retry) return;
    retry.release();
    retry_given_back = true;
  }
  explicit operator bool() const noexcept { return task != nullptr; }
};

// What admission of a new job came to.
enum class Admitted {
  accepted,
  full,         // queue.capacity jobs are waiting (or, memory, its named queue is at its own capacity)
  queue_full,   // its named queue is at its own capacity (queues.<name>.capacity)
  duplicate,    // a job with this id is still known
  unavailable,   // the backend cannot be reached (a networked broker)
  backend_full,  // the backend is out of memory (Redis's maxmemory)
  unreplicated,  // written, but not acknowledged by enough replicas in time (redis.min_replicas_ack)
  unique,       // a unique job of its type and key is within its window (Admission::existing)
};

// One job of a batch admission (Broker::admit_many): in, the task, when it
// is due and how to record it (as for admit); out, the result.
struct Admission {
  TaskPtr task;
  Clock::time_point due;
  std::function<bool()> record;
  Admitted result = Admitted::accepted;
  JobId existing{};  // result unique: the job that holds the key
  JobState existing_state = JobState::queued;
};

// How an attempt's lease ends.
enum class Ack {
  done,   // terminal: the job is not waiting any more
  retry,  // another attempt at `due`; takes a retry admission then
  defer,  // not started (breaker open): ready again at `due`, as what it was
};

// Jobs of one named queue: ready to run, and waiting (ready and
// scheduled).
struct QueueDepth {
  std::string name;
  std::size_t ready = 0;
  std::size_t waiting = 0;
  bool paused = false;
};

class Broker {
 public:
  virtual ~Broker() = default;

  // Admission of a new (or requeued) job: a place among queue.capacity
  // (and its named queue's capacity). False when full or closed. enqueue()
  // fills the place and cannot fail; unreserve() gives it back unused.
  virtual bool try_reserve(const Task& task) noexcept = 0;
  virtual void unreserve(const Task& task) noexcept = 0;

  // Whether a job naming the queue `name` is accepted here: a broker that
  // only this process reads refuses a queue it does not run (the job would
  // never run); a shared one accepts any (another process may run it).
  virtual bool takes_queue(std::string_view name) const { (void)name; return true; }
  virtual void enqueue(TaskPtr task, Clock::time_point due, Clock::time_point now) = 0;

  // Admission in one step: a place, the job's record, the queue. `record`
  // is called once the place is taken and before the job can run here; it
  // records the job (false: its id is taken) and counts it in. The default
  // does try_reserve, record, enqueue; a networked broker does place,
  // duplicate check and queue in one transaction, then calls `record`.
  virtual Admitted admit(const TaskPtr& task, Clock::time_point due, Clock::time_point now,
                         const std::function<bool()>& record);
  // Admits each job of a batch as admit() would, in order, and sets its
  // result; a networked broker sends the batch in one round trip.
  virtual void admit_many(std::vector<Admission>& batch, Clock::time_point now) {
    for (Admission& a : batch) a.result = admit(a.task, a.due, now, a.record);
  }

  // Admits a flow (JobSpec::children) whole: every job of `flow` or none.
  // A job in state waiting_children (a parent) is recorded but takes no
  // place and does not wait here yet: when its children have ended it
  // comes in through ack(Ack::defer) (a backend that counts children
  // itself queues it then). If one is refused, its result says why and
  // nothing is queued; jobs already recorded are the caller's to end. The
  // default: places for the jobs that wait now, then the records, then the
  // queue. A networked broker writes the flow in one transaction per place.
  virtual void admit_flow(std::vector<Admission>& flow, Clock::time_point now);

  // Up to `max` ready jobs, highest priority first, fresh before retries;
  // blocks until there is at least one. Appends to `out`; returns how many
  // (0 once close() was called).
  virtual std::size_t fetch(std::vector<Lease>& out, std::size_t max) = 0;
  // Ends a lease with the attempt's outcome. Never fails: an accepted job
  // is not lost.
  virtual void ack(Lease lease, Ack how, Clock::time_point due = {}) = 0;

  // Admits a job without waiting for a networked backend (a succeeded
  // job's follow-up, submitted on the worker): `answer` is told the result
  // on whichever thread learns it, after `record` ran if it was accepted.
  // The default admits at once on this thread. A networked broker writes it
  // with the ends, ahead of every end handed to it after this call, so a
  // job's success is never visible before its follow-up.
  virtual void admit_soon(TaskPtr task, Clock::time_point due, Clock::time_point now, std::function<bool()> record,
                          std::function<void(Admitted)> answer) {
    answer(admit(task, due, now, record));
  }

  // True if the broker keeps unique-job locks itself (a shared queue does,
  // in the same transaction as the admission; then admit_many answers
  // Admitted::unique). Otherwise the caller keeps them.
  virtual bool keeps_unique_locks() const noexcept { return false; }

  // Leases the workers set aside without starting them (held at a job
  // type's concurrency limit): `delta` more or fewer. A broker that fetches
  // ahead fetches that many more, so other types' work is not held up
  // behind them.
  virtual void set_aside(std::ptrdiff_t delta) noexcept { (void)delta; }

  // How many retries may be admitted at once (the supervisor slows recovery
  // when the pool is saturated).
  virtual void set_retry_limit(unsigned limit) = 0;

  // Wakes every fetch() for exit; later reservations fail.
  virtual void close() = 0;
  // Removes and returns every job still waiting. After the workers stopped.
  virtual std::vector<TaskPtr> drain() = 0;

  // When the earliest job waiting for its time becomes due; nullopt if none.
  virtual std::optional<Clock::time_point> next_due() = 0;
  virtual std::size_t size() const noexcept = 0;   // waiting: ready and scheduled
  virtual std::size_t ready() const noexcept = 0;
  virtual std::size_t capacity() const noexcept = 0;
  virtual std::vector<std::size_t> ready_by_priority() const = 0;

 protected:
  friend class RetrySlot;
  virtual void release_retry_slot() noexcept = 0;
};

inline Admitted Broker::admit(const TaskPtr& task, Clock::time_point due, Clock::time_point now,
                               const std::function<bool()>& record) {
  if (!try_reserve(*task)) return Admitted::full;
  if (!record()) {
    unreserve(*task);
    return Admitted::duplicate;
  }
  enqueue(task, due, now);
  return Admitted::accepted;
}

inline void Broker::admit_flow(std::vector<Admission>& flow, Clock::time_point now) {
  const auto waits_here = [](const Admission& a) { return a.task->state() != JobState::waiting_children; };
  std::size_t placed = 0;
  for (; placed < flow.size(); ++placed) {
    if (waits_here(flow[placed]) && !try_reserve(*flow[placed].task)) {
      flow[placed].result = Admitted::full;
      break;
    }
  }
  const auto give_back = [&](std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      if (waits_here(flow[i])) unreserve(*flow[i].task);
    }
  };
  if (placed < flow.size()) {
    give_back(placed);
    return;
  }
  for (Admission& a : flow) {
    if (!a.record()) {
      a.result = Admitted::duplicate;
      give_back(flow.size());
      return;
    }
  }
  for (Admission& a : flow) {
    if (waits_here(a)) enqueue(a.task, a.due, now);
  }
}

inline void RetrySlot::release() noexcept {
  if (broker_ != nullptr) std::exchange(broker_, nullptr)->release_retry_slot();
}

}  // namespace bulwark::detail
