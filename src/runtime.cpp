#include "bulwark/runtime.hpp"

#include <algorithm>
#include <condition_variable>
#include <random>
#include <thread>

#include "bulwark/guarded.hpp"
#include "detail/job_queue.hpp"
#include "detail/job_store.hpp"
#include "detail/reporter.hpp"

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

// The runtime's access to a JobContext's private parts.
struct ContextAccess {
  static JobContext make(Task& task, std::stop_token stop, int attempt) noexcept {
    return JobContext(task, std::move(stop), attempt);
  }

  // Runs the cleanups last-registered first. `failed` says whether the
  // attempt has failed so far; a cleanup that throws makes it so.
  static std::vector<Failure> run_cleanups(JobContext& ctx, bool failed) {
    std::vector<Failure> failures;
    for (auto it = ctx.cleanups_.rbegin(); it != ctx.cleanups_.rend(); ++it) {
      if (it->only_on_failure && !failed) continue;
      auto outcome = guarded(it->fn);
      if (!outcome.ok()) {
        failures.push_back(std::move(outcome.failure()));
        failures.back().origin = it->only_on_failure ? "on_failure" : "defer";
        failed = true;
      }
    }
    ctx.cleanups_.clear();
    return failures;
  }
};

namespace {

class HandlerTask final : public Task {
 public:
  explicit HandlerTask(const Handler& handler) : handler_(handler) {}

  void run(JobContext& ctx) override {
    nlohmann::json value = handler_(ctx, payload);
    std::lock_guard lock(mutex);
    result = std::move(value);
  }

 private:
  const Handler& handler_;  // owned by the runtime's registry
};

double unit_random() {
  thread_local std::minstd_rand rng(std::random_device{}());
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

constexpr std::size_t kMaxCleanupErrors = 16;

}  // namespace
}  // namespace detail

using detail::Task;
using detail::TaskPtr;

struct Runtime::Impl {
  struct WorkerSlot {
    std::mutex mutex;
    Task* current = nullptr;  // guarded by mutex; kept alive by the worker while set
    std::atomic<bool> alive{false};
  };
  struct TypeEntry {
    const Registry::Entry* entry;
    RetryPolicy policy;
  };

  Impl(Registry r, RuntimeOptions o);

  Submitted reject(SubmitError::Code code, std::string message) {
    rejected.fetch_add(1, std::memory_order_relaxed);
    return Submitted{{}, JobState::rejected, SubmitError{code, std::move(message)}};
  }
  std::optional<SubmitError> accept(const TaskPtr& task, std::chrono::milliseconds delay);
  void worker_loop(WorkerSlot& slot);
  void run_attempt(const TaskPtr& task);
  void fail_attempt(const TaskPtr& task, int attempt, Failure failure, std::exception_ptr exception,
                    std::vector<Failure> cleanup_errors, double duration_ms);
  // Publishes a terminal state already set on the task and does the books.
  void finished(const TaskPtr& task, JobState terminal);
  void end(const TaskPtr& task, JobState terminal) {
    {
      std::lock_guard lock(task->mutex);
      task->finished_at = WallClock::now();
    }
    task->state.store(terminal, std::memory_order_release);
    finished(task, terminal);
  }
  ShutdownReport stop(std::chrono::milliseconds timeout);

  RuntimeOptions options;
  Registry registry;
  std::map<std::string, TypeEntry, std::less<>> types;
  RetryPolicy post_policy;
  const std::string id_prefix;

  detail::Reporter reporter;
  detail::JobQueue queue;
  detail::JobStore store;

  std::atomic<bool> accepting{true};
  std::atomic<int> submitting{0};  // submits between their accepting check and their push
  std::atomic<std::uint64_t> next_seq{0};
  std::atomic<std::uint64_t> submitted{0}, rejected{0}, succeeded{0}, failed{0}, cancelled{0};
  std::atomic<std::uint64_t> attempts_failed{0}, retried{0};
  std::atomic<std::int64_t> active{0};  // accepted, not terminal
  std::atomic<std::size_t> running{0};
  std::mutex idle_mutex;
  std::condition_variable idle_cv;

