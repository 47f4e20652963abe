#include "http/api.hpp"

#include "bulwark/backend_error.hpp"

#include "runtime/scheduler.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

#include <nlohmann/json.hpp>

#include "http/ui_assets.hpp"
#include "support/text.hpp"
#include "bulwark/json_input.hpp"

namespace bulwark::http {
namespace {

using nlohmann::ordered_json;

Response json_response(int status, const ordered_json& body) {
  Response r;
  r.status = status;
  r.body = detail::dump_line(body);
  return r;
}

// `plus_is_space`: in a query string '+' stands for a space; in a path it
// is itself.
std::string percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      int value = 0;
      auto [p, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, value, 16);
      if (ec == std::errc() && p == s.data() + i + 3) {
        out += static_cast<char>(value);
        i += 2;
        continue;
      }
    }
    out += plus_is_space && s[i] == '+' ? ' ' : s[i];
  }
  return out;
}

std::map<std::string, std::string> parse_query(std::string_view q) {
  std::map<std::string, std::string> out;
  while (!q.empty()) {
    const auto amp = q.find('&');
    const std::string_view pair = q.substr(0, amp);
    const auto eq = pair.find('=');
    out[percent_decode(pair.substr(0, eq), true)] =
        eq == std::string_view::npos ? "" : percent_decode(pair.substr(eq + 1), true);
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return out;
}

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> parts;
  while (!path.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    const auto slash = path.find('/');
    parts.push_back(percent_decode(path.substr(0, slash), false));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash);
  }
  return parts;
}

// Every byte outside RFC 3986's unreserved set as %XX: safe in a header
// whatever the id holds.
std::string percent_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) != 0 || c == '-' || c == '_' || c == '.' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return out;
}

bool is_json(const std::string& content_type) {
  const std::string_view ct = content_type;
  const auto semi = ct.find(';');
  std::string base(ct.substr(0, semi));
  base.erase(std::remove(base.begin(), base.end(), ' '), base.end());
  std::transform(base.begin(), base.end(), base.begin(), [](unsigned char c) { return std::tolower(c); });
  return base == "application/json";
}

Response method_not_allowed(const std::string& allow) {
  Response r = error_response(405, "method_not_allowed", "this path accepts " + allow);
  r.headers.emplace_back("Allow", allow);
  return r;
}

std::optional<std::uint64_t> parse_uint(const std::string& s) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

Response submit_error(const SubmitError& e) {
  switch (e.code) {
    case SubmitError::Code::invalid: return error_response(422, "invalid_field", e.message);
    case SubmitError::Code::unknown_type: return error_response(422, "unknown_job_type", e.message);
    case SubmitError::Code::duplicate_id: return error_response(409, "duplicate_id", e.message);
    case SubmitError::Code::queue_full: {
      Response r = error_response(429, "queue_full", e.message);
      r.headers.emplace_back("Retry-After", "1");
      return r;
    }
    case SubmitError::Code::shutting_down: {
      Response r = error_response(503, "shutting_down", e.message);
      r.headers.emplace_back("Retry-After", "5");
      return r;
    }
    case SubmitError::Code::backend_unavailable: {
      Response r = error_response(503, "backend_unavailable", e.message);
      r.headers.emplace_back("Retry-After", "1");
      return r;
    }
    case SubmitError::Code::backend_full: {
      Response r = error_response(503, "backend_full", e.message);
      r.headers.emplace_back("Retry-After", "5");
      return r;
    }
  }
  return error_response(500, "internal_error", e.message);
}

// Compares without an early exit, so the time taken says nothing about where
// a guessed token first differs.
bool constant_time_equal(std::string_view a, std::string_view b) {
  const std::size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

// The processes of the queue; `with_health`: each one's verdict, workers and
// child processes as of its last heartbeat.
ordered_json process_list(const std::vector<QueueProcess>& processes, bool with_health) {
  ordered_json list = ordered_json::array();
  for (const QueueProcess& p : processes) {
    ordered_json entry = {{"id", p.id},
                          {"host", p.host},
                          {"pid", p.pid},
                          {"workers", p.workers},
                          {"queues", p.queues},
                          {"started_at", format_iso8601(p.started_at)},
                          {"last_seen", format_iso8601(p.last_seen)},
                          {"alive", p.alive},
                          {"self", p.self},
                          {"verdict", p.verdict.empty() ? ordered_json() : ordered_json(p.verdict)}};
    if (with_health && p.health.is_object()) {
      entry["worker_states"] = p.health.value("workers", ordered_json::array());
      entry["child_processes"] = p.health.value("processes", ordered_json::array());
    }
    list.push_back(std::move(entry));
  }
  return list;
}

}  // namespace

Response error_response(int status, const std::string& code, const std::string& message) {
  return json_response(status, {{"error", {{"code", code}, {"message", message}}}});
}

void Api::add_route(std::string method, std::string path, Route route) {
  detail::MutexLock lock(mutex_);
  extra_routes_[{std::move(method), std::move(path)}] = std::move(route);
}

