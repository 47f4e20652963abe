#include "bulwark/job.hpp"
#include "bulwark/submit_error.hpp"
#include "bulwark/backend_error.hpp"

#include "bulwark/json_input.hpp"
#include "support/text.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <ctime>

namespace bulwark {
namespace {

constexpr std::array<std::string_view, 8> kStateNames = {"queued",    "scheduled", "waiting_children", "running",
                                                         "succeeded", "failed",    "cancelled",        "rejected"};
constexpr std::array<std::string_view, 3> kChildFailureNames = {"fail", "ignore", "remove"};

ChildFailure child_failure_field(const nlohmann::json& j, const char* name) {
  const nlohmann::json* v = j.is_object() && j.contains(name) && !j[name].is_null() ? &j[name] : nullptr;
  if (v == nullptr) return ChildFailure::fail;
  if (v->is_string()) {
    if (auto p = parse_child_failure(v->get_ref<const std::string&>())) return *p;
  }
  throw SpecError(std::string(name) + ": expected \"fail\", \"ignore\" or \"remove\"");
}

const nlohmann::json* field(const nlohmann::json& j, const char* name) {
  auto it = j.find(name);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

std::int64_t integer_field(const nlohmann::json& j, const char* name, std::int64_t lo, std::int64_t hi) {
  const nlohmann::json* v = field(j, name);
  if (v == nullptr) return lo - 1;  // absent: caller keeps its default
  if (auto n = integer_in_range(*v, lo, hi)) return *n;
  throw SpecError(std::string(name) + ": " + integer_problem(*v, lo, hi));
}

constexpr bool id_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
         c == '.' || c == ':' || c == '~';
}

}  // namespace

bool is_valid_job_id(std::string_view id, std::size_t max_length) noexcept {
  if (id.empty() || id.size() > max_length || id == "." || id == "..") return false;
  return std::all_of(id.begin(), id.end(), id_char);
}

std::string job_id_problem(std::string_view id, std::size_t max_length) {
  const std::string rule = "id: expected 1 to " + std::to_string(max_length) +
                           " characters from A-Z a-z 0-9 - _ . : ~ (limits.id_length)";
  if (id.empty() || id.size() > max_length) return rule + ", got " + std::to_string(id.size()) + " bytes";
  if (id == "." || id == "..") return "id: '.' and '..' are not ids";
  const auto bad = std::find_if_not(id.begin(), id.end(), id_char);
  char code[8];
  std::snprintf(code, sizeof code, "0x%02x", static_cast<unsigned>(static_cast<unsigned char>(*bad)));
  return rule + ", got byte " + code + " at position " + std::to_string(bad - id.begin());
}

std::string format_iso8601(WallClock::time_point t) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}


std::string_view to_string(JobState state) noexcept { return kStateNames[static_cast<std::size_t>(state)]; }

std::optional<JobState> parse_job_state(std::string_view name) noexcept {
  for (std::size_t i = 0; i < kStateNames.size(); ++i) {
    if (kStateNames[i] == name) return static_cast<JobState>(i);
  }
  return std::nullopt;
}

std::string_view to_string(ChildFailure policy) noexcept {
  return kChildFailureNames[static_cast<std::size_t>(policy)];
}

std::optional<ChildFailure> parse_child_failure(std::string_view name) noexcept {
  for (std::size_t i = 0; i < kChildFailureNames.size(); ++i) {
    if (kChildFailureNames[i] == name) return static_cast<ChildFailure>(i);
  }
  return std::nullopt;
}

JobId child_id(const JobId& parent, std::size_t index, std::size_t max_length) {
  std::string id = parent;
  id.append(".c").append(std::to_string(index));
  if (id.size() <= max_length) return id;
  std::uint64_t h = 14695981039346656037ULL;  // FNV-1a, as follow_up_id
  for (unsigned char c : parent) h = (h ^ c) * 1099511628211ULL;
  char buf[48];
  std::snprintf(buf, sizeof buf, "c%zu-%016llx", index, static_cast<unsigned long long>(h));
  return buf;
}

