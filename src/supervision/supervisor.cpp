#include "supervision/supervisor.hpp"

#include <algorithm>
#include <condition_variable>
#include <mutex>

#include "runtime/clock.hpp"
#include "core/task_access.hpp"

namespace bulwark::detail {

namespace {

std::string ms_text(double ms) { return std::to_string(static_cast<long long>(ms)) + " ms"; }

}  // namespace

Supervisor::Supervisor(const RuntimeOptions& options, Executor& executor, Broker& broker, const TypeTable& types,
                       Reporter& reporter, EventLog& events, std::shared_ptr<ProcessRunner> processes)
    : options_(options),
      executor_(executor),
      broker_(broker),
      types_(types),
      reporter_(reporter),
      events_(events),
      processes_(std::move(processes)),
      governor_(options.recovery, options.recovery.min_concurrent, options.effective_max_concurrent_retries()),
      recovery_limit_(governor_.limit()) {}

Supervisor::~Supervisor() { stop(); }

void Supervisor::start() {
  if (processes_) processes_->set_restart_limit(governor_.limit());
  thread_ = std::jthread([this](std::stop_token stop) { run(std::move(stop)); });
}

void Supervisor::stop() {
  thread_.request_stop();
  if (thread_.joinable()) thread_.join();
}

void Supervisor::run(std::stop_token stop) {
  std::mutex mutex;
  std::condition_variable_any cv;
  while (!stop.stop_requested()) {
    tick(Clock::now());
    std::unique_lock lock(mutex);
    cv.wait_for(lock, stop, options_.supervisor.tick, [] { return false; });
  }
}

void Supervisor::tick(Clock::time_point now) {
  for (const SlotPtr& s : executor_.live_slots()) watch(s, now);
  for (std::string& note : executor_.replace_exited(now)) {
    events_.supervisor("worker_replaced", note);
    reporter_.log(LogLevel::warn, std::move(note));
  }
  events_.expire(now);
  // Places freed where no worker looked (an abandoned attempt), or a type
  // resumed: its parked jobs go back to the queue.
  types_.for_each([&](TypeEntry& type) { executor_.release_parked(type, now); });
  note_restarts(now);
  Findings f;
  check_restarts(now, f);
  const ExecutorCounts counts = executor_.counts();
  check_positions(counts, f);
  check_waits(counts, now, f);
  govern(counts, now);
  if (processes_) processes_->restart_deferred();
  publish_verdict(std::move(f));
}

// Takes the stack where the job is now and keeps it on the record, then
// (for a soft timeout) asks the job to stop.
void Supervisor::report_stack(const SlotPtr& slot, const TaskPtr& task, std::string message, bool request_stop) {
  events_.supervisor(request_stop ? "soft_timeout" : "stuck", message, task.get());
  // An isolated job runs in a child process: this thread only waits for it,
  // so its stack would say nothing. The child's is taken at a kill.
  const bool remote = task->type_entry()->runs_elsewhere();
  std::optional<RawTrace> trace = remote ? std::nullopt : executor_.dump_stack(*slot);
  TaskAccess::with_record(*task, [&](TaskRecord& r) {
    if (trace) r.stuck_trace = std::make_unique<RawTrace>(*trace);
    if (request_stop && !r.cancel_requested) {
      TaskAccess::set_stop_reason(*task, FailureKind::timeout);
      r.stop.request_stop();
    }
  });
  StackNote note{std::move(message), task->id(), task->type(), trace};
  if (const auto& context = task->spec().trace) {
    note.trace_id = context->trace_id;
    note.span_id = task->with_record([](const TaskRecord& r) { return r.span_id; });
  }
  reporter_.note(LogLevel::warn, std::move(note));
}

void Supervisor::watch(const SlotPtr& slot, Clock::time_point now) {
  const std::optional<RunningView> running = slot->view();
  if (!running || !slot->is_running()) return;
  const TaskPtr& task = running->task;
  const TaskSpec& spec = task->spec();
  const double elapsed = ms_between(running->started, now);
  const double quiet = ms_between(std::max(running->started, task->last_heartbeat()), now);
  const auto where = "job " + task->id() + " (" + task->type() + ") on worker " + std::to_string(slot->id());

  if (spec.timeout.count() > 0 && elapsed >= static_cast<double>(spec.timeout.count()) && !running->soft_fired &&
      slot->mark_soft_fired()) {
    soft_timeouts_.fetch_add(1, std::memory_order_relaxed);
    report_stack(slot, task,
                 where + " passed its soft timeout of " + ms_text(static_cast<double>(spec.timeout.count())) +
                     ": stop requested; it was here:",
                 true);
  }
  const auto stuck_after = options_.supervisor.stuck_after;
  if (stuck_after.count() > 0 && quiet >= static_cast<double>(stuck_after.count()) && !running->stuck_reported &&
      slot->mark_stuck_reported()) {
    stuck_reports_.fetch_add(1, std::memory_order_relaxed);
    report_stack(slot, task, where + " looks stuck: no heartbeat for " + ms_text(quiet) + "; it is here:", false);
  }
  // An isolated job's hard timeout is the process runner's: it kills the child.
  const bool remote = task->type_entry()->runs_elsewhere();
  if (!remote && spec.hard_timeout.count() > 0 && elapsed >= static_cast<double>(spec.hard_timeout.count())) {
    const std::string why = "hard timeout of " + ms_text(static_cast<double>(spec.hard_timeout.count())) +
                            " reached; worker " + std::to_string(slot->id()) + " was abandoned and replaced";
    if (executor_.abandon(slot, make_failure(FailureKind::timeout, why), true, now)) {
      events_.supervisor("hard_timeout", where + ": " + why, task.get());  // `running` still holds the task
    }
  }
}

// Thread replacements and child process deaths both count towards restart
// intensity.
void Supervisor::note_restarts(Clock::time_point now) {
  for (Clock::time_point t : executor_.take_replacement_times()) restart_times_.push_back(t);
  if (processes_) {
    for (const std::uint64_t d = processes_->deaths(); process_deaths_seen_ < d; ++process_deaths_seen_) {
      restart_times_.push_back(now);
    }
  }
}

void Supervisor::check_restarts(Clock::time_point now, Findings& f) {
  const auto& so = options_.supervisor;
  while (!restart_times_.empty() && now - restart_times_.front() > so.restart_window) restart_times_.pop_front();
  if (restart_times_.size() > so.max_restarts) {
    f.unhealthy.push_back(std::to_string(restart_times_.size()) +
                          " worker replacements (threads and processes) within the last " +
                          ms_text(static_cast<double>(so.restart_window.count())) + " (supervisor.max_restarts is " +
                          std::to_string(so.max_restarts) + ")");
  }
}

void Supervisor::check_positions(const ExecutorCounts& c, Findings& f) const {
  if (c.vacant == 0) return;
  f.unhealthy.push_back(std::to_string(c.abandoned) + " stuck worker threads abandoned (supervisor." +
                        "max_abandoned_threads is " + std::to_string(options_.supervisor.max_abandoned_threads) +
                        "); " + std::to_string(c.vacant) + " of " + std::to_string(c.positions) +
                        " worker positions are not replaced");
}

void Supervisor::check_waits(const ExecutorCounts& c, Clock::time_point now, Findings& f) {
  const auto& so = options_.supervisor;
  f.wait_p99_ms = executor_.waits().p99_since(steady_ms(now) - 30'000);
  if (so.max_queue_wait.count() > 0 && f.wait_p99_ms && *f.wait_p99_ms > static_cast<double>(so.max_queue_wait.count())) {
    f.degraded.push_back("queue wait p99 over the last 30 s is " + ms_text(*f.wait_p99_ms) +
                         " (supervisor.max_queue_wait_ms is " + std::to_string(so.max_queue_wait.count()) + ")");
  }
  const unsigned positions = c.positions - c.vacant;
  if (positions > 0 && c.running >= positions) {
    if (!all_busy_since_) all_busy_since_ = now;
  } else {
    all_busy_since_.reset();
  }
  if (so.stall.count() > 0 && all_busy_since_ && now - *all_busy_since_ > so.stall) {
    f.degraded.push_back("every worker has been busy for " + ms_text(ms_between(*all_busy_since_, now)) +
                         " (supervisor.stall_ms is " + std::to_string(so.stall.count()) + ")");
  }
}

// The recovery governor's evaluation, every recovery.adjust_ms: read the
// signals, let the governor move the limit, apply and say why.
void Supervisor::govern(const ExecutorCounts& c, Clock::time_point now) {
  if (now < next_adjust_) return;
  next_adjust_ = now + options_.recovery.adjust_every;
  const LoadSignals signals = read_signals(c, now);
  const std::optional<RecoveryGovernor::Change> change = governor_.step(signals);
  if (!change) return;
  broker_.set_retry_limit(change->to);
  if (processes_) processes_->set_restart_limit(change->to);
  recovery_limit_.store(change->to, std::memory_order_relaxed);
  (change->up ? recovery_raised_ : recovery_lowered_).fetch_add(1, std::memory_order_relaxed);
  {
    MutexLock lock(mutex_);
    recovery_reason_ = change->why;
  }
  std::string text = "recovery limit " + change->why;
  events_.supervisor("recovery_adjusted", text);
  reporter_.log(change->up ? LogLevel::info : LogLevel::warn, std::move(text));
}

LoadSignals Supervisor::read_signals(const ExecutorCounts& c, Clock::time_point now) {
  LoadSignals s;
  const LoadProbe::Cpu cpu = probe_.sample();
  s.machine_cpu = cpu.machine;
  s.process_cpu = cpu.process;
  const std::int64_t now_ms = steady_ms(now);
  s.wait_p99_ms = executor_.waits().p99_since(last_adjust_ms_ > 0 ? last_adjust_ms_ : now_ms - 30'000);
  last_adjust_ms_ = now_ms;
  const unsigned positions = c.positions - c.vacant;
  s.saturation = positions > 0 ? std::min(1.0, static_cast<double>(c.running) / positions) : 0.0;
  std::uint64_t failed = 0, succeeded = 0;
  const auto add = [&](const TypeEntry& t) {
    for (const auto& n : t.counters.recovered) failed += n.load(std::memory_order_relaxed);
    succeeded += t.counters.succeeded.load();
  };
  types_.for_each(add);
  add(types_.posts());
  const std::uint64_t ended = failed + succeeded;
  const std::uint64_t new_failed = failed - std::min(failed, last_failed_attempts_);
  const std::uint64_t new_ended = ended - std::min(ended, last_ended_attempts_);
  last_failed_attempts_ = failed;
  last_ended_attempts_ = ended;
  if (new_ended >= 10) s.failure_rate = static_cast<double>(new_failed) / static_cast<double>(new_ended);
  return s;
}

void Supervisor::publish_verdict(Findings f) {
  const Verdict next = !f.unhealthy.empty() ? Verdict::unhealthy
                       : !f.degraded.empty() ? Verdict::degraded
                                             : Verdict::healthy;
  std::vector<std::string> all = std::move(f.unhealthy);
  all.insert(all.end(), f.degraded.begin(), f.degraded.end());
  Verdict previous;
  {
    MutexLock lock(mutex_);
    previous = verdict_;
    verdict_ = next;
    reasons_ = all;
    wait_p99_ms_ = f.wait_p99_ms;
  }
  if (previous == next) return;
  std::string text = "health verdict: " + std::string(to_string(previous)) + " -> " + std::string(to_string(next));
  for (const std::string& r : all) text += "; " + r;
  events_.supervisor("verdict", text);
  reporter_.log(next == Verdict::healthy ? LogLevel::info : LogLevel::warn, std::move(text));
}

HealthReport Supervisor::health() const {
  HealthReport h;
  {
    MutexLock lock(mutex_);
    h.verdict = verdict_;
    h.reasons = reasons_;
    h.queue_wait_p99_ms = wait_p99_ms_;
    h.recovery.reason = recovery_reason_;
  }
  h.recovery.limit = recovery_limit_.load(std::memory_order_relaxed);
  h.recovery.min = governor_.min();
  h.recovery.max = governor_.max();
  h.recovery.adaptive = options_.recovery.adaptive;
  h.recovery.raised = recovery_raised_.load(std::memory_order_relaxed);
  h.recovery.lowered = recovery_lowered_.load(std::memory_order_relaxed);
  h.workers = executor_.health();
  if (processes_) {
    h.processes = processes_->health();
    h.recovery.restarts_deferred = processes_->restarts_deferred_total();
  }
  types_.for_each([&](const TypeEntry& t) {
    if (t.breaker.enabled()) h.breakers.push_back({t.name, t.breaker.state(), t.breaker.opened()});
  });
  return h;
}

SupervisorCounts Supervisor::counts() const noexcept { return {soft_timeouts_.load(), stuck_reports_.load()}; }

}  // namespace bulwark::detail
