// Internal: the state behind a Runtime, shared by runtime.cpp (workers and
// the public API) and supervisor.cpp (the supervisor thread).
#pragma once

#include <pthread.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bulwark/health.hpp"
#include "bulwark/runtime.hpp"
#include "detail/circuit_breaker.hpp"
#include "detail/job_queue.hpp"
#include "detail/job_store.hpp"
#include "detail/reporter.hpp"

namespace bulwark::detail {

class ProcessPool;

// A fixed-bucket histogram that any thread may add to without a lock.
class Histogram {
 public:
  static constexpr std::array<double, 16> kBounds = {0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                     0.1,    0.25,   0.5,   1,      2.5,   5,    10,    60};
  void observe(double seconds) noexcept {
    std::size_t i = 0;
    while (i < kBounds.size() && seconds > kBounds[i]) ++i;
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(static_cast<std::uint64_t>(std::max(0.0, seconds) * 1e9), std::memory_order_relaxed);
  }
  HistogramSnapshot snapshot() const {
    HistogramSnapshot s;
    s.bounds.assign(kBounds.begin(), kBounds.end());
    for (const auto& c : counts_) {
      s.counts.push_back(c.load(std::memory_order_relaxed));
      s.count += s.counts.back();
    }
    s.sum = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
    return s;
  }

 private:
  std::array<std::atomic<std::uint64_t>, kBounds.size() + 1> counts_{};
  std::atomic<std::uint64_t> sum_ns_{0};
};

// Cumulative counters of one job type; lock-free.
struct TypeCounters {
  static constexpr std::size_t kKinds = kFailureKinds;
  alignas(64) std::atomic<std::uint64_t> submitted{0};  // the submit side's line
  alignas(64) std::atomic<std::uint64_t> started{0}, succeeded{0}, retried{0};
  std::array<std::atomic<std::uint64_t>, kKinds> failed{};
  std::array<std::atomic<std::uint64_t>, kKinds> recovered{};
};

// Everything the runtime keeps per registered job type.
struct TypeState {
  TypeCounters counters;
  const Registry::Entry* entry = nullptr;
  RetryPolicy policy;
  std::chrono::milliseconds timeout{0};       // soft, default for the type
  std::chrono::milliseconds hard_timeout{0};  // default for the type
  bool isolated = false;                      // isolation: process
  std::size_t memory_limit_mb = 0;            // for isolated attempts; 0: none
  CircuitBreaker breaker;
  explicit TypeState(CircuitBreakerOptions cb) : breaker(cb) {}
};

// One worker thread and what it is doing, published for the supervisor.
// Shared by the thread itself and the runtime, so an abandoned thread can
// still finish against it after the runtime has moved on.
struct WorkerSlot {
  enum Owner : int { idle = 0, running = 1, abandoned = 2 };

  unsigned id = 0;          // pool position
  unsigned generation = 0;  // replacements before this one at that position
  std::thread thread;       // guarded by Impl::slots_mutex

  std::atomic<int> owner{idle};      // who decides the current attempt's fate; see claim()

  // The owner handshake. The worker marks an attempt running; when it ends,
  // exactly one side wins it: the worker (finish(): running -> idle) or the
  // supervisor or shutdown (abandon(): running -> abandoned). The winner
  // ends the attempt; the loser touches nothing of it.
  void begin() noexcept { owner.store(running, std::memory_order_release); }
  bool finish() noexcept {
    int expected = running;
    return owner.compare_exchange_strong(expected, idle, std::memory_order_acq_rel);
  }
  bool abandon() noexcept {
    int expected = running;
    return owner.compare_exchange_strong(expected, abandoned, std::memory_order_acq_rel);
  }
  bool is_running() const noexcept { return owner.load(std::memory_order_acquire) == running; }
  // The stop source lent to each attempt this worker runs (no allocation per
  // job); replaced once a stop was requested on it. Only the worker writes it.
  std::stop_source stop;
  std::atomic<bool> exited{false};   // the thread function has returned
  std::atomic<bool> shutdown_exit{false};  // it returned because the queue closed

  std::mutex mutex;
  std::shared_ptr<Task> current;     // guarded by mutex
  Clock::time_point started{};       // guarded by mutex; the current attempt's
  bool soft_fired = false;           // guarded by mutex; per attempt
  bool stuck_reported = false;       // guarded by mutex; per attempt
  std::string exit_reason;           // guarded by mutex