nlohmann::json to_json(const ChildOutcome& c) {
  nlohmann::json out = {{"id", c.id}, {"type", c.type}, {"state", to_string(c.state)}};
  if (c.state == JobState::succeeded) {
    out["result"] = c.result;
  } else if (c.error) {
    out["error"] = {{"kind", to_string(c.error->kind)}, {"type", c.error->type}, {"message", c.error->message}};
  }
  return out;
}

std::optional<ChildOutcome> child_outcome_from_json(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("id") || !j["id"].is_string() || !j.contains("state") || !j["state"].is_string()) {
    return std::nullopt;
  }
  ChildOutcome c;
  c.id = j["id"].get<std::string>();
  c.type = j.value("type", "");
  const auto state = parse_job_state(j["state"].get<std::string>());
  if (!state || !is_terminal(*state)) return std::nullopt;
  c.state = *state;
  if (auto r = j.find("result"); r != j.end()) c.result = *r;
  if (auto e = j.find("error"); e != j.end() && e->is_object()) c.error = failure_from_json(*e);
  return c;
}

JobSpec JobSpec::from_json(const nlohmann::json& j, std::size_t max_id_length) {
  if (!j.is_object()) throw SpecError("expected a JSON object");
  static constexpr std::array<std::string_view, 16> kKnown = {
      "type",     "payload",      "id",          "queue",      "priority",      "max_attempts", "timeout_ms",
      "delay_ms", "trace_parent", "trace_state", "unique_key", "unique_for_ms", "then",         "children",
      "on_child_failure", "parent_on_failure"};
  for (const auto& [key, value] : j.items()) {
    if (std::find(kKnown.begin(), kKnown.end(), key) == kKnown.end()) throw SpecError(key + ": unknown field");
  }
  JobSpec spec;
  const nlohmann::json* type = field(j, "type");
  if (type == nullptr) throw SpecError("type: required");
  if (!type->is_string() || type->get_ref<const std::string&>().empty()) {
    throw SpecError("type: expected a non-empty string");
  }
  spec.type = type->get<std::string>();
  if (auto it = j.find("payload"); it != j.end()) spec.payload = *it;
  if (const nlohmann::json* id = field(j, "id")) {
    if (!id->is_string()) throw SpecError("id: expected a string");
    const auto& text = id->get_ref<const std::string&>();
    if (!is_valid_job_id(text, max_id_length)) throw SpecError(job_id_problem(text, max_id_length));
    spec.id = text;
  }
  if (const nlohmann::json* queue = field(j, "queue")) {
    if (!queue->is_string()) throw SpecError("queue: expected a string");
    const auto& text = queue->get_ref<const std::string&>();
    if (std::string problem = queue_problem(text); !problem.empty()) throw SpecError(problem);
    spec.queue = text;
  }
  if (auto p = integer_field(j, "priority", kMinPriority, kMaxPriority); p >= kMinPriority) {
    spec.priority = static_cast<int>(p);
  }
  if (auto a = integer_field(j, "max_attempts", 1, 1000); a >= 1) spec.max_attempts = static_cast<int>(a);
  constexpr std::int64_t kDay = 86'400'000;
  if (auto t = integer_field(j, "timeout_ms", 0, kDay); t >= 0) spec.timeout = std::chrono::milliseconds(t);
  if (auto d = integer_field(j, "delay_ms", 0, kDay); d >= 0) spec.delay = std::chrono::milliseconds(d);
  for (const auto& [key, out] : {std::pair{"trace_parent", &spec.trace_parent}, std::pair{"trace_state", &spec.trace_state}}) {
    if (const nlohmann::json* v = field(j, key)) {
      if (!v->is_string()) throw SpecError(std::string(key) + ": expected a string");
      *out = v->get<std::string>();
    }
  }
  if (const nlohmann::json* v = field(j, "unique_key")) {
    if (!v->is_string()) throw SpecError("unique_key: expected a string");
    spec.unique_key = v->get<std::string>();
  }
  if (auto u = integer_field(j, "unique_for_ms", 1, kMaxUniqueForMs); u >= 1) spec.unique_for = std::chrono::milliseconds(u);
  std::string problem = unique_problem(spec.unique_key, spec.unique_for, max_id_length);
  if (!problem.empty()) throw SpecError(problem);
  spec.trace(&problem);
  if (!problem.empty()) throw SpecError(problem);
  if (const nlohmann::json* then = field(j, "then")) {
    if (!then->is_object()) throw SpecError("then: expected a job spec (an object)");
    try {
      const JobSpec next = from_json(*then, max_id_length);
      if (!next.payload.is_null() && !next.payload.is_object()) {
        throw SpecError("payload: expected an object, or none (the job before adds \"previous\" to it)");
      }
    } catch (const SpecError& e) {
      throw SpecError(std::string("then.") + e.what());
    }
    spec.then = *then;
  }
  spec.on_child_failure = child_failure_field(j, "on_child_failure");
  if (field(j, "parent_on_failure") != nullptr) spec.parent_on_failure = child_failure_field(j, "parent_on_failure");
  if (const nlohmann::json* children = field(j, "children")) {
    if (!children->is_array()) throw SpecError("children: expected a list of job specs");
    // Read one level at a time: nesting past limits.flow_depth's own
    // bound stops here, before the recursion goes deep.
    thread_local std::size_t depth = 0;
    if (depth >= kMaxFlowDepth) {
      throw SpecError("children: nested more than " + std::to_string(kMaxFlowDepth) + " levels (limits.flow_depth is at most that)");
    }
    struct Level {
      Level() { ++depth; }
      ~Level() { --depth; }
    } level;
    spec.children.reserve(children->size());
    for (std::size_t i = 0; i < children->size(); ++i) {
      try {
        spec.children.push_back(from_json((*children)[i], max_id_length));
      } catch (const SpecError& e) {
        const std::string what = e.what();
        // "children[3]." before the child's own field ("children[3].children[0].type").
        throw SpecError("children[" + std::to_string(i) + "]" + (what.rfind("expected a JSON object", 0) == 0 ? ": " : ".") + what);
      }
    }
    if (!spec.children.empty() && !spec.payload.is_null() && !spec.payload.is_object()) {
      throw SpecError("payload: expected an object, or none, for a job with children (it gets \"children\")");
    }
  }
  return spec;
}

