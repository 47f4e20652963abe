// Reporter: bulwark's log, written off the worker threads.
//
// Workers hand over events (a failed attempt with its raw trace, or a plain
// message); the reporter's own thread symbolizes traces and writes them
// through spdlog, as text or as one JSON object per line. The hand-off queue
// is bounded: when failures arrive faster than they can be written, the
// excess is counted and reported as dropped instead of growing memory
// without end (rate-limited recovery work).
//
// Thread-safe. Posting never blocks; the destructor writes what is queued,
// then joins.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "bulwark/config.hpp"
#include "bulwark/failure.hpp"

namespace spdlog {
class logger;
}

namespace bulwark::detail {

enum class LogLevel { trace, debug, info, warn, error, critical };

struct AttemptFailure {
  JobId id;
  std::string type;
  int attempt = 0;
  int max_attempts = 0;
  std::optional<std::chrono::milliseconds> retry_in;  // set when another attempt follows
  Failure failure;
  std::string trace_id{};  // the job's W3C trace, empty without
  std::string span_id{};   // the attempt's span
};

// A supervisor event about a job, with the stack it was found in.
struct StackNote {
  std::string message;
  JobId id;
  std::string type;
  std::optional<RawTrace> trace;
  std::string trace_id{};  // the job's W3C trace, empty without
  std::string span_id{};   // the running attempt's span
};

class Reporter {
 public:
  static constexpr std::size_t kMaxPending = 10'000;

  // Throws ConfigError ("logging.file: ...") when the log file cannot be opened.
  explicit Reporter(const LogOptions& options);
  ~Reporter();
  Reporter(const Reporter&) = delete;
  Reporter& operator=(const Reporter&) = delete;

  void attempt_failed(AttemptFailure event) noexcept;
  void log(LogLevel level, std::string message) noexcept;
  void note(LogLevel level, StackNote note) noexcept;
  bool enabled(LogLevel level) const noexcept;
  std::uint64_t dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }

 private:
  struct Event;
  struct Queue;
  void post(Event&& event) noexcept;
  void write(Event& event);
  void write_message(const Event& event, const std::string& message);
  void write_note(const Event& event, const StackNote& note);
  void write_failure(const Event& event, const AttemptFailure& failure);
  void run(std::stop_token stop);

  bool json_ = false;
  std::shared_ptr<spdlog::logger> logger_;
  std::unique_ptr<Queue> queue_;
  std::atomic<std::size_t> pending_{0};
  std::atomic<std::uint64_t> dropped_{0};
  std::uint64_t reported_dropped_ = 0;  // owned by the reporter thread
  std::jthread thread_;
};

}  // namespace bulwark::detail
