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
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "bulwark/config.hpp"
#include "bulwark/detail/thread_annotations.hpp"
#include "bulwark/runtime.hpp"

namespace bulwark::http {

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query, as sent
  std::string content_type;
  std::string authorization;
  std::string body;
};

struct Response {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
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

 private:
  Response submit(const Request& request);
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
