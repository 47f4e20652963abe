#include "bulwark/runtime.hpp"

#include <pthread.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <optional>
#include <random>
#include <utility>

#include "bulwark/guarded.hpp"
#include "detail/context_access.hpp"
#include "detail/crash_report.hpp"
#include "detail/runtime_impl.hpp"
#include "isolation/process_pool.hpp"

namespace bulwark {

std::string_view to_string(SubmitError::Code code) noexcept {
  switch (code) {
    case SubmitError::Code::invalid: return "invalid";
    case SubmitError::Code::unknown_type: return "unknown_type";
    case SubmitError::Code::duplicate_id: return "duplicate_id";
    case SubmitError::Code::queue_full: return "queue_full";
    case SubmitError::Code::shutting_down: return "shutting_down";
  }
  return "unknown";
}

namespace detail {

namespace {

class HandlerTask final : public Task {
 public:
  HandlerTask(std::shared_ptr<const Registry> registry, const Handler& handler)
      : registry_(std::move(registry)), handler_(handler) {}

  void run(JobContext& ctx) override {
    nlohmann::json value = handler_(ctx, payload);
    commit(ctx, [&] { result = std::move(value); });
  }

 private:
  std::shared_ptr<const Registry> registry_;  // keeps handler_ alive for abandoned attempts
  const Handler& handler_;
};

// A failed attempt of an isolated job, as the child process (or its death)
// described it.
struct RemoteFailure {
  Failure failure;
  std::vector<Failure> cleanup_errors;
};

// An attempt of an isolated type: the job runs in a child worker process.
// A failure there is a value, not a throw: run() returns normally and the
// worker takes it with take_failure().
class IsolatedTask final : public Task {
 public:
  IsolatedTask(std::shared_ptr<ProcessPool> pool, std::size_t memory_limit_mb)
      : pool_(std::move(pool)), memory_limit_mb_(memory_limit_mb) {}

  void run(JobContext& ctx) override {
    ProcessRequest request;
    request.id = id;
    request.type = type;
    request.attempt = ctx.attempt();
    request.payload = &payload;
    request.hard_timeout = hard_timeout;
    request.memory_limit_mb = memory_limit_mb_;
    request.stop = ctx.stop_token();
    ProcessReply reply = pool_->run(request);
    if (reply.stuck_trace) {
      std::lock_guard lock(mutex);
      stuck_trace = std::make_unique<RawTrace>(*reply.stuck_trace);
    }
    if (!reply.ok) {
      failure_ = RemoteFailure{std::move(reply.failure), std::move(reply.cleanup_errors)};
      return;
    }
    commit(ctx, [&] { result = std::move(reply.result); });
  }

  // The last attempt's failure, if it failed; used by the thread that ran it.
  std::optional<RemoteFailure> take_failure() { return std::exchange(failure_, std::nullopt); }