std::string queue_problem(std::string_view name) {
  if (name.empty() || name.size() > kMaxQueueName) {
    return "queue: expected 1 to " + std::to_string(kMaxQueueName) + " bytes, got " + std::to_string(name.size());
  }
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    if (!ok) return "queue: only A-Z a-z 0-9 - _ . are allowed";
  }
  return {};
}

std::string unique_problem(std::string_view key, std::chrono::milliseconds window, std::size_t max_length) {
  if (key.empty() && window.count() == 0) return {};
  if (key.empty()) return "unique_key: required with unique_for_ms";
  if (window.count() == 0) return "unique_for_ms: required with unique_key";
  if (window.count() < 1 || window.count() > kMaxUniqueForMs) {
    return "unique_for_ms: expected an integer from 1 to " + std::to_string(kMaxUniqueForMs);
  }
  if (key.size() > max_length) return "unique_key: longer than " + std::to_string(max_length) + " bytes (limits.id_length)";
  if (!detail::is_valid_utf8(std::string(key))) return "unique_key: not valid UTF-8";
  if (std::any_of(key.begin(), key.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
    return "unique_key: control characters are not allowed";
  }
  return {};
}

JobId follow_up_id(const JobId& parent, std::size_t max_length) {
  if (parent.size() + 5 <= max_length) return parent + ".then";
  std::uint64_t h = 14695981039346656037ULL;  // FNV-1a: the same id in every process and build
  for (unsigned char c : parent) h = (h ^ c) * 1099511628211ULL;
  char buf[32];
  std::snprintf(buf, sizeof buf, "then-%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::optional<TraceContext> JobSpec::trace(std::string* problem) const {
  std::string why;
  std::optional<TraceContext> out;
  if (trace_parent.empty()) {
    if (!trace_state.empty()) why = "trace_state: needs trace_parent";
  } else if (!(out = TraceContext::parse(trace_parent, trace_state, &why))) {
    why.insert(0, why.rfind("tracestate", 0) == 0 ? "trace_state: " : "trace_parent: ");
  }
  if (problem != nullptr) *problem = std::move(why);
  return out;
}

nlohmann::ordered_json to_json(const JobRecord& r, bool symbolized, bool timestamps) {
  nlohmann::ordered_json out = {{"id", r.id},
                        {"type", r.type},
                        {"state", to_string(r.state)},
                        {"attempts", r.attempts},
                        {"result", r.state == JobState::succeeded ? nlohmann::ordered_json(r.result) : nlohmann::ordered_json()},
                        {"duration_ms", r.duration_ms},
                        {"error", r.error ? to_json(*r.error, symbolized) : nlohmann::ordered_json()}};
  if (!r.cleanup_errors.empty()) {
    nlohmann::ordered_json extra = nlohmann::ordered_json::array();
    for (const Failure& f : r.cleanup_errors) extra.push_back(to_json(f, symbolized));
    out["cleanup_errors"] = std::move(extra);
  }
  if (r.stuck_trace) out["stuck_trace"] = to_json(*r.stuck_trace, symbolized);
  if (r.breaker_deferrals > 0) out["breaker_deferrals"] = r.breaker_deferrals;
  if (timestamps) {
    out["queue"] = r.queue;
    out["priority"] = r.priority;
    out["max_attempts"] = r.max_attempts;
    out["created_at"] = format_iso8601(r.created_at);
    out["started_at"] = r.started_at ? nlohmann::ordered_json(format_iso8601(*r.started_at)) : nlohmann::ordered_json();
    out["finished_at"] = r.finished_at ? nlohmann::ordered_json(format_iso8601(*r.finished_at)) : nlohmann::ordered_json();
  }
  if (!r.unique_key.empty()) out["unique_key"] = r.unique_key;
  if (!r.then_type.empty()) out["then"] = {{"type", r.then_type}, {"id", r.then_id}};
  if (!r.parent.empty()) out["parent"] = r.parent;
  if (r.children) {
    out["children"] = {{"total", r.children->total},
                       {"succeeded", r.children->succeeded},
                       {"failed", r.children->failed},
                       {"cancelled", r.children->cancelled},
                       {"pending", r.children->pending()}};
  }
  if (r.progress) {
    out["progress"] = {{"fraction", r.progress->fraction}, {"note", r.progress->note}, {"at", format_iso8601(r.progress->at)}};
  }
  if (r.trace) {
    out["trace"] = {{"trace_id", r.trace->trace_id},
                    {"span_id", r.span_id.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(r.span_id)},
                    {"parent_id", r.trace->parent_id},
                    {"traceparent", r.trace->traceparent()},
                    {"tracestate", r.trace->state}};
  }
  return out;
}

}  // namespace bulwark

namespace bulwark {

std::string_view to_string(SubmitError::Code code) noexcept {
  switch (code) {
    case SubmitError::Code::invalid: return "invalid";
    case SubmitError::Code::unknown_type: return "unknown_type";
    case SubmitError::Code::duplicate_id: return "duplicate_id";
    case SubmitError::Code::queue_full: return "queue_full";
    case SubmitError::Code::shutting_down: return "shutting_down";
    case SubmitError::Code::backend_unavailable: return "backend_unavailable";
    case SubmitError::Code::backend_full: return "backend_full";
  }
  return "unknown";
}

std::string_view to_string(BackendError::Kind kind) noexcept {
  switch (kind) {
    case BackendError::Kind::unavailable: return "unavailable";
    case BackendError::Kind::full: return "full";
    case BackendError::Kind::other: return "other";
  }
  return "other";
}

}  // namespace bulwark