std::string_view route_template(RouteId route) noexcept {
  switch (route) {
    case RouteId::healthz: return "/healthz";
    case RouteId::readyz: return "/readyz";
    case RouteId::metrics: return "/metrics";
    case RouteId::ui: return "/ui/{file}";
    case RouteId::auth: return "/v1/auth";
    case RouteId::workers: return "/v1/workers";
    case RouteId::processes: return "/v1/processes";
    case RouteId::stats: return "/v1/stats";
    case RouteId::events: return "/v1/events";
    case RouteId::jobs: return "/v1/jobs";
    case RouteId::jobs_batch: return "/v1/jobs/batch";
    case RouteId::job: return "/v1/jobs/{id}";
    case RouteId::job_cancel: return "/v1/jobs/{id}/cancel";
    case RouteId::job_retry: return "/v1/jobs/{id}/retry";
    case RouteId::job_tree: return "/v1/jobs/{id}/tree";
    case RouteId::types: return "/v1/types";
    case RouteId::type_pause: return "/v1/types/{type}/pause";
    case RouteId::type_resume: return "/v1/types/{type}/resume";
    case RouteId::queue_pause: return "/v1/queues/{queue}/pause";
    case RouteId::queue_resume: return "/v1/queues/{queue}/resume";
    case RouteId::schedules: return "/v1/schedules";
    case RouteId::schedule: return "/v1/schedules/{name}";
    case RouteId::extra: return "extra";
    case RouteId::unknown: break;
  }
  return "unknown";
}

void RequestMetrics::record(RouteId route, int status, std::chrono::nanoseconds took) noexcept {
  PerRoute& r = routes_[static_cast<std::size_t>(route)];
  if (status >= 0 && status < kMaxStatus) r.by_status[static_cast<std::size_t>(status)].fetch_add(1, std::memory_order_relaxed);
  const double seconds = std::chrono::duration<double>(took).count();
  const auto bucket = std::lower_bound(kBounds.begin(), kBounds.end(), seconds);
  if (bucket != kBounds.end()) r.buckets[static_cast<std::size_t>(bucket - kBounds.begin())].fetch_add(1, std::memory_order_relaxed);
  r.sum_ns.fetch_add(static_cast<std::uint64_t>(std::max<std::int64_t>(0, took.count())), std::memory_order_relaxed);
  r.count.fetch_add(1, std::memory_order_relaxed);
}

void RequestMetrics::for_each_count(const std::function<void(RouteId, int, std::uint64_t)>& visit) const {
  for (std::size_t route = 0; route < kRouteCount; ++route) {
    if (routes_[route].count.load(std::memory_order_relaxed) == 0) continue;
    for (int status = 0; status < kMaxStatus; ++status) {
      const std::uint64_t n = routes_[route].by_status[static_cast<std::size_t>(status)].load(std::memory_order_relaxed);
      if (n != 0) visit(static_cast<RouteId>(route), status, n);
    }
  }
}

void RequestMetrics::for_each_duration(
    const std::function<void(RouteId, const std::array<std::uint64_t, kBounds.size()>&, double, std::uint64_t)>& visit)
    const {
  for (std::size_t route = 0; route < kRouteCount; ++route) {
    const PerRoute& r = routes_[route];
    const std::uint64_t count = r.count.load(std::memory_order_relaxed);
    if (count == 0) continue;
    std::array<std::uint64_t, kBounds.size()> cumulative{};
    std::uint64_t running = 0;
    for (std::size_t i = 0; i < kBounds.size(); ++i) {
      running += r.buckets[i].load(std::memory_order_relaxed);
      cumulative[i] = std::min(running, count);  // read while others record: never above the count
    }
    visit(static_cast<RouteId>(route), cumulative, static_cast<double>(r.sum_ns.load(std::memory_order_relaxed)) / 1e9,
          count);
  }
}

RouteId Api::route_of(const Request& request) const {
  const auto question = request.target.find('?');
  const std::string path = request.target.substr(0, question);
  {
    detail::MutexLock lock(mutex_);
    if (extra_routes_.count({request.method, path}) != 0) return RouteId::extra;
  }
  const std::vector<std::string> parts = split_path(path);
  if (path == "/" || (parts.size() == 2 && parts[0] == "ui")) return RouteId::ui;
  if (parts.size() == 1) {
    if (parts[0] == "healthz") return RouteId::healthz;
    if (parts[0] == "readyz") return RouteId::readyz;
    if (parts[0] == "metrics") return RouteId::metrics;
    return RouteId::unknown;
  }
  if (parts.size() < 2 || parts[0] != "v1") return RouteId::unknown;
  if (parts.size() == 2) {
    if (parts[1] == "auth") return RouteId::auth;
    if (parts[1] == "workers") return RouteId::workers;
    if (parts[1] == "processes") return RouteId::processes;
    if (parts[1] == "stats") return RouteId::stats;
    if (parts[1] == "events") return RouteId::events;
    if (parts[1] == "jobs") return RouteId::jobs;
    if (parts[1] == "types") return RouteId::types;
    if (parts[1] == "schedules") return RouteId::schedules;
    return RouteId::unknown;
  }
  if (parts[1] == "schedules" && parts.size() == 3) return RouteId::schedule;
  if (parts[1] == "types" && parts.size() == 4 && parts[3] == "pause") return RouteId::type_pause;
  if (parts[1] == "types" && parts.size() == 4 && parts[3] == "resume") return RouteId::type_resume;
  if (parts[1] == "queues" && parts.size() == 4 && parts[3] == "pause") return RouteId::queue_pause;
  if (parts[1] == "queues" && parts.size() == 4 && parts[3] == "resume") return RouteId::queue_resume;
  if (parts[1] != "jobs") return RouteId::unknown;
  if (parts.size() == 3) return parts[2] == "batch" && request.method == "POST" ? RouteId::jobs_batch : RouteId::job;
  if (parts.size() == 4 && parts[3] == "cancel") return RouteId::job_cancel;
  if (parts.size() == 4 && parts[3] == "retry") return RouteId::job_retry;
  if (parts.size() == 4 && parts[3] == "tree") return RouteId::job_tree;
  return RouteId::unknown;
}

