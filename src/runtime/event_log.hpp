// EventLog: the runtime's recent events (bulwark/events.hpp) in a bounded
// ring, numbered, for readers that page through it by number. Nothing waits
// for a reader: a slow one falls behind and finds out by the gap between the
// number it asked after and the oldest one held.
//
// Recording costs a lock and a copy of the job's id and type per event, so
// the log records only while read: from the first after() until `linger`
// after the last one (the supervisor's tick calls expire()). Writers check
// one relaxed flag when nobody reads.
//
// Shared (a backend whose processes share one stream, set_sink): events
// recorded here go to the sink instead of the ring, and the ring mirrors
// the shared stream (mirror()), numbered by it; the log records while it is
// read here or, as the backend says (set_read_elsewhere), in another process.
//
// Thread-safe; nothing blocks for long.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "bulwark/detail/thread_annotations.hpp"
#include "bulwark/events.hpp"
#include "runtime/clock.hpp"

namespace bulwark::detail {

class Task;

class EventLog {
 public:
  // capacity 0: never records.
  EventLog(std::size_t capacity, std::chrono::milliseconds linger) : capacity_(capacity), linger_(linger) {}

  bool recording() const noexcept {
    return recording_.load(std::memory_order_relaxed) || read_elsewhere_.load(std::memory_order_relaxed);
  }
  // Whether a reader here read within `linger`.
  bool read_here() const noexcept { return recording_.load(std::memory_order_relaxed); }

  // Shared mode: every event recorded from now on goes to `sink` (stamped
  // with its time, not yet numbered). Set before the runtime starts.
  void set_sink(std::function<void(Event)> sink) { sink_ = std::move(sink); }
  // Shared mode: a reader in another process reads (the backend looks).
  void set_read_elsewhere(bool reading) noexcept { read_elsewhere_.store(reading, std::memory_order_relaxed); }
  // Shared mode: events of the shared stream, numbered by it, oldest first
  // (numbers above the newest held; older ones are ignored).
  void mirror(std::vector<Event> events);
  // A job's transition to `state`; `attempt` as the record counts it.
  void job(const Task& task, JobState state, int attempt, std::optional<FailureKind> failure = std::nullopt);
  // A supervisor action, about a job if `task` is given.
  void supervisor(std::string action, std::string message, const Task* task = nullptr);
  void progress(const Task& task, const JobProgress& progress);

  // Up to `max` events numbered after `after`, oldest first. Starts (or
  // keeps up) recording.
  EventPage after(std::uint64_t after, std::size_t max);
  // Stops recording once `linger` has passed since the last after().
  void expire(Clock::time_point now);

 private:
  void add(Event event);

  const std::size_t capacity_;
  const std::chrono::milliseconds linger_;
  std::atomic<bool> recording_{false};       // read here within linger
  std::atomic<bool> read_elsewhere_{false};  // shared mode: read in another process
  std::atomic<Clock::rep> last_read_{0};
  std::function<void(Event)> sink_;  // set before the runtime starts; then read-only
  Mutex mutex_;
  std::deque<Event> ring_ BULWARK_GUARDED_BY(mutex_);  // ids ascending
  std::uint64_t newest_ BULWARK_GUARDED_BY(mutex_) = 0;
};

}  // namespace bulwark::detail
