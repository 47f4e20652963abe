#include "runtime/executor.hpp"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <thread>

#include "guard/crash_report.hpp"
#include "runtime/clock.hpp"
#include "runtime/testing_hooks.hpp"
#include "runtime/type_table.hpp"
#include "support/signals.hpp"
#include "core/task_access.hpp"

namespace bulwark::detail {

namespace {

// The worker slot of the calling thread, for the stack-dump signal handler.
// initial-exec: safe to read inside a signal handler.
__attribute__((tls_model("initial-exec"))) thread_local WorkerSlot* tls_slot = nullptr;

extern "C" void on_dump_signal(int) {
  const int saved_errno = errno;
  WorkerSlot* slot = tls_slot;
  if (slot != nullptr && slot->dump_state.load(std::memory_order_acquire) == 1) {
    slot->dump = capture_stack(2);  // skip this handler and the kernel's signal return frame
    slot->dump_state.store(2, std::memory_order_release);
  }
  errno = saved_errno;
}

int install_dump_handler() {
  static const int sig = [] {
    const int s = stack_dump_signal_number();
    struct sigaction sa {};
    sa.sa_handler = on_dump_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(s, &sa, nullptr);
    return s;
  }();
  return sig;
}

}  // namespace

Executor::Executor(const RuntimeOptions& options, Broker& broker, Completion& completion, Reporter& reporter,
                   std::shared_ptr<ProcessRunner> processes)
    : options_(options),
      broker_(broker),
      completion_(completion),
      reporter_(reporter),
      processes_(std::move(processes)) {
  install_dump_handler();
}

Executor::~Executor() { join_threads(); }

void Executor::start() {
  const unsigned n = options_.effective_workers();
  MutexLock lock(mutex_);
  slots_.resize(n);
  restarts_.assign(n, 0);
  for (unsigned i = 0; i < n; ++i) start_worker(i, 0);
}

void Executor::start_worker(unsigned position, unsigned generation) {
  auto slot = std::make_shared<WorkerSlot>(position, generation);
  slots_[position] = slot;
  slot->thread = std::thread([this, slot] { worker_main(slot); });
}

// The one place a replacement is counted: restarts here, the total, and the
// time for the supervisor's restart intensity.
void Executor::replaced(unsigned position, unsigned generation, Clock::time_point now) {
  start_worker(position, generation);
  ++restarts_[position];
  replacements_.fetch_add(1, std::memory_order_relaxed);
  replacement_times_.push_back(now);
}

void Executor::worker_main(const SlotPtr& slot) {
  AltStack alt_stack;  // lets the crash report run after a stack overflow
  tls_slot = slot.get();
  slot->native.store(pthread_self(), std::memory_order_release);
  std::string reason;
  try {
    worker_loop(slot);
  } catch (...) {
    // Something outside a job's guarded frame failed: the worker dies, and
    // the supervisor replaces it and says why.
    const Failure f = classify_current_exception();
    reason = f.type + (f.message.empty() ? "" : ": " + f.message);
  }
  tls_slot = nullptr;
  slot->set_exit_reason(std::move(reason));
  slot->exited.store(true, std::memory_order_release);
}

void Executor::worker_loop(const SlotPtr& slot) {
  std::vector<Lease> batch;
  while (broker_.fetch(batch, 1) > 0) {
    for (Lease& lease : batch) {
      TypeEntry& type = *lease.task->type_entry();
      if (!serve(slot, std::move(lease), false)) return;  // abandoned: the supervisor has taken over this attempt
      // The attempt gave its place under the type's concurrency limit back:
      // the job parked next in line starts here, without a trip through the queue.
      while (std::optional<Lease> next = type.gate.take_runnable()) {
        broker_.set_aside(-1);
        if (next->retry_given_back) {  // it takes a retry place again, through the broker
          type.gate.leave();
          defer(std::move(*next), Clock::now(), false);
          continue;
        }
        if (!serve(slot, std::move(*next), true)) return;
      }
    }
    batch.clear();
    if (hooks::take_end_request()) {
      throw std::runtime_error("ended on purpose by bulwark::detail::hooks::end_current_worker()");
    }
  }
}

// Not started now (an open breaker, the type's rate, a resumed type): back
// to waiting in the broker until `until`, not failed.
void Executor::defer(Lease lease, Clock::time_point until, bool by_breaker) {
  const TaskPtr& task = lease.task;
  if (!TaskAccess::transition(*task, JobState::queued, JobState::scheduled)) return;  // cancelled meanwhile
  if (by_breaker) {
    breaker_deferred_.fetch_add(1, std::memory_order_relaxed);
    TaskAccess::with_record(*task, [](TaskRecord& r) { ++r.breaker_deferrals; });
  }
  TaskAccess::set_ready_at(*task, until);
  broker_.ack(std::move(lease), Ack::defer, until);
}

void Executor::release_parked(TypeEntry& type, Clock::time_point now) {
  std::vector<Lease> released = type.gate.take_released();
  if (released.empty()) return;
  broker_.set_aside(-static_cast<std::ptrdiff_t>(released.size()));
  for (Lease& lease : released) defer(std::move(lease), now, false);
}

void Executor::return_parked(TypeEntry& type, Clock::time_point now) {
  std::vector<Lease> parked = type.gate.take_all();
  broker_.set_aside(-static_cast<std::ptrdiff_t>(parked.size()));
  for (Lease& lease : parked) defer(std::move(lease), now, false);
}

bool Executor::serve(const SlotPtr& slot, Lease lease, bool counted) {
  const TaskPtr task = lease.task;
  TypeEntry& type = *task->type_entry();
  const auto now = Clock::now();
  const GateDecision gate = type.gate.admit(lease, now, counted);
  if (gate.verdict == GateVerdict::park) {  // the gate holds it until a place frees
    broker_.set_aside(1);
    return true;
  }
  GateTicket place(gate.counted ? &type.gate : nullptr);
  if (gate.verdict == GateVerdict::wait) {
    defer(std::move(lease), gate.until, false);
    return true;
  }
  const CircuitBreaker::Decision admitted = type.breaker.admit(now);
  if (!admitted.run) {
    defer(std::move(lease), admitted.retry_at, true);
    return true;
  }
  BreakerTicket ticket(type.breaker, admitted.trial);
  if (!TaskAccess::transition(*task, JobState::queued, JobState::running)) return true;  // cancelled while waiting
  const auto waited = now - task->ready_at();
  // Only fresh work feeds the saturation signal: a retry that the throttle
  // held back has waited because of the throttle, and counting it would
  // keep the pool "saturated", and retries held, for ever.
  if (!lease.is_retry()) waits_.add(std::chrono::duration_cast<std::chrono::microseconds>(waited).count(), steady_ms(now));
  queue_wait_.observe(std::chrono::duration<double>(waited).count());

  const std::shared_ptr<AttemptRunner> remote = type.runner;  // null (no count to touch) for thread types
  Attempt attempt(*task, *slot, remote ? *remote : in_thread_runner());
  if (!attempt.start(now)) {
    completion_.cancelled_before_start(std::move(lease), now);
    return true;
  }
  slot->occupy(Running{std::move(lease), std::move(ticket), std::move(place), now});
  running_.fetch_add(1, std::memory_order_relaxed);
  type.counters.started.fetch_add(1, std::memory_order_relaxed);
  completion_.events().job(*task, JobState::running, attempt.number());
  slot->begin();  // from here the supervisor may take the attempt over (see attempt.hpp)
  AttemptEnd end = attempt.run();
  if (!slot->finish()) return false;
  run_time_.observe(end.duration_ms / 1000.0);
  running_.fetch_sub(1, std::memory_order_relaxed);
  completion_.attempt_ended(std::move(*slot->vacate()), std::move(end));
  return true;
}

std::optional<RawTrace> Executor::dump_stack(WorkerSlot& slot) {
  const pthread_t native = slot.native.load(std::memory_order_acquire);
  int idle = 0;
  if (native == pthread_t{} || slot.exited.load() || !slot.dump_state.compare_exchange_strong(idle, 1)) {
    return std::nullopt;
  }
  if (pthread_kill(native, install_dump_handler()) != 0) {
    slot.dump_state.store(0);
    return std::nullopt;
  }
  const auto deadline = Clock::now() + std::chrono::milliseconds(200);
  while (slot.dump_state.load(std::memory_order_acquire) != 2 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  int requested = 1;
  if (slot.dump_state.compare_exchange_strong(requested, 0)) return std::nullopt;  // no answer in time
  RawTrace trace = slot.dump;  // state is 2: the handler is done writing
  slot.dump_state.store(0, std::memory_order_release);
  return trace;
}

bool Executor::abandon(const SlotPtr& slot, Failure failure, bool allow_retry, Clock::time_point now) {
  if (!slot->claim_abandon()) return false;
  std::optional<RawTrace> trace = dump_stack(*slot);
  Running running = std::move(*slot->vacate());
  const TaskPtr task = running.task();
  const double duration = ms_between(running.started, now);
  const int attempt = TaskAccess::with_record(*task, [&](TaskRecord& r) {
    ++r.epoch;  // whatever the abandoned attempt still writes is discarded
    TaskAccess::set_stop_reason(*task, failure.kind);  // timeout or shutdown
    r.stop.request_stop();
    if (trace) r.stuck_trace = std::make_unique<RawTrace>(*trace);
    return r.attempts;
  });
  if (trace) failure.trace = *trace;
  running_.fetch_sub(1, std::memory_order_relaxed);
  const std::string outcome = leave_behind(slot, now);
  reporter_.log(LogLevel::error, "worker " + std::to_string(slot->id()) + " abandoned while running job " +
                                     task->id() + " (" + task->type() + "): " + failure.message + "; " + outcome);
  completion_.abandoned(std::move(running), attempt, std::move(failure), duration, allow_retry);
  return true;
}

// Moves an abandoned slot's thread to the abandoned list and fills its
// position if allowed; says what happened.
std::string Executor::leave_behind(const SlotPtr& slot, Clock::time_point now) {
  MutexLock lock(mutex_);
  abandoned_.push_back(slot);
  if (slots_[slot->id()] != slot) return "its position was already given up";
  if (stopping_.load()) {
    slots_[slot->id()] = nullptr;
    return "shutting down";
  }
  if (abandoned_.size() > options_.supervisor.max_abandoned_threads) {
    slots_[slot->id()] = nullptr;
    return "not replaced: supervisor.max_abandoned_threads reached";
  }
  replaced(slot->id(), slot->generation() + 1, now);
  return "replacement started";
}

std::vector<std::string> Executor::replace_exited(Clock::time_point now) {
  std::vector<std::string> notes;
  if (stopping_.load()) return notes;
  MutexLock lock(mutex_);
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    const SlotPtr slot = slots_[i];
    if (!slot || !slot->exited.load(std::memory_order_acquire)) continue;
    std::string reason = slot->exit_reason();
    if (reason.empty()) reason = "its thread returned unexpectedly";
    if (slot->thread.joinable()) slot->thread.join();
    replaced(static_cast<unsigned>(i), slot->generation() + 1, now);
    notes.push_back("worker " + std::to_string(i) + " died (" + reason + "); replacement started");
  }
  for (auto it = abandoned_.begin(); it != abandoned_.end();) {
    const SlotPtr& slot = *it;
    if (!slot->exited.load(std::memory_order_acquire)) {
      ++it;
      continue;
    }
    if (slot->thread.joinable()) slot->thread.join();
    notes.push_back("abandoned worker thread (position " + std::to_string(slot->id()) +
                    ") finished its job and retired");
    it = abandoned_.erase(it);
  }
  // Positions left vacant at the cap get a worker once a thread retires.
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i] || abandoned_.size() > options_.supervisor.max_abandoned_threads) continue;
    replaced(static_cast<unsigned>(i), restarts_[i] + 1, now);
    notes.push_back("worker " + std::to_string(i) + " started in a vacant position");
  }
  return notes;
}

