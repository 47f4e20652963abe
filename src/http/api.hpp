// The HTTP/JSON API as plain functions of a request: routing, validation,
// status codes and bodies (README, "bulwark serve and the HTTP API"). Free of any
// network code, so the server (Beast) stays in one file and the API can be
// tested without sockets.
//
// Thread-safe: handle() may run on several I/O threads at once.
#pragma once

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

// Connection-level events of the server, for /metrics. Lock-free.
struct ServerCounters {
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

  // Answers one request. May throw: the server's recover middleware turns
  // that into a 500.
  Response handle(const Request& request);

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
  Response submit(const Request& request);
  Response submit_batch(const Request& request);
  Response ui_file(const std::string& name);
  Response get_job(const std::string& id, const std::map<std::string, std::string>& query);
  Response events(const Request& request, const std::map<std::string, std::string>& query);
  Response list(const std::map<std::string, std::string>& query);
  Response stats();
  bool authorized(const Request& request) const;

  Runtime& runtime_;
  const ServerOptions options_;
  std::atomic<bool> draining_{false};
  ServerCounters server_counters_;

  detail::Mutex mutex_;
  std::map<std::pair<std::string, std::string>, Route> extra_routes_ BULWARK_GUARDED_BY(mutex_);
  struct Sample {
    std::chrono::steady_clock::time_point at;
    std::uint64_t submitted, succeeded, failed;
  };
  std::deque<Sample> samples_ BULWARK_GUARDED_BY(mutex_);  // the last minute
};

}  // namespace bulwark::http
