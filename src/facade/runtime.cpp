// Runtime: the facade over the runtime's parts (see docs/ARCHITECTURE.md).
// It builds them in dependency order, plugs process isolation and the
// supervisor in (this layer sits above both), forwards the public calls,
// and runs shutdown's phases in order.
#include "bulwark/runtime.hpp"

#include <thread>

#include "bulwark/guarded.hpp"
#include "facade/backend_factory.hpp"
#include "guard/crash_report.hpp"
#include "isolation/child.hpp"
#include "isolation/process_pool.hpp"
#include "runtime/backend.hpp"
#include "runtime/completion.hpp"
#include "runtime/event_log.hpp"
#include "runtime/executor.hpp"
#include "runtime/intake.hpp"
#include "runtime/reporter.hpp"
#include "runtime/scheduler.hpp"
#include "runtime/type_table.hpp"
#include "supervision/supervisor.hpp"

namespace bulwark {

using detail::TaskPtr;

// A plain holder of the parts, declared in construction order (each may use
// those above it); destroyed in reverse.
struct Runtime::Impl {
  explicit Impl(Registry r, RuntimeOptions o);

  RuntimeOptions options;
  std::shared_ptr<const Registry> registry;  // shared with every task: abandoned threads may outlive us
  detail::TypeTable types;
  detail::Reporter reporter;
  detail::EventLog events;
  std::shared_ptr<detail::ProcessRunner> processes;  // null unless a type is isolated
  // Where jobs wait and are recorded; it follows ends for
  // on_finished_anywhere until the runtime is destroyed (after shutdown
  // too: ends of the last acks).
  std::unique_ptr<detail::Backend> backend;
  detail::Broker& broker;
  detail::JobStore& store;
  detail::Completion completion;
  detail::Intake intake;
  detail::Executor executor;
  detail::Supervisor supervisor;
  detail::Scheduler scheduler;

  detail::Mutex shutdown_mutex;
  std::optional<ShutdownReport> shutdown_report BULWARK_GUARDED_BY(shutdown_mutex);

