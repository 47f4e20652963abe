// Attempt: one run of a job on a worker thread.
//
// It holds only what the run needs: the task, the worker's slot and the
// runner that executes the body (on this thread, or in a child process).
// From begin() on, the supervisor may abandon the attempt and the runtime
// may even be destroyed, so an Attempt has no way to reach the runtime: the
// rule "touch only the task, the slot and the stack until the owner
// handshake is won" is this type's boundary. The caller acts on the
// returned AttemptEnd only after winning the handshake.
//
// AttemptRunner is the strategy for the body: InThreadRunner calls the
// task's code in a guarded frame and runs its cleanups; ChildRunner sends
// it to a child worker process through a ProcessRunner.
//
// Used by one worker thread; run() blocks for as long as the job runs.
#pragma once

#include <memory>
#include <vector>

#include "bulwark/guarded.hpp"
#include "runtime/process_runner.hpp"
#include "runtime/worker_slot.hpp"

namespace bulwark::detail {

// How the body of an attempt ended, cleanups included.
struct RunnerResult {
  Outcome<void> outcome{std::monostate{}};
  std::vector<Failure> cleanup_errors;
};

class AttemptRunner {
 public:
  virtual ~AttemptRunner() = default;
  virtual RunnerResult run(Task& task, JobContext& ctx) = 0;
  // True when the body runs in another process: this thread's stack then
  // says nothing about where the job is, and hard timeouts are the
  // runner's to enforce.
  virtual bool remote() const noexcept = 0;
};

class InThreadRunner final : public AttemptRunner {
 public:
  RunnerResult run(Task& task, JobContext& ctx) override;
  bool remote() const noexcept override { return false; }
};

class ChildRunner final : public AttemptRunner {
 public:
  ChildRunner(std::shared_ptr<ProcessRunner> processes, std::size_t memory_limit_mb)
      : processes_(std::move(processes)), memory_limit_mb_(memory_limit_mb) {}
  RunnerResult run(Task& task, JobContext& ctx) override;
  bool remote() const noexcept override { return true; }

 private:
  std::shared_ptr<ProcessRunner> processes_;  // shared: an abandoned attempt may outlive the runtime
  std::size_t memory_limit_mb_;
};

// What the worker hands to Completion once it has won the handshake.
struct AttemptEnd {
  int attempt = 0;
  Outcome<void> outcome{std::monostate{}};
  std::vector<Failure> cleanup_errors;
  Clock::time_point end{};
  double duration_ms = 0;
  bool child_timed_out = false;  // an isolated attempt killed at its hard timeout
};

// The runner for attempts on a worker thread; stateless, shared by all.
AttemptRunner& in_thread_runner() noexcept;

// The worker thread that makes an Attempt keeps the task, the slot and the
// runner alive while it runs (its own shared_ptrs: an abandoned thread may
// outlive the runtime), so the Attempt only refers to them.
class Attempt {
 public:
  Attempt(Task& task, WorkerSlot& slot, AttemptRunner& runner) noexcept : task_(task), slot_(slot), runner_(runner) {}

  // Takes the next attempt number and lends the worker's stop source to the
  // job. False if the job was cancelled while it waited (nothing to run).
  bool start(Clock::time_point now);
  // Runs the body and the cleanups; call after WorkerSlot::begin().
  AttemptEnd run();
  // The attempt's number (1 for the first), once start() returned true.
  int number() const noexcept { return number_; }

 private:
  Task& task_;
  WorkerSlot& slot_;
  AttemptRunner& runner_;
  Clock::time_point start_{};
  int number_ = 0;
  std::uint32_t epoch_ = 0;
  std::uint64_t fence_ = 0;
  std::string span_id_;  // with a trace: this attempt's span
  std::stop_token token_;
};

}  // namespace bulwark::detail