namespace {

std::string lowercase(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

Response unauthorized() {
  Response r = error_response(401, "unauthorized", "this route needs the header 'Authorization: Bearer <token>'");
  r.headers.emplace_back("WWW-Authenticate", "Bearer");
  return r;
}

}  // namespace

// A browser's request from the page this server served, or from an origin
// the configuration names.
bool Api::origin_allowed(const Request& request) const {
  std::string origin = lowercase(request.origin);
  if (!origin.empty() && origin.back() == '/') origin.pop_back();
  const std::string host = lowercase(request.host);
  if (!host.empty() && (origin == "http://" + host || origin == "https://" + host)) return true;
  return std::any_of(options_.allowed_origins.begin(), options_.allowed_origins.end(), [&](const std::string& allowed) {
    std::string a = lowercase(allowed);
    if (!a.empty() && a.back() == '/') a.pop_back();
    return a == origin;
  });
}

bool Api::authorized(const Request& request) const {
  if (options_.auth_token.empty()) return true;
  static constexpr std::string_view kBearer = "Bearer ";
  const std::string_view header = request.authorization;
  if (header.substr(0, kBearer.size()) != kBearer) return false;
  return constant_time_equal(header.substr(kBearer.size()), options_.auth_token);
}

Response Api::handle(const Request& request) {
  try {
    return dispatch(request);
  } catch (const BackendError& e) {
    switch (e.kind()) {
      case BackendError::Kind::unavailable: {
        Response r = error_response(503, "backend_unavailable", e.what());
        r.headers.emplace_back("Retry-After", "1");
        return r;
      }
      case BackendError::Kind::full: {
        Response r = error_response(503, "backend_full", e.what());
        r.headers.emplace_back("Retry-After", "5");
        return r;
      }
      case BackendError::Kind::other: break;
    }
    return error_response(500, "backend_error", e.what());
  }
}

Response Api::dispatch(const Request& request) {
  const auto question = request.target.find('?');
  const std::string path = request.target.substr(0, question);
  const auto query = parse_query(question == std::string::npos ? "" : std::string_view(request.target).substr(question + 1));
  {
    Route route;
    {
      detail::MutexLock lock(mutex_);
      auto it = extra_routes_.find({request.method, path});
      if (it != extra_routes_.end()) route = it->second;
    }
    if (route) return route(request);
  }
  const std::vector<std::string> parts = split_path(path);
  const bool get = request.method == "GET" || request.method == "HEAD";
  const bool post = request.method == "POST";
  // A page on another site cannot make a browser act here: its requests
  // carry its Origin (and a POST of JSON needs a CORS preflight this server
  // never grants).
  if (!request.origin.empty() && !origin_allowed(request)) {
    return error_response(403, "forbidden_origin",
                          "requests from the origin '" + request.origin +
                              "' are not accepted; only from this server's own pages and server.allowed_origins");
  }
  if ((post || request.method == "DELETE") && !authorized(request)) return unauthorized();
  // A POST with a body needs it to be JSON; one with neither body nor
  // media type (curl -X POST .../retry) needs none. A browser's cross-site
  // POST carries its Origin and was refused above; a form or a beacon says
  // text/plain or a form type, and is refused here.
  if (post && !(request.body.empty() && request.content_type.empty()) && !is_json(request.content_type)) {
    return error_response(415, "unsupported_media_type",
                          "a POST with a body needs the header 'Content-Type: application/json'");
  }

  if (parts.size() == 1 && (parts[0] == "healthz" || parts[0] == "readyz" || parts[0] == "metrics")) {
    if (!get) return method_not_allowed("GET");
    if (parts[0] == "metrics") {
      if (options_.auth_metrics && !authorized(request)) return unauthorized();
      Response r;
      r.content_type = "text/plain; version=0.0.4; charset=utf-8";
      r.body = render_metrics(runtime_.stats(), runtime_.health(), &server_counters_);
      return r;
    }
    if (parts[0] == "healthz") {
      const HealthReport h = runtime_.health();
      return json_response(h.verdict == Verdict::unhealthy ? 503 : 200,
                           {{"status", to_string(h.verdict)}, {"reasons", h.reasons}});
    }
    const RuntimeCounters s = runtime_.counters();
    if (draining()) return json_response(503, {{"ready", false}, {"reason", "draining: the server is shutting down"}});
    if (!s.backend_reachable) {
      return json_response(503, {{"ready", false},
                                 {"reason", s.backend_problem.empty() ? "the job queue's backend (redis) cannot be reached"
                                                                      : s.backend_problem}});
    }
    if (s.queue_depth >= s.queue_capacity) {
      return json_response(503, {{"ready", false}, {"reason", "the queue is full"}});
    }
    return json_response(200, {{"ready", true}});
  }
  if (path == "/" || (parts.size() == 2 && parts[0] == "ui")) {  // exactly: "//" is no route
    if (!get) return method_not_allowed("GET");
    return ui_file(parts.empty() ? "index.html" : parts[1]);
  }
  if (parts.size() < 2 || parts[0] != "v1") return error_response(404, "route_not_found", "no such route");
  // GET /v1/auth answers without the token: it is how a client learns it needs one.
  if (get && options_.auth_reads && !authorized(request) && parts[1] != "auth") return unauthorized();

  if (parts.size() == 2 && parts[1] == "workers") {
    if (!get) return method_not_allowed("GET");
    const HealthReport h = runtime_.health();
    const auto report = to_json(h);
    ordered_json body = {{"verdict", to_string(h.verdict)},
                         {"workers", report["workers"]},
                         {"processes", report["processes"]},
                         {"recovery", report["recovery"]}};
    // With a shared queue every process heartbeats its health: list them all.
    const std::vector<QueueProcess> queue = runtime_.processes();
    if (std::any_of(queue.begin(), queue.end(), [](const QueueProcess& p) { return p.health.is_object(); })) {
      body["cluster"] = process_list(queue, true);
    }
    return json_response(200, body);
  }
  if (parts.size() == 2 && parts[1] == "processes") {
    if (!get) return method_not_allowed("GET");
    return json_response(200, {{"processes", process_list(runtime_.processes(), false)}});
  }
  if (parts.size() == 2 && parts[1] == "stats") {
    if (!get) return method_not_allowed("GET");
    return stats();
  }
  if (parts.size() == 2 && parts[1] == "auth") {  // for clients (the dashboard) to ask before a 401
    if (!get) return method_not_allowed("GET");
    return json_response(200, {{"required", !options_.auth_token.empty()},
                               {"reads", !options_.auth_token.empty() && options_.auth_reads},
                               {"authorized", authorized(request)}});
  }
  if (parts.size() == 2 && parts[1] == "events") {
    if (request.method != "GET") return method_not_allowed("GET");
    return events(request, query);
  }
  if (parts.size() == 2 && parts[1] == "types") {
    if (!get) return method_not_allowed("GET");
    return types();
  }
  if (parts.size() == 2 && parts[1] == "schedules") {
    if (post) return add_schedule(request);
    if (get) return schedules();
    return method_not_allowed("GET, POST");
  }
  if (parts.size() == 3 && parts[1] == "schedules") {
    if (request.method != "DELETE") return method_not_allowed("DELETE");
    return remove_schedule(parts[2]);
  }
  if (parts.size() == 4 && parts[1] == "types" && (parts[3] == "pause" || parts[3] == "resume")) {
    if (!post) return method_not_allowed("POST");
    return pause_or_resume(parts[2], parts[3] == "pause");
  }
  if (parts.size() == 4 && parts[1] == "queues" && (parts[3] == "pause" || parts[3] == "resume")) {
    if (!post) return method_not_allowed("POST");
    return pause_or_resume_queue(parts[2], parts[3] == "pause");
  }
  if (parts[1] != "jobs") return error_response(404, "route_not_found", "no such route");
  if (parts.size() == 2) {
    if (post) return submit(request);
    if (get) return list(query);
    return method_not_allowed("GET, POST");
  }
  const std::string& id = parts[2];
  if (parts.size() == 3 && id == "batch" && post) return submit_batch(request);  // GET: the job "batch"
  if (parts.size() == 3) {
    if (!get) return method_not_allowed("GET");
    return get_job(id, query);
  }
  if (parts.size() == 4 && parts[3] == "tree") {
    if (!get) return method_not_allowed("GET");
    return tree(id, query);
  }
  if (parts.size() == 4 && (parts[3] == "cancel" || parts[3] == "retry")) {
    if (!post) return method_not_allowed("POST");
    if (parts[3] == "cancel") {
      switch (runtime_.cancel(id)) {
        case CancelResult::cancelled: return json_response(200, {{"id", id}, {"state", "cancelled"}});
        case CancelResult::stop_requested:
          return json_response(200, {{"id", id}, {"state", "running"}, {"stop_requested", true}});
        case CancelResult::not_found: return error_response(404, "job_not_found", "no job with this id is known");
        case CancelResult::already_terminal:
          return error_response(409, "job_finished", "the job has already finished and cannot be cancelled");
      }
    }
    switch (runtime_.requeue(id)) {
      case RequeueResult::requeued: return json_response(200, {{"id", id}, {"state", "queued"}});
      case RequeueResult::not_found: return error_response(404, "job_not_found", "no job with this id is known");
      case RequeueResult::not_failed:
        return error_response(409, "job_not_failed", "only a failed (dead-lettered) job can be retried");
      case RequeueResult::queue_full: return submit_error({SubmitError::Code::queue_full, "the queue is full"});
      case RequeueResult::shutting_down:
        return submit_error({SubmitError::Code::shutting_down, "the runtime is shutting down"});
    }
  }
  return error_response(404, "route_not_found", "no such route");
}

namespace {

// The request's JSON body into `out`; the 400 answer if it is not JSON or
// nests deeper than limits.json_depth.
std::optional<Response> parse_body(const Request& request, const InputLimits& limits, nlohmann::json& out) {
  try {
    out = parse_json(request.body, limits.json_depth);
  } catch (const JsonDepthError& e) {
    return error_response(400, "json_too_deep", std::string("the request body is ") + e.what());
  } catch (const InputError& e) {
    return error_response(400, "malformed_json", std::string("the request body is not valid JSON: ") + e.what());
  }
  return std::nullopt;
}

// The request's W3C trace context for a spec that names none. An invalid
// traceparent header is ignored, as W3C asks (the job starts no trace); a
// spec's own trace_parent field was checked strictly.
void inherit_trace(const Request& request, JobSpec& spec) {
  if (!spec.trace_parent.empty() || request.traceparent.empty()) return;
  if (TraceContext::parse(request.traceparent, request.tracestate)) {
    spec.trace_parent = request.traceparent;
    spec.trace_state = request.tracestate;
  } else if (TraceContext::parse(request.traceparent)) {
    spec.trace_parent = request.traceparent;  // a tracestate it cannot keep is dropped, the trace kept
  }
}

}  // namespace

Response Api::submit(const Request& request) {
  const InputLimits& limits = runtime_.limits();
  nlohmann::json body;
  if (auto bad = parse_body(request, limits, body)) return *bad;
  JobSpec spec;
  try {
    spec = JobSpec::from_json(body, limits.id_length);
  } catch (const SpecError& e) {
    return error_response(422, "invalid_field", e.what());
  }
  inherit_trace(request, spec);
  Submitted s = runtime_.submit(std::move(spec));
  if (!s) return submit_error(*s.error);
  // A unique job already in its window: 200 with that job, nothing made.
  Response r = s.duplicate ? json_response(200, {{"id", s.id}, {"state", to_string(s.state)}, {"duplicate", true}})
                           : json_response(201, {{"id", s.id}, {"state", to_string(s.state)}});
  r.headers.emplace_back("Location", "/v1/jobs/" + percent_encode(s.id));
  return r;
}

// The dashboard's files: / is ui/index.html. A Content-Security-Policy lets
// the page load only its own files and talk only to this server, so even a
// job's string that slipped into the page as markup could run nothing.
Response Api::ui_file(const std::string& name) {
  for (const UiAsset& asset : ui_assets()) {
    if (asset.name != name) continue;
    Response r;
    r.content_type = std::string(asset.content_type);
    r.body = std::string(asset.bytes);
    r.headers.emplace_back("Cache-Control", "no-cache");
    r.headers.emplace_back("X-Content-Type-Options", "nosniff");
    r.headers.emplace_back("Content-Security-Policy",
                           "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'");
    r.headers.emplace_back("Referrer-Policy", "no-referrer");
    return r;
  }
  return error_response(404, "route_not_found", "no such file of the dashboard");
}

Response Api::submit_batch(const Request& request) {
  const InputLimits& limits = runtime_.limits();
  nlohmann::json body;
  if (auto bad = parse_body(request, limits, body)) return *bad;
  const nlohmann::json* jobs = body.is_object() && body.contains("jobs") ? &body["jobs"] : nullptr;
  if (jobs == nullptr || !jobs->is_array() || jobs->empty()) {
    return error_response(422, "invalid_field", "jobs: expected a non-empty array of job specs");
  }
  if (body.size() != 1) return error_response(422, "invalid_field", "unknown field: expected only 'jobs'");
  if (jobs->size() > options_.max_batch) {
    return error_response(422, "too_many_jobs", "jobs: at most " + std::to_string(options_.max_batch) +
                                                    " in one request (server.max_batch), got " +
                                                    std::to_string(jobs->size()));
  }
  // Specs that parse go to the runtime together; the others answer here.
  std::vector<ordered_json> results(jobs->size());
  std::vector<JobSpec> specs;
  std::vector<std::size_t> at;
  for (std::size_t i = 0; i < jobs->size(); ++i) {
    try {
      specs.push_back(JobSpec::from_json((*jobs)[i], limits.id_length));
      inherit_trace(request, specs.back());
      at.push_back(i);
    } catch (const SpecError& e) {
      results[i] = {{"status", 422}, {"error", {{"code", "invalid_field"}, {"message", e.what()}}}};
    }
  }
  std::vector<Submitted> submitted = runtime_.submit_many(std::move(specs));
  for (std::size_t k = 0; k < submitted.size(); ++k) {
    const Submitted& s = submitted[k];
    if (s && s.duplicate) {
      results[at[k]] = {{"status", 200}, {"id", s.id}, {"state", to_string(s.state)}, {"duplicate", true}};
    } else if (s) {
      results[at[k]] = {{"status", 201}, {"id", s.id}, {"state", to_string(s.state)}};
    } else {
      const Response e = submit_error(*s.error);
      results[at[k]] = {{"status", e.status}, {"error", ordered_json::parse(e.body)["error"]}};
    }
  }
  std::size_t accepted = 0, duplicates = 0;
  for (const ordered_json& r : results) {
    accepted += r["status"] == 201 ? 1 : 0;
    duplicates += r["status"] == 200 ? 1 : 0;
  }
  return json_response(200, {{"accepted", accepted},
                             {"duplicates", duplicates},
                             {"rejected", results.size() - accepted - duplicates},
                             {"results", results}});
}

Response Api::get_job(const std::string& id, const std::map<std::string, std::string>& query) {
  std::chrono::milliseconds wait{0};
  for (const auto& [key, value] : query) {
    if (key != "wait_ms") return error_response(400, "invalid_parameter", "unknown query parameter (expected wait_ms)");
    auto n = parse_uint(value);
    if (!n) return error_response(400, "invalid_parameter", "wait_ms: expected a whole number of milliseconds");
    wait = std::min<std::chrono::milliseconds>(std::chrono::milliseconds(std::min<std::uint64_t>(*n, 1ULL << 40)),
                                               options_.max_wait);
  }
  if (wait.count() > 0) {
    if (auto answer = job_answer(id, false)) return *answer;
    Response r;
    r.wait = JobWait{id, std::chrono::steady_clock::now() + wait};
    return r;
  }
  return *job_answer(id, true);
}

// A flow's job and one page of its children, in order; a client walks the
// tree by asking again for each child that has children of its own.
Response Api::tree(const std::string& id, const std::map<std::string, std::string>& query) {
  std::size_t offset = 0;
  std::size_t limit = 100;
  for (const auto& [key, value] : query) {
    const auto n = parse_uint(value);
    if (key == "cursor") {
      if (!n) return error_response(400, "invalid_cursor", "cursor: expected a next_cursor from an earlier page");
      offset = static_cast<std::size_t>(std::min<std::uint64_t>(*n, 1ULL << 40));
    } else if (key == "limit") {
      if (!n || *n < 1 || *n > 1000) return error_response(400, "invalid_parameter", "limit: expected 1 to 1000");
      limit = static_cast<std::size_t>(*n);
    } else {
      return error_response(400, "invalid_parameter", "unknown query parameter (expected cursor, limit)");
    }
  }
  const auto record = runtime_.get(id);
  const auto page = record ? runtime_.children(id, offset, limit) : std::nullopt;
  if (!record || !page) return error_response(404, "job_not_found", "no job with this id is known");
  ordered_json children = ordered_json::array();
  for (const JobRecord& child : page->children) children.push_back(to_json(child, true, true));
  const std::size_t next = offset + limit;
  return json_response(200, {{"job", to_json(*record, true, true)},
                             {"children", std::move(children)},
                             {"total", page->total},
                             {"next_cursor", next < page->total ? ordered_json(std::to_string(next)) : ordered_json()}});
}

std::optional<Response> Api::job_answer(const JobId& id, bool final) {
  auto record = runtime_.get(id);
  if (!record) return error_response(404, "job_not_found", "no job with this id is known");
  if (!final && !is_terminal(record->state)) return std::nullopt;
  ordered_json body = to_json(*record, true, true);
  body["payload"] = record->payload;
  return json_response(200, body);
}

Response Api::events(const Request& request, const std::map<std::string, std::string>& query) {
  EventStream stream;
  for (const auto& [key, value] : query) {
    if (key == "type") {
      stream.type = value;
    } else if (key == "state") {
      if (value.empty()) continue;
      stream.state = parse_job_state(value);
      if (!stream.state) return error_response(400, "invalid_parameter", "state: not a job state");
    } else {
      return error_response(400, "invalid_parameter", "unknown query parameter (expected type, state)");
    }
  }
  if (!request.last_event_id.empty()) {
    auto n = parse_uint(request.last_event_id);
    if (!n) return error_response(400, "invalid_header", "Last-Event-ID: expected an event number");
    stream.after = *n;
    stream.resumed = true;
  }
  Response r;
  r.content_type = "text/event-stream";
  r.events = stream;
  return r;
}

namespace {

void append_event(std::string& out, std::uint64_t id, const char* name, const ordered_json& data) {
  out.append("id: ").append(std::to_string(id)).append("\nevent: ").append(name).append("\ndata: ");
  out.append(data.dump()).append("\n\n");
}

}  // namespace

StreamChunk Api::events_chunk(const EventStream& stream, std::uint64_t after, bool first) {
  constexpr std::size_t kMax = 500;
  StreamChunk chunk;
  if (first && !stream.resumed) {
    // A new stream starts with what happens from now on.
    const EventPage now = runtime_.events_after(0, 0);  // no events: just the newest number
    chunk.next_after = now.newest;
    chunk.text = "retry: 1000\n\n";
    return chunk;
  }
  const EventPage page = runtime_.events_after(after, kMax);
  chunk.next_after = after;
  if (first) chunk.text = "retry: 1000\n\n";
  if (page.oldest > after + 1) {
    const ordered_json gap = {{"after", after}, {"oldest", page.oldest}};
    if (!first) {  // a client that fell behind while connected
      chunk.fell_behind = true;
      append_event(chunk.text, page.oldest - 1, "dropped", gap);
      return chunk;
    }
    append_event(chunk.text, page.oldest - 1, "gap", gap);  // resumed from beyond the buffer
  }
  for (const Event& e : page.events) {
    chunk.next_after = e.id;
    if (!stream.type.empty() && !e.type.empty() && e.type != stream.type) continue;  // job events always have one
    if (stream.state && !e.supervisor && e.state != stream.state) continue;
    append_event(chunk.text, e.id, e.supervisor ? "supervisor" : "job", to_json(e));
  }
  chunk.more = page.events.size() == kMax;
  return chunk;
}

Response Api::list(const std::map<std::string, std::string>& query) {
  ListQuery q;
  q.limit = 50;
  for (const auto& [key, value] : query) {
    if (key == "state") {
      if (value.empty()) continue;
      q.state = parse_job_state(value);
      if (!q.state) return error_response(400, "invalid_parameter", "state: not a job state");
    } else if (key == "type") {
      q.type = value;
    } else if (key == "queue") {
      q.queue = value;
    } else if (key == "limit") {
      auto n = parse_uint(value);
      if (!n || *n < 1 || *n > 1000) return error_response(400, "invalid_parameter", "limit: expected 1 to 1000");
      q.limit = *n;
    } else if (key == "cursor") {
      q.cursor = value;
    } else {
      return error_response(400, "invalid_parameter", "unknown query parameter (expected state, type, queue, limit, cursor)");
    }
  }
  std::optional<JobPage> page = runtime_.page(q);
  if (!page) return error_response(400, "invalid_parameter", "cursor: not a cursor from a previous page");
  ordered_json jobs = ordered_json::array();
  for (const JobRecord& r : page->jobs) jobs.push_back(to_json(r, true, true));
  return json_response(200, {{"jobs", std::move(jobs)},
                             {"next_cursor", page->next_cursor.empty() ? ordered_json() : ordered_json(page->next_cursor)}});
}

void Api::sample() {
  const RuntimeCounters s = runtime_.counters();
  detail::MutexLock lock(mutex_);
  const auto now = std::chrono::steady_clock::now();
  samples_.push_back({now, s.submitted, s.succeeded, s.failed});
  while (samples_.size() > 2 && now - samples_.front().at > std::chrono::seconds(60)) samples_.pop_front();
}

namespace {

// The q-quantile of a histogram in ms, linear within its bucket; null when
// empty (the last bucket, past the last bound, counts as its lower bound).
ordered_json quantile_ms(const HistogramSnapshot& h, double q) {
  if (h.count == 0) return nullptr;
  const double rank = q * static_cast<double>(h.count);
  double seen = 0;
  for (std::size_t i = 0; i < h.counts.size(); ++i) {
    const double n = static_cast<double>(h.counts[i]);
    if (n > 0 && seen + n >= rank) {
      const double lo = i == 0 ? 0.0 : h.bounds[i - 1];
      if (i >= h.bounds.size()) return lo * 1000.0;
      return (lo + (h.bounds[i] - lo) * ((rank - seen) / n)) * 1000.0;
    }
    seen += n;
  }
  return h.bounds.back() * 1000.0;
}

}  // namespace

Response Api::stats() {
  const RuntimeStats s = runtime_.stats();
  ordered_json rates = {{"submitted", 0.0}, {"succeeded", 0.0}, {"failed", 0.0}, {"window_s", 0.0}};
  {
    detail::MutexLock lock(mutex_);
    if (!samples_.empty()) {
      const Sample& first = samples_.front();
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - first.at).count();
      if (secs > 0) {
        rates = {{"submitted", static_cast<double>(s.submitted - first.submitted) / secs},
                 {"succeeded", static_cast<double>(s.succeeded - first.succeeded) / secs},
                 {"failed", static_cast<double>(s.failed - first.failed) / secs},
                 {"window_s", secs}};
      }
    }
  }
  ordered_json by_type = ordered_json::object();
  for (const auto& [type, t] : s.by_type) {
    by_type[type] = {{"submitted", t.submitted}, {"started", t.started},   {"succeeded", t.succeeded},
                     {"retried", t.retried},     {"failed", t.failed},     {"recovered", t.recovered},
                     {"breaker", to_string(t.breaker)}};
  }
  ordered_json body = {{"by_state", s.by_state},
            {"by_type", std::move(by_type)},
            {"totals", {{"submitted", s.submitted}, {"rejected", s.rejected}, {"succeeded", s.succeeded},
                        {"failed", s.failed}, {"cancelled", s.cancelled}, {"retried", s.retried},
                        {"attempts_failed", s.attempts_failed}}},
            {"queue", {{"depth", s.queue_depth}, {"capacity", s.queue_capacity}, {"ready_by_priority", s.ready_by_priority}}},
            {"rates_per_second", std::move(rates)},
            {"workers", {{"alive", s.workers}, {"running", s.running}, {"abandoned", s.abandoned}}},
            {"latency_ms", {{"run_time", {{"p50", quantile_ms(s.run_time, 0.50)}, {"p99", quantile_ms(s.run_time, 0.99)}}},
                            {"queue_wait", {{"p50", quantile_ms(s.queue_wait, 0.50)},
                                            {"p99", quantile_ms(s.queue_wait, 0.99)}}}}},
            {"supervisor", {{"soft_timeouts", s.soft_timeouts}, {"hard_timeouts", s.hard_timeouts},
                            {"stuck_reports", s.stuck_reports}, {"replacements", s.replacements},
                            {"breaker_opened", s.breaker_opened}, {"breaker_deferred", s.breaker_deferred}}}};
  ordered_json queues = ordered_json::object();
  for (const QueueStats& q : s.queues) {
    queues[q.name] = {{"ready", q.ready},   {"waiting", q.waiting},
                      {"weight", q.weight}, {"capacity", q.capacity == 0 ? ordered_json() : ordered_json(q.capacity)},
                      {"consumers", q.consumers}, {"paused", q.paused},
                      {"jobs", {{"submitted", q.jobs.submitted}, {"succeeded", q.jobs.succeeded},
                                {"failed", q.jobs.failed}, {"cancelled", q.jobs.cancelled}}}};
  }
  body["queues"] = std::move(queues);
  if (!s.backend_problem.empty()) body["backend_problem"] = s.backend_problem;
  return json_response(200, body);
}