  // Stack dump by signal: the supervisor sets dump_state to 1 and signals
  // the thread; its handler writes `dump` and sets 2.
  std::atomic<int> dump_state{0};
  RawTrace dump;
  std::atomic<pthread_t> native{};
};

// Recent queue waits for the saturation check: a lock-free ring of samples.
class WaitSamples {
 public:
  void add(std::int64_t wait_us, std::int64_t now_ms) noexcept {
    const std::uint64_t i = next_.fetch_add(1, std::memory_order_relaxed) % kSize;
    samples_[i].wait_us.store(wait_us, std::memory_order_relaxed);
    samples_[i].at_ms.store(now_ms, std::memory_order_relaxed);
  }
  // p99 of the samples taken since `since_ms`, in milliseconds.
  std::optional<double> p99_since(std::int64_t since_ms) const;

 private:
  static constexpr std::size_t kSize = 1024;
  struct Sample {
    std::atomic<std::int64_t> wait_us{0};
    std::atomic<std::int64_t> at_ms{-1};
  };
  std::array<Sample, kSize> samples_;
  std::atomic<std::uint64_t> next_{0};
};

struct SupervisorCounters {
  std::atomic<std::uint64_t> soft_timeouts{0}, hard_timeouts{0}, stuck_reports{0}, replacements{0},
      abandoned_total{0}, abandoned_retired{0}, breaker_opened{0}, breaker_closed{0}, breaker_deferred{0};
};

// Wall-clock time of a steady-clock reading, without reading the wall clock
// again (each clock read costs; the hot path takes three per job).
inline WallClock::time_point to_wall(Clock::time_point t) {
  static const auto offset = WallClock::now().time_since_epoch() - Clock::now().time_since_epoch();
  return WallClock::time_point(std::chrono::duration_cast<WallClock::duration>(t.time_since_epoch() + offset));
}

inline double ms_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

inline std::int64_t steady_ms(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// The real-time signal that asks a worker thread to dump its stack.
int dump_signal() noexcept;

namespace testing {
// Called from inside a job: the worker running it dies after the job, as if
// its loop had failed outside the guarded frame. For supervisor tests.
void end_current_worker() noexcept;
// Benchmarks only: runs jobs without the guarded frame, to measure what the
// frame costs on the happy path. A job that throws then ends the process.
void set_unguarded(bool unguarded) noexcept;
bool unguarded() noexcept;
}  // namespace testing

}  // namespace bulwark::detail

namespace bulwark {

struct Runtime::Impl {
  using TaskPtr = std::shared_ptr<detail::Task>;
  using SlotPtr = std::shared_ptr<detail::WorkerSlot>;

  Impl(Registry r, RuntimeOptions o);

  // Held while a submit or requeue may still add a job: shutdown closes the
  // gate, then waits until nobody holds it, so no job lands after the final
  // drain. `open()` says whether the holder may go on.
  class AcceptGate {
   public:
    explicit AcceptGate(Impl& impl) noexcept : impl_(impl) { impl_.submitting.fetch_add(1, std::memory_order_seq_cst); }
    ~AcceptGate() { impl_.submitting.fetch_sub(1, std::memory_order_seq_cst); }
    AcceptGate(const AcceptGate&) = delete;
    AcceptGate& operator=(const AcceptGate&) = delete;
    bool open() const noexcept { return impl_.accepting.load(std::memory_order_seq_cst); }

   private:
    Impl& impl_;
  };

  Submitted reject(SubmitError::Code code, std::string message) {
    count_rejection(code);
    return Submitted{{}, JobState::rejected, SubmitError{code, std::move(message)}};
  }
  // Takes the job into the queue (the queue gets `task`'s reference).
  std::optional<SubmitError> accept(TaskPtr task, std::chrono::milliseconds delay);
  void count_rejection(SubmitError::Code code) noexcept {
    rejected.fetch_add(1, std::memory_order_relaxed);
    rejected_by_code[static_cast<std::size_t>(code)].fetch_add(1, std::memory_order_relaxed);
  }

