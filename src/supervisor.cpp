// The supervisor thread: watches every worker each tick and acts (see
// health.hpp and README "Supervision").
#include <pthread.h>
#include <signal.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "detail/runtime_impl.hpp"
#include "isolation/process_pool.hpp"

namespace bulwark {
namespace {

using detail::LogLevel;
using detail::ms_between;
using detail::steady_ms;
using detail::WorkerSlot;
using std::chrono::milliseconds;

std::string ms_text(double ms) { return std::to_string(static_cast<long long>(ms)) + " ms"; }

}  // namespace

std::string_view to_string(Verdict v) noexcept {
  switch (v) {
    case Verdict::healthy: return "healthy";
    case Verdict::degraded: return "degraded";
    case Verdict::unhealthy: return "unhealthy";
  }
  return "unknown";
}

nlohmann::ordered_json to_json(const HealthReport& h) {
  nlohmann::ordered_json workers = nlohmann::ordered_json::array();
  for (const WorkerHealth& w : h.workers) {
    workers.push_back({{"id", w.id},
                       {"state", w.state},
                       {"job", w.job ? nlohmann::ordered_json(*w.job) : nlohmann::ordered_json()},
                       {"ms_since_heartbeat", w.ms_since_heartbeat ? nlohmann::ordered_json(*w.ms_since_heartbeat)
                                                                   : nlohmann::ordered_json()},
                       {"restarts", w.restarts},
                       {"abandoned", w.abandoned}});
  }
  nlohmann::ordered_json processes = nlohmann::ordered_json::array();
  for (const ProcessHealth& p : h.processes) {
    processes.push_back({{"id", p.id},
                         {"pid", p.pid},
                         {"state", p.state},
                         {"job", p.job ? nlohmann::ordered_json(*p.job) : nlohmann::ordered_json()},
                         {"restarts", p.restarts},
                         {"last_exit", p.last_exit}});
  }
  nlohmann::ordered_json breakers = nlohmann::ordered_json::array();
  for (const BreakerHealth& b : h.breakers) {
    breakers.push_back({{"type", b.type}, {"state", b.state}, {"opened", b.opened}});
  }
  return {{"verdict", to_string(h.verdict)},
          {"reasons", h.reasons},
          {"queue_wait_p99_ms", h.queue_wait_p99_ms ? nlohmann::ordered_json(*h.queue_wait_p99_ms)
                                                     : nlohmann::ordered_json()},
          {"workers", std::move(workers)},
          {"processes", std::move(processes)},
          {"breakers", std::move(breakers)}};
}

namespace detail {

std::optional<double> WaitSamples::p99_since(std::int64_t since_ms) const {
  std::vector<std::int64_t> recent;
  recent.reserve(kSize);
  for (const Sample& s : samples_) {
    if (s.at_ms.load(std::memory_order_relaxed) >= since_ms) recent.push_back(s.wait_us.load(std::memory_order_relaxed));
  }
  if (recent.empty()) return std::nullopt;
  const std::size_t k = (recent.size() * 99 + 99) / 100 - 1;
  std::nth_element(recent.begin(), recent.begin() + static_cast<std::ptrdiff_t>(k), recent.end());
  return static_cast<double>(recent[k]) / 1000.0;
}

}  // namespace detail

void Runtime::Impl::supervise(std::stop_token stop) {
  std::mutex mutex;
  std::condition_variable_any cv;
  while (!stop.stop_requested()) {
    tick(Clock::now());
    std::unique_lock lock(mutex);
    cv.wait_for(lock, stop, options.supervisor.tick, [] { return false; });
  }
}

void Runtime::Impl::tick(Clock::time_point now) {
  std::vector<SlotPtr> live;
  {
    std::lock_guard lock(slots_mutex);
    for (const SlotPtr& s : slots) {
      if (s) live.push_back(s);
    }
  }
  for (const SlotPtr& s : live) watch(s, now);
  replace_exited(now);
  if (processes) {  // children that died count towards restart intensity like threads
    for (const std::uint64_t d = processes->deaths(); process_deaths_seen < d; ++process_deaths_seen) {
      restart_times.push_back(now);
    }
  }
  update_verdict(now);
}

std::optional<RawTrace> Runtime::Impl::dump_stack(WorkerSlot& slot) {
  const pthread_t native = slot.native.load(std::memory_order_acquire);
  int idle = 0;
  if (native == pthread_t{} || slot.exited.load() || !slot.dump_state.compare_exchange_strong(idle, 1)) {
    return std::nullopt;
  }
  if (pthread_kill(native, detail::dump_signal()) != 0) {
    slot.dump_state.store(0);
    return std::nullopt;
  }
  const auto deadline = Clock::now() + milliseconds(200);
  while (slot.dump_state.load(std::memory_order_acquire) != 2 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  int requested = 1;
  if (slot.dump_state.compare_exchange_strong(requested, 0)) return std::nullopt;  // no answer in time
  RawTrace trace = slot.dump;  // state is 2: the handler is done writing
  slot.dump_state.store(0, std::memory_order_release);
  return trace;
}

void Runtime::Impl::watch(const SlotPtr& slot, Clock::time_point now) {
  TaskPtr task;
  Clock::time_point started;
  bool soft_fired = false;
  bool stuck_reported = false;
  {
    std::lock_guard lock(slot->mutex);
    task = slot->current;
    started = slot->started;
    soft_fired = slot->soft_fired;
    stuck_reported = slot->stuck_reported;
  }
  if (!task || !slot->is_running()) return;
  const double elapsed = ms_between(started, now);
  const auto heartbeat = std::max(started, Clock::time_point(Clock::duration(task->heartbeat_ns.load())));
  const double quiet = ms_between(heartbeat, now);
  const auto where = "job " + task->id + " (" + task->type + ") on worker " + std::to_string(slot->id);

  // Takes the stack where the job is now, keeps it on the record, then
  // (for a soft timeout) asks the job to stop.
  const auto report_stack = [&](std::string message, bool request_stop) {
    // An isolated job runs in a child process: this thread only waits for
    // it, so its stack would say nothing. The child's is taken at a kill.
    std::optional<RawTrace> trace = task->isolated ? std::nullopt : dump_stack(*slot);
    {
      std::lock_guard lock(task->mutex);
      if (trace) task->stuck_trace = std::make_unique<RawTrace>(*trace);
      if (request_stop && !task->cancel_requested) {
        task->stop_reason.store(FailureKind::timeout, std::memory_order_release);
        task->stop.request_stop();
      }
    }
    reporter.note(LogLevel::warn, {std::move(message), task->id, task->type, trace});
  };

  if (task->timeout.count() > 0 && elapsed >= static_cast<double>(task->timeout.count()) && !soft_fired) {
    {
      std::lock_guard lock(slot->mutex);
      slot->soft_fired = true;
    }
    sup.soft_timeouts.fetch_add(1, std::memory_order_relaxed);
    report_stack(where + " passed its soft timeout of " + ms_text(task->timeout.count()) +
                     ": stop requested; it was here:",
                 true);
  }
  const auto stuck_after = options.supervisor.stuck_after;
  if (stuck_after.count() > 0 && quiet >= static_cast<double>(stuck_after.count()) && !stuck_reported) {
    {
      std::lock_guard lock(slot->mutex);
      slot->stuck_reported = true;
    }
    sup.stuck_reports.fetch_add(1, std::memory_order_relaxed);
    report_stack(where + " looks stuck: no heartbeat for " + ms_text(quiet) + "; it is here:", false);
  }
  // An isolated job's hard timeout is the process pool's: it kills the child.
  if (!task->isolated && task->hard_timeout.count() > 0 && elapsed >= static_cast<double>(task->hard_timeout.count())) {
    if (slot->abandon()) {
      abandon(slot, task, now,
              make_failure(FailureKind::timeout, "hard timeout of " + ms_text(task->hard_timeout.count()) +
                                                     " reached; worker " + std::to_string(slot->id) +
                                                     " was abandoned and replaced"),
              true);
    }
  }
}

// The caller has won the slot's owner handshake: the attempt is ours to end.
void Runtime::Impl::abandon(const SlotPtr& slot, const TaskPtr& task, Clock::time_point now, Failure failure,
                            bool allow_retry) {
  std::optional<RawTrace> trace = dump_stack(*slot);
  int attempt = 0;
  double duration = 0;
  {
    std::lock_guard lock(slot->mutex);
    duration = ms_between(slot->started, now);
  }
  {
    std::lock_guard lock(task->mutex);
    ++task->epoch;  // whatever the abandoned attempt still writes is discarded
    task->stop_reason.store(failure.kind, std::memory_order_release);  // timeout or shutdown
    task->stop.request_stop();
    attempt = task->attempts;
    if (trace) task->stuck_trace = std::make_unique<RawTrace>(*trace);
  }
  if (trace) failure.trace = *trace;
  running.fetch_sub(1, std::memory_order_relaxed);
  if (task->in_retry_lane.load(std::memory_order_relaxed)) queue.release_retry_slot();
  sup.abandoned_total.fetch_add(1, std::memory_order_relaxed);
  if (failure.kind == FailureKind::timeout) sup.hard_timeouts.fetch_add(1, std::memory_order_relaxed);

  std::string outcome;
  {
    std::lock_guard lock(slots_mutex);
    abandoned.push_back(slot);
    if (slots[slot->id] == slot) {
      if (!stopping.load() && abandoned.size() <= options.supervisor.max_abandoned_threads) {
        start_worker(slot->id, slot->generation + 1);
        ++restarts[slot->id];
        sup.replacements.fetch_add(1, std::memory_order_relaxed);
        restart_times.push_back(now);
        outcome = "replacement started";
      } else {
        slots[slot->id] = nullptr;
        outcome = stopping.load() ? "shutting down" : "not replaced: supervisor.max_abandoned_threads reached";
      }
    }
  }
  reporter.log(LogLevel::error, "worker " + std::to_string(slot->id) + " abandoned while running job " + task->id +
                                    " (" + task->type + "): " + failure.message + "; " + outcome);
  if (allow_retry) {
    fail_attempt(task, attempt, std::move(failure), nullptr, {}, duration);
    return;
  }
  task->type_state->counters.failed[static_cast<std::size_t>(failure.kind)].fetch_add(1);
  {
    std::lock_guard lock(task->mutex);
    task->duration_ms = duration;
    task->error = std::make_unique<Failure>(std::move(failure));
    task->exception = nullptr;
    task->finished_at = WallClock::now();
  }
  task->state.store(JobState::failed, std::memory_order_release);
  finished(task, JobState::failed);
}

void Runtime::Impl::replace_exited(Clock::time_point now) {
  std::vector<std::string> notes;
  {
    std::lock_guard lock(slots_mutex);
    for (std::size_t i = 0; i < slots.size(); ++i) {
      const SlotPtr slot = slots[i];
      if (!slot || !slot->exited.load(std::memory_order_acquire) || stopping.load()) continue;
      std::string reason;
      {
        std::lock_guard slot_lock(slot->mutex);
        reason = slot->exit_reason.empty() ? "its thread returned unexpectedly" : slot->exit_reason;
      }
      if (slot->thread.joinable()) slot->thread.join();
      start_worker(static_cast<unsigned>(i), slot->generation + 1);
      ++restarts[i];
      sup.replacements.fetch_add(1, std::memory_order_relaxed);
      restart_times.push_back(now);
      notes.push_back("worker " + std::to_string(i) + " died (" + reason + "); replacement started");
    }
    for (auto it = abandoned.begin(); it != abandoned.end();) {
      const SlotPtr& slot = *it;
      if (!slot->exited.load(std::memory_order_acquire)) {
        ++it;
        continue;
      }
      if (slot->thread.joinable()) slot->thread.join();
      sup.abandoned_retired.fetch_add(1, std::memory_order_relaxed);
      notes.push_back("abandoned worker thread (position " + std::to_string(slot->id) +
                      ") finished its job and retired");
      it = abandoned.erase(it);
    }
    // Positions left vacant at the cap get a worker once a thread retires.
    for (std::size_t i = 0; i < slots.size() && !stopping.load(); ++i) {
      if (slots[i] || abandoned.size() > options.supervisor.max_abandoned_threads) continue;
      start_worker(static_cast<unsigned>(i), restarts[i] + 1);
      ++restarts[i];
      sup.replacements.fetch_add(1, std::memory_order_relaxed);
      restart_times.push_back(now);
      notes.push_back("worker " + std::to_string(i) + " started in a vacant position");
    }
  }
  for (std::string& n : notes) reporter.log(LogLevel::warn, std::move(n));
}

void Runtime::Impl::update_verdict(Clock::time_point now) {
  const auto& so = options.supervisor;
  std::vector<std::string> unhealthy;
  std::vector<std::string> degraded;

  while (!restart_times.empty() && now - restart_times.front() > so.restart_window) restart_times.pop_front();
  if (restart_times.size() > so.max_restarts) {
    unhealthy.push_back(std::to_string(restart_times.size()) + " worker replacements (threads and processes) within the last " +
                        ms_text(so.restart_window.count()) + " (supervisor.max_restarts is " +
                        std::to_string(so.max_restarts) + ")");
  }
  unsigned live = 0;
  unsigned vacant = 0;
  std::size_t abandoned_now = 0;
  {
    std::lock_guard lock(slots_mutex);
    for (const SlotPtr& s : slots) (s ? live : vacant) += 1;
    abandoned_now = abandoned.size();
  }
  if (vacant > 0) {
    unhealthy.push_back(std::to_string(abandoned_now) + " stuck worker threads abandoned (supervisor." +
                        "max_abandoned_threads is " + std::to_string(so.max_abandoned_threads) + "); " +
                        std::to_string(vacant) + " of " + std::to_string(slots.size()) +
                        " worker positions are not replaced");
  }

  const std::optional<double> p99 = waits.p99_since(steady_ms(now) - 30'000);
  if (so.max_queue_wait.count() > 0 && p99 && *p99 > static_cast<double>(so.max_queue_wait.count())) {
    degraded.push_back("queue wait p99 over the last 30 s is " + ms_text(*p99) + " (supervisor.max_queue_wait_ms is " +
                       std::to_string(so.max_queue_wait.count()) + ")");
  }
  if (live > 0 && running.load() >= live) {
    if (!all_busy_since) all_busy_since = now;
  } else {
    all_busy_since.reset();
  }
  if (so.stall.count() > 0 && all_busy_since && now - *all_busy_since > so.stall) {
    degraded.push_back("every worker has been busy for " + ms_text(ms_between(*all_busy_since, now)) +
                       " (supervisor.stall_ms is " + std::to_string(so.stall.count()) + ")");
  }

  const Verdict next = !unhealthy.empty() ? Verdict::unhealthy : !degraded.empty() ? Verdict::degraded : Verdict::healthy;
  // Fresh work before recovery work while the pool is saturated, but never
  // none: one retry at a time still runs, so recovery cannot starve while
  // a worker is idle (held at zero, a degraded verdict that the waiting
  // retries themselves fed kept them waiting for minutes).
  const bool throttle = !degraded.empty();
  if (throttle != retries_throttled) {
    retries_throttled = throttle;
    queue.set_retry_limit(throttle ? 1 : options.effective_max_concurrent_retries());
    reporter.log(LogLevel::warn, throttle ? "retries slowed to one at a time: the pool is saturated"
                                          : "retries resumed: the pool is no longer saturated");
  }
  std::vector<std::string> all = unhealthy;
  all.insert(all.end(), degraded.begin(), degraded.end());
  Verdict previous;
  {
    std::lock_guard lock(verdict_mutex);
    previous = verdict;
    verdict = next;
    reasons = all;
    wait_p99_ms = p99;
  }
  if (previous != next) {
    std::string text = "health verdict: " + std::string(to_string(previous)) + " -> " + std::string(to_string(next));
    for (const std::string& r : all) text += "; " + r;
    reporter.log(next == Verdict::healthy ? LogLevel::info : LogLevel::warn, std::move(text));
  }
}

HealthReport Runtime::Impl::health() const {
  HealthReport h;
  {
    std::lock_guard lock(verdict_mutex);
    h.verdict = verdict;
    h.reasons = reasons;
    h.queue_wait_p99_ms = wait_p99_ms;
  }
  const auto now = Clock::now();
  const auto describe = [&](const SlotPtr& s, unsigned restarts_here, bool is_abandoned) {
    WorkerHealth w;
    w.id = s->id;
    w.restarts = restarts_here;
    w.abandoned = is_abandoned;
    std::lock_guard lock(s->mutex);
    if (s->current) {
      w.job = s->current->id;
      const auto hb = std::max(s->started, Clock::time_point(Clock::duration(s->current->heartbeat_ns.load())));
      w.ms_since_heartbeat = ms_between(hb, now);
    }
    w.state = is_abandoned ? "abandoned" : s->current ? "busy" : "idle";
    return w;
  };
  std::lock_guard lock(slots_mutex);
  for (std::size_t i = 0; i < slots.size(); ++i) {
    if (slots[i]) {
      h.workers.push_back(describe(slots[i], restarts[i], false));
    } else {
      h.workers.push_back({static_cast<unsigned>(i), "vacant", std::nullopt, std::nullopt, restarts[i], false});
    }
  }
  for (const SlotPtr& s : abandoned) h.workers.push_back(describe(s, restarts[s->id], true));
  if (processes) h.processes = processes->health();
  for (const auto& [type, state] : types) {
    if (!state->breaker.enabled()) continue;
    h.breakers.push_back({type, detail::to_string(state->breaker.state()), state->breaker.opened()});
  }
  return h;
}

}  // namespace bulwark
