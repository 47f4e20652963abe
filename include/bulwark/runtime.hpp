// Runtime: a pool of workers that runs jobs in guarded frames.
//
// Jobs come as JobSpecs naming a registered type (submit) or as plain
// callables (post). Each attempt runs inside guarded(): whatever it throws is
// recorded with its throw-site trace, logged off the worker, and the job is
// retried with backoff or, when its attempts are used up, moved to the
// dead-letter list (state `failed`), which can be listed and requeued. The
// worker thread lives on. Every accepted job ends in a terminal state that
// says why, shutdown included.
//
//   bulwark::Registry registry;
//   registry.add("greet", [](bulwark::JobContext&, const nlohmann::json& p) {
//     return nlohmann::json("hello " + p.get<std::string>());
//   });
//   bulwark::Runtime runtime(std::move(registry), {.workers = 2});
//   auto job = runtime.submit({.type = "greet", .payload = "world"});
//   auto sum = runtime.post([] { return 1 + 1; });
//   runtime.wait_idle(std::chrono::seconds(5));
//
// All public methods are thread-safe. submit/post/cancel/requeue never block
// on a full queue; wait_idle and shutdown block; the destructor shuts down
// with options.shutdown_timeout. With the redis backend (queue.backend
// "redis") submit, submit_many, get, wait, page, list, dead_letters,
// cancel, requeue, stats, pause, resume, the schedule calls, processes and
// wait_idle each block for Redis round trips (each at most
// redis.command_timeout_ms); submit answers backend_unavailable when Redis
// cannot be reached (backend_full when it is out of memory), and the other
// calls throw a BackendError (bulwark/backend_error.hpp) saying so.
// post() and the workers never wait for Redis.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "bulwark/backend_error.hpp"
#include "bulwark/events.hpp"
#include <vector>

#include "bulwark/trace.hpp"

#include "bulwark/config.hpp"
#include "bulwark/health.hpp"
#include "bulwark/job.hpp"
#include "bulwark/detail/task_pool.hpp"
#include "bulwark/job_handle.hpp"
#include "bulwark/registry.hpp"
#include "bulwark/stats.hpp"