namespace {

ordered_json type_json(const TypeControl& t) {
  ordered_json limits = {{"concurrency", t.concurrency ? ordered_json(*t.concurrency) : ordered_json()},
                         {"rate", t.rate ? ordered_json{{"per_second", t.rate->per_second}, {"burst", t.rate->burst}}
                                         : ordered_json()}};
  ordered_json j = {
      {"type", t.name},
      {"paused", t.stats.paused},
      {"options", {{"max_attempts", t.max_attempts},
                   {"timeout_ms", t.timeout.count()},
                   {"hard_timeout_ms", t.hard_timeout.count()},
                   {"isolation", t.isolation == Isolation::process ? "process" : "thread"}}},
      {"limits", std::move(limits)},
      {"running", t.running},
      {"held", t.stats.held},
      {"tokens", t.tokens ? ordered_json(*t.tokens) : ordered_json()},
      {"waits", {{"rate", t.stats.rate_waits}, {"held", t.stats.limit_waits}}},
      {"counts", {{"submitted", t.stats.submitted}, {"started", t.stats.started}, {"succeeded", t.stats.succeeded},
                  {"retried", t.stats.retried}, {"failed", t.stats.failed}}},
      {"breaker", to_string(t.stats.breaker)}};
  return j;
}

}  // namespace