  std::mutex shutdown_mutex;
  std::optional<ShutdownReport> shutdown_report;  // guarded by shutdown_mutex

  std::vector<std::unique_ptr<WorkerSlot>> slots;
  std::vector<std::jthread> workers;  // last: destroyed (joined) first
};

namespace {

std::string make_id_prefix() {
  static const char* kDigits = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::mt19937_64 rng(std::random_device{}());
  std::string prefix = "j";
  for (int i = 0; i < 5; ++i) prefix += kDigits[rng() % 36];
  return prefix + "-";
}

}  // namespace

Runtime::Impl::Impl(Registry r, RuntimeOptions o)
    : options(std::move(o)),
      registry(std::move(r)),
      id_prefix(make_id_prefix()),
      reporter(options.logging),
      queue(options.queue_capacity, options.effective_max_concurrent_retries()),
      store(options.retention_max_finished) {
  for (const auto& [type, hc] : options.handlers) {
    if (registry.find(type) == nullptr) throw ConfigError("handlers." + type + ": unknown job type '" + type + "'");
  }
  for (const std::string& type : registry.types()) {
    const Registry::Entry* entry = registry.find(type);
    RetryPolicy policy = options.retry;
    const HandlerOptions& code = entry->options;
    if (code.max_attempts) policy.max_attempts = *code.max_attempts;
    if (code.backoff_initial) policy.initial = *code.backoff_initial;
    if (code.backoff_max) policy.max = *code.backoff_max;
    if (auto it = options.handlers.find(type); it != options.handlers.end()) {
      const HandlerConfig& cfg = it->second;
      if (cfg.max_attempts) policy.max_attempts = *cfg.max_attempts;
      if (cfg.backoff_initial) policy.initial = *cfg.backoff_initial;
      if (cfg.backoff_max) policy.max = *cfg.backoff_max;
    }
    types.emplace(type, TypeEntry{entry, policy});
  }
  post_policy = options.retry;
  set_throw_trace_capture(options.capture_traces);

  const unsigned n = options.effective_workers();
  for (unsigned i = 0; i < n; ++i) slots.push_back(std::make_unique<WorkerSlot>());
  for (unsigned i = 0; i < n; ++i) {
    workers.emplace_back([this, slot = slots[i].get()] { worker_loop(*slot); });
  }
  reporter.log(detail::LogLevel::info, "runtime started: " + std::to_string(n) + " workers, queue capacity " +
                                           std::to_string(options.queue_capacity));
}

std::optional<SubmitError> Runtime::Impl::accept(const TaskPtr& task, std::chrono::milliseconds delay) {
  // Counting ourselves in before reading `accepting` lets shutdown wait for
  // every submit that got past the check, so none lands after the final drain.
  submitting.fetch_add(1, std::memory_order_seq_cst);
  struct Leave {
    std::atomic<int>& n;
    ~Leave() { n.fetch_sub(1, std::memory_order_seq_cst); }
  } leave{submitting};
  if (!accepting.load(std::memory_order_seq_cst)) {
    return SubmitError{SubmitError::Code::shutting_down, "the runtime is shutting down"};
  }
  if (!queue.try_reserve()) {
    return SubmitError{SubmitError::Code::queue_full, "the queue is full (" + std::to_string(queue.capacity()) +
                                                          " jobs waiting, queue.capacity): retry later"};
  }
  task->seq = next_seq.fetch_add(1, std::memory_order_relaxed) + 1;
  if (task->id.empty()) task->id = id_prefix + std::to_string(task->seq);
  task->state.store(delay.count() > 0 ? JobState::scheduled : JobState::queued, std::memory_order_relaxed);
  if (task->stored && !store.insert(task)) {
    queue.unreserve();
    return SubmitError{SubmitError::Code::duplicate_id, "id '" + task->id + "' is already used by another job"};
  }
  active.fetch_add(1, std::memory_order_relaxed);
  submitted.fetch_add(1, std::memory_order_relaxed);
  queue.push(task, Clock::now() + delay);
  return std::nullopt;
}

