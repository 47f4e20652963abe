// Jobs as data: what a client asks for (JobSpec) and what bulwark knows about
// a job at one moment (JobRecord).
//
//   bulwark::JobSpec spec = bulwark::JobSpec::from_json(R"({"type":"echo","payload":1})"_json);
//   auto submitted = runtime.submit(std::move(spec));
//   std::optional<bulwark::JobRecord> r = runtime.get(submitted.id);
//
// Plain values; not synchronized.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "bulwark/failure.hpp"
#include "bulwark/trace_context.hpp"

namespace bulwark {

using JobId = std::string;
using Clock = std::chrono::steady_clock;
using WallClock = std::chrono::system_clock;

enum class JobState : std::uint8_t {
  queued,     // waiting for a worker
  scheduled,  // waiting for its run time (delay_ms) or its retry backoff
  running,
  succeeded,
  failed,     // all attempts used: the dead-letter list
  cancelled,
  rejected,   // never accepted (bad input); only seen in `bulwark run` output
};

std::string_view to_string(JobState state) noexcept;
// "2026-11-29T06:30:15.123Z" (UTC, milliseconds).
std::string format_iso8601(WallClock::time_point t);
std::optional<JobState> parse_job_state(std::string_view name) noexcept;
constexpr bool is_terminal(JobState s) noexcept { return s >= JobState::succeeded; }

inline constexpr int kMinPriority = 0;
inline constexpr int kMaxPriority = 9;

// Job ids: 1 to limits.id_length bytes (default 200) of A-Z a-z 0-9 and
// - _ . : ~, and not "." or "..". Such an id is safe as it is in a URL path,
// an HTTP header and a log line.
inline constexpr std::size_t kDefaultMaxIdLength = 200;
inline constexpr std::int64_t kMaxUniqueForMs = 30LL * 86'400'000;  // JobSpec::unique_for
bool is_valid_job_id(std::string_view id, std::size_t max_length = kDefaultMaxIdLength) noexcept;
// What is wrong with an id is_valid_job_id() refuses, as "id: ..." text.
std::string job_id_problem(std::string_view id, std::size_t max_length = kDefaultMaxIdLength);

// Named queues (JobSpec::queue, the `queues` setting): 1 to 64 bytes of
// A-Z a-z 0-9 and - _ . ; kDefaultQueue when a spec names none.
inline constexpr std::string_view kDefaultQueue = "default";
inline constexpr std::size_t kMaxQueueName = 64;
// What is wrong with a queue name, as "queue: ..." text; empty if nothing.
std::string queue_problem(std::string_view name);

// What is wrong with a JobSpec's unique_key / unique_for pair, as
// "unique_key: ..." or "unique_for_ms: ..."; empty if nothing (both unset
// is fine).
std::string unique_problem(std::string_view key, std::chrono::milliseconds window,
                           std::size_t max_length = kDefaultMaxIdLength);

// The id of the follow-up of job `parent` whose `then` names none:
// "<parent>.then", or, when that is longer than `max_length`,
// "then-<16 hex digits of a hash of parent>" (the same in every process).
JobId follow_up_id(const JobId& parent, std::size_t max_length = kDefaultMaxIdLength);

// Thrown by JobSpec::from_json for a field that is missing or of the wrong
// type; what() names the field.
class SpecError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct JobSpec {
  std::string type{};                 // a registered job type; required
  nlohmann::json payload{};           // handed to the handler as is
  JobId id{};                         // empty: bulwark generates one
  // The named queue it waits in (queue_problem() for the names allowed);
  // empty: kDefaultQueue. The processes that list it in `queues` run it.
  std::string queue{};
  int priority = 0;                 // kMinPriority..kMaxPriority, higher runs first
  std::optional<int> max_attempts{};  // overrides the type's and the config's
  std::chrono::milliseconds timeout{0};  // 0: the type's default; enforced by the supervisor
  std::chrono::milliseconds delay{0};    // run no earlier than this after submit
  // W3C trace context of what caused the job (bulwark/trace_context.hpp);
  // empty: none. A bad traceparent is refused (SubmitError invalid).
  std::string trace_parent{};
  std::string trace_state{};
  // Unique jobs: while a job of this type submitted with the same
  // unique_key is less than unique_for old, a submit with it is answered
  // with that job's id and `duplicate` set, and no new job is made. Both or
  // neither: unique_key is 1 to limits.id_length bytes of UTF-8 without
  // control characters; unique_for 1 ms to 30 days. The window runs from the
  // first submit whatever becomes of that job (it ends early only if the
  // job's record is no longer retained).
  std::string unique_key{};
  std::chrono::milliseconds unique_for{0};
  // A follow-up: a job spec (JSON, the fields of from_json, its own `then`
  // included) submitted when this job succeeds, never when it fails. Its
  // payload (an object, or none) gets "previous": {"id", "type", "result"}
  // of this job; its id, unless it names one, is follow_up_id(this id), so
  // a job that runs twice (at-least-once) still has one follow-up. Null:
  // none.
  nlohmann::json then{};