namespace {

ordered_json schedule_json(const ScheduleStatus& s) {
  const auto time = [](const std::optional<WallClock::time_point>& t) {
    return t ? ordered_json(format_iso8601(*t)) : ordered_json();
  };
  return {{"name", s.name},
          {"cron", s.options.cron},
          {"time_zone", s.options.time_zone},
          {"job", s.options.job},
          {"missed", s.options.missed == MissedRuns::run_once ? "run_once" : "skip"},
          {"exclusive", s.options.exclusive},
          {"source", s.from_config ? "config" : "api"},
          {"next_run", time(s.next_run)},
          {"last_run", time(s.last_run)},
          {"last_job", s.last_job.empty() ? ordered_json() : ordered_json(s.last_job)}};
}

}  // namespace

Response Api::schedules() {
  ordered_json list = ordered_json::array();
  for (const ScheduleStatus& s : runtime_.schedules()) list.push_back(schedule_json(s));
  return json_response(200, {{"schedules", std::move(list)}});
}

Response Api::add_schedule(const Request& request) {
  nlohmann::json body;
  if (auto bad = parse_body(request, runtime_.limits(), body)) return *bad;
  ScheduleOptions options;
  std::string name;
  try {
    if (!body.is_object() || !body.contains("name") || !body["name"].is_string()) {
      throw ConfigError("name: required, a string");
    }
    name = body["name"].get<std::string>();
    options = detail::schedule_from_json(body);
  } catch (const ConfigError& e) {
    return error_response(422, "invalid_field", e.what());
  }
  std::string problem;
  switch (runtime_.add_schedule(name, options, &problem)) {
    case ScheduleResult::invalid: return error_response(422, "invalid_field", problem);
    case ScheduleResult::from_config:
      return error_response(409, "schedule_from_config",
                            "the schedule '" + name + "' comes from the configuration; change it there");
    case ScheduleResult::unavailable:
      return error_response(503, "backend_unavailable", "the job queue's backend (redis) cannot be reached; nothing changed");
    case ScheduleResult::added:
    case ScheduleResult::replaced:
    case ScheduleResult::removed:
    case ScheduleResult::not_found: break;
  }
  for (const ScheduleStatus& s : runtime_.schedules()) {
    if (s.name == name) {
      Response r = json_response(201, schedule_json(s));
      r.headers.emplace_back("Location", "/v1/schedules/" + percent_encode(name));
      return r;
    }
  }
  return json_response(201, {{"name", name}});
}

