// Events: what happened in a runtime, in order, for GET /v1/events (Server-
// Sent Events) and the dashboard. Two kinds: a job's state transition (its
// id, type, new state, attempt and, for a failed attempt, the failure kind)
// and a supervisor action (a timeout, a stuck job, a worker replaced, a
// breaker opened or closed, a verdict change, retries throttled).
//
// Events are numbered from 1 in the order they were recorded; a job's own
// events are in the order its states changed. The runtime keeps the most
// recent ones in a bounded buffer (events.buffer) and records only while
// somebody reads them (from the first Runtime::events_after() until
// events.linger_ms after the last), so an unread stream costs nothing. With
// the redis backend the events are the whole queue's: every process
// appends its own to one capped stream in Redis while anyone reads, each
// naming its process; the numbers are the stream's, the same in every
// process, so a reader resumes from any of them.
//
// Plain values; to_json is thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bulwark/failure.hpp"
#include "bulwark/job.hpp"

namespace bulwark {

struct Event {
  std::uint64_t id = 0;
  bool supervisor = false;  // false: a job's transition
  JobId job_id{};             // a job event's job (and a supervisor action's, if about one)
  std::string type{};
  std::optional<JobState> state{};  // job events
  int attempt = 0;                // the attempt that starts (running) or ended
  std::optional<FailureKind> failure{};  // a failed attempt's kind (on retry and on failed)
  std::string action{};   // supervisor events: hard_timeout, soft_timeout, stuck, worker_replaced,
                        // breaker_opened, breaker_closed, verdict, retries_throttled, retries_resumed
  std::string message{};  // supervisor events: what the log says
  std::optional<JobProgress> progress{};  // a job event (state running) that reports progress
  WallClock::time_point at{};
  std::string process{};  // with a shared queue: the process it happened in (host:pid:tag)
};

// One read of the buffer: the events after the number asked for (at most the
// number asked), and the range the buffer holds now. A reader that asked
// after N and finds oldest > N + 1 missed the events in between.
struct EventPage {
  std::vector<Event> events{};
  std::uint64_t oldest = 0;  // the oldest number still held (0: none yet)
  std::uint64_t newest = 0;  // the newest number recorded so far
};

// {"id", "kind": "job"|"supervisor", "job_id", "type", "state", "attempt",
//  "failure", "progress": {"fraction", "note"}, "action", "message", "at",
//  "process"}; absent fields are left out.
nlohmann::ordered_json to_json(const Event& event);
// An event back from to_json's form; nullopt if `j` is not one.
std::optional<Event> event_from_json(const nlohmann::json& j);

}  // namespace bulwark