std::vector<Clock::time_point> Executor::take_replacement_times() {
  MutexLock lock(mutex_);
  return std::exchange(replacement_times_, {});
}

std::vector<SlotPtr> Executor::live_slots() const {
  std::vector<SlotPtr> live;
  MutexLock lock(mutex_);
  for (const SlotPtr& s : slots_) {
    if (s) live.push_back(s);
  }
  return live;
}

std::vector<WorkerHealth> Executor::health() const {
  const auto now = Clock::now();
  const auto describe = [&](const SlotPtr& s, unsigned restarts, bool is_abandoned) {
    WorkerHealth w;
    w.id = s->id();
    w.restarts = restarts;
    w.abandoned = is_abandoned;
    const std::optional<RunningView> running = s->view();
    if (running) {
      w.job = running->task->id();
      w.ms_since_heartbeat = ms_between(std::max(running->started, running->task->last_heartbeat()), now);
    }
    w.state = is_abandoned ? WorkerState::abandoned : running ? WorkerState::busy : WorkerState::idle;
    return w;
  };
  std::vector<WorkerHealth> out;
  MutexLock lock(mutex_);
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i]) {
      out.push_back(describe(slots_[i], restarts_[i], false));
    } else {
      out.push_back({static_cast<unsigned>(i), WorkerState::vacant, std::nullopt, std::nullopt, restarts_[i], false});
    }
  }
  for (const SlotPtr& s : abandoned_) out.push_back(describe(s, restarts_[s->id()], true));
  return out;
}