Response Api::remove_schedule(const std::string& name) {
  switch (runtime_.remove_schedule(name)) {
    case ScheduleResult::not_found: return error_response(404, "schedule_not_found", "no schedule '" + name + "' was added");
    case ScheduleResult::from_config:
      return error_response(409, "schedule_from_config",
                            "the schedule '" + name + "' comes from the configuration; remove it there");
    case ScheduleResult::unavailable:
      return error_response(503, "backend_unavailable", "the job queue's backend (redis) cannot be reached; nothing changed");
    default: break;
  }
  return json_response(200, {{"name", name}, {"removed", true}});
}

Response Api::types() {
  ordered_json list = ordered_json::array();
  for (const TypeControl& t : runtime_.types()) list.push_back(type_json(t));
  return json_response(200, {{"types", std::move(list)}});
}

namespace {

// The answer to a pause or resume of a type or a queue (`field`, `name`);
// `not_found` is what a PauseResult::not_found answers.
Response pause_answer(PauseResult r, const char* field, const std::string& name, bool pause, Response not_found) {
  switch (r) {
    case PauseResult::not_found: return not_found;
    case PauseResult::unavailable:
      return error_response(503, "backend_unavailable", "the job queue's backend (redis) cannot be reached; nothing changed");
    case PauseResult::changed:
    case PauseResult::unchanged: break;
  }
  return json_response(200, {{field, name}, {"paused", pause}, {"changed", r == PauseResult::changed}});
}

}  // namespace

Response Api::pause_or_resume(const std::string& type, bool pause) {
  return pause_answer(pause ? runtime_.pause(type) : runtime_.resume(type), "type", type, pause,
                      error_response(404, "type_not_found", "no job type '" + type + "' is registered"));
}

Response Api::pause_or_resume_queue(const std::string& queue, bool pause) {
  const std::string problem = queue_problem(queue);
  return pause_answer(pause ? runtime_.pause_queue(queue) : runtime_.resume_queue(queue), "queue", queue, pause,
                      error_response(404, "queue_not_found", problem.empty() ? "this process runs no queue '" + queue + "'" : problem));
}

}  // namespace bulwark::http
