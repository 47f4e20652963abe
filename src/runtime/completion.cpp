#include "runtime/completion.hpp"

#include <random>

#include "core/flow_link.hpp"
#include "runtime/clock.hpp"
#include "runtime/type_table.hpp"
#include "core/task_access.hpp"

namespace bulwark::detail {

namespace {

constexpr std::size_t kMaxCleanupErrors = 16;

double unit_random() {
  thread_local std::minstd_rand rng(std::random_device{}());
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

std::size_t kind_index(FailureKind kind) noexcept { return static_cast<std::size_t>(kind); }

}  // namespace

bool Completion::wait_idle(std::chrono::milliseconds timeout) {
  idle_waiters_.fetch_add(1, std::memory_order_seq_cst);
  std::unique_lock lock(idle_mutex_);
  const bool idle = idle_cv_.wait_for(lock, timeout, [&] {
    // Ended first: every job it counts was accepted before, so equal counts
    // mean nothing was unfinished when `accepted_` was read.
    const std::uint64_t done = ended_.load(std::memory_order_seq_cst);
    return accepted_.load(std::memory_order_seq_cst) == done;
  });
  idle_waiters_.fetch_sub(1, std::memory_order_seq_cst);
  return idle;
}

void Completion::wait_for_end(std::uint64_t seen, Clock::time_point until) {
  end_waiters_.fetch_add(1, std::memory_order_seq_cst);
  {
    std::unique_lock lock(idle_mutex_);
    end_cv_.wait_until(lock, until, [&] { return ended_.load(std::memory_order_seq_cst) != seen; });
  }
  end_waiters_.fetch_sub(1, std::memory_order_seq_cst);
}

void Completion::attempt_ended(Running running, AttemptEnd end) {
  if (end.child_timed_out) count_hard_timeout();
  if (end.outcome.ok() && end.cleanup_errors.empty()) {
    succeed(std::move(running), end);
    return;
  }
  if (end.outcome.ok()) {  // a cleanup failed a successful attempt
    Failure first = std::move(end.cleanup_errors.front());
    end.cleanup_errors.erase(end.cleanup_errors.begin());
    fail(std::move(running), end.attempt, std::move(first), nullptr, std::move(end.cleanup_errors), end.duration_ms);
    return;
  }
  fail(std::move(running), end.attempt, std::move(end.outcome.failure()), end.outcome.exception(),
       std::move(end.cleanup_errors), end.duration_ms);
}

void Completion::succeed(Running running, const AttemptEnd& end) {
  const TaskPtr& task = running.task();  // valid until the lease is acked
  const bool lost = TaskAccess::with_record(*task, [&](TaskRecord& r) {
    if (r.lease_lost) return true;
    r.duration_ms = end.duration_ms;
    r.error.reset();
    r.exception = nullptr;
    r.finished_at = to_wall(end.end);
    r.stop = std::stop_source(std::nostopstate);  // the worker's source is not the job's any more
    return false;
  });
  if (lost) {
    drop(std::move(running));
    return;
  }
  task->type_entry()->counters.succeeded.fetch_add(1, std::memory_order_relaxed);
  if (running.breaker && running.breaker.succeeded()) {
    std::string text = "circuit breaker for job type '" + task->type() + "' closed: trial job " + task->id() +
                       " succeeded";
    events_.supervisor("breaker_closed", text, task.get());
    reporter_.log(LogLevel::info, std::move(text));
  }
  if (task->spec().then && follow_up_) follow_up_(*task);
  TaskAccess::set_state(*task, JobState::succeeded);
  publish(task, JobState::succeeded);
  broker_.ack(std::move(running.lease), Ack::done);
}

void Completion::note_breaker_failure(const Task& task, bool trial) {
  breaker_opened_.fetch_add(1, std::memory_order_relaxed);
  const auto& cb = options_.circuit_breaker;
  std::string text = "circuit breaker for job type '" + task.type() + "' opened" +
                     (trial ? " again: trial job " + task.id() + " failed"
                            : ": " + std::to_string(cb.failures) + " failures within " +
                                  std::to_string(cb.window.count()) + " ms") +
                     "; its jobs wait " + std::to_string(cb.cooldown.count()) + " ms";
  events_.supervisor("breaker_opened", text, &task);
  reporter_.log(LogLevel::warn, std::move(text));
}

void Completion::fail(Running running, int attempt, Failure failure, std::exception_ptr exception,
                      std::vector<Failure> cleanup_errors, double duration_ms) {
  const TaskPtr& task = running.task();  // valid until the lease is acked
  const auto [cancelled_now, lost] = TaskAccess::with_record(*task, [](TaskRecord& r) {
    r.stop = std::stop_source(std::nostopstate);
    return std::pair(r.cancel_requested, r.lease_lost);
  });
  if (lost) {
    drop(std::move(running));
    return;
  }
  TypeEntry& type = *task->type_entry();
  const auto now = Clock::now();
  const std::size_t kind = kind_index(failure.kind);
  const FailureKind failure_kind = failure.kind;
  attempts_failed_.fetch_add(1, std::memory_order_relaxed);
  type.counters.recovered[kind].fetch_add(1, std::memory_order_relaxed);
  const bool trial = running.breaker.trial();
  if (running.breaker && running.breaker.failed(now)) note_breaker_failure(*task, trial);
  const int max_attempts = task->spec().max_attempts;
  const bool again = attempt < max_attempts && !cancelled_now;
  const auto delay = type.policy.delay_after(attempt, unit_random());
  if (reporter_.enabled(LogLevel::error)) {
    AttemptFailure line{task->id(), task->type(), attempt, max_attempts, again ? std::optional(delay) : std::nullopt,
                        failure};
    if (const auto& trace = task->spec().trace) {
      line.trace_id = trace->trace_id;
      line.span_id = task->with_record([](const TaskRecord& r) { return r.span_id; });
    }
    reporter_.attempt_failed(std::move(line));
  }
  TaskAccess::with_record(*task, [&](TaskRecord& r) {
    r.duration_ms = duration_ms;
    r.error = std::make_unique<Failure>(std::move(failure));
    r.exception = std::move(exception);
    for (Failure& f : cleanup_errors) {
      if (r.cleanup_errors.size() < kMaxCleanupErrors) r.cleanup_errors.push_back(std::move(f));
    }
    if (!again) r.finished_at = to_wall(now);
  });
  if (again) {
    retried_.fetch_add(1, std::memory_order_relaxed);
    type.counters.retried.fetch_add(1, std::memory_order_relaxed);
    TaskAccess::set_state(*task, JobState::scheduled);
    events_.job(*task, JobState::scheduled, attempt, failure_kind);
    TaskAccess::set_ready_at(*task, now + delay);
    broker_.ack(std::move(running.lease), Ack::retry, now + delay);
    return;
  }
  const JobState terminal = cancelled_now ? JobState::cancelled : JobState::failed;
  if (terminal == JobState::failed) type.counters.failed[kind].fetch_add(1, std::memory_order_relaxed);
  TaskAccess::set_state(*task, terminal);
  publish(task, terminal);
  broker_.ack(std::move(running.lease), Ack::done);
}

void Completion::abandoned(Running running, int attempt, Failure failure, double duration_ms, bool allow_retry) {
  if (failure.kind == FailureKind::timeout) count_hard_timeout();
  if (allow_retry) {
    fail(std::move(running), attempt, std::move(failure), nullptr, {}, duration_ms);
    return;
  }
  const TaskPtr& task = running.task();  // valid until the lease is acked
  task->type_entry()->counters.failed[kind_index(failure.kind)].fetch_add(1, std::memory_order_relaxed);
  TaskAccess::with_record(*task, [&](TaskRecord& r) {
    r.duration_ms = duration_ms;
    r.error = std::make_unique<Failure>(std::move(failure));
    r.exception = nullptr;
    r.finished_at = WallClock::now();
  });
  TaskAccess::set_state(*task, JobState::failed);
  publish(task, JobState::failed);
  broker_.ack(std::move(running.lease), Ack::done);
}

// Another process took the lease over while this attempt ran, and ended
// the attempt there: nothing of this one counts here. The broker drops its
// end with a warning; the breaker ticket and gate place give themselves
// back as `running` goes.
void Completion::drop(Running running) {
  broker_.ack(std::move(running.lease), Ack::done);
}

void Completion::lease_lost(Lease lease, int attempt, Failure failure) {
  Running running;  // no breaker ticket, no gate place: nothing of this process's ran it
  running.lease = std::move(lease);
  TaskAccess::with_record(*running.task(), [&](TaskRecord& r) { r.attempts = attempt; });
  fail(std::move(running), attempt, std::move(failure), nullptr, {}, 0.0);
}

void Completion::cancelled_before_start(Lease lease, Clock::time_point now) {
  const TaskPtr& task = lease.task;
  TaskAccess::with_record(*task, [&](TaskRecord& r) { r.finished_at = to_wall(now); });
  TaskAccess::set_state(*task, JobState::cancelled);
  publish(task, JobState::cancelled);
  broker_.ack(std::move(lease), Ack::done);
}

CancelResult Completion::cancel(const TaskPtr& task) {
  if (task->state() == JobState::waiting_children) {
    // A flow's parent: it ends cancelled, and its whole tree with it.
    const bool ended = TaskAccess::with_record(*task, [&](TaskRecord& r) {
      if (!TaskAccess::transition(*task, JobState::waiting_children, JobState::cancelled)) return false;
      r.cancel_requested = true;
      r.finished_at = WallClock::now();
      return true;
    });
    if (ended) {
      publish(task, JobState::cancelled);
      cancel_children(*task, true);
      return CancelResult::cancelled;
    }
  }
  enum class Step { again, stop_requested, cancelled };
  for (;;) {
    const JobState s = task->state();
    if (is_terminal(s)) return CancelResult::already_terminal;
    const Step step = TaskAccess::with_record(*task, [&](TaskRecord& r) {
      if (s == JobState::running) {
        if (task->state() != JobState::running) return Step::again;
        r.cancel_requested = true;
        TaskAccess::set_stop_reason(*task, FailureKind::cancelled);
        r.stop.request_stop();
        return Step::stop_requested;
      }
      if (!TaskAccess::transition(*task, s, JobState::cancelled)) return Step::again;
      r.finished_at = WallClock::now();
      return Step::cancelled;
    });
    if (step == Step::stop_requested) return CancelResult::stop_requested;
    if (step == Step::cancelled) {
      // The broker still holds a place for it; a waiting job it finds
      // cancelled is dropped there and its place freed.
      publish(task, JobState::cancelled);
      return CancelResult::cancelled;
    }
  }
}

bool Completion::end_unrun(const TaskPtr& task) {
  for (JobState s = task->state(); !is_terminal(s); s = task->state()) {
    const bool ended = TaskAccess::with_record(*task, [&](TaskRecord& r) {
      if (!TaskAccess::transition(*task, s, JobState::failed)) return false;
      std::string message = "the runtime shut down before the job ran";
      if (r.attempts > 0 && r.error) {
        message = "the runtime shut down before attempt " + std::to_string(r.attempts + 1) + " of " +
                  std::to_string(task->spec().max_attempts) + "; last error: " + r.error->type + ": " +
                  r.error->message;
      }
      r.error = std::make_unique<Failure>(make_failure(FailureKind::shutdown, std::move(message)));
      r.exception = nullptr;
      r.finished_at = WallClock::now();
      return true;
    });
    if (!ended) continue;
    task->type_entry()->counters.failed[kind_index(FailureKind::shutdown)].fetch_add(1);
    publish(task, JobState::failed);
    return true;
  }
  return false;
}

void Completion::publish(const TaskPtr& task, JobState terminal) {
  if (events_.recording()) {
    const auto [attempts, kind] = task->with_record([](const TaskRecord& r) {
      return std::pair(r.attempts, r.error ? std::optional(r.error->kind) : std::nullopt);
    });
    events_.job(*task, terminal, attempts, terminal == JobState::failed ? kind : std::nullopt);
  }
  TaskAccess::notify_terminal(*task);
  switch (terminal) {
    case JobState::succeeded: succeeded_.fetch_add(1, std::memory_order_relaxed); break;
    case JobState::failed: failed_.fetch_add(1, std::memory_order_relaxed); break;
    case JobState::cancelled: cancelled_.fetch_add(1, std::memory_order_relaxed); break;
    default: break;
  }
  if (!task->spec().queue.empty()) count_end(task->spec().queue, terminal);
  if (counts_children_ && task->spec().flow) {
    flow_ended(task, terminal);
  } else if (task->spec().stored) {
    store_.finished(task);
  }
  if (options_.on_finished || end_listener_) notify_listeners(task->snapshot());
  // Dekker-style with the waits: both sides seq_cst, so either the waiter
  // sees the count it waits for or we see the waiter. Whoever makes the
  // ended count reach the accepted count wakes wait_idle; every end wakes
  // wait_for_end.
  const std::uint64_t done = ended_.fetch_add(1, std::memory_order_seq_cst) + 1;
  if (end_waiters_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard lock(idle_mutex_);
    end_cv_.notify_all();
  }
  if (idle_waiters_.load(std::memory_order_seq_cst) > 0 && done == accepted_.load(std::memory_order_seq_cst)) {
    std::lock_guard lock(idle_mutex_);
    idle_cv_.notify_all();
  }
}

void Completion::flow_ended(const TaskPtr& task, JobState terminal) {
  const FlowLink& link = *task->spec().flow;
  retain_flow(task);
  if (link.is_child()) child_ended(task, link, terminal);
}

void Completion::child_ended(const TaskPtr& child, const FlowLink& link, JobState terminal) {
  const TaskPtr parent = link.parent.lock();
  if (!parent || !parent->spec().flow) return;
  FlowLink& up = *parent->spec().flow;
  ChildOutcome outcome{child->id(), child->type(), terminal, {}, std::nullopt};
  child->with_record([&](const TaskRecord& r) {
    if (terminal == JobState::succeeded) {
      outcome.result = r.result;
    } else if (r.error) {
      outcome.error = *r.error;
      outcome.error->frames.clear();  // the parent needs why, not where: the child's record keeps the trace
      outcome.error->nested.clear();
    } else {
      outcome.error = make_failure(FailureKind::cancelled, "cancelled before it ran");
    }
  });
  const bool failed = terminal != JobState::succeeded;
  enum class Next { none, release, fail } next = Next::none;
  {
    MutexLock lock(up.mutex);
    FlowLink::ChildTally& t = up.tally;
    if (link.index >= t.ended.size() || t.ended[link.index]) return;  // counted once
    switch (terminal) {
      case JobState::succeeded: ++t.counts.succeeded; break;
      case JobState::failed: ++t.counts.failed; break;
      default: ++t.counts.cancelled; break;
    }
    if (failed && link.policy == ChildFailure::remove) t.removed[link.index] = true;
    t.ended[link.index] = outcome;
    if (t.settled) return;
    if (failed && link.policy == ChildFailure::fail) {
      t.settled = true;
      next = Next::fail;
    } else if (t.counts.pending() == 0) {
      t.settled = true;
      auto list = std::make_shared<nlohmann::json>(nlohmann::json::array());
      for (std::size_t i = 0; i < t.ended.size(); ++i) {
        if (t.ended[i] && !t.removed[i]) list->push_back(to_json(*t.ended[i]));
      }
      up.outcomes = std::move(list);
      next = Next::release;
    }
  }
  if (next == Next::release) release_parent(parent);
  if (next == Next::fail) fail_parent(parent, outcome);
}

// Every child has ended: the parent runs. It took no place in the broker
// while it waited (it was accepted with the flow, so it is not refused
// now); it comes in as a deferred job does, through the broker's due-time
// heap (scheduled, then queued when its time has come).
void Completion::release_parent(const TaskPtr& parent) {
  if (!TaskAccess::transition(*parent, JobState::waiting_children, JobState::scheduled)) return;  // cancelled meanwhile
  events_.job(*parent, JobState::queued, 0);
  const auto now = Clock::now();
  const auto due = std::max(parent->ready_at(), now);  // its own delay_ms, if it had one
  TaskAccess::set_ready_at(*parent, due);
  Lease lease;
  lease.task = parent;
  broker_.ack(std::move(lease), Ack::defer, due);
}

bool Completion::fail_parent(const TaskPtr& parent, const ChildOutcome& child) {
  std::string message = "child " + child.id + " (" + child.type + ") " + std::string(to_string(child.state));
  if (child.error) message += ": " + std::string(to_string(child.error->kind)) + ": " + child.error->message;
  const bool ended = TaskAccess::with_record(*parent, [&](TaskRecord& r) {
    if (!TaskAccess::transition(*parent, JobState::waiting_children, JobState::failed)) return false;
    r.error = std::make_unique<Failure>(make_failure(FailureKind::child_failed, message));
    r.exception = nullptr;
    r.finished_at = WallClock::now();
    return true;
  });
  if (!ended) return false;
  parent->type_entry()->counters.failed[kind_index(FailureKind::child_failed)].fetch_add(1, std::memory_order_relaxed);
  reporter_.log(LogLevel::warn, "job " + parent->id() + " (" + parent->type() + ") failed: " + message);
  publish(parent, JobState::failed);
  if (counts_children_) cancel_children(*parent, false);
  return true;
}

void Completion::cancel_children(const Task& parent, bool running_too) {
  if (!parent.spec().flow) return;
  for (const JobId& id : parent.spec().flow->children) {
    const TaskPtr child = store_.find(id);
    if (!child) continue;
    const JobState s = child->state();
    if (is_terminal(s) || (s == JobState::running && !running_too)) continue;
    cancel(child);  // a waiting parent's cancel takes its tree with it
  }
}

// A flow's finished records stay (outside retention) until its root has
// ended; then every finished one enters retention, and later ends enter as
// they come. Each record enters once (FlowLink::retained).
void Completion::retain_flow(const TaskPtr& task) {
  std::atomic_thread_fence(std::memory_order_seq_cst);  // our terminal state before the root's, as the root's side does
  TaskPtr root = task;
  for (;;) {
    const FlowLink* link = root->spec().flow.get();
    if (link == nullptr || !link->is_child()) break;
    TaskPtr up = link->parent.lock();
    if (!up) break;  // forgotten: as good as ended
    root = std::move(up);
  }
  if (root != task && !is_terminal(root->state())) return;  // the root's end takes it in
  if (root != task) {
    retain(task);
    return;
  }
  // The root: every finished record below it, then itself (it ended last).
  std::vector<TaskPtr> pending{task};
  std::vector<TaskPtr> below;
  while (!pending.empty()) {
    const TaskPtr t = std::move(pending.back());
    pending.pop_back();
    if (t != task && is_terminal(t->state())) below.push_back(t);
    if (const FlowLink* link = t->spec().flow.get()) {
      for (const JobId& id : link->children) {
        if (TaskPtr child = store_.find(id)) pending.push_back(std::move(child));
      }
    }
  }
  for (const TaskPtr& t : below) retain(t);
  retain(task);
}

void Completion::retain(const TaskPtr& task) {
  if (!task->spec().stored) return;
  if (!task->spec().flow->retained.exchange(true, std::memory_order_acq_rel)) store_.finished(task);
}

void Completion::ended_elsewhere(const JobRecord& record) {
  switch (record.state) {
    case JobState::succeeded: succeeded_.fetch_add(1, std::memory_order_relaxed); break;
    case JobState::failed: failed_.fetch_add(1, std::memory_order_relaxed); break;
    case JobState::cancelled: cancelled_.fetch_add(1, std::memory_order_relaxed); break;
    default: return;
  }
  count_end(record.queue, record.state);
  notify_listeners(record);
}

Completion::Completion(const RuntimeOptions& options, Reporter& reporter, EventLog& events, Broker& broker,
                       JobStore& store)
    : options_(options), reporter_(reporter), events_(events), broker_(broker), store_(store) {
  for (const auto& [name, q] : options.queues) {
    if (name != kDefaultQueue) own_tallies_[name] = std::make_unique<QueueTally>();
  }
}

Completion::QueueTally& Completion::tally(const std::string& queue) {
  if (auto own = own_tallies_.find(queue); own != own_tallies_.end()) return *own->second;
  MutexLock lock(tallies_mutex_);
  std::unique_ptr<QueueTally>& t = tallies_[queue];
  if (!t) t = std::make_unique<QueueTally>();
  return *t;
}

void Completion::count_submitted(const std::string& queue) {
  if (queue.empty() || queue == kDefaultQueue) return;
  tally(queue).submitted.fetch_add(1, std::memory_order_relaxed);
}

void Completion::count_end(const std::string& queue, JobState terminal) {
  if (queue.empty() || queue == kDefaultQueue) return;
  QueueTally& t = tally(queue);
  switch (terminal) {
    case JobState::succeeded: t.succeeded.fetch_add(1, std::memory_order_relaxed); break;
    case JobState::failed: t.failed.fetch_add(1, std::memory_order_relaxed); break;
    case JobState::cancelled: t.cancelled.fetch_add(1, std::memory_order_relaxed); break;
    default: break;
  }
}

std::map<std::string, QueueJobCounts> Completion::queue_counts() const {
  std::map<std::string, QueueJobCounts> out;
  for (const auto& [name, t] : own_tallies_) {
    out[name] = QueueJobCounts{t->submitted.load(), t->succeeded.load(), t->failed.load(), t->cancelled.load()};
  }
  MutexLock lock(tallies_mutex_);
  for (const auto& [name, t] : tallies_) {
    out[name] = QueueJobCounts{t->submitted.load(), t->succeeded.load(), t->failed.load(), t->cancelled.load()};
  }
  return out;
}

void Completion::notify_listeners(const JobRecord& record) {
  const auto call = [&](const std::function<void(const JobRecord&)>& listener, const char* name) {
    if (!listener) return;
    auto outcome = guarded([&] { listener(record); });
    if (!outcome.ok()) {
      reporter_.log(LogLevel::error, std::string(name) + " listener threw " + outcome.failure().type + ": " +
                                         outcome.failure().message);
    }
  };
  call(options_.on_finished, "on_finished");
  call(end_listener_, "on_finished_anywhere");
}

CompletionCounts Completion::counts() const noexcept {
  return {succeeded_.load(), failed_.load(), cancelled_.load(), attempts_failed_.load(), retried_.load(),
          hard_timeouts_.load(), breaker_opened_.load()};
}

}  // namespace bulwark::detail