  // Workers (runtime.cpp).
  void start_worker(unsigned id, unsigned generation);  // expects slots_mutex held
  void worker_main(const SlotPtr& slot);
  void worker_loop(const SlotPtr& slot);
  // Returns false if the supervisor abandoned the attempt meanwhile.
  bool run_attempt(const SlotPtr& slot, const TaskPtr& task, Clock::time_point start);
  void fail_attempt(const TaskPtr& task, int attempt, Failure failure, std::exception_ptr exception,
                    std::vector<Failure> cleanup_errors, double duration_ms);
  void finished(const TaskPtr& task, JobState terminal);
  ShutdownReport stop(std::chrono::milliseconds timeout);
  // The phases of stop(), in order.
  void close_gate();
  bool drain_until(Clock::time_point deadline);
  std::vector<SlotPtr> live_slots() const;
  void request_stops(const std::vector<SlotPtr>& live);
  void await_exit(const std::vector<SlotPtr>& live);
  void close_children(const std::vector<SlotPtr>& live);
  void abandon_stragglers(const std::vector<SlotPtr>& live);
  void join_threads();
  std::size_t end_unrun();

  // Supervisor (supervisor.cpp).
  void supervise(std::stop_token stop);
  void tick(Clock::time_point now);
  void watch(const SlotPtr& slot, Clock::time_point now);
  void abandon(const SlotPtr& slot, const TaskPtr& task, Clock::time_point now, Failure failure,
               bool allow_retry);
  void replace_exited(Clock::time_point now);
  void fill_vacancies(Clock::time_point now);
  std::optional<RawTrace> dump_stack(detail::WorkerSlot& slot);
  void update_verdict(Clock::time_point now);
  HealthReport health() const;

  RuntimeOptions options;
  std::shared_ptr<Registry> registry;  // shared with every HandlerTask: abandoned threads may outlive us
  std::map<std::string, std::unique_ptr<detail::TypeState>, std::less<>> types;
  detail::TypeState posts{CircuitBreakerOptions{.failures = 0}};  // posted callables: counters only
  const std::string id_prefix;

  detail::Reporter reporter;
  // Child worker processes, when any type is isolated. Shared with the
  // tasks that use it: a task may outlive the runtime.
  std::shared_ptr<detail::ProcessPool> processes;
  std::uint64_t process_deaths_seen = 0;  // owned by the supervisor thread
  detail::JobQueue queue;
  detail::JobStore store;
  detail::WaitSamples waits;
  detail::Histogram run_time;
  detail::Histogram queue_wait;
  std::array<std::atomic<std::uint64_t>, 5> rejected_by_code{};  // SubmitError::Code values
  detail::SupervisorCounters sup;

  // The hot counters, grouped by who writes them so that producers and
  // workers do not evict each other's cache lines. Jobs not yet finished
  // are `accepted - finished_total`, one count on each side.
  alignas(64) std::atomic<bool> accepting{true};
  std::atomic<bool> stopping{false};  // shutdown has begun: exits are not deaths
  std::atomic<int> submitting{0};
  std::atomic<std::uint64_t> next_seq{0};
  std::atomic<std::uint64_t> submitted{0}, rejected{0};
  std::atomic<std::uint64_t> accepted{0};  // accepts and requeues
  alignas(64) std::atomic<std::uint64_t> succeeded{0}, failed{0}, cancelled{0};
  std::atomic<std::uint64_t> attempts_failed{0}, retried{0};
  std::atomic<std::size_t> running{0};
  std::atomic<int> idle_waiters{0};  // threads in wait_idle; finished() notifies only if any
  std::atomic<std::uint64_t> finished_total{0};  // jobs that reached a terminal state
  alignas(64) std::mutex idle_mutex;
  std::condition_variable idle_cv;

  mutable std::mutex slots_mutex;
  std::vector<SlotPtr> slots;      // guarded by slots_mutex; one per position, null when vacant
  std::vector<SlotPtr> abandoned;  // guarded by slots_mutex
  std::vector<unsigned> restarts;  // guarded by slots_mutex; per position

  // Owned by the supervisor thread:
  std::deque<Clock::time_point> restart_times;
  std::optional<Clock::time_point> all_busy_since;
  bool retries_throttled = false;

  mutable std::mutex verdict_mutex;
  Verdict verdict = Verdict::healthy;  // guarded by verdict_mutex
  std::vector<std::string> reasons;    // guarded by verdict_mutex
  std::optional<double> wait_p99_ms;   // guarded by verdict_mutex

  std::mutex shutdown_mutex;
  std::optional<ShutdownReport> shutdown_report;  // guarded by shutdown_mutex
  std::jthread supervisor;  // last: stopped and joined first
};

}  // namespace bulwark
