// RuntimeStats: what a runtime has done and is doing, as counts and
// histograms (Runtime::stats, Runtime::counters); the HTTP API's /v1/stats
// and /metrics are made from them.
//
// Plain values; not synchronized.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bulwark/handler_options.hpp"
#include "bulwark/health.hpp"
#include "bulwark/trace.hpp"

namespace bulwark {

// A histogram as Prometheus keeps it: counts[i] observations <= bounds[i]
// (not cumulative), then one count for everything above the last bound.
struct HistogramSnapshot {
  std::vector<double> bounds{};  // seconds
  std::vector<std::uint64_t> counts{};
  double sum = 0;  // seconds
  std::uint64_t count = 0;
};

// Cumulative counts for one job type ("post" for posted callables).
struct TypeStats {
  std::uint64_t submitted = 0;
  std::uint64_t started = 0;    // attempts started
  std::uint64_t succeeded = 0;
  std::uint64_t retried = 0;
  std::map<std::string, std::uint64_t> failed{};     // dead-lettered jobs, by failure kind
  std::map<std::string, std::uint64_t> recovered{};  // caught failures (every failed attempt), by kind
  BreakerState breaker = BreakerState::off;
  std::uint64_t breaker_opened = 0;
  // Job controls (Runtime::types() has more):
  bool paused = false;
  std::size_t held = 0;             // jobs held here for a place (paused, or at the concurrency limit)
  std::uint64_t rate_waits = 0;     // cumulative: starts put off by the rate limit
  std::uint64_t limit_waits = 0;    // cumulative: jobs held for a place
};

// Jobs of one named queue this process accepted and ended (the queue
// label of bulwark_named_queue_jobs_total).
struct QueueJobCounts {
  std::uint64_t submitted = 0;
  std::uint64_t succeeded = 0;
  std::uint64_t failed = 0;     // dead-lettered
  std::uint64_t cancelled = 0;
};

// One named queue (GET /v1/stats "queues", the queue label of the
// bulwark_named_queue_* metrics).
struct QueueStats {
  std::string name{};
  std::size_t ready = 0;      // jobs ready to run
  std::size_t waiting = 0;    // ready and scheduled
  unsigned weight = 0;        // this process's weight for it; 0: this process does not run it
  std::size_t capacity = 0;   // its own capacity here (queues.<name>.capacity); 0: none
  std::size_t consumers = 0;  // live processes that run it, this one included
  bool paused = false;        // Runtime::pause_queue: its jobs wait until resumed
  QueueJobCounts jobs{};      // of it, accepted and ended in this process
};

struct RuntimeStats {
  std::map<std::string, std::uint64_t> by_state{};  // current count of each state (finished ones as retained)
  std::map<std::string, TypeStats> by_type{};
  std::map<std::string, std::uint64_t> rejected_by_code{};  // refused submits by SubmitError code
  std::vector<std::size_t> ready_by_priority{};  // jobs ready to run, index = priority
  // Every named queue this process runs or a job named (with a shared
  // queue: any process's job), by name. Empty while the backend cannot be
  // read (backend_problem says why).
  std::vector<QueueStats> queues{};
  std::size_t queue_capacity = 0;
  HistogramSnapshot run_time{};    // attempt run time
  HistogramSnapshot queue_wait{};  // ready to started
  TraceCaptureStats traces{};      // throw-site trace captures, process-wide
  std::uint64_t submitted = 0;       // accepted jobs, posts included
  std::uint64_t rejected = 0;        // refused submits
  std::uint64_t succeeded = 0;       // cumulative
  std::uint64_t failed = 0;          // cumulative: dead-lettered
  std::uint64_t cancelled = 0;       // cumulative
  std::uint64_t attempts_failed = 0; // every caught failure, retried or not
  std::uint64_t retried = 0;         // attempts scheduled again
  std::uint64_t log_dropped = 0;     // failure log lines dropped by the rate limit
  // Results of attempts dropped because another process of a shared queue
  // took the job's lease over before the end was written.
  std::uint64_t results_dropped = 0;
  // queue.backend redis: errors met, by kind ("unavailable", "login",
  // "full", "other"); empty for the memory backend.
  std::map<std::string, std::uint64_t> backend_errors{};
  // Set when the shared counts could not be read (Redis away): by_state is
  // empty and queue_depth 0, the rest is this process's own and true.
  std::string backend_problem{};
  std::size_t queue_depth = 0;       // waiting: queued + scheduled
  std::size_t running = 0;
  unsigned workers = 0;              // worker threads alive in the pool
  unsigned abandoned = 0;            // stuck threads left behind, not yet finished
  // Supervisor actions, cumulative:
  std::uint64_t soft_timeouts = 0;   // stop tokens set at a soft timeout
  std::uint64_t hard_timeouts = 0;   // attempts failed with kind timeout
  std::uint64_t stuck_reports = 0;   // stack dumps of jobs without a heartbeat
  std::uint64_t replacements = 0;    // worker threads started to replace lost ones
  std::uint64_t breaker_opened = 0;  // times a type's circuit breaker opened
  std::uint64_t breaker_deferred = 0;  // job starts put off by an open breaker
  // Child worker processes (process isolation): how many ended, by reason
  // ("SIGSEGV", "stack_overflow", "exit", "memory_limit", "hard_timeout", ...).
  std::map<std::string, std::uint64_t> process_ends{};
};

// One job type as it runs here: its settings (code and handlers.<type>
// merged), its controls and what they are doing, its counts
// (Runtime::types(), GET /v1/types).
struct TypeControl {
  std::string name{};
  int max_attempts = 1;
  std::chrono::milliseconds timeout{0};       // soft; 0: none
  std::chrono::milliseconds hard_timeout{0};  // 0: none
  Isolation isolation = Isolation::thread;
  std::optional<unsigned> concurrency{};  // handlers.<type>.concurrency; unset: no limit
  std::optional<RateLimit> rate{};        // handlers.<type>.rate; unset: no limit
  std::size_t running = 0;  // attempts running in this process now
  std::optional<double> tokens{};  // with a rate: starts allowed now without waiting
  TypeStats stats{};  // counts, breaker, and paused / held / rate_waits / limit_waits
};

// The few counters that cost nothing to read (stats() walks every retained
// record): for probes and rate sampling.
struct RuntimeCounters {
  std::uint64_t submitted = 0;
  std::uint64_t succeeded = 0;
  std::uint64_t failed = 0;
  std::size_t queue_depth = 0;
  std::size_t queue_capacity = 0;
  bool backend_reachable = true;  // queue.backend redis: the feeder and acker reach Redis and may log in
  std::string backend_problem{};  // queue.backend redis: why a part cannot work now; empty when all can
};

}  // namespace bulwark