 private:
  std::shared_ptr<ProcessPool> pool_;
  std::size_t memory_limit_mb_;
  std::optional<RemoteFailure> failure_;
};

double unit_random() {
  thread_local std::minstd_rand rng(std::random_device{}());
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

constexpr std::size_t kMaxCleanupErrors = 16;

// The worker slot of the calling thread, for the stack-dump signal handler
// and the test hook. initial-exec: safe to read inside a signal handler.
__attribute__((tls_model("initial-exec"))) thread_local WorkerSlot* tls_slot = nullptr;
__attribute__((tls_model("initial-exec"))) thread_local bool tls_end_worker = false;

extern "C" void on_dump_signal(int) {
  const int saved_errno = errno;
  WorkerSlot* slot = tls_slot;
  if (slot != nullptr && slot->dump_state.load(std::memory_order_acquire) == 1) {
    slot->dump = capture_stack(2);  // skip this handler and the kernel's signal return frame
    slot->dump_state.store(2, std::memory_order_release);
  }
  errno = saved_errno;
}

}  // namespace

int dump_signal() noexcept {
  static const int sig = [] {
    const int s = SIGRTMIN + 3;
    struct sigaction sa {};
    sa.sa_handler = on_dump_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(s, &sa, nullptr);
    return s;
  }();
  return sig;
}

namespace testing {
namespace {
std::atomic<bool> g_unguarded{false};
}
void end_current_worker() noexcept { tls_end_worker = true; }
void set_unguarded(bool unguarded) noexcept { g_unguarded.store(unguarded, std::memory_order_relaxed); }
bool unguarded() noexcept { return g_unguarded.load(std::memory_order_relaxed); }
}  // namespace testing

}  // namespace detail

using detail::Task;
using detail::TaskPtr;
using detail::WorkerSlot;
using detail::ms_between;
using detail::steady_ms;

namespace {

std::string make_id_prefix() {
  static const char* kDigits = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::mt19937_64 rng(std::random_device{}());
  std::string prefix = "j";
  for (int i = 0; i < 5; ++i) prefix += kDigits[rng() % 36];
  return prefix + "-";
}

}  // namespace

namespace detail {
void refuse_runtime_in_worker_process();  // isolation/child.cpp
}

Runtime::Impl::Impl(Registry r, RuntimeOptions o)
    : options((detail::refuse_runtime_in_worker_process(), std::move(o))),
      registry(std::make_shared<Registry>(std::move(r))),
      id_prefix(make_id_prefix()),
      reporter(options.logging),
      queue(options.queue_capacity, options.effective_max_concurrent_retries()),
      store(options.retention_max_finished, options.retention_max_dead) {
  for (const auto& [type, hc] : options.handlers) {
    if (registry->find(type) == nullptr) throw ConfigError("handlers." + type + ": unknown job type '" + type + "'");
  }
  for (const std::string& type : registry->types()) {
    auto state = std::make_unique<detail::TypeState>(options.circuit_breaker);
    state->entry = registry->find(type);
    RetryPolicy& policy = state->policy;
    policy = options.retry;
    state->hard_timeout = options.supervisor.hard_timeout;
    const HandlerOptions& code = state->entry->options;
    if (code.max_attempts) policy.max_attempts = *code.max_attempts;
    if (code.backoff_initial) policy.initial = *code.backoff_initial;
    if (code.backoff_max) policy.max = *code.backoff_max;
    if (code.timeout) state->timeout = *code.timeout;
    if (code.hard_timeout) state->hard_timeout = *code.hard_timeout;
    if (code.isolation) state->isolated = *code.isolation == Isolation::process;
    state->memory_limit_mb = code.memory_limit_mb.value_or(options.isolation.memory_limit_mb);
    if (auto it = options.handlers.find(type); it != options.handlers.end()) {
      const HandlerConfig& cfg = it->second;
      if (cfg.max_attempts) policy.max_attempts = *cfg.max_attempts;
      if (cfg.backoff_initial) policy.initial = *cfg.backoff_initial;
      if (cfg.backoff_max) policy.max = *cfg.backoff_max;
      if (cfg.timeout) state->timeout = *cfg.timeout;
      if (cfg.hard_timeout) state->hard_timeout = *cfg.hard_timeout;
      if (cfg.isolation) state->isolated = *cfg.isolation == Isolation::process;
      if (cfg.memory_limit_mb) state->memory_limit_mb = *cfg.memory_limit_mb;
    }
    types.emplace(type, std::move(state));
  }
  const bool any_isolated = std::any_of(types.begin(), types.end(), [](const auto& t) { return t.second->isolated; });
  if (any_isolated) {
    processes = std::make_shared<detail::ProcessPool>(options.isolation.processes, options.isolation.start_timeout);
  }
  posts.policy = options.retry;
  posts.hard_timeout = options.supervisor.hard_timeout;
  set_throw_trace_capture(options.capture_traces);
  detail::dump_signal();
  detail::install_crash_reporter(options.logging.file);

  const unsigned n = options.effective_workers();
  {
    std::lock_guard lock(slots_mutex);
    slots.resize(n);
    restarts.assign(n, 0);
    for (unsigned i = 0; i < n; ++i) start_worker(i, 0);
  }
  supervisor = std::jthread([this](std::stop_token stop) { supervise(std::move(stop)); });
  reporter.log(detail::LogLevel::info, "runtime started: " + std::to_string(n) + " workers, queue capacity " +
                                           std::to_string(options.queue_capacity));
}

void Runtime::Impl::start_worker(unsigned id, unsigned generation) {
  auto slot = std::make_shared<WorkerSlot>();
  slot->id = id;
  slot->generation = generation;
  slots[id] = slot;
  slot->thread = std::thread([this, slot] { worker_main(slot); });
}

std::optional<SubmitError> Runtime::Impl::accept(TaskPtr task, std::chrono::milliseconds delay) {
  // Counting ourselves in before reading `accepting` lets shutdown wait for
  // every submit that got past the check, so none lands after the final drain.
  const AcceptGate gate(*this);
  if (!gate.open()) {
    return SubmitError{SubmitError::Code::shutting_down, "the runtime is shutting down"};
  }
  if (!queue.try_reserve()) {
    return SubmitError{SubmitError::Code::queue_full, "the queue is full (" + std::to_string(queue.capacity()) +
                                                          " jobs waiting, queue.capacity): retry later"};
  }
  task->seq = next_seq.fetch_add(1, std::memory_order_relaxed) + 1;
  if (task->id.empty()) task->id = id_prefix + std::to_string(task->seq);
  task->state.store(delay.count() > 0 ? JobState::scheduled : JobState::queued, std::memory_order_relaxed);
  const auto now = Clock::now();
  // Written before the store makes the task visible: listings read it.
  task->created_at = detail::to_wall(now);
  if (task->stored && !store.insert(task)) {
    queue.unreserve();
    return SubmitError{SubmitError::Code::duplicate_id, "id '" + task->id + "' is already used by another job"};
  }
  accepted.fetch_add(1, std::memory_order_seq_cst);
  submitted.fetch_add(1, std::memory_order_relaxed);
  task->type_state->counters.submitted.fetch_add(1, std::memory_order_relaxed);
  const auto due = now + delay;
  task->enqueued_ns.store(due.time_since_epoch().count(), std::memory_order_relaxed);
  queue.push(std::move(task), due, now);
  return std::nullopt;
}

void Runtime::Impl::worker_main(const SlotPtr& slot) {
  detail::AltStack alt_stack;  // lets the crash report run after a stack overflow
  detail::tls_slot = slot.get();
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
  detail::tls_slot = nullptr;
  {
    std::lock_guard lock(slot->mutex);
    slot->exit_reason = std::move(reason);
  }
  slot->exited.store(true, std::memory_order_release);
}

void Runtime::Impl::worker_loop(const SlotPtr& slot) {
  while (TaskPtr task = queue.pop()) {
    const bool retry_slot = task->in_retry_lane.load(std::memory_order_relaxed);
    const auto now = Clock::now();
    {
      detail::CircuitBreaker& breaker = task->type_state->breaker;
      const auto decision = breaker.admit(now);
      if (!decision.run) {
        // Quarantined: back to waiting, not failed.
        if (retry_slot) queue.release_retry_slot();
        if (task->transition(JobState::queued, JobState::scheduled)) {
          sup.breaker_deferred.fetch_add(1, std::memory_order_relaxed);
          {
            std::lock_guard lock(task->mutex);
            ++task->breaker_deferrals;
          }
          task->enqueued_ns.store(decision.retry_at.time_since_epoch().count(), std::memory_order_relaxed);
          queue.push_deferred(task, decision.retry_at, retry_slot);
        }
        continue;
      }
      task->breaker_trial = decision.trial;
    }
    if (!task->transition(JobState::queued, JobState::running)) {  // cancelled while waiting
      if (task->breaker_trial) task->type_state->breaker.release_trial();
      if (retry_slot) queue.release_retry_slot();
      continue;
    }
    const auto enqueued = Clock::time_point(Clock::duration(task->enqueued_ns.load(std::memory_order_relaxed)));
    const auto waited = now - enqueued;
    // Only fresh work feeds the saturation signal: a retry that the throttle
    // held back has waited because of the throttle, and counting it would
    // keep the pool "saturated", and retries held, for ever.
    if (!retry_slot) waits.add(std::chrono::duration_cast<std::chrono::microseconds>(waited).count(), steady_ms(now));
    queue_wait.observe(std::chrono::duration<double>(waited).count());
    if (!run_attempt(slot, task, now)) return;  // abandoned: the supervisor has taken over this attempt
    if (retry_slot) queue.release_retry_slot();
    if (detail::tls_end_worker) {
      detail::tls_end_worker = false;
      throw std::runtime_error("ended on purpose by bulwark::detail::testing::end_current_worker()");
    }
  }
  slot->shutdown_exit.store(true, std::memory_order_release);
}

bool Runtime::Impl::run_attempt(const SlotPtr& slot, const TaskPtr& task, Clock::time_point start) {
  int attempt = 0;
  std::uint32_t epoch = 0;
  std::stop_token token;
  {
    std::unique_lock lock(task->mutex);
    if (task->cancel_requested) {  // cancelled while it was deferred
      task->finished_at = detail::to_wall(start);
      task->state.store(JobState::cancelled, std::memory_order_release);
      lock.unlock();
      finished(task, JobState::cancelled);
      return true;
    }
    attempt = ++task->attempts;
    epoch = task->epoch;
    if (slot->stop.stop_requested()) slot->stop = std::stop_source();
    task->stop = slot->stop;  // lent for this attempt; taken back under the mutex when it ends
    token = task->stop.get_token();
    if (!task->started_at) task->started_at = detail::to_wall(start);
  }
  task->heartbeat_ns.store(start.time_since_epoch().count(), std::memory_order_relaxed);
  {
    std::lock_guard lock(slot->mutex);
    slot->current = task;
    slot->started = start;
    slot->soft_fired = false;
    slot->stuck_reported = false;
  }
  running.fetch_add(1, std::memory_order_relaxed);
  task->type_state->counters.started.fetch_add(1, std::memory_order_relaxed);
  // From here until the owner handshake below, the supervisor may abandon
  // this attempt and the runtime may even be destroyed: touch only the task,
  // the slot and the stack.
  slot->begin();

  JobContext ctx = detail::ContextAccess::make(*task, std::move(token), attempt, epoch);
  detail::set_crash_context(task.get(), slot->id);
  auto outcome = detail::testing::unguarded() ? (task->run(ctx), Outcome<void>(std::monostate{}))
                                              : guarded([&] { task->run(ctx); });
  std::vector<Failure> cleanup_errors;
  bool child_timed_out = false;  // counted after the owner handshake, when the runtime is known to be there
  if (task->isolated && outcome.ok()) {
    if (auto remote = static_cast<detail::IsolatedTask&>(*task).take_failure()) {
      child_timed_out = remote->failure.kind == FailureKind::timeout;
      outcome = Outcome<void>(std::move(remote->failure), nullptr);
      cleanup_errors = std::move(remote->cleanup_errors);
    }
  }
  if (!outcome.ok() && outcome.failure().type == "bulwark::Stopped") {
    // Why it was stopped is the task's to say (a child process only knows
    // that it was asked to).
    Failure& f = outcome.failure();
    f.kind = task->stop_reason.load(std::memory_order_acquire);
    f.message = Stopped(f.kind).what();
  }
  for (Failure& f : detail::ContextAccess::run_cleanups(ctx, !outcome.ok())) cleanup_errors.push_back(std::move(f));
  detail::set_crash_context(nullptr, slot->id);
  const auto end = Clock::now();
  const double duration = ms_between(start, end);

  if (!slot->finish()) return false;
  if (child_timed_out) sup.hard_timeouts.fetch_add(1, std::memory_order_relaxed);
  run_time.observe(duration / 1000.0);
  {
    std::lock_guard lock(slot->mutex);
    slot->current.reset();
  }
  running.fetch_sub(1, std::memory_order_relaxed);

  if (outcome.ok() && cleanup_errors.empty()) {
    {
      std::lock_guard lock(task->mutex);
      task->duration_ms = duration;
      task->error.reset();
      task->exception = nullptr;
      task->finished_at = detail::to_wall(end);
      task->stop = std::stop_source(std::nostopstate);
    }
    task->type_state->counters.succeeded.fetch_add(1, std::memory_order_relaxed);
    if (task->type_state->breaker.on_success(task->breaker_trial)) {
      sup.breaker_closed.fetch_add(1, std::memory_order_relaxed);
      reporter.log(detail::LogLevel::info,
                   "circuit breaker for job type '" + task->type + "' closed: trial job " + task->id + " succeeded");
    }
    task->state.store(JobState::succeeded, std::memory_order_release);
    finished(task, JobState::succeeded);
    return true;
  }
  if (outcome.ok()) {
    Failure first = std::move(cleanup_errors.front());
    cleanup_errors.erase(cleanup_errors.begin());
    fail_attempt(task, attempt, std::move(first), nullptr, std::move(cleanup_errors), duration);
  } else {
    fail_attempt(task, attempt, std::move(outcome.failure()), outcome.exception(), std::move(cleanup_errors),
                 duration);
  }
  return true;
}

void Runtime::Impl::fail_attempt(const TaskPtr& task, int attempt, Failure failure, std::exception_ptr exception,
                                 std::vector<Failure> cleanup_errors, double duration_ms) {
  attempts_failed.fetch_add(1, std::memory_order_relaxed);
  const auto now = Clock::now();
  detail::TypeCounters& counters = task->type_state->counters;
  const auto kind = static_cast<std::size_t>(failure.kind);
  counters.recovered[kind].fetch_add(1, std::memory_order_relaxed);
  if (task->type_state->breaker.on_failure(task->breaker_trial, now)) {
    sup.breaker_opened.fetch_add(1, std::memory_order_relaxed);
    const auto& cb = options.circuit_breaker;
    reporter.log(detail::LogLevel::warn,
                 "circuit breaker for job type '" + task->type + "' opened" +
                     (task->breaker_trial ? " again: trial job " + task->id + " failed"
                                          : ": " + std::to_string(cb.failures) + " failures within " +
                                                std::to_string(cb.window.count()) + " ms") +
                     "; its jobs wait " + std::to_string(cb.cooldown.count()) + " ms");
  }
  bool cancelled_now = false;
  {
    std::lock_guard lock(task->mutex);
    cancelled_now = task->cancel_requested;
    task->stop = std::stop_source(std::nostopstate);  // the worker's source is not the job's any more
  }
  const bool again = attempt < task->max_attempts && !cancelled_now;
  const auto delay = task->policy->delay_after(attempt, detail::unit_random());
  if (reporter.enabled(detail::LogLevel::error)) {
    reporter.attempt_failed({task->id, task->type, attempt, task->max_attempts,
                             again ? std::optional(delay) : std::nullopt, failure});
  }
  {
    std::lock_guard lock(task->mutex);
    task->duration_ms = duration_ms;
    task->error = std::make_unique<Failure>(std::move(failure));
    task->exception = std::move(exception);
    for (Failure& f : cleanup_errors) {
      if (task->cleanup_errors.size() < detail::kMaxCleanupErrors) task->cleanup_errors.push_back(std::move(f));
    }
    if (!again) task->finished_at = detail::to_wall(now);
  }
  if (again) {
    retried.fetch_add(1, std::memory_order_relaxed);
    counters.retried.fetch_add(1, std::memory_order_relaxed);
    task->state.store(JobState::scheduled, std::memory_order_release);
    const auto due = now + delay;
    task->enqueued_ns.store(due.time_since_epoch().count(), std::memory_order_relaxed);
    queue.push_retry(task, due);
    return;
  }
  const JobState terminal = cancelled_now ? JobState::cancelled : JobState::failed;
  if (terminal == JobState::failed) counters.failed[kind].fetch_add(1, std::memory_order_relaxed);
  task->state.store(terminal, std::memory_order_release);
  finished(task, terminal);
}

void Runtime::Impl::finished(const TaskPtr& task, JobState terminal) {
  task->state.notify_all();
  switch (terminal) {
    case JobState::succeeded: succeeded.fetch_add(1, std::memory_order_relaxed); break;
    case JobState::failed: failed.fetch_add(1, std::memory_order_relaxed); break;
    case JobState::cancelled: cancelled.fetch_add(1, std::memory_order_relaxed); break;
    default: break;
  }
  if (task->stored) store.finished(task);
  if (options.on_finished) {
    auto outcome = guarded([&] { options.on_finished(task->snapshot()); });
    if (!outcome.ok()) {
      reporter.log(detail::LogLevel::error,
                   "on_finished listener threw " + outcome.failure().type + ": " + outcome.failure().message);
    }
  }
  // Dekker-style with wait_idle: both sides seq_cst, so either the waiter
  // sees the count it waits for or we see the waiter. Whoever makes the
  // finished count reach the accepted count wakes it.
  const std::uint64_t done = finished_total.fetch_add(1, std::memory_order_seq_cst) + 1;
  if (idle_waiters.load(std::memory_order_seq_cst) > 0 && done == accepted.load(std::memory_order_seq_cst)) {
    std::lock_guard lock(idle_mutex);
    idle_cv.notify_all();
  }
}

ShutdownReport Runtime::Impl::stop(std::chrono::milliseconds timeout) {
  std::lock_guard guard(shutdown_mutex);
  if (shutdown_report) return *shutdown_report;
  close_gate();
  ShutdownReport report;
  report.drained = drain_until(Clock::now() + timeout);
  stopping.store(true, std::memory_order_release);
  supervisor.request_stop();
  if (supervisor.joinable()) supervisor.join();
  queue.close();
  const std::vector<SlotPtr> live = live_slots();
  request_stops(live);
  await_exit(live);
  close_children(live);
  abandon_stragglers(live);
  join_threads();
  report.not_run = end_unrun();
  reporter.log(detail::LogLevel::info, "runtime stopped: " + std::to_string(report.not_run) +
                                           " jobs ended with kind shutdown" +
                                           (report.drained ? "" : " (drain deadline reached)"));
  shutdown_report = report;
  return report;
}

// Refuses new jobs, then waits for every submit that got past the gate.
void Runtime::Impl::close_gate() {
  accepting.store(false, std::memory_order_seq_cst);
  while (submitting.load(std::memory_order_seq_cst) > 0) std::this_thread::yield();
}

// Jobs ready now, running, or due before the deadline (a delay, a retry's
// backoff) get their turn; what is due later ends with kind shutdown.
// True if nothing was left ready or running.
bool Runtime::Impl::drain_until(Clock::time_point deadline) {
  const auto work_left = [&] {
    const auto due = queue.next_due();
    return queue.ready() > 0 || running.load() > 0 || (due && *due <= deadline);
  };
  while (Clock::now() < deadline && work_left()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return queue.ready() == 0 && running.load() == 0;
}

std::vector<Runtime::Impl::SlotPtr> Runtime::Impl::live_slots() const {
  std::vector<SlotPtr> live;
  std::lock_guard lock(slots_mutex);
  for (const SlotPtr& s : slots) {
    if (s) live.push_back(s);
  }
  return live;
}

void Runtime::Impl::request_stops(const std::vector<SlotPtr>& live) {
  for (const SlotPtr& s : live) {
    std::lock_guard lock(s->mutex);
    if (!s->current) continue;
    std::lock_guard task_lock(s->current->mutex);
    if (!s->current->cancel_requested) s->current->stop_reason.store(FailureKind::shutdown, std::memory_order_release);
    s->current->stop.request_stop();
  }
}

// Gives running jobs shutdown.grace_ms to notice their stop token.
void Runtime::Impl::await_exit(const std::vector<SlotPtr>& live) {
  const auto grace_end = Clock::now() + options.shutdown_grace;
  const auto all_exited = [&] {
    return std::all_of(live.begin(), live.end(), [](const SlotPtr& s) { return s->exited.load(); });
  };
  while (!all_exited() && Clock::now() < grace_end) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

// Children still running a job are killed (kind shutdown), so the threads
// waiting for them return instead of being abandoned.
void Runtime::Impl::close_children(const std::vector<SlotPtr>& live) {
  if (!processes) return;
  processes->close();
  const auto waits_for_child = [](const SlotPtr& s) {
    if (s->exited.load()) return false;
    std::lock_guard lock(s->mutex);
    return s->current && s->current->isolated;
  };
  const auto close_end = Clock::now() + std::chrono::seconds(5);
  while (std::any_of(live.begin(), live.end(), waits_for_child) && Clock::now() < close_end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// A job still running past the grace is abandoned; it ends with kind shutdown.
void Runtime::Impl::abandon_stragglers(const std::vector<SlotPtr>& live) {
  for (const SlotPtr& s : live) {
    if (s->exited.load(std::memory_order_acquire)) continue;
    TaskPtr task;
    {
      std::lock_guard lock(s->mutex);
      task = s->current;
    }
    if (task && s->abandon()) {
      abandon(s, task, Clock::now(),
              make_failure(FailureKind::shutdown, "the runtime shut down while the job ran; it did not stop within "
                                                  "shutdown.grace_ms and its thread was abandoned"),
              false);
    }
  }
}

void Runtime::Impl::join_threads() {
  std::lock_guard lock(slots_mutex);
  for (const SlotPtr& s : slots) {
    if (s && s->thread.joinable()) s->thread.join();
  }
  // Threads still stuck in a job cannot be joined; they hold only shared
  // state and end on their own.
  for (const SlotPtr& s : abandoned) {
    if (s->thread.joinable()) s->exited.load() ? s->thread.join() : s->thread.detach();
  }
}

// Every job still waiting ends failed with kind shutdown, saying why; returns how many.
std::size_t Runtime::Impl::end_unrun() {
  std::size_t ended = 0;
  for (const TaskPtr& task : queue.drain()) {
    for (JobState s = task->state.load(); !is_terminal(s); s = task->state.load()) {
      std::unique_lock lock(task->mutex);
      if (!task->transition(s, JobState::failed)) continue;
      std::string message = "the runtime shut down before the job ran";
      if (task->attempts > 0 && task->error) {
        message = "the runtime shut down before attempt " + std::to_string(task->attempts + 1) + " of " +
                  std::to_string(task->max_attempts) + "; last error: " + task->error->type + ": " +
                  task->error->message;
      }
      task->error = std::make_unique<Failure>(make_failure(FailureKind::shutdown, std::move(message)));
      task->exception = nullptr;
      task->finished_at = WallClock::now();
      lock.unlock();
      ++ended;
      task->type_state->counters.failed[static_cast<std::size_t>(FailureKind::shutdown)].fetch_add(1);
      finished(task, JobState::failed);
      break;
    }
  }
  return ended;
}

Runtime::Runtime(Registry registry, RuntimeOptions options)
    : impl_(std::make_unique<Impl>(std::move(registry), std::move(options))) {}

Runtime::~Runtime() { shutdown(); }

Submitted Runtime::submit(JobSpec spec) {
  auto it = impl_->types.find(spec.type);
  if (it == impl_->types.end()) {
    return impl_->reject(SubmitError::Code::unknown_type, "unknown job type '" + spec.type + "'");
  }
  if (spec.priority < kMinPriority || spec.priority > kMaxPriority) {
    return impl_->reject(SubmitError::Code::invalid, "priority: expected an integer from " +
                                                         std::to_string(kMinPriority) + " to " +
                                                         std::to_string(kMaxPriority));
  }
  if (spec.max_attempts && *spec.max_attempts < 1) {
    return impl_->reject(SubmitError::Code::invalid, "max_attempts: expected at least 1");
  }
  if (spec.delay.count() < 0 || spec.timeout.count() < 0) {
    return impl_->reject(SubmitError::Code::invalid, "delay_ms and timeout_ms: expected 0 or more");
  }
  if (!spec.id.empty() && !is_valid_job_id(spec.id, impl_->options.limits.id_length)) {
    return impl_->reject(SubmitError::Code::invalid, job_id_problem(spec.id, impl_->options.limits.id_length));
  }
  detail::TypeState& type = *it->second;
  if (type.entry->options.validate) {
    auto valid = guarded([&] { type.entry->options.validate(spec.payload); });
    if (!valid.ok()) return impl_->reject(SubmitError::Code::invalid, valid.failure().message);
  }
  std::shared_ptr<Task> task;
  if (type.isolated) {
    task = std::allocate_shared<detail::IsolatedTask>(detail::PoolAllocator<detail::IsolatedTask>{}, impl_->processes,
                                                      type.memory_limit_mb);
    task->isolated = true;
  } else {
    task = std::allocate_shared<detail::HandlerTask>(detail::PoolAllocator<detail::HandlerTask>{}, impl_->registry,
                                                     type.entry->handler);
  }
  task->id = std::move(spec.id);
  task->type = it->first;
  task->priority = spec.priority;
  task->max_attempts = spec.max_attempts.value_or(type.policy.max_attempts);
  task->timeout = spec.timeout.count() > 0 ? spec.timeout : type.timeout;
  task->hard_timeout = type.hard_timeout;
  task->policy = &type.policy;
  task->type_state = &type;
  task->stored = true;
  task->payload = std::move(spec.payload);
  const auto delay = spec.delay;
  if (auto error = impl_->accept(task, delay)) return impl_->reject(error->code, std::move(error->message));
  return Submitted{task->id, delay.count() > 0 ? JobState::scheduled : JobState::queued, std::nullopt};
}

std::optional<SubmitError> Runtime::enqueue_posted(std::shared_ptr<detail::Task> task, PostOptions options) {
  if (options.priority < kMinPriority || options.priority > kMaxPriority || options.max_attempts < 1) {
    impl_->count_rejection(SubmitError::Code::invalid);
    return SubmitError{SubmitError::Code::invalid, "post: priority must be 0..9 and max_attempts at least 1"};
  }
  task->type = std::move(options.type);
  task->priority = options.priority;
  task->max_attempts = options.max_attempts;
  task->hard_timeout = impl_->posts.hard_timeout;
  task->policy = &impl_->posts.policy;
  task->type_state = &impl_->posts;
  auto error = impl_->accept(std::move(task), options.delay);
  if (error) impl_->count_rejection(error->code);
  return error;
}

std::optional<JobRecord> Runtime::get(const JobId& id) const {
  TaskPtr task = impl_->store.find(id);
  if (!task) return std::nullopt;
  return task->snapshot();
}

std::vector<JobRecord> Runtime::list(const ListQuery& query) const {
  std::vector<TaskPtr> tasks = impl_->store.all();
  std::erase_if(tasks, [&](const TaskPtr& t) {
    if (query.before_seq != 0 && t->seq >= query.before_seq) return true;
    if (!query.type.empty() && t->type != query.type) return true;
    return query.state && t->state.load(std::memory_order_acquire) != *query.state;
  });
  const std::size_t n = std::min(query.limit, tasks.size());
  std::partial_sort(tasks.begin(), tasks.begin() + static_cast<std::ptrdiff_t>(n), tasks.end(),
                    [](const TaskPtr& a, const TaskPtr& b) { return a->seq > b->seq; });
  std::vector<JobRecord> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) out.push_back(tasks[i]->snapshot());
  return out;
}

std::vector<JobRecord> Runtime::dead_letters(std::size_t limit) const {
  return list(ListQuery{JobState::failed, {}, limit, 0});
}

CancelResult Runtime::cancel(const JobId& id) {
  TaskPtr task = impl_->store.find(id);
  if (!task) return CancelResult::not_found;
  for (;;) {
    const JobState s = task->state.load(std::memory_order_acquire);
    if (is_terminal(s)) return CancelResult::already_terminal;
    std::unique_lock lock(task->mutex);
    if (s == JobState::running) {
      if (task->state.load() != JobState::running) continue;
      task->cancel_requested = true;
      task->stop_reason.store(FailureKind::cancelled, std::memory_order_release);
      task->stop.request_stop();
      return CancelResult::stop_requested;
    }
    if (!task->transition(s, JobState::cancelled)) continue;
    task->finished_at = WallClock::now();
    lock.unlock();
    impl_->finished(task, JobState::cancelled);
    return CancelResult::cancelled;
  }
}

RequeueResult Runtime::requeue(const JobId& id) {
  TaskPtr task = impl_->store.find(id);
  if (!task) return RequeueResult::not_found;
  if (task->state.load(std::memory_order_acquire) != JobState::failed) return RequeueResult::not_failed;
  const Impl::AcceptGate gate(*impl_);
  if (!gate.open()) return RequeueResult::shutting_down;
  if (!impl_->queue.try_reserve()) return RequeueResult::queue_full;
  {
    std::lock_guard lock(task->mutex);
    if (!task->transition(JobState::failed, JobState::queued)) {
      impl_->queue.unreserve();
      return RequeueResult::not_failed;
    }
    task->attempts = 0;
    task->error.reset();
    task->exception = nullptr;
    task->cleanup_errors.clear();
    task->stuck_trace.reset();
    task->cancel_requested = false;
    task->finished_at.reset();
  }
  impl_->accepted.fetch_add(1, std::memory_order_seq_cst);
  const auto now = Clock::now();
  task->enqueued_ns.store(now.time_since_epoch().count(), std::memory_order_relaxed);
  impl_->queue.push(task, now);
  return RequeueResult::requeued;
}

RuntimeStats Runtime::stats() const {
  RuntimeStats s;
  for (const TaskPtr& t : impl_->store.all()) ++s.by_state[std::string(to_string(t->state.load()))];
  s.submitted = impl_->submitted.load();
  s.rejected = impl_->rejected.load();
  s.succeeded = impl_->succeeded.load();
  s.failed = impl_->failed.load();
  s.cancelled = impl_->cancelled.load();
  s.attempts_failed = impl_->attempts_failed.load();
  s.retried = impl_->retried.load();
  s.log_dropped = impl_->reporter.dropped();
  s.queue_depth = impl_->queue.size();
  s.running = impl_->running.load();
  const auto& sup = impl_->sup;
  s.soft_timeouts = sup.soft_timeouts.load();
  s.hard_timeouts = sup.hard_timeouts.load();
  s.stuck_reports = sup.stuck_reports.load();
  s.replacements = sup.replacements.load();
  s.breaker_opened = sup.breaker_opened.load();
  s.breaker_deferred = sup.breaker_deferred.load();
  if (impl_->processes) s.process_ends = impl_->processes->ends_by_reason();
  s.run_time = impl_->run_time.snapshot();
  s.queue_wait = impl_->queue_wait.snapshot();
  s.traces = throw_trace_stats();
  s.queue_capacity = impl_->queue.capacity();
  s.ready_by_priority = impl_->queue.ready_by_priority();
  for (std::size_t c = 0; c < impl_->rejected_by_code.size(); ++c) {
    s.rejected_by_code[std::string(to_string(static_cast<SubmitError::Code>(c)))] = impl_->rejected_by_code[c].load();
  }
  const auto type_stats = [](const detail::TypeState& t) {
    TypeStats out;
    out.submitted = t.counters.submitted.load();
    out.started = t.counters.started.load();
    out.succeeded = t.counters.succeeded.load();
    out.retried = t.counters.retried.load();
    for (std::size_t k = 0; k < detail::TypeCounters::kKinds; ++k) {
      const std::string kind(to_string(static_cast<FailureKind>(k)));
      out.failed[kind] = t.counters.failed[k].load();
      out.recovered[kind] = t.counters.recovered[k].load();
    }
    out.breaker = t.breaker.enabled() ? detail::to_string(t.breaker.state()) : "off";
    out.breaker_opened = t.breaker.opened();
    return out;
  };
  for (const auto& [name, state] : impl_->types) s.by_type[name] = type_stats(*state);
  s.by_type["post"] = type_stats(impl_->posts);
  std::lock_guard lock(impl_->slots_mutex);
  for (const auto& slot : impl_->slots) s.workers += slot && !slot->exited.load() ? 1 : 0;
  s.abandoned = static_cast<unsigned>(impl_->abandoned.size());
  return s;
}

RuntimeCounters Runtime::counters() const noexcept {
  return {impl_->submitted.load(), impl_->succeeded.load(), impl_->failed.load(), impl_->queue.size(),
          impl_->queue.capacity()};
}

unsigned Runtime::worker_count() const noexcept { return impl_->options.effective_workers(); }

const InputLimits& Runtime::limits() const noexcept { return impl_->options.limits; }

HealthReport Runtime::health() const { return impl_->health(); }

void Runtime::report_failure(std::string context, const Failure& failure) noexcept {
  try {
    std::string message = std::move(context) + ": " + failure.type;
    if (!failure.message.empty()) message += ": " + failure.message;
    impl_->reporter.note(detail::LogLevel::error, {std::move(message), {}, {}, failure.trace});
  } catch (...) {
    // Out of memory while reporting: nothing better to do.
  }
}

void Runtime::report_warning(std::string message) noexcept {
  try {
    impl_->reporter.log(detail::LogLevel::warn, std::move(message));
  } catch (...) {
    // Out of memory while reporting: nothing better to do.
  }
}

bool Runtime::wait_idle(std::chrono::milliseconds timeout) {
  impl_->idle_waiters.fetch_add(1, std::memory_order_seq_cst);
  std::unique_lock lock(impl_->idle_mutex);
  const bool idle =
      impl_->idle_cv.wait_for(lock, timeout, [&] {
        // Finished first: every job it counts was accepted before, so equal
        // counts mean nothing was unfinished when `accepted` was read.
        const std::uint64_t done = impl_->finished_total.load(std::memory_order_seq_cst);
        return impl_->accepted.load(std::memory_order_seq_cst) == done;
      });
  impl_->idle_waiters.fetch_sub(1, std::memory_order_seq_cst);
  return idle;
}

ShutdownReport Runtime::shutdown(std::optional<std::chrono::milliseconds> timeout) {
  return impl_->stop(timeout.value_or(impl_->options.shutdown_timeout));
}

}  // namespace bulwark
