#include "runtime/scheduler.hpp"

#include "core/config_file.hpp"

#include <date/date.h>

#include <condition_variable>
#include <mutex>

namespace bulwark::detail {

namespace {

using SysMinutes = CronSchedule::SysMinutes;
using std::chrono::milliseconds;

constexpr auto kLate = std::chrono::minutes(1);  // a time found later than this was missed

long long to_ms(SysMinutes t) { return std::chrono::duration_cast<milliseconds>(t.time_since_epoch()).count(); }
SysMinutes from_ms(long long ms) { return std::chrono::floor<std::chrono::minutes>(WallClock::time_point(milliseconds(ms))); }

}  // namespace

std::optional<long long> MemoryScheduleStore::last_run(const std::string& name) {
  MutexLock lock(mutex_);
  auto it = last_.find(name);
  return it == last_.end() ? std::nullopt : std::optional<long long>(it->second);
}

void MemoryScheduleStore::set_last_run(const std::string& name, long long ms) {
  MutexLock lock(mutex_);
  last_[name] = ms;
}

std::map<std::string, std::string> MemoryScheduleStore::added() {
  MutexLock lock(mutex_);
  return added_;
}

void MemoryScheduleStore::add(const std::string& name, const std::string& json) {
  MutexLock lock(mutex_);
  added_[name] = json;
}

bool MemoryScheduleStore::remove(const std::string& name) {
  MutexLock lock(mutex_);
  return added_.erase(name) > 0;
}

nlohmann::json schedule_to_json(const ScheduleOptions& s) {
  return {{"cron", s.cron},
          {"time_zone", s.time_zone},
          {"job", s.job},
          {"missed", s.missed == MissedRuns::run_once ? "run_once" : "skip"},
          {"exclusive", s.exclusive}};
}

ScheduleOptions schedule_from_json(const nlohmann::json& j) { return read_schedule(j, "", true); }

Scheduler::Scheduler(const RuntimeOptions& options, ScheduleStore& store, Submit submit, StateOf state_of,
                     std::function<bool(const std::string&)> is_type, Reporter& reporter, EventLog& events, Now now)
    : options_(options),
      store_(store),
      submit_(std::move(submit)),
      state_of_(std::move(state_of)),
      is_type_(std::move(is_type)),
      reporter_(reporter),
      events_(events),
      now_(std::move(now)),
      shared_(dynamic_cast<MemoryScheduleStore*>(&store) == nullptr) {
  MutexLock lock(mutex_);
  for (const auto& [name, s] : options.schedules) {
    const std::string type = s.job.value("type", "");
    if (!is_type_(type)) throw ConfigError("schedules." + name + ".job.type: unknown job type '" + type + "'");
    std::string problem;
    auto cron = CronSchedule::parse(s.cron, s.time_zone, &problem);
    if (!cron) throw ConfigError("schedules." + name + ": " + problem);
    entries_.emplace(name, Entry{s, std::move(*cron), true, {}, {}, {}, false});
  }
}

Scheduler::~Scheduler() { stop(); }

void Scheduler::start() {
  {
    MutexLock lock(mutex_);
    if (entries_.empty() && !shared_) return;  // started by the first add()
  }
  MutexLock lock(lifecycle_);
  if (stopped_ || thread_.joinable()) return;  // stopped: the runtime is shutting down
  thread_ = std::jthread([this](std::stop_token stop) { run(std::move(stop)); });
}

void Scheduler::stop() {
  std::jthread thread;
  {
    MutexLock lock(lifecycle_);
    stopped_ = true;
    thread = std::move(thread_);
  }
  // Joined outside the lock: a tick may be adding a schedule, which starts nothing now.
  if (thread.joinable()) {
    thread.request_stop();
    thread.join();
  }
}

void Scheduler::run(std::stop_token stop) {
  std::mutex m;
  std::condition_variable_any cv;
  while (!stop.stop_requested()) {
    tick(now_());
    std::unique_lock lock(m);
    cv.wait_for(lock, stop, std::chrono::seconds(1), [] { return false; });
  }
}

JobId Scheduler::run_id(const std::string& name, SysMinutes at) {
  return name + ":" + date::format("%Y%m%dT%H%MZ", at);
}

// Schedules added through the API (by any process, with Redis) replace
// what this process had of them.
void Scheduler::sync_added() {
  std::map<std::string, std::string> added = store_.added();
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (!it->second.from_config && added.count(it->first) == 0) {
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [name, text] : added) {
    auto found = entries_.find(name);
    if (found != entries_.end() && found->second.from_config) continue;  // config wins
    ScheduleOptions s;
    try {
      s = schedule_from_json(nlohmann::json::parse(text));
    } catch (const std::exception&) {
      continue;  // written by an add() that checked it: not expected
    }
    if (found != entries_.end() && schedule_to_json(found->second.options) == schedule_to_json(s)) continue;
    auto cron = CronSchedule::parse(s.cron, s.time_zone);
    if (!cron || !is_type_(s.job.value("type", ""))) continue;  // a type another process has and this one lacks
    entries_.insert_or_assign(name, Entry{s, std::move(*cron), false, {}, {}, {}, false});
  }
}

void Scheduler::begin(const std::string& name, Entry& e, WallClock::time_point now) {
  if (const auto last = store_.last_run(name)) {
    e.last = from_ms(*last);
    e.last_job = run_id(name, *e.last);
    e.next = e.cron.next_after(*e.last);
  } else {
    e.next = e.cron.next_after(now);
  }
  e.started = true;
}

bool Scheduler::last_run_active(Entry& e) {
  if (e.last_job.empty()) return false;
  const std::optional<JobState> state = state_of_(e.last_job);
  return state && !is_terminal(*state);
}

void Scheduler::fire(const std::string& name, Entry& e, SysMinutes at, const char* why) {
  e.last = at;
  if (e.options.exclusive && last_run_active(e)) {
    const std::string text = "schedule '" + name + "': the run at " + date::format("%FT%RZ", at) +
                             " skipped: the previous run " + e.last_job + " has not ended (exclusive)";
    events_.supervisor("schedule_skipped", text);
    reporter_.log(LogLevel::warn, text);
    store_.set_last_run(name, to_ms(at));
    return;
  }
  JobSpec spec;
  try {
    spec = JobSpec::from_json(e.options.job, options_.limits.id_length);
  } catch (const SpecError&) {
    return;  // checked when it was added
  }
  spec.id = run_id(name, at);
  const Submitted s = submit_(std::move(spec));
  const JobId id = run_id(name, at);
  if (s || s.error->code == SubmitError::Code::duplicate_id) {  // duplicate: another process ran this time
    e.last_job = id;
    store_.set_last_run(name, to_ms(at));
    if (s) reporter_.log(LogLevel::debug, "schedule '" + name + "': submitted " + id + why);
    return;
  }
  const std::string text = "schedule '" + name + "': the run at " + date::format("%FT%RZ", at) +
                           " was not submitted: " + s.error->message;
  events_.supervisor("schedule_failed", text);
  reporter_.log(LogLevel::error, text);
}

void Scheduler::tick(WallClock::time_point now) {
  MutexLock lock(mutex_);
  try {
    sync_added();
    for (auto& [name, e] : entries_) {
      if (!e.started) begin(name, e, now);
      // Times more than a minute ago were missed; the latest of them runs
      // once if the schedule asks.
      std::optional<SysMinutes> latest_missed;
      std::size_t missed = 0;
      while (e.next && *e.next + kLate < now && missed < 1'000'000) {
        latest_missed = e.next;
        ++missed;
        e.next = e.cron.next_after(*e.next);
      }
      if (latest_missed) {
        const bool once = e.options.missed == MissedRuns::run_once;
        std::string text = "schedule '" + name + "': " + std::to_string(missed) + " run(s) missed, the latest at " +
                           date::format("%FT%RZ", *latest_missed) + (once ? "; running it once" : "; skipped");
        reporter_.log(LogLevel::warn, text);
        events_.supervisor("schedule_missed", std::move(text));
        if (once) {
          fire(name, e, *latest_missed, " (missed runs: once)");
        } else {
          e.last = latest_missed;
          store_.set_last_run(name, to_ms(*latest_missed));
        }
      }
      while (e.next && *e.next <= now) {
        const SysMinutes at = *e.next;
        e.next = e.cron.next_after(at);
        fire(name, e, at, "");
      }
    }
    if (store_failing_) reporter_.log(LogLevel::info, "schedules: their store answers again");
    store_failing_ = false;
  } catch (const std::exception& ex) {
    // The store cannot be reached (Redis away): the next tick tries again,
    // without a line each time.
    if (!store_failing_) {
      reporter_.log(LogLevel::warn, std::string("schedules: ") + ex.what() + "; trying again every second");
    }
    store_failing_ = true;
  }
}

std::vector<ScheduleStatus> Scheduler::list() const {
  MutexLock lock(mutex_);
  std::vector<ScheduleStatus> out;
  for (const auto& [name, e] : entries_) {
    ScheduleStatus s;
    s.name = name;
    s.options = e.options;
    s.from_config = e.from_config;
    if (e.next) s.next_run = *e.next;
    if (e.last) s.last_run = *e.last;
    s.last_job = e.last_job;
    if (!e.started) {
      const auto n = e.cron.next_after(now_());
      if (n) s.next_run = *n;
    }
    out.push_back(std::move(s));
  }
  return out;
}

ScheduleResult Scheduler::add(const std::string& name, const ScheduleOptions& options, std::string* problem) {
  std::string why = schedule_problem(name, options, options_.limits.id_length);
  const std::string type = options.job.is_object() ? options.job.value("type", "") : "";
  if (why.empty() && !is_type_(type)) why = "job.type: unknown job type '" + type + "'";
  if (!why.empty()) {
    if (problem != nullptr) *problem = std::move(why);
    return ScheduleResult::invalid;
  }
  bool replaced = false;
  {
    MutexLock lock(mutex_);
    auto it = entries_.find(name);
    if (it != entries_.end() && it->second.from_config) return ScheduleResult::from_config;
    if (it == entries_.end() && entries_.size() >= kMaxSchedules) {
      if (problem != nullptr) *problem = "name: at most " + std::to_string(kMaxSchedules) + " schedules in all";
      return ScheduleResult::invalid;
    }
    try {
      replaced = store_.added().count(name) != 0;
      store_.add(name, schedule_to_json(options).dump());
      sync_added();
    } catch (const std::exception&) {
      return ScheduleResult::unavailable;
    }
  }
  reporter_.log(LogLevel::info, "schedule '" + name + "' " + (replaced ? "replaced" : "added") + ": " + options.cron +
                                    " (" + options.time_zone + ")");
  start();
  return replaced ? ScheduleResult::replaced : ScheduleResult::added;
}

ScheduleResult Scheduler::remove(const std::string& name) {
  {
    MutexLock lock(mutex_);
    auto it = entries_.find(name);
    if (it != entries_.end() && it->second.from_config) return ScheduleResult::from_config;
    try {
      if (!store_.remove(name)) return ScheduleResult::not_found;
      sync_added();
    } catch (const std::exception&) {
      return ScheduleResult::unavailable;
    }
  }
  reporter_.log(LogLevel::info, "schedule '" + name + "' removed");
  return ScheduleResult::removed;
}

}  // namespace bulwark::detail
