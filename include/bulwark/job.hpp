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
  waiting_children,  // a flow's parent: waits until each of its children has ended (JobSpec::children)
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

// Flows (JobSpec::children): what a parent does when one of its children
// ends failed (dead-lettered) or cancelled. fail: the parent fails at once
// with kind child_failed naming the child, and its children not started
// yet are cancelled; ignore: the parent still runs and sees the child's
// failure in its list; remove: the parent runs without the child in its
// list.
enum class ChildFailure : std::uint8_t { fail, ignore, remove };
std::string_view to_string(ChildFailure policy) noexcept;
std::optional<ChildFailure> parse_child_failure(std::string_view name) noexcept;

// Bounds on a flow, from limits.flow_children and limits.flow_depth.
inline constexpr std::size_t kDefaultFlowChildren = 100'000;  // jobs below the root, at every depth
inline constexpr std::size_t kDefaultFlowDepth = 8;           // levels of children below the root
inline constexpr std::size_t kMaxFlowDepth = 100;             // the most limits.flow_depth may be

// The id of child `index` (0-based) of job `parent` whose spec names none:
// "<parent>.c<index>", or, when that is longer than `max_length`,
// "c<index>-<16 hex digits of a hash of parent>".
JobId child_id(const JobId& parent, std::size_t index, std::size_t max_length = kDefaultMaxIdLength);

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
  // A flow: jobs that run first. The job is admitted with all of them in
  // one step (all or none) and waits as waiting_children until each has
  // ended (succeeded, or failed or cancelled after its own retries); then it
  // runs and reads their outcomes (JobContext::children(), and
  // payload.children for a JSON handler, so its payload must be an object
  // or none). A child's id, unless it names one, is child_id(this id, its
  // index). Children may have children, to limits.flow_depth levels and
  // limits.flow_children jobs in all.
  std::vector<JobSpec> children{};
  // What this job does when one of its children fails (ChildFailure).
  ChildFailure on_child_failure = ChildFailure::fail;
  // On a child: how its parent takes this child's failure, instead of the
  // parent's on_child_failure. Unset: the parent's.
  std::optional<ChildFailure> parent_on_failure{};

  // trace_parent and trace_state read as a TraceContext: nullopt without
  // them, or with `problem` set ("trace_parent: ...", "trace_state: ...")
  // when they are not valid.
  std::optional<TraceContext> trace(std::string* problem) const;

  // Reads {"type", "payload", "id", "queue", "priority", "max_attempts", "timeout_ms",
  // "delay_ms", "trace_parent", "trace_state", "unique_key", "unique_for_ms",
  // "then", "children", "on_child_failure", "parent_on_failure"}; a `then`
  // and each child are read the same way, their errors named
  // "then.<field>" and "children[3].<field>". Throws SpecError naming the
  // first bad field; unknown fields are an error too, so a typo never goes
  // unnoticed. `j` should come from
  // parse_json() (json_input.hpp), which bounds its nesting.
  static JobSpec from_json(const nlohmann::json& j, std::size_t max_id_length = kDefaultMaxIdLength);
};

// Celery's canvas as flows. A group runs jobs side by side and collects
// their results: its parent is the built-in type "collect", whose result is
// the list of its children's results in order (null for a child that
// failed, with on_child_failure "ignore"). A chord runs `body` once every
// job of `header` has ended, with their outcomes in payload.children.
//
//   runtime.submit(bulwark::group({{.type = "resize", .payload = a}, {.type = "resize", .payload = b}}));
//   runtime.submit(bulwark::chord({{.type = "charge", .payload = line1}, {.type = "charge", .payload = line2}},
//                                 {.type = "receipt", .payload = order}));
inline constexpr std::string_view kCollectType = "collect";
inline JobSpec group(std::vector<JobSpec> jobs) {
  JobSpec spec;
  spec.type = std::string(kCollectType);
  spec.children = std::move(jobs);
  return spec;
}
inline JobSpec chord(std::vector<JobSpec> header, JobSpec body) {
  body.children = std::move(header);
  return body;
}

// How far a running job says it is (JobContext::progress).
struct JobProgress {
  static constexpr std::size_t kMaxNoteBytes = 200;
  double fraction = 0;  // 0..1
  std::string note{};   // at most kMaxNoteBytes
  WallClock::time_point at{};
};

// One ended child of a flow's parent, as the parent's handler sees it
// (JobContext::children()) and as payload.children lists it: {"id", "type",
// "state", "result"} for a child that succeeded, {"id", "type", "state",
// "error": {"kind", "type", "message"}} for one that failed or was cancelled.
struct ChildOutcome {
  JobId id{};
  std::string type{};
  JobState state = JobState::succeeded;
  nlohmann::json result{};             // succeeded: what its handler returned
  std::optional<Failure> error{};      // failed or cancelled: why (no trace)
};
nlohmann::json to_json(const ChildOutcome& child);
// Reads what to_json(ChildOutcome) wrote; nullopt if it is not that.
std::optional<ChildOutcome> child_outcome_from_json(const nlohmann::json& j);

// How far a flow's parent is: its direct children by where they are.
struct ChildCounts {
  std::size_t total = 0;
  std::size_t succeeded = 0, failed = 0, cancelled = 0;
  std::size_t pending() const noexcept { return total - succeeded - failed - cancelled; }
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
  JobId parent{};                       // in a flow: the job that waits for this one; empty: none
  std::optional<ChildCounts> children{};  // a flow's parent: its direct children
};

// The record as bulwark renders it: {"id","type","state","attempts","result",
// "duration_ms","error"} plus "queue", "priority", "max_attempts" and ISO-8601
// timestamps when `timestamps` is set, and "trace" ({"trace_id", "span_id",
// "parent_id", "traceparent", "tracestate"}) when it has one; "parent" in a
// flow and "children" ({"total", "succeeded", "failed", "cancelled",
// "pending"}) for a flow's parent. `symbolized` as for Failure.
nlohmann::ordered_json to_json(const JobRecord& record, bool symbolized = true, bool timestamps = true);

}  // namespace bulwark