void Runtime::Impl::worker_loop(WorkerSlot& slot) {
  slot.alive.store(true, std::memory_order_release);
  while (TaskPtr task = queue.pop()) {
    const bool retry_slot = task->in_retry_lane.load(std::memory_order_relaxed);
    if (task->transition(JobState::queued, JobState::running)) {
      running.fetch_add(1, std::memory_order_relaxed);
      {
        std::lock_guard lock(slot.mutex);
        slot.current = task.get();
      }
      run_attempt(task);
      {
        std::lock_guard lock(slot.mutex);
        slot.current = nullptr;
      }
      running.fetch_sub(1, std::memory_order_relaxed);
    }
    if (retry_slot) queue.release_retry_slot();
  }
  slot.alive.store(false, std::memory_order_release);
}

void Runtime::Impl::run_attempt(const TaskPtr& task) {
  int attempt;
  {
    std::lock_guard lock(task->mutex);
    attempt = ++task->attempts;
    if (!task->started_at) task->started_at = WallClock::now();
  }
  const auto start = Clock::now();
  task->heartbeat_ns.store(start.time_since_epoch().count(), std::memory_order_relaxed);
  JobContext ctx = detail::ContextAccess::make(*task, task->stop.get_token(), attempt);
  auto outcome = guarded([&] { task->run(ctx); });
  std::vector<Failure> cleanup_errors = detail::ContextAccess::run_cleanups(ctx, !outcome.ok());
  const double duration = detail::ms_since(start);

  if (outcome.ok() && cleanup_errors.empty()) {
    {
      std::lock_guard lock(task->mutex);
      task->duration_ms = duration;
      task->error.reset();
      task->exception = nullptr;
      task->finished_at = WallClock::now();
    }
    task->state.store(JobState::succeeded, std::memory_order_release);
    finished(task, JobState::succeeded);
    return;
  }
  if (outcome.ok()) {
    Failure first = std::move(cleanup_errors.front());
    cleanup_errors.erase(cleanup_errors.begin());
    fail_attempt(task, attempt, std::move(first), nullptr, std::move(cleanup_errors), duration);
  } else {
    fail_attempt(task, attempt, std::move(outcome.failure()), outcome.exception(), std::move(cleanup_errors),
                 duration);
  }
}

void Runtime::Impl::fail_attempt(const TaskPtr& task, int attempt, Failure failure, std::exception_ptr exception,
                                 std::vector<Failure> cleanup_errors, double duration_ms) {
  attempts_failed.fetch_add(1, std::memory_order_relaxed);
  const bool again = attempt < task->max_attempts;
  const auto delay = task->policy->delay_after(attempt, detail::unit_random());
  reporter.attempt_failed({task->id, task->type, attempt, task->max_attempts,
                           again ? std::optional(delay) : std::nullopt, failure});
  {
    std::lock_guard lock(task->mutex);
    task->duration_ms = duration_ms;
    task->error = std::move(failure);
    task->exception = std::move(exception);
    for (Failure& f : cleanup_errors) {
      if (task->cleanup_errors.size() < detail::kMaxCleanupErrors) task->cleanup_errors.push_back(std::move(f));
    }
    if (!again) task->finished_at = WallClock::now();
  }
  if (again) {
    retried.fetch_add(1, std::memory_order_relaxed);
    task->state.store(JobState::scheduled, std::memory_order_release);
    queue.push_retry(task, Clock::now() + delay);
  } else {
    task->state.store(JobState::failed, std::memory_order_release);
    finished(task, JobState::failed);
  }
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
  if (active.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    std::lock_guard lock(idle_mutex);
    idle_cv.notify_all();
  }
}