std::map<std::string, std::size_t, std::less<>> Executor::running_by_type() const {
  std::map<std::string, std::size_t, std::less<>> out;
  for (const SlotPtr& s : live_slots()) {
    if (const TaskPtr task = s->current()) ++out[task->type()];
  }
  return out;
}

ExecutorCounts Executor::counts() const {
  ExecutorCounts c;
  c.running = static_cast<std::size_t>(std::max<std::int64_t>(0, running_.load()));
  c.replacements = replacements_.load();
  c.breaker_deferred = breaker_deferred_.load();
  MutexLock lock(mutex_);
  c.positions = static_cast<unsigned>(slots_.size());
  for (const SlotPtr& s : slots_) {
    if (!s) {
      ++c.vacant;
    } else if (!s->exited.load()) {
      ++c.live;
    }
  }
  c.abandoned = abandoned_.size();
  return c;
}

void Executor::request_stops() {
  for (const SlotPtr& s : live_slots()) {
    const TaskPtr task = s->current();
    if (!task) continue;
    TaskAccess::with_record(*task, [&](TaskRecord& r) {
      if (!r.cancel_requested) TaskAccess::set_stop_reason(*task, FailureKind::shutdown);
      r.stop.request_stop();
    });
  }
}

void Executor::await_exit(std::chrono::milliseconds grace) {
  const std::vector<SlotPtr> live = live_slots();
  const auto grace_end = Clock::now() + grace;
  const auto all_exited = [&] {
    return std::all_of(live.begin(), live.end(), [](const SlotPtr& s) { return s->exited.load(); });
  };
  while (!all_exited() && Clock::now() < grace_end) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

// Children still running a job are killed (kind shutdown), so the threads
// waiting for them return instead of being abandoned.
void Executor::close_children() {
  if (!processes_) return;
  processes_->close();
  const std::vector<SlotPtr> live = live_slots();
  const auto waits_for_child = [](const SlotPtr& s) {
    if (s->exited.load()) return false;
    const TaskPtr task = s->current();
    return task && task->type_entry()->runs_elsewhere();
  };
  const auto close_end = Clock::now() + std::chrono::seconds(5);
  while (std::any_of(live.begin(), live.end(), waits_for_child) && Clock::now() < close_end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void Executor::abandon_stragglers() {
  for (const SlotPtr& s : live_slots()) {
    if (s->exited.load(std::memory_order_acquire)) continue;
    abandon(s,
            make_failure(FailureKind::shutdown, "the runtime shut down while the job ran; it did not stop within "
                                                "shutdown.grace_ms and its thread was abandoned"),
            false, Clock::now());
  }
}

void Executor::join_threads() {
  MutexLock lock(mutex_);
  for (const SlotPtr& s : slots_) {
    if (s && s->thread.joinable()) s->thread.join();
  }
  // Threads still stuck in a job cannot be joined; they hold only shared
  // state and end on their own.
  for (const SlotPtr& s : abandoned_) {
    if (s->thread.joinable()) s->exited.load() ? s->thread.join() : s->thread.detach();
  }
}

}  // namespace bulwark::detail