  // trace_parent and trace_state read as a TraceContext: nullopt without
  // them, or with `problem` set ("trace_parent: ...", "trace_state: ...")
  // when they are not valid.
  std::optional<TraceContext> trace(std::string* problem) const;

  // Reads {"type", "payload", "id", "queue", "priority", "max_attempts", "timeout_ms",
  // "delay_ms", "trace_parent", "trace_state", "unique_key", "unique_for_ms",
  // "then"}; a `then` is read the same way, its errors named "then.<field>". Throws SpecError naming the first bad field; unknown fields
  // are an error too, so a typo never goes unnoticed. `j` should come from
  // parse_json() (json_input.hpp), which bounds its nesting.
  static JobSpec from_json(const nlohmann::json& j, std::size_t max_id_length = kDefaultMaxIdLength);
};

// How far a running job says it is (JobContext::progress).
struct JobProgress {
  static constexpr std::size_t kMaxNoteBytes = 200;
  double fraction = 0;  // 0..1
  std::string note{};   // at most kMaxNoteBytes
  WallClock::time_point at{};
};

struct JobRecord {
  JobId id{};
  std::uint64_t seq = 0;  // submit order within this runtime; a listing cursor
  std::string type{};
  std::string queue{std::string(kDefaultQueue)};  // the named queue it waits (or waited) in
  JobState state = JobState::queued;
  int priority = 0;
  int attempts = 0;      // attempts started so far
  int max_attempts = 1;
  nlohmann::json payload{};
  nlohmann::json result;             // the handler's return value once succeeded
  std::optional<Failure> error{};      // the last attempt's failure
  std::vector<Failure> cleanup_errors{};  // failures of defer/on_failure beyond the first
  std::optional<RawTrace> stuck_trace{};  // where it was when the supervisor found it slow or stuck
  int breaker_deferrals = 0;            // times its start was put off by its type's open circuit breaker
  double duration_ms = 0;            // run time of the last attempt
  WallClock::time_point created_at{};
  std::optional<WallClock::time_point> started_at{};   // first attempt
  std::optional<WallClock::time_point> finished_at{};  // terminal state reached
  std::optional<TraceContext> trace{};  // the trace context it was submitted with
  std::string span_id{};                // with a trace: the span of the latest attempt
  std::string unique_key{};             // as submitted; empty: none
  std::optional<JobProgress> progress{};  // the latest the job reported, if any
  std::string then_type{};              // with a follow-up (JobSpec::then): its type
  JobId then_id{};                      // and the id it gets (or got)
};

// The record as bulwark renders it: {"id","type","state","attempts","result",
// "duration_ms","error"} plus "queue", "priority", "max_attempts" and ISO-8601
// timestamps when `timestamps` is set, and "trace" ({"trace_id", "span_id",
// "parent_id", "traceparent", "tracestate"}) when it has one. `symbolized`
// as for Failure.
nlohmann::ordered_json to_json(const JobRecord& record, bool symbolized = true, bool timestamps = true);

}  // namespace bulwark