ShutdownReport Runtime::Impl::stop(std::chrono::milliseconds timeout) {
  std::lock_guard guard(shutdown_mutex);
  if (shutdown_report) return *shutdown_report;
  accepting.store(false, std::memory_order_seq_cst);
  while (submitting.load(std::memory_order_seq_cst) > 0) std::this_thread::yield();

  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline && (queue.ready() > 0 || running.load() > 0)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ShutdownReport report;
  report.drained = queue.ready() == 0 && running.load() == 0;
  queue.close();
  if (!report.drained) {
    for (auto& slot : slots) {
      std::lock_guard lock(slot->mutex);
      if (slot->current != nullptr) slot->current->stop.request_stop();
    }
  }
  for (auto& worker : workers) {
    if (worker.joinable()) worker.join();
  }
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
      task->error = make_failure(FailureKind::shutdown, std::move(message));
      task->exception = nullptr;
      task->finished_at = WallClock::now();
      lock.unlock();
      ++report.not_run;
      finished(task, JobState::failed);
      break;
    }
  }
  reporter.log(detail::LogLevel::info, "runtime stopped: " + std::to_string(report.not_run) +
                                           " jobs ended with kind shutdown" +
                                           (report.drained ? "" : " (drain deadline reached)"));
  shutdown_report = report;
  return report;
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
  const Impl::TypeEntry& type = it->second;
  if (type.entry->options.validate) {
    auto valid = guarded([&] { type.entry->options.validate(spec.payload); });
    if (!valid.ok()) return impl_->reject(SubmitError::Code::invalid, valid.failure().message);
  }
  auto task = std::make_shared<detail::HandlerTask>(type.entry->handler);
  task->id = std::move(spec.id);
  task->type = it->first;
  task->priority = spec.priority;
  task->max_attempts = spec.max_attempts.value_or(type.policy.max_attempts);
  task->timeout = spec.timeout;
  task->policy = &type.policy;
  task->stored = true;
  task->payload = std::move(spec.payload);
  const auto delay = spec.delay;
  if (auto error = impl_->accept(task, delay)) return impl_->reject(error->code, std::move(error->message));
  return Submitted{task->id, delay.count() > 0 ? JobState::scheduled : JobState::queued, std::nullopt};
}

std::optional<SubmitError> Runtime::enqueue_posted(std::shared_ptr<detail::Task> task, PostOptions options) {
  if (options.priority < kMinPriority || options.priority > kMaxPriority || options.max_attempts < 1) {
    impl_->rejected.fetch_add(1, std::memory_order_relaxed);
    return SubmitError{SubmitError::Code::invalid, "post: priority must be 0..9 and max_attempts at least 1"};
  }
  task->type = std::move(options.type);
  task->priority = options.priority;
  task->max_attempts = options.max_attempts;
  task->policy = &impl_->post_policy;
  auto error = impl_->accept(task, options.delay);
  if (error) impl_->rejected.fetch_add(1, std::memory_order_relaxed);
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
    if (s == JobState::running) {
      task->stop.request_stop();
      return CancelResult::stop_requested;
    }
    std::unique_lock lock(task->mutex);
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
  impl_->submitting.fetch_add(1, std::memory_order_seq_cst);
  struct Leave {
    std::atomic<int>& n;
    ~Leave() { n.fetch_sub(1, std::memory_order_seq_cst); }
  } leave{impl_->submitting};
  if (!impl_->accepting.load(std::memory_order_seq_cst)) return RequeueResult::shutting_down;
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
    task->finished_at.reset();
  }
  impl_->active.fetch_add(1, std::memory_order_relaxed);
  impl_->queue.push(task, Clock::now());
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
  for (const auto& slot : impl_->slots) s.workers += slot->alive.load(std::memory_order_acquire) ? 1 : 0;
  return s;
}

unsigned Runtime::worker_count() const noexcept { return static_cast<unsigned>(impl_->slots.size()); }

bool Runtime::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock lock(impl_->idle_mutex);
  return impl_->idle_cv.wait_for(lock, timeout, [&] { return impl_->active.load(std::memory_order_acquire) == 0; });
}

ShutdownReport Runtime::shutdown(std::optional<std::chrono::milliseconds> timeout) {
  return impl_->stop(timeout.value_or(impl_->options.shutdown_timeout));
}

}  // namespace bulwark
