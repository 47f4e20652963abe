// Backend: where a runtime's jobs wait, are recorded and are shared with
// other processes. One interface, one implementation per storage
// (`MemoryBackend` here, `RedisBackend` in src/redis/), chosen by
// `make_backend` in the facade from `queue.backend`; nothing above the seam
// (executor, supervisor, completion, the facade, HTTP) names one.
//
// A backend provides the two halves of the storage seam (the Broker where
// jobs wait, the JobStore where they are recorded), the store of periodic
// jobs' state, and the operations whose meaning depends on where jobs live:
// cancel and requeue by id, pause for every process, the processes sharing
// the queue, waiting until the queue is idle, and following ends.
//
//   auto backend = make_backend(options);               // facade
//   Completion completion(..., backend->broker(), backend->store());
//   Intake intake(...);
//   backend->attach(BackendHost{intake, completion, types, reporter, events, describe, apply});
//   executor.start();
//   backend->start();
//
// Thread-safe once attached. Calls on a networked backend block for a round
// trip (the header of each implementation says which).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bulwark/runtime.hpp"
#include "runtime/broker.hpp"
#include "runtime/job_store.hpp"
#include "runtime/scheduler.hpp"

namespace bulwark::detail {

class Intake;
class Completion;
class TypeTable;
struct TypeEntry;
class Reporter;
class EventLog;

// What the runtime above the seam lends its backend once its parts exist.
// References stay valid for the backend's life.
struct BackendHost {
  Intake& intake;          // builds the task of a job fetched from a shared queue; requeues
  Completion& completion;  // ends jobs: cancels, ends made elsewhere, lost leases
  TypeTable& types;
  Reporter& reporter;
  EventLog& events;
  // This process's health as JSON text (verdict, workers, processes), for
  // the other processes of a shared queue. Called on a backend thread.
  std::function<std::string()> describe;
  // Applies a pause or resume of `type` in this process (gate, event, log);
  // true if that changed it.
  std::function<bool(TypeEntry&, bool paused)> apply_paused;
};

class Backend {
 public:
  using EndListener = std::function<void(const JobRecord&)>;
  using Wanted = std::function<bool(const JobId&)>;

  virtual ~Backend() = default;

  // The storage seam's halves and the schedules' state; they live as long
  // as the backend.
  virtual Broker& broker() noexcept = 0;
  virtual JobStore& store() noexcept = 0;
  virtual ScheduleStore& schedules() noexcept = 0;

  // Once, after the runtime's parts exist and before start().
  void attach(const BackendHost& host) {
    host_.emplace(host);
    attached();
  }
  // After the workers exist: the backend's own threads (fetching, leases,
  // heartbeats) start.
  virtual void start() {}
  // Shutdown has begun: take no more jobs for this process.
  virtual void stop_fetching() noexcept {}

  // A user's cancel of job `id`, wherever it waits or runs.
  virtual CancelResult cancel(const JobId& id) = 0;
  // Puts a dead letter back in the queue.
  virtual RequeueResult requeue(const JobId& id) = 0;
  // Pauses or resumes `type` for every process of the queue and here.
  virtual PauseResult set_paused(TypeEntry& type, bool paused) = 0;
  // Pauses or resumes the named queue `name` (a valid name) for every
  // process of the queue: none of its jobs is taken while paused.
  virtual PauseResult set_queue_paused(const std::string& name, bool paused) = 0;
  // The processes working this queue (this one among them, marked self).
  virtual std::vector<QueueProcess> processes() const = 0;
  // Blocks until no job is queued, scheduled or running and this process
  // has nothing left to write, or `timeout` passes.
  virtual bool wait_idle(std::chrono::milliseconds timeout) = 0;
  // Jobs waiting (queued and scheduled) as the queue counts them, given
  // the store's counts by state (read once for the stats).
  virtual std::size_t waiting(const std::map<JobState, std::size_t>& by_state) const = 0;
  // Jobs by named queue, every queue the backend knows of (with a shared
  // queue, also those no process here runs). Blocks for a round trip with
  // a networked backend; throws BackendError when it cannot be reached.
  virtual std::vector<QueueDepth> queue_depths() const = 0;
  // Results of attempts dropped because another process took their lease
  // over before the end was written.
  virtual std::uint64_t results_dropped() const noexcept { return 0; }
  // False while the backend cannot be reached (or refuses this process's
  // login).
  virtual bool reachable() const { return true; }
  // Why a part of the backend cannot work now, one sentence per part;
  // empty when all can (GET /readyz, the health verdict).
  virtual std::string problem() const { return {}; }
  // Errors the backend met, by kind (bulwark_redis_errors_total).
  virtual std::map<std::string, std::uint64_t> errors() const { return {}; }
  // A running job's progress, kept where every process can read it.
  // Never blocks.
  virtual void note_progress(const Task& task, const JobProgress& progress) {
    (void)task;
    (void)progress;
  }
  // Hands `listener` every job that ends in any process of the queue from
  // now on (those `wanted` says yes to, if given): on_finished_anywhere.
  // Called once, after attach() and before start().
  virtual void follow_ends(EndListener listener, Wanted wanted) = 0;

 protected:
  // What attach() lent; valid from attach() on.
  const BackendHost& host() const noexcept { return *host_; }
  // Called by attach() once host() is valid.
  virtual void attached() {}

 private:
  std::optional<BackendHost> host_;  // written once, by attach(), before other threads use the backend
};

}  // namespace bulwark::detail