  void attach_backend();
  ShutdownReport stop(std::chrono::milliseconds timeout);
  bool drain_until(Clock::time_point deadline);
  bool held_runnable() const;
  void submit_follow_up(const detail::Task& parent);
  bool apply_paused(detail::TypeEntry& type, bool paused);
  PauseResult pause_queue(std::string_view queue, bool paused);
  std::size_t end_unrun();
};

namespace {

RuntimeOptions checked(RuntimeOptions o) {
  detail::refuse_runtime_in_worker_process();
  return o;
}

std::shared_ptr<detail::ProcessRunner> processes_for(const detail::TypeTable& types, const RuntimeOptions& o) {
  if (!types.any_isolated()) return nullptr;
  return std::make_shared<detail::ProcessPool>(o.isolation.processes, o.isolation.start_timeout);
}

}  // namespace

namespace {

// The registry with the built-in "collect" (a group's parent: the list of
// its children's results), unless the program registered its own.
Registry with_collect(Registry r) {
  if (r.find(kCollectType) == nullptr) {
    r.add(std::string(kCollectType), [](JobContext&, const nlohmann::json& payload) {
      nlohmann::json results = nlohmann::json::array();
      if (const auto children = payload.find("children"); children != payload.end() && children->is_array()) {
        for (const auto& child : *children) results.push_back(child.value("result", nlohmann::json()));
      }
      return results;
    });
  }
  return r;
}

}  // namespace

Runtime::Impl::Impl(Registry r, RuntimeOptions o)
    : options(checked(std::move(o))),
      registry(std::make_shared<const Registry>(with_collect(std::move(r)))),
      types(*registry, options),
      reporter(options.logging),
      events(options.events_buffer, options.events_linger),
      processes(processes_for(types, options)),
      backend(detail::make_backend(options)),
      broker(backend->broker()),
      store(backend->store()),
      completion(options, reporter, events, broker, store),
      intake(options, registry, types, broker, store, completion),
      executor(options, broker, completion, reporter, processes),
      supervisor(options, executor, broker, types, reporter, events, processes),
      scheduler(
          options, backend->schedules(), [this](JobSpec spec) { return intake.submit(std::move(spec)); },
          [this](const JobId& id) -> std::optional<JobState> {
            const auto record = store.record(id);
            return record ? std::optional<JobState>(record->state) : std::nullopt;
          },
          [this](const std::string& type) { return types.find(type) != nullptr; }, reporter, events,
          [] { return WallClock::now(); }) {
  if (processes) types.use_processes(processes);
  completion.set_follow_up([this](const detail::Task& parent) { submit_follow_up(parent); });
  const auto on_progress = [this](const detail::Task& task, const JobProgress& p) {
    events.progress(task, p);
    backend->note_progress(task, p);
  };
  types.for_each([&](detail::TypeEntry& t) { t.on_progress = on_progress; });
  types.posts().on_progress = on_progress;
  if (!options.capture_traces) {
    set_throw_trace_capture(TraceCapture::off);
  } else if (throw_trace_capture_mode() == TraceCapture::off) {
    set_throw_trace_capture(TraceCapture::guarded);  // jobs' throws; a program's own "everywhere" stays
  }
  detail::install_crash_reporter(options.logging.file);
  attach_backend();
  executor.start();
  // After the workers exist: a shared queue's first heartbeat, sent at
  // once, already shows them to the other processes (GET /v1/workers).
  backend->start();
  supervisor.start();
  scheduler.start();
  reporter.log(detail::LogLevel::info, "runtime started: " + std::to_string(options.effective_workers()) +
                                           " workers, queue capacity " + std::to_string(options.queue_capacity));
}

// Lends the backend the parts above the seam, and hands it the
// on_finished_anywhere listener.
void Runtime::Impl::attach_backend() {
  backend->attach(detail::BackendHost{
      intake, completion, types, reporter, events,
      [this] {
        const HealthReport h = supervisor.health();
        auto report = to_json(h);
        return nlohmann::ordered_json{{"verdict", to_string(h.verdict)},
                                      {"workers", std::move(report["workers"])},
                                      {"processes", std::move(report["processes"])}}
            .dump();
      },
      [this](detail::TypeEntry& type, bool paused) { return apply_paused(type, paused); }});
  if (!options.on_finished_anywhere) return;
  backend->follow_ends(
      [this](const JobRecord& record) {
        auto outcome = guarded([&] { options.on_finished_anywhere(record); });
        if (!outcome.ok()) {
          reporter.log(detail::LogLevel::error, "on_finished_anywhere listener threw " + outcome.failure().type +
                                                    ": " + outcome.failure().message);
        }
      },
      options.finished_filter);
}

ShutdownReport Runtime::Impl::stop(std::chrono::milliseconds timeout) {
  detail::MutexLock guard(shutdown_mutex);
  if (shutdown_report) return *shutdown_report;
  scheduler.stop();
  intake.close();
  backend->stop_fetching();  // other processes of a shared queue take what waits
  ShutdownReport report;
  report.drained = drain_until(Clock::now() + timeout);
  executor.begin_stopping();
  supervisor.stop();
  broker.close();
  executor.request_stops();
  executor.await_exit(options.shutdown_grace);
  executor.close_children();
  executor.abandon_stragglers();
  executor.join_threads();
  types.for_each([&](detail::TypeEntry& type) { executor.return_parked(type, Clock::now()); });
  report.not_run = end_unrun();
  reporter.log(detail::LogLevel::info, "runtime stopped: " + std::to_string(report.not_run) +
                                           " jobs ended with kind shutdown" +
                                           (report.drained ? "" : " (drain deadline reached)"));
  shutdown_report = report;
  return report;
}

// Jobs ready now, running, or due before the deadline (a delay, a retry's
// backoff) get their turn; what is due later ends with kind shutdown.
// True if nothing was left ready or running.
bool Runtime::Impl::drain_until(Clock::time_point deadline) {
  const auto work_left = [&] {
    const auto due = broker.next_due();
    return broker.ready() > 0 || executor.counts().running > 0 || (due && *due <= deadline) || held_runnable();
  };
  while (Clock::now() < deadline && work_left()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return broker.ready() == 0 && executor.counts().running == 0;
}

// A succeeded job's `then`: its spec with "previous" (the job's id, type and
// result) in the payload, a child span of the job's last attempt when it
// has a trace, under the id fixed at admission.
void Runtime::Impl::submit_follow_up(const detail::Task& parent) {
  JobSpec spec;
  try {
    spec = JobSpec::from_json(*parent.spec().then, options.limits.id_length);
  } catch (const SpecError& e) {  // checked at submit: not expected
    reporter.log(detail::LogLevel::error, "job " + parent.id() + ": its follow-up is not a job spec: " + e.what());
    return;
  }
  std::string span;
  nlohmann::json result = parent.with_record([&](const detail::TaskRecord& r) {
    span = r.span_id;
    return r.result;
  });
  if (spec.payload.is_null()) spec.payload = nlohmann::json::object();
  spec.payload["previous"] = {{"id", parent.id()}, {"type", parent.type()}, {"result", std::move(result)}};
  if (spec.trace_parent.empty() && parent.spec().trace) {
    spec.trace_parent = parent.spec().trace->traceparent(span.empty() ? parent.spec().trace->parent_id : span);
    spec.trace_state = parent.spec().trace->state;
  }
  // Answered here, or with a shared queue on the thread that writes ends:
  // the worker does not wait for the backend.
  std::string follow_up = spec.id;
  intake.submit_soon(std::move(spec), [this, parent_id = parent.id(), follow_up = std::move(follow_up),
                                       type = parent.spec().then->value("type", "")](const Submitted& s) {
    if (s || s.error->code == SubmitError::Code::duplicate_id) return;  // duplicate: an earlier run of the job made it
    const std::string text = "job " + parent_id + " succeeded but its follow-up " + follow_up + " (" + type +
                             ") was not submitted: " + s.error->message;
    events.supervisor("then_refused", text);
    reporter.log(detail::LogLevel::error, text);
  });
}

// Jobs held at a gate that are not paused: they run as places free.
bool Runtime::Impl::held_runnable() const {
  bool any = false;
  types.for_each([&](const detail::TypeEntry& t) { any = any || (t.gate.parked() > 0 && !t.gate.paused()); });
  return any;
}

// Every job still waiting ends failed with kind shutdown; returns how many.
std::size_t Runtime::Impl::end_unrun() {
  std::size_t ended = 0;
  // Until nothing is left: a flow's parent released by a child ended here
  // comes into the broker after the pass that ended the child.
  for (auto tasks = broker.drain(); !tasks.empty(); tasks = broker.drain()) {
    for (const TaskPtr& task : tasks) ended += completion.end_unrun(task) ? 1 : 0;
  }
  return ended;
}

Runtime::Runtime(Registry registry, RuntimeOptions options)
    : impl_(std::make_unique<Impl>(std::move(registry), std::move(options))) {}

Runtime::~Runtime() { shutdown(); }

Submitted Runtime::submit(JobSpec spec) { return impl_->intake.submit(std::move(spec)); }

std::vector<Submitted> Runtime::submit_many(std::vector<JobSpec> specs) {
  return impl_->intake.submit_many(std::move(specs));
}

std::optional<SubmitError> Runtime::enqueue_posted(std::shared_ptr<detail::Task> task, PostOptions options) {
  return impl_->intake.post(std::move(task), std::move(options));
}

std::optional<JobRecord> Runtime::get(const JobId& id) const { return impl_->store.record(id); }

std::optional<JobRecord> Runtime::wait(const JobId& id, std::chrono::milliseconds timeout) const {
  const auto deadline = Clock::now() + std::max(timeout, std::chrono::milliseconds(0));
  for (;;) {
    // The count first: an end after it wakes the wait below.
    const std::uint64_t seen = impl_->completion.ended();
    std::optional<JobRecord> record = get(id);
    const auto now = Clock::now();
    if (!record || is_terminal(record->state) || now >= deadline) return record;
    // Ends in other processes of a shared queue wake nobody here: look again soon.
    impl_->completion.wait_for_end(seen, std::min(deadline, now + std::chrono::milliseconds(50)));
  }
}

EventPage Runtime::events_after(std::uint64_t after, std::size_t max) const { return impl_->events.after(after, max); }

std::optional<ChildPage> Runtime::children(const JobId& id, std::size_t offset, std::size_t limit) const {
  auto got = impl_->store.children_of(id, offset, limit);
  if (!got) return std::nullopt;
  return ChildPage{std::move(got->first), got->second};
}

std::optional<JobPage> Runtime::page(const ListQuery& query) const {
  auto page = impl_->store.list({query.state, query.type, query.limit, query.cursor, query.queue});
  if (!page) return std::nullopt;
  return JobPage{std::move(page->jobs), std::move(page->next_cursor)};
}

std::vector<JobRecord> Runtime::list(const ListQuery& query) const {
  auto p = page(query);
  return p ? std::move(p->jobs) : std::vector<JobRecord>{};
}

std::vector<JobRecord> Runtime::dead_letters(std::size_t limit) const {
  return list(ListQuery{JobState::failed, {}, limit, {}});
}

CancelResult Runtime::cancel(const JobId& id) { return impl_->backend->cancel(id); }

RequeueResult Runtime::requeue(const JobId& id) { return impl_->backend->requeue(id); }

namespace {

TypeStats type_stats(const detail::TypeEntry& t) {
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
  out.breaker = t.breaker.enabled() ? t.breaker.state() : BreakerState::off;
  out.breaker_opened = t.breaker.opened();
  const detail::GateState g = t.gate.state(Clock::now());
  out.paused = g.paused;
  out.held = g.parked;
  out.rate_waits = g.rate_waits;
  out.limit_waits = g.parks;
  return out;
}

// Every queue this process runs or a job named, with its depth and the
// live processes that run it; empty if the backend cannot be read.
std::vector<QueueStats> queue_stats(const detail::Backend& backend, const RuntimeOptions& options) {
  std::map<std::string, QueueStats> by_name;
  try {
    for (const detail::QueueDepth& d : backend.queue_depths()) {
      QueueStats& q = by_name[d.name];
      q.name = d.name;
      q.ready = d.ready;
      q.waiting = d.waiting;
      q.paused = d.paused;
    }
    for (const QueueProcess& p : backend.processes()) {
      if (!p.alive) continue;
      for (const std::string& name : p.queues) {
        by_name[name].name = name;
        ++by_name[name].consumers;
      }
    }
  } catch (const BackendError&) {
    return {};
  }
  const auto own = options.queues.empty() ? std::map<std::string, QueueOptions>{{std::string(kDefaultQueue), QueueOptions{}}}
                                          : options.queues;
  for (const auto& [name, o] : own) {
    QueueStats& q = by_name[name];
    q.name = name;
    q.weight = o.weight;
    q.capacity = o.capacity;
  }
  std::vector<QueueStats> out;
  for (auto& [name, q] : by_name) out.push_back(std::move(q));
  return out;
}

// Each queue's job counts: the named queues' as counted; the default
// queue's the totals less theirs.
void add_job_counts(RuntimeStats& s, const std::map<std::string, QueueJobCounts>& named) {
  QueueJobCounts rest{s.submitted, s.succeeded, s.failed, s.cancelled};
  const auto less = [](std::uint64_t& from, std::uint64_t n) { from -= std::min(from, n); };
  for (const auto& [name, c] : named) {
    less(rest.submitted, c.submitted);
    less(rest.succeeded, c.succeeded);
    less(rest.failed, c.failed);
    less(rest.cancelled, c.cancelled);
  }
  for (QueueStats& q : s.queues) {
    if (q.name == kDefaultQueue) {
      q.jobs = rest;
    } else if (auto it = named.find(q.name); it != named.end()) {
      q.jobs = it->second;
    }
  }
}

}  // namespace

RuntimeStats Runtime::stats() const {
  const Impl& rt = *impl_;
  RuntimeStats s;
  // Redis away: everything but the shared counts still tells the truth.
  std::map<JobState, std::size_t> by_state;
  try {
    by_state = rt.store.count_by_state();
  } catch (const BackendError& e) {
    s.backend_problem = e.what();
  }
  for (const auto& [state, n] : by_state) s.by_state[std::string(to_string(state))] = n;
  const detail::IntakeCounts in = rt.intake.counts();
  const detail::CompletionCounts done = rt.completion.counts();
  const detail::ExecutorCounts ex = rt.executor.counts();
  const detail::SupervisorCounts sup = rt.supervisor.counts();
  s.submitted = in.submitted;
  s.rejected = in.rejected;
  s.rejected_by_code = in.rejected_by_code;
  s.succeeded = done.succeeded;
  s.failed = done.failed;
  s.cancelled = done.cancelled;
  s.attempts_failed = done.attempts_failed;
  s.retried = done.retried;
  s.hard_timeouts = done.hard_timeouts;
  s.breaker_opened = done.breaker_opened;
  s.running = ex.running;
  s.workers = ex.live;
  s.abandoned = static_cast<unsigned>(ex.abandoned);
  s.replacements = ex.replacements;
  s.breaker_deferred = ex.breaker_deferred;
  s.soft_timeouts = sup.soft_timeouts;
  s.stuck_reports = sup.stuck_reports;
  s.log_dropped = rt.reporter.dropped();
  s.results_dropped = rt.backend->results_dropped();
  s.backend_errors = rt.backend->errors();
  s.queue_depth = rt.backend->waiting(by_state);
  s.queue_capacity = rt.broker.capacity();
  s.ready_by_priority = rt.broker.ready_by_priority();
  if (s.backend_problem.empty()) s.queues = queue_stats(*rt.backend, rt.options);
  add_job_counts(s, rt.completion.queue_counts());
  if (rt.processes) s.process_ends = rt.processes->ends_by_reason();
  s.run_time = rt.executor.run_time();
  s.queue_wait = rt.executor.queue_wait();
  s.traces = throw_trace_stats();
  rt.types.for_each([&](const detail::TypeEntry& t) { s.by_type[t.name] = type_stats(t); });
  s.by_type["post"] = type_stats(rt.types.posts());
  return s;
}

std::vector<TypeControl> Runtime::types() const {
  const auto now = Clock::now();
  const auto running = impl_->executor.running_by_type();
  std::vector<TypeControl> out;
  impl_->types.for_each([&](const detail::TypeEntry& t) {
    TypeControl c;
    c.name = t.name;
    c.max_attempts = t.policy.max_attempts;
    c.timeout = t.timeout;
    c.hard_timeout = t.hard_timeout;
    c.isolation = t.isolation;
    c.concurrency = t.gate.concurrency();
    c.rate = t.gate.rate();
    c.tokens = t.gate.state(now).tokens;
    if (auto it = running.find(t.name); it != running.end()) c.running = it->second;
    c.stats = type_stats(t);
    out.push_back(std::move(c));
  });
  return out;
}

std::vector<ScheduleStatus> Runtime::schedules() const { return impl_->scheduler.list(); }

ScheduleResult Runtime::add_schedule(const std::string& name, const ScheduleOptions& schedule, std::string* problem) {
  return impl_->scheduler.add(name, schedule, problem);
}

ScheduleResult Runtime::remove_schedule(const std::string& name) { return impl_->scheduler.remove(name); }

PauseResult Runtime::pause(std::string_view type) {
  detail::TypeEntry* t = impl_->types.find(type);
  return t == nullptr ? PauseResult::not_found : impl_->backend->set_paused(*t, true);
}

PauseResult Runtime::resume(std::string_view type) {
  detail::TypeEntry* t = impl_->types.find(type);
  return t == nullptr ? PauseResult::not_found : impl_->backend->set_paused(*t, false);
}

PauseResult Runtime::pause_queue(std::string_view queue) { return impl_->pause_queue(queue, true); }

PauseResult Runtime::resume_queue(std::string_view queue) { return impl_->pause_queue(queue, false); }

PauseResult Runtime::Impl::pause_queue(std::string_view queue, bool paused) {
  const std::string name(queue);
  if (!queue_problem(name).empty()) return PauseResult::not_found;
  const PauseResult r = backend->set_queue_paused(name, paused);
  if (r == PauseResult::changed) {
    const std::string what = "queue '" + name + (paused ? "' paused: its jobs wait queued until it is resumed" : "' resumed");
    events.supervisor(paused ? "queue_paused" : "queue_resumed", what);
    reporter.log(detail::LogLevel::info, what);
  }
  return r;
}

bool Runtime::Impl::apply_paused(detail::TypeEntry& type, bool paused) {
  if (!(paused ? type.gate.pause() : type.gate.resume())) return false;
  const std::string what = "job type '" + type.name + (paused ? "' paused: its jobs wait queued until it is resumed"
                                                              : "' resumed");
  events.supervisor(paused ? "type_paused" : "type_resumed", what);
  reporter.log(detail::LogLevel::info, what);
  if (!paused) executor.release_parked(type, Clock::now());
  return true;
}

RuntimeCounters Runtime::counters() const noexcept {
  const detail::CompletionCounts done = impl_->completion.counts();
  const bool reachable = impl_->backend->reachable();
  return {impl_->intake.counts().submitted, done.succeeded, done.failed, impl_->broker.size(),
          impl_->broker.capacity(), reachable, impl_->backend->problem()};
}

unsigned Runtime::worker_count() const noexcept { return impl_->options.effective_workers(); }

const InputLimits& Runtime::limits() const noexcept { return impl_->options.limits; }

HealthReport Runtime::health() const {
  HealthReport h = impl_->supervisor.health();
  // A backend part that cannot work: jobs may still run here, but the queue
  // is not whole.
  if (std::string problem = impl_->backend->problem(); !problem.empty()) {
    h.reasons.push_back(std::move(problem));
    if (h.verdict == Verdict::healthy) h.verdict = Verdict::degraded;
  }
  return h;
}

std::vector<QueueProcess> Runtime::processes() const { return impl_->backend->processes(); }

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

void Runtime::report_info(std::string message) noexcept {
  try {
    impl_->reporter.log(detail::LogLevel::info, std::move(message));
  } catch (...) {
    // Out of memory while reporting: nothing better to do.
  }
}

bool Runtime::wait_idle(std::chrono::milliseconds timeout) { return impl_->backend->wait_idle(timeout); }

ShutdownReport Runtime::shutdown(std::optional<std::chrono::milliseconds> timeout) {
  return impl_->stop(timeout.value_or(impl_->options.shutdown_timeout));
}

}  // namespace bulwark
