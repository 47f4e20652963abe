// Intake: how jobs get in. Checks a submitted spec against its type, builds
// the task, and admits it: a place in the broker, an id, a record in the
// store, then the broker. Requeue of a dead letter comes in the same way.
// Shutdown closes the gate and waits until no caller is still inside it, so
// no job lands after the final drain.
//
// Called by any thread (submit, post, requeue) and the shutdown thread
// (close). Thread-safe and lock-free on the submit path; close() spins until
// callers inside the gate have left (they never block there).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "bulwark/runtime.hpp"
#include "runtime/broker.hpp"
#include "runtime/completion.hpp"
#include "runtime/job_store.hpp"
#include "runtime/type_table.hpp"
#include "runtime/unique_locks.hpp"

namespace bulwark::detail {

struct IntakeCounts {
  std::uint64_t submitted = 0;  // accepted jobs, posts included
  std::uint64_t rejected = 0;
  std::map<std::string, std::uint64_t> rejected_by_code;
};

class Intake {
 public:
  Intake(const RuntimeOptions& options, std::shared_ptr<const Registry> registry, TypeTable& types, Broker& broker,
         JobStore& store, Completion& completion);

  Submitted submit(JobSpec spec);
  // As submit(), but never waits for a networked backend (Broker::
  // admit_soon): `answer` gets what submit() would have returned, on this
  // thread or on the one that writes to the backend. For follow-ups, which
  // are submitted on a worker.
  void submit_soon(JobSpec spec, std::function<void(const Submitted&)> answer);
  // Each spec as submit() would answer it, in order; the broker admits the
  // valid ones as one batch.
  std::vector<Submitted> submit_many(std::vector<JobSpec> specs);
  std::optional<SubmitError> post(std::shared_ptr<Task> task, PostOptions options);
  RequeueResult requeue(const TaskPtr& task);

  // A job admitted by some process of a shared queue, built to run here:
  // its spec as stored, the type's settings, the attempt it is on. Null if
  // this process has no handler for its type.
  struct Stored {
    JobId id;
    std::string type;
    std::string queue;  // empty: the default
    nlohmann::json payload;
    int priority = 0;
    int max_attempts = 1;
    std::chrono::milliseconds timeout{0};
    std::uint64_t seq = 0;
    int attempt = 1;
    WallClock::time_point created_at{};
    std::uint64_t fence = 0;  // the lease's fencing token in the shared queue
    std::shared_ptr<const TraceContext> trace{};
    std::shared_ptr<nlohmann::json> then{};  // the follow-up spec, id filled in; null: none
    std::shared_ptr<FlowLink> flow{};        // its place in a flow; null: none
  };
  std::shared_ptr<Task> rebuild(Stored job) const;

  // What is wrong with a job naming `queue` (empty: the default), as
  // "<field>: ..."; empty if nothing: a bad name, or a queue the broker
  // does not take.
  std::string queue_check(const std::string& queue, const std::string& field) const;

  // Refuses new jobs from now on, then waits for every caller already past
  // the gate.
  void close();

  IntakeCounts counts() const;

 private:
  // Held while a submit or requeue may still add a job (see close()).
  class Gate {
   public:
    explicit Gate(Intake& intake) noexcept : intake_(intake) {
      intake_.inside_.fetch_add(1, std::memory_order_seq_cst);
    }
    ~Gate() { intake_.inside_.fetch_sub(1, std::memory_order_seq_cst); }
    Gate(const Gate&) = delete;
    Gate& operator=(const Gate&) = delete;
    bool open() const noexcept { return intake_.open_.load(std::memory_order_seq_cst); }

   private:
    Intake& intake_;
  };

  // A spec with children: the whole flow checked, then admitted as one.
  Submitted submit_flow(JobSpec spec);
  // A checked flow's tasks (the root first; their paths, "" for the root,
  // and delays), admitted whole.
  Submitted admit_tree(const std::vector<TaskPtr>& tasks, const std::vector<std::string>& paths,
                       const std::vector<std::chrono::milliseconds>& delays, Clock::time_point now);
  // What is wrong with `spec`, if anything; its trace context, read once, into `trace`.
  std::optional<SubmitError> check(const JobSpec& spec, const TypeEntry* type,
                                   std::shared_ptr<const TraceContext>& trace) const;
  // A registered type's job with its spec filled in (the type's timeout
  // unless `timeout` is set); not shared yet.
  std::shared_ptr<Task> make_task(TypeEntry& type, JobId id, int priority, int max_attempts,
                                  std::chrono::milliseconds timeout, nlohmann::json payload) const;
  // The task of a checked spec of `type` (the spec's fields, the type's
  // defaults where it has none).
  std::shared_ptr<Task> task_for(TypeEntry& type, JobSpec&& spec, std::shared_ptr<const TraceContext> trace) const;
  // Admits a task. A unique job whose key is held is not admitted:
  // `duplicate` (if given) gets the holder's answer instead.
  std::optional<SubmitError> accept(TaskPtr task, std::chrono::milliseconds delay, Submitted* duplicate = nullptr);
  // The answer to a submit that found `holder` holding its unique key.
  Submitted duplicate_of(const JobId& holder, std::optional<JobState> state) const;
  // Claims a unique job's lock where the broker does not keep it (nullopt:
  // claimed, or not unique); the holder's id otherwise.
  // `pending`: jobs of the same batch not recorded yet, which hold their keys too.
  std::optional<JobId> claim_unique(const Task& task, Clock::time_point now,
                                    const std::vector<Admission>* pending = nullptr);
  void release_unique(const Task& task);
  // Numbers and names a job about to be admitted, sets its state and times.
  void stamp(Task& task, std::chrono::milliseconds delay, Clock::time_point now);
  // Records an admitted job and counts it in (false: its id is taken).
  bool record(const TaskPtr& task);
  std::optional<SubmitError> refusal(Admitted result, const JobId& id, const std::string& queue) const;
  UniqueLocks unique_locks_;  // unless the broker keeps them
  Submitted reject(SubmitError error);

  const RuntimeOptions& options_;
  const std::shared_ptr<const Registry> registry_;  // shared with every task: abandoned threads may outlive us
  TypeTable& types_;
  Broker& broker_;
  JobStore& store_;
  Completion& completion_;
  const std::string id_prefix_;
  const bool takes_default_;  // the broker takes jobs naming no queue (fixed for its life)

  alignas(64) std::atomic<bool> open_{true};
  std::atomic<int> inside_{0};
  std::atomic<std::uint64_t> next_seq_{0};
  std::atomic<std::uint64_t> submitted_{0}, rejected_{0};
  std::array<std::atomic<std::uint64_t>, 6> rejected_by_code_{};  // SubmitError::Code values
};

}  // namespace bulwark::detail