namespace bulwark {

// The answer to submit(): the job's id and state, or why it was refused.
// `duplicate`: a unique job (JobSpec::unique_key) of the same type and key
// was submitted within its window; id and state are that job's, and no new
// job was made.
struct Submitted {
  JobId id{};
  JobState state = JobState::rejected;
  std::optional<SubmitError> error{};
  bool duplicate = false;
  explicit operator bool() const noexcept { return !error.has_value(); }
};

// How a posted callable is run.
struct PostOptions {
  std::string type = "post";  // shown in logs and records
  int priority = 0;           // kMinPriority..kMaxPriority
  int max_attempts = 1;
  std::chrono::milliseconds delay{0};
};

enum class CancelResult { cancelled, stop_requested, not_found, already_terminal };
enum class PauseResult { changed, unchanged, not_found, unavailable /* Redis cannot be reached */ };
enum class RequeueResult { requeued, not_found, not_failed, queue_full, shutting_down };

struct ListQuery {
  std::optional<JobState> state{};
  std::string type{};  // empty: every type
  std::size_t limit = 100;
  std::string cursor{};  // empty: from the newest; else a JobPage::next_cursor
  std::string queue{};   // empty: every named queue
};

// One page of a listing, newest first.
struct JobPage {
  std::vector<JobRecord> jobs{};
  std::string next_cursor{};  // pass as ListQuery::cursor for the next page; empty on the last
};

// A page of a flow's job's direct children (JobSpec::children), in their
// order: the records of children `offset` to `offset + limit - 1`.
struct ChildPage {
  std::vector<JobRecord> children{};
  std::size_t total = 0;  // how many children it has
};

// A process serving the queue: this one, and with queue.backend "redis"
// every process on the same Redis and namespace that sent a heartbeat.
struct QueueProcess {
  std::string id{};      // host:pid:tag
  std::string host{};
  int pid = 0;
  unsigned workers = 0;
  std::vector<std::string> queues{};  // the named queues it runs; empty if it runs none (it only submits)
  WallClock::time_point started_at{};
  WallClock::time_point last_seen{};
  bool alive = true;   // seen within redis.lease_ms; a gone one's jobs are taken back by the others
  bool self = false;   // the process answering
  // As of its last heartbeat (at most a second old): its supervisor's
  // verdict and its workers and child worker processes, in the form of
  // GET /v1/workers. Empty if it did not say.
  std::string verdict{};
  nlohmann::ordered_json health{};
};

// A periodic job as this runtime runs it (Runtime::schedules(),
// GET /v1/schedules).
struct ScheduleStatus {
  std::string name{};
  ScheduleOptions options{};
  bool from_config = false;  // else added through the API (Runtime::add_schedule)
  std::optional<WallClock::time_point> next_run{};  // none: the expression never fires again
  std::optional<WallClock::time_point> last_run{};
  JobId last_job{};  // the id of the last run's job
};
enum class ScheduleResult {
  added,
  replaced,     // an added schedule of that name was replaced
  removed,
  invalid,      // what is wrong is in `problem`
  from_config,  // a schedule of that name comes from the configuration: not changed through the API
  not_found,
  unavailable,  // Redis cannot be reached: nothing changed
};

struct ShutdownReport {
  bool drained = true;        // every queued job ran before the deadline
  std::size_t not_run = 0;    // jobs ended failed with kind `shutdown`
};

class Runtime {
 public:
  // Starts the workers. Throws ConfigError when `options` names a job type
  // that `registry` lacks (handlers.<type>) or the log file cannot be opened.
  explicit Runtime(Registry registry, RuntimeOptions options = {});
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  Submitted submit(JobSpec spec);
  // Several jobs at once: for each spec, in order, what submit() would have
  // answered. Not atomic: some may be accepted and others refused. With the
  // redis backend the accepted ones take one round trip per 1,000 instead
  // of one each.
  std::vector<Submitted> submit_many(std::vector<JobSpec> specs);

  // Runs `fn()` or `fn(JobContext&)` on a worker. The handle is not accepted
  // (error() says why) when the queue is full or the runtime is stopping.
  template <class F>
  JobHandle<detail::post_result_t<std::decay_t<F>>> post(F&& fn, PostOptions options = {}) {
    using Fn = std::decay_t<F>;
    using R = detail::post_result_t<Fn>;
    auto task = std::allocate_shared<detail::PostedTask<Fn, R>>(detail::PoolAllocator<detail::PostedTask<Fn, R>>{},
                                                                 std::forward<F>(fn));
    if (auto error = enqueue_posted(task, std::move(options))) return JobHandle<R>(std::move(*error));
    return JobHandle<R>(std::move(task));
  }

  std::optional<JobRecord> get(const JobId& id) const;
  // A page of the job's children (a flow's tree, one level at a time: each
  // child's record says whether it has children of its own). nullopt if
  // the job is unknown; no children for a job that has none. A child whose
  // record retention forgot is left out.
  std::optional<ChildPage> children(const JobId& id, std::size_t offset = 0, std::size_t limit = 100) const;
  // Jobs newest first, filtered. Finished jobs are there while retained.
  // nullopt if query.cursor is not a cursor this runtime gave out.
  std::optional<JobPage> page(const ListQuery& query = {}) const;
  // page(query)'s jobs; none for a bad cursor.
  std::vector<JobRecord> list(const ListQuery& query = {}) const;
  // The dead-letter list: jobs that used all their attempts, newest first.
  std::vector<JobRecord> dead_letters(std::size_t limit = 100) const;

  // Blocks until job `id` is in a terminal state or `timeout` passes (a
  // negative timeout is taken as zero), then returns its record (terminal
  // or not); nullopt if no such job is known.
  // Woken by the job's end in this process; with the redis backend a job
  // that ends in another process is seen within 50 ms.
  std::optional<JobRecord> wait(const JobId& id, std::chrono::milliseconds timeout) const;

