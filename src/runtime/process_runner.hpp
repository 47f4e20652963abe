// ProcessRunner: what the runtime needs of process isolation, and nothing
// more. The runtime runs an isolated attempt through this interface; the
// isolation layer (ProcessPool) implements it, and the runtime's owner
// plugs it in (TypeTable::use_processes), so the runtime never includes the
// isolation layer.
//
// Implementations are thread-safe. run() blocks while the job runs.
#pragma once

#include <chrono>
#include <functional>
#include <cstdint>
#include <map>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bulwark/failure.hpp"
#include "bulwark/health.hpp"

namespace bulwark::detail {

struct ProcessRequest {
  std::string id;
  std::string type;
  int attempt = 1;
  std::uint64_t fence = 0;  // JobContext::fencing_token in the child
  const nlohmann::json* payload = nullptr;
  std::chrono::milliseconds hard_timeout{0};  // 0: none
  std::size_t memory_limit_mb = 0;            // 0: none
  std::stop_token stop;                       // cancellation, soft timeout, shutdown
  std::string traceparent;                    // the attempt's span ("00-trace-span-flags"); empty: no trace
  // The job's progress reports (JobContext::progress in the child), called
  // on the waiting thread; null: dropped.
  std::function<void(double fraction, const std::string& note)> on_progress;
};

struct ProcessReply {
  bool ok = false;
  nlohmann::json result;
  Failure failure;                      // when !ok
  std::vector<Failure> cleanup_errors;  // the child ran the cleanups
  std::optional<RawTrace> stuck_trace;  // where a killed job was
  int pid = 0;                          // the child that ran it
};

class ProcessRunner {
 public:
  virtual ~ProcessRunner() = default;
  // Runs one attempt in a child process and says how it ended.
  virtual ProcessReply run(const ProcessRequest& request) = 0;
  // Kills every child; runs in flight end with kind shutdown. Idempotent.
  virtual void close() = 0;
  virtual std::vector<ProcessHealth> health() const = 0;
  // Children that died while they should have been running.
  virtual std::uint64_t deaths() const = 0;
  // Ends by reason: "SIGSEGV", "exit", "hard_timeout", "memory_limit", ...
  virtual std::map<std::string, std::uint64_t> ends_by_reason() const = 0;
  // Recovery work is governed (the recovery governor): at most `per_second`
  // replacements of dead children start in any second; the others wait
  // until restart_deferred() (each supervisor tick) or a job needs the
  // child.
  virtual void set_restart_limit(unsigned per_second) { (void)per_second; }
  virtual void restart_deferred() {}
  virtual std::uint64_t restarts_deferred_total() const { return 0; }
};

}  // namespace bulwark::detail
