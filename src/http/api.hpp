// The HTTP/JSON API as plain functions of a request: routing, validation,
// status codes and bodies (README, "bulwark serve and the HTTP API"). Free of any
// network code, so the server (Beast) stays in one file and the API can be
// tested without sockets.
//
// Thread-safe: handle() may run on several I/O threads at once.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "bulwark/config.hpp"
#include "bulwark/detail/thread_annotations.hpp"
#include "bulwark/runtime.hpp"

namespace bulwark::http {

struct Request {
  std::string method{};  // "GET", "POST", ...
  std::string target{};  // path and query, as sent
  std::string content_type{};
  std::string authorization{};
  std::string body{};
  std::string last_event_id{};  // the Last-Event-ID header (an event stream resuming)
  std::string origin{};  // the Origin header (browsers), empty without
  std::string host{};    // the Host header
  std::string traceparent{};  // W3C trace context headers
  std::string tracestate{};
};

// GET /v1/events: which events a stream sends, and after which number.
struct EventStream {
  std::string type;                // empty: every type
  std::optional<JobState> state;   // job events in this state only (supervisor events pass)
  std::uint64_t after = 0;         // Last-Event-ID; 0: from the next event on
  bool resumed = false;            // after came from the client
};

// GET /v1/jobs/{id}?wait_ms=N: the answer waits for the job's end.
struct JobWait {
  JobId id;
  std::chrono::steady_clock::time_point deadline;
};

// An answer. Most are whole (status, body); an event stream or a wait for a
// job's end is carried on by the server (events or wait set), which asks
// the Api for the stream's text and the job's answer as it goes.
struct Response {
  int status = 200;
  std::string body{};
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers{};
  std::optional<EventStream> events{};
  std::optional<JobWait> wait{};
};

// The text/event-stream text of one read of the event buffer.
struct StreamChunk {
  std::string text;
  std::uint64_t next_after = 0;  // ask after this number next time
  bool more = false;             // the read was full: read again at once
  bool fell_behind = false;      // events this stream had not sent are gone: drop the client
};

// {"error": {"code": code, "message": message}}
Response error_response(int status, const std::string& code, const std::string& message);

// The API's routes as templates: the `route` label of the HTTP metrics
// (bounded values, never raw paths). `extra`: a route an embedding program
// added; `unknown`: no route (404).
enum class RouteId : std::uint8_t {
  healthz, readyz, metrics, ui, auth, workers, processes, stats, events,
  jobs, jobs_batch, job, job_cancel, job_retry, job_tree, types, type_pause, type_resume, queue_pause, queue_resume, schedules,
  schedule, extra, unknown
};
inline constexpr std::size_t kRouteCount = static_cast<std::size_t>(RouteId::unknown) + 1;
// "/v1/jobs/{id}", "/healthz", ...
std::string_view route_template(RouteId route) noexcept;

// Requests answered, by route and status code, and how long each answer
// took to make (a wait: until the job's answer; an event stream: until it
// starts). Lock-free; record() may run on every I/O thread at once.
class RequestMetrics {
 public:
  static constexpr std::array<double, 12> kBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                     0.05,   0.1,   0.25,   0.5,   1,    5};  // seconds
  void record(RouteId route, int status, std::chrono::nanoseconds took) noexcept;
  // For each route and status with at least one request.
  void for_each_count(const std::function<void(RouteId, int status, std::uint64_t)>& visit) const;
  // For each route with at least one request: cumulative bucket counts, sum (s), count.
  void for_each_duration(const std::function<void(RouteId, const std::array<std::uint64_t, kBounds.size()>&, double,
                                                  std::uint64_t)>& visit) const;

 private:
  static constexpr int kMaxStatus = 600;
  struct PerRoute {
    std::array<std::atomic<std::uint64_t>, kMaxStatus> by_status{};
    std::array<std::atomic<std::uint64_t>, kBounds.size()> buckets{};  // not cumulative
    std::atomic<std::uint64_t> count{0};
    std::atomic<std::uint64_t> sum_ns{0};
  };
  std::array<PerRoute, kRouteCount> routes_{};
};

// Connection-level events of the server, for /metrics. Lock-free.
struct ServerCounters {
  RequestMetrics requests;
  std::atomic<std::uint64_t> refused_max_connections{0};  // 503 at server.max_connections
  std::atomic<std::uint64_t> refused_no_descriptors{0};   // 503 through the reserve descriptor (EMFILE/ENFILE)
  std::atomic<std::uint64_t> accept_errors{0};             // accept() failures, EMFILE included
};

// Prometheus text exposition of the runtime's (and the server's) state.
std::string render_metrics(const RuntimeStats& stats, const HealthReport& health,
                           const ServerCounters* server = nullptr);

class Api {
 public:
  using Route = std::function<Response(const Request&)>;

  Api(Runtime& runtime, ServerOptions options) : runtime_(runtime), options_(std::move(options)) {}

  // Answers one request. A BackendError (Redis away, full, or answering an
  // error) is answered here: 503 backend_unavailable or backend_full with
  // Retry-After, or 500 with Redis's message. Anything else may throw: the
  // server's recover middleware turns that into a 500.
  Response handle(const Request& request);
  // The route `request` goes to, for metrics.
  RouteId route_of(const Request& request) const;

  // While draining, /readyz answers 503.
  void set_draining(bool draining) noexcept { draining_.store(draining); }
  bool draining() const noexcept { return draining_.load(); }

  // Adds a route before the built-in ones (exact path). For tests and for
  // embedding programs that extend the API.
  void add_route(std::string method, std::string path, Route route);

  // Records counters for /v1/stats rates; the server calls it every second.
  void sample();

  ServerCounters& server_counters() noexcept { return server_counters_; }

  // The next chunk of an event stream (the first call also names where it
  // starts); `first`: this is the stream's first read.
  StreamChunk events_chunk(const EventStream& stream, std::uint64_t after, bool first);
  // The answer to a wait for a job: its record when it has ended or
  // `final` (the wait is over), else nullopt (wait on).
  std::optional<Response> job_answer(const JobId& id, bool final);

 private:
  Response dispatch(const Request& request);
  Response submit(const Request& request);
  Response submit_batch(const Request& request);
  Response ui_file(const std::string& name);
  Response tree(const std::string& id, const std::map<std::string, std::string>& query);
  Response get_job(const std::string& id, const std::map<std::string, std::string>& query);
  Response events(const Request& request, const std::map<std::string, std::string>& query);
  Response list(const std::map<std::string, std::string>& query);
  Response stats();
  Response types();
  Response schedules();
  Response add_schedule(const Request& request);
  Response remove_schedule(const std::string& name);
  Response pause_or_resume(const std::string& type, bool pause);
  Response pause_or_resume_queue(const std::string& queue, bool pause);
  bool authorized(const Request& request) const;
  bool origin_allowed(const Request& request) const;

  Runtime& runtime_;
  const ServerOptions options_;
  std::atomic<bool> draining_{false};
  ServerCounters server_counters_;

  mutable detail::Mutex mutex_;
  std::map<std::pair<std::string, std::string>, Route> extra_routes_ BULWARK_GUARDED_BY(mutex_);
  struct Sample {
    std::chrono::steady_clock::time_point at;
    std::uint64_t submitted, succeeded, failed;
  };
  std::deque<Sample> samples_ BULWARK_GUARDED_BY(mutex_);  // the last minute
};

}  // namespace bulwark::http
