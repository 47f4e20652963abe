// Internal: the parent's side of process isolation, the ProcessRunner the
// runtime's isolated types run through (runtime/process_runner.hpp). A fixed number of child
// worker processes (isolation.processes), each running one job at a time.
// They all start with the first isolated job (a runtime that never runs one
// starts none), and a child that dies is replaced at once.
//
// run() is called by a runtime worker thread for an attempt of an isolated
// type: it takes a free child (waiting for one if all are busy), sends the
// job, and waits for the answer while watching the child's memory and the
// hard timeout. If the child dies, run() works out why (signal, crash-site
// trace, exit status, memory limit, timeout kill), starts a replacement at
// once and returns the failure. No thread is ever abandoned: a stuck child is
// killed.
//
// Thread-safe. run() blocks for as long as the job runs; the rest do not
// block for long.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <thread>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bulwark/failure.hpp"
#include "bulwark/detail/thread_annotations.hpp"
#include "bulwark/health.hpp"
#include "isolation/wire.hpp"
#include "runtime/process_runner.hpp"

namespace bulwark::detail {

class ProcessPool final : public ProcessRunner {
 public:
  ProcessPool(unsigned processes, std::chrono::milliseconds start_timeout);
  ~ProcessPool() override;
  ProcessPool(const ProcessPool&) = delete;
  ProcessPool& operator=(const ProcessPool&) = delete;

  ProcessReply run(const ProcessRequest& request) override;

  // Kills every child; run() calls in flight end with kind shutdown, later
  // ones at once. Idempotent.
  void close() override;

  std::vector<ProcessHealth> health() const override;
  // Children that ended while they should have been running (crash, kill,
  // exit): the supervisor counts them towards restart intensity.
  std::uint64_t deaths() const override;
  // Ends by reason: "SIGSEGV", "exit", "hard_timeout", "memory_limit", ...
  std::map<std::string, std::uint64_t> ends_by_reason() const override;
  void set_restart_limit(unsigned per_second) override;
  void restart_deferred() override;
  std::uint64_t restarts_deferred_total() const override;

 private:
  struct Child {
    unsigned id = 0;
    pid_t pid = -1;
    int fd = -1;
    bool ready = false;
    bool busy = false;
    std::string job;
    unsigned restarts = 0;
    bool deferred = false;  // dead; its replacement waits for the restart limit
    std::string last_exit;
    std::vector<wire::Module> modules;
    wire::FrameReader reader;
  };

  // How an exchange with a child ended, and what was seen on the way.
  enum class End { result, eof, timeout_kill, memory_kill, protocol };
  struct Exchange {
    std::optional<nlohmann::json> crash;  // the child's crash report, if it sent one
    std::size_t grew_mb = 0;              // at a memory-limit kill
    std::string protocol_error;
  };

  bool spawn(Child& child, std::string& error) BULWARK_REQUIRES(mutex_);
  bool await_ready(Child& child, std::string& error);
  void reap(Child& child, const std::string& reason, bool died) BULWARK_REQUIRES(mutex_);
  void release(Child& child) BULWARK_REQUIRES(mutex_);
  // A free child for `request` (waiting for one), marked busy; null with
  // `failure` set at shutdown, on a stop request or if none can start.
  Child* acquire(const ProcessRequest& request, Failure& failure);
  // Sends the job and waits for the result, a death, or a limit (then kills).
  End exchange(Child& child, const ProcessRequest& request, ProcessReply& reply, Exchange& seen);
  Failure describe_end(End end, int status, bool closing, const Child& child, const ProcessRequest& request,
                       const ProcessReply& reply, const Exchange& seen, std::string& reason) const;

  // Children are started from this one long-lived thread, never from the
  // runtime worker calling run(): a child's parent-death signal
  // (PR_SET_PDEATHSIG) fires when the *thread* that created it ends, and
  // worker threads end whenever the supervisor replaces one.
  class Launcher {
   public:
    Launcher();
    ~Launcher();
    // Runs `fn` on the launcher thread and returns its result. Blocks; one
    // call at a time (callers hold the pool's mutex).
    int call(const std::function<int()>& fn);

   private:
    void loop(std::stop_token stop);
    Mutex mutex_;
    std::condition_variable_any cv_;
    const std::function<int()>* job_ BULWARK_GUARDED_BY(mutex_) = nullptr;
    bool done_ BULWARK_GUARDED_BY(mutex_) = false;
    int result_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::jthread thread_;                        // last: started after the rest exists
  };

  const std::chrono::milliseconds start_timeout_;
  Launcher launcher_;
  mutable Mutex mutex_;
  std::condition_variable_any free_;
  // Fixed size. A child marked busy belongs to the run() that marked it:
  // that thread uses its fields without the lock until it releases it.
  std::vector<Child> children_ BULWARK_GUARDED_BY(mutex_);
  bool closed_ BULWARK_GUARDED_BY(mutex_) = false;
  bool started_ BULWARK_GUARDED_BY(mutex_) = false;
  std::uint64_t deaths_ BULWARK_GUARDED_BY(mutex_) = 0;
  std::map<std::string, std::uint64_t> ends_ BULWARK_GUARDED_BY(mutex_);
  // Replacements of dead children started within the last second, against
  // the recovery governor's limit (set_restart_limit).
  bool may_restart(Clock::time_point now) BULWARK_REQUIRES(mutex_);
  unsigned restart_limit_ BULWARK_GUARDED_BY(mutex_) = ~0u;
  std::deque<Clock::time_point> recent_restarts_ BULWARK_GUARDED_BY(mutex_);
  std::uint64_t deferred_total_ BULWARK_GUARDED_BY(mutex_) = 0;
};

}  // namespace bulwark::detail