  // The runtime's recent events numbered after `after`, at most `max`
  // (bulwark/events.hpp); the first call starts recording. With the redis
  // backend, the events of every process of the queue. Never blocks for
  // long (with Redis it reads this process's mirror of the shared stream).
  EventPage events_after(std::uint64_t after, std::size_t max = 500) const;

  // Cancels a queued or scheduled job; asks a running one to stop (its stop
  // token); a terminal job is left as it is.
  CancelResult cancel(const JobId& id);
  // Puts a failed (dead-lettered) job back in the queue with a fresh set of
  // attempts.
  RequeueResult requeue(const JobId& id);

  // Every registered job type with its settings, controls and counts, in
  // name order. Never blocks for long.
  std::vector<TypeControl> types() const;
  // Pauses a job type: its jobs stay queued (submits are still accepted)
  // and none starts until resume(); attempts already running finish. With
  // the redis backend the pause is kept in Redis and holds for every
  // process on the queue (each notices within a heartbeat, about a second)
  // and across restarts; with the memory backend it lasts as long as this
  // runtime. Blocks for a Redis round trip with the redis backend
  // (`unavailable` when Redis cannot be reached: nothing changed).
  PauseResult pause(std::string_view type);
  PauseResult resume(std::string_view type);
  // Pauses a named queue: its jobs stay queued and none is taken until
  // resume_queue(); submits to it are still accepted. As pause() for where
  // it holds and how long. `not_found`: a name that is not a queue name,
  // or (memory backend) a queue this runtime does not run.
  PauseResult pause_queue(std::string_view queue);
  PauseResult resume_queue(std::string_view queue);

  // Periodic jobs (README, "Periodic jobs"): those of the configuration and
  // those added here, in name order. add_schedule() adds or replaces one
  // (with the redis backend for every process on the queue, kept in Redis);
  // `problem` says what is wrong when `invalid`. remove_schedule() removes
  // one added here. Block for a Redis round trip with the redis backend.
  std::vector<ScheduleStatus> schedules() const;
  ScheduleResult add_schedule(const std::string& name, const ScheduleOptions& schedule, std::string* problem = nullptr);
  ScheduleResult remove_schedule(const std::string& name);

  RuntimeStats stats() const;  // walks every retained record: not for hot loops
  RuntimeCounters counters() const noexcept;  // lock-free
  // The supervisor's verdict with its reasons, every worker and breaker.
  HealthReport health() const;
  // The processes serving the queue (only this one with the memory
  // backend). Blocks for a Redis round trip with the redis backend.
  std::vector<QueueProcess> processes() const;

  // Logs a failure caught outside a job (for example by the HTTP server's
  // recover middleware) at error level with its throw-site trace, through the
  // runtime's log. Never blocks: symbolizing happens on the log thread.
  void report_failure(std::string context, const Failure& failure) noexcept;
  // Logs an operational warning (not a failure) through the runtime's log.
  // Never blocks.
  void report_warning(std::string message) noexcept;
  // Logs an operational note at info level (a server started, stopped).
  // Never blocks.
  void report_info(std::string message) noexcept;
  unsigned worker_count() const noexcept;
  // The limits on outside input this runtime was configured with (limits.*).
  const InputLimits& limits() const noexcept;

  // Blocks until no job is queued, scheduled or running, or `timeout` passes.
  bool wait_idle(std::chrono::milliseconds timeout);

  // Stops accepting, lets queued jobs run until `timeout` (default:
  // options.shutdown_timeout), then asks running jobs to stop and waits for
  // them; every job that did not run ends `failed` with kind `shutdown`.
  // Idempotent; later calls return the first report.
  ShutdownReport shutdown(std::optional<std::chrono::milliseconds> timeout = std::nullopt);

 private:
  std::optional<SubmitError> enqueue_posted(std::shared_ptr<detail::Task> task, PostOptions options);

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bulwark
