// Scheduler: periodic jobs. Every second its thread looks at each schedule
// (schedules.<name> from config, and those added through the API) and
// submits a normal job for each time its cron expression named that has
// come: id "<name>:<yyyymmddThhmmZ>" (the time in UTC), so that when
// several processes share a queue each time makes one job, whichever
// process comes first (the others' submits are refused as duplicates).
//
// A time found more than a minute late (no process ran, or this one
// stalled) was missed: `skip` drops them, `run_once` submits one job at the
// latest of them. `exclusive` skips a time while the previous run has not
// ended. The last time run and the schedules added through the API live in
// a ScheduleStore: this process's memory, or Redis for a shared queue (so a
// restarted process knows what it missed, and every process runs the same
// schedules).
//
// Thread-safe: list/add/remove from any thread; tick() from the scheduler
// thread (or a test). stop() blocks until the thread ended (about a second).
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bulwark/config.hpp"
#include "bulwark/detail/thread_annotations.hpp"
#include "bulwark/runtime.hpp"
#include "core/cron.hpp"
#include "runtime/event_log.hpp"
#include "runtime/reporter.hpp"

namespace bulwark::detail {

// Where schedules' shared state lives. Implementations throw (any
// exception) when they cannot answer; the scheduler tries again next tick.
class ScheduleStore {
 public:
  virtual ~ScheduleStore() = default;
  // The last time `name` ran (ms since the epoch), if known.
  virtual std::optional<long long> last_run(const std::string& name) = 0;
  virtual void set_last_run(const std::string& name, long long ms) = 0;
  // Schedules added through the API: name -> their JSON.
  virtual std::map<std::string, std::string> added() = 0;
  virtual void add(const std::string& name, const std::string& json) = 0;
  virtual bool remove(const std::string& name) = 0;  // false: there was none
};

class MemoryScheduleStore final : public ScheduleStore {
 public:
  std::optional<long long> last_run(const std::string& name) override;
  void set_last_run(const std::string& name, long long ms) override;
  std::map<std::string, std::string> added() override;
  void add(const std::string& name, const std::string& json) override;
  bool remove(const std::string& name) override;

 private:
  Mutex mutex_;
  std::map<std::string, long long> last_ BULWARK_GUARDED_BY(mutex_);
  std::map<std::string, std::string> added_ BULWARK_GUARDED_BY(mutex_);
};

// A schedule as JSON ({"cron", "time_zone", "job", "missed", "exclusive"})
// and back; from_json throws ConfigError naming the field.
nlohmann::json schedule_to_json(const ScheduleOptions& s);
ScheduleOptions schedule_from_json(const nlohmann::json& j);

class Scheduler {
 public:
  static constexpr std::size_t kMaxSchedules = 1000;  // config and API together

  using Submit = std::function<Submitted(JobSpec)>;
  using StateOf = std::function<std::optional<JobState>(const JobId&)>;
  using Now = std::function<WallClock::time_point()>;

  // `is_type`: whether a job type is registered (schedules naming others
  // are refused). Throws ConfigError for a config schedule of an unknown type.
  Scheduler(const RuntimeOptions& options, ScheduleStore& store, Submit submit, StateOf state_of,
            std::function<bool(const std::string&)> is_type, Reporter& reporter, EventLog& events, Now now);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  void start();  // nothing to do without schedules and without a shared store
  void stop();

  // One look at every schedule as of `now`.
  void tick(WallClock::time_point now);

  std::vector<ScheduleStatus> list() const;
  ScheduleResult add(const std::string& name, const ScheduleOptions& options, std::string* problem);
  ScheduleResult remove(const std::string& name);

  // The id of the run of `name` at `at` (UTC minute).
  static JobId run_id(const std::string& name, CronSchedule::SysMinutes at);

 private:
  struct Entry {
    ScheduleOptions options;
    CronSchedule cron;
    bool from_config = false;
    std::optional<CronSchedule::SysMinutes> next, last;
    JobId last_job;
    bool started = false;  // its last run was read from the store
  };

  void run(std::stop_token stop);
  void sync_added() BULWARK_REQUIRES(mutex_);
  void begin(const std::string& name, Entry& e, WallClock::time_point now) BULWARK_REQUIRES(mutex_);
  void fire(const std::string& name, Entry& e, CronSchedule::SysMinutes at, const char* why) BULWARK_REQUIRES(mutex_);
  bool last_run_active(Entry& e) BULWARK_REQUIRES(mutex_);

  const RuntimeOptions& options_;
  ScheduleStore& store_;
  const Submit submit_;
  const StateOf state_of_;
  const std::function<bool(const std::string&)> is_type_;
  Reporter& reporter_;
  EventLog& events_;
  const Now now_;
  const bool shared_;  // the store is not this process's own

  mutable Mutex mutex_;
  std::map<std::string, Entry> entries_ BULWARK_GUARDED_BY(mutex_);
  bool store_failing_ BULWARK_GUARDED_BY(mutex_) = false;  // logged once until it answers again
  Mutex lifecycle_;  // start and stop
  bool stopped_ BULWARK_GUARDED_BY(lifecycle_) = false;
  std::jthread thread_ BULWARK_GUARDED_BY(lifecycle_);
};

}  // namespace bulwark::detail
