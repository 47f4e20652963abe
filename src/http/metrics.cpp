// Prometheus text exposition format, version 0.0.4.
#include <sys/resource.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "bulwark/version.hpp"
#include "http/api.hpp"

namespace bulwark::http {
namespace {

std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

class Writer {
 public:
  void family(const std::string& name, const char* type, const char* help) {
    out_ << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
  }
  void sample(const std::string& name, const std::vector<std::pair<std::string, std::string>>& labels, double v) {
    out_ << name;
    if (!labels.empty()) {
      out_ << '{';
      for (std::size_t i = 0; i < labels.size(); ++i) {
        out_ << (i ? "," : "") << labels[i].first << "=\"" << escape_label(labels[i].second) << '"';
      }
      out_ << '}';
    }
    out_ << ' ' << number(v) << '\n';
  }
  void histogram(const std::string& name, const char* help, const HistogramSnapshot& h) {
    family(name, "histogram", help);
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < h.bounds.size(); ++i) {
      cumulative += h.counts[i];
      sample(name + "_bucket", {{"le", number(h.bounds[i])}}, static_cast<double>(cumulative));
    }
    sample(name + "_bucket", {{"le", "+Inf"}}, static_cast<double>(h.count));
    sample(name + "_sum", {}, h.sum);
    sample(name + "_count", {}, static_cast<double>(h.count));
  }
  std::string str() const { return out_.str(); }

 private:
  std::ostringstream out_;
};

// The standard process metrics of Prometheus client libraries
// (process_resident_memory_bytes, ...), from /proc/self. What cannot be read
// is left out.
void process_metrics(Writer& w) {
  const long page = ::sysconf(_SC_PAGESIZE);
  const long ticks = ::sysconf(_SC_CLK_TCK);
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  const auto paren = stat.rfind(')');
  if (paren != std::string::npos && ticks > 0) {
    // Fields after the command: state(3) ... utime(14) stime(15) ... starttime(22) vsize(23) rss(24).
    std::istringstream in(stat.substr(paren + 2));
    std::vector<std::string> f((std::istream_iterator<std::string>(in)), std::istream_iterator<std::string>());
    if (f.size() > 21) {
      const double cpu = (std::stod(f[11]) + std::stod(f[12])) / static_cast<double>(ticks);
      double boot = 0;  // seconds since the epoch at boot, from /proc/stat's btime
      std::ifstream proc_stat("/proc/stat");
      for (std::string key; proc_stat >> key;) {
        if (key == "btime") {
          proc_stat >> boot;
          break;
        }
      }
      w.family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
      w.sample("process_cpu_seconds_total", {}, cpu);
      w.family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
      w.sample("process_start_time_seconds", {}, boot + std::stod(f[19]) / static_cast<double>(ticks));
      w.family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
      w.sample("process_virtual_memory_bytes", {}, std::stod(f[20]));
      w.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
      w.sample("process_resident_memory_bytes", {}, std::stod(f[21]) * static_cast<double>(page));
    }
  }
  std::error_code ec;
  std::size_t fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++fds;
  }
  if (!ec) {
    w.family("process_open_fds", "gauge", "Number of open file descriptors.");
    w.sample("process_open_fds", {}, static_cast<double>(fds));
  }
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    w.family("process_max_fds", "gauge", "Maximum number of open file descriptors.");
    w.sample("process_max_fds", {}, lim.rlim_cur == RLIM_INFINITY ? 1e18 : static_cast<double>(lim.rlim_cur));
  }
}

}  // namespace

std::string render_metrics(const RuntimeStats& s, const HealthReport& health, const ServerCounters* server) {
  Writer w;
  const auto per_type = [&](const char* name, const char* help, auto field) {
    w.family(name, "counter", help);
    for (const auto& [type, t] : s.by_type) w.sample(name, {{"type", type}}, static_cast<double>(field(t)));
  };
  per_type("bulwark_jobs_submitted_total", "Jobs accepted.", [](const TypeStats& t) { return t.submitted; });
  per_type("bulwark_jobs_started_total", "Attempts started.", [](const TypeStats& t) { return t.started; });
  per_type("bulwark_jobs_succeeded_total", "Jobs that succeeded.", [](const TypeStats& t) { return t.succeeded; });
  per_type("bulwark_jobs_retried_total", "Attempts scheduled again after a failure.",
           [](const TypeStats& t) { return t.retried; });
  const auto per_kind = [&](const char* name, const char* help, auto field) {
    w.family(name, "counter", help);
    for (const auto& [type, t] : s.by_type) {
      for (const auto& [kind, n] : field(t)) w.sample(name, {{"type", type}, {"kind", kind}}, static_cast<double>(n));
    }
  };
  per_kind("bulwark_jobs_failed_total", "Jobs that used all their attempts (dead-lettered), by failure kind.",
           [](const TypeStats& t) { return t.failed; });
  per_kind("bulwark_recoveries_total", "Failures caught by the guarded frame (every failed attempt).",
           [](const TypeStats& t) { return t.recovered; });
  w.family("bulwark_jobs_rejected_total", "counter", "Submits refused, by reason.");
  for (const auto& [code, n] : s.rejected_by_code) w.sample("bulwark_jobs_rejected_total", {{"reason", code}}, n);

  w.family("bulwark_queue_depth", "gauge", "Jobs ready to run, by priority.");
  for (std::size_t p = 0; p < s.ready_by_priority.size(); ++p) {
    w.sample("bulwark_queue_depth", {{"priority", std::to_string(p)}}, static_cast<double>(s.ready_by_priority[p]));
  }
  w.family("bulwark_queue_waiting", "gauge", "Jobs waiting in all: ready and scheduled.");
  w.sample("bulwark_queue_waiting", {}, static_cast<double>(s.queue_depth));
  w.family("bulwark_queue_capacity", "gauge", "queue.capacity.");
  w.sample("bulwark_queue_capacity", {}, static_cast<double>(s.queue_capacity));
  w.family("bulwark_named_queue_ready", "gauge", "Jobs ready to run, by named queue.");
  for (const QueueStats& q : s.queues) w.sample("bulwark_named_queue_ready", {{"queue", q.name}}, static_cast<double>(q.ready));
  w.family("bulwark_named_queue_waiting", "gauge", "Jobs waiting (ready and scheduled), by named queue.");
  for (const QueueStats& q : s.queues) w.sample("bulwark_named_queue_waiting", {{"queue", q.name}}, static_cast<double>(q.waiting));
  w.family("bulwark_named_queue_jobs_total", "counter",
           "Jobs of each named queue this process accepted (submitted) and ended (succeeded, failed, cancelled).");
  for (const QueueStats& q : s.queues) {
    const std::pair<const char*, std::uint64_t> outcomes[] = {
        {"submitted", q.jobs.submitted}, {"succeeded", q.jobs.succeeded}, {"failed", q.jobs.failed}, {"cancelled", q.jobs.cancelled}};
    for (const auto& [outcome, n] : outcomes) {
      w.sample("bulwark_named_queue_jobs_total", {{"queue", q.name}, {"outcome", outcome}}, static_cast<double>(n));
    }
  }
  w.family("bulwark_named_queue_paused", "gauge", "1 while a named queue is paused (POST /v1/queues/{queue}/pause).");
  for (const QueueStats& q : s.queues) w.sample("bulwark_named_queue_paused", {{"queue", q.name}}, q.paused ? 1 : 0);
  w.family("bulwark_named_queue_consumers", "gauge",
           "Live processes that run each named queue; 0: its jobs wait for a process that lists it.");
  for (const QueueStats& q : s.queues) {
    w.sample("bulwark_named_queue_consumers", {{"queue", q.name}}, static_cast<double>(q.consumers));
  }

  w.histogram("bulwark_job_run_seconds", "Run time of job attempts.", s.run_time);
  w.histogram("bulwark_job_queue_wait_seconds", "Time from ready to started.", s.queue_wait);

  std::array<unsigned, 4> workers{};  // by WorkerState
  for (const WorkerHealth& wh : health.workers) ++workers[static_cast<std::size_t>(wh.state)];
  w.family("bulwark_workers", "gauge", "Worker threads by state.");
  for (WorkerState st : {WorkerState::busy, WorkerState::idle, WorkerState::abandoned, WorkerState::vacant}) {
    w.sample("bulwark_workers", {{"state", std::string(to_string(st))}}, workers[static_cast<std::size_t>(st)]);
  }
  w.family("bulwark_worker_replacements_total", "counter", "Worker threads started to replace lost ones.");
  w.sample("bulwark_worker_replacements_total", {}, static_cast<double>(s.replacements));
  if (!health.processes.empty()) {
    std::array<unsigned, 4> processes{};  // by ProcessState
    unsigned p_restarts = 0;
    for (const ProcessHealth& p : health.processes) {
      ++processes[static_cast<std::size_t>(p.state)];
      p_restarts += p.restarts;
    }
    w.family("bulwark_processes", "gauge", "Child worker processes (process isolation) by state.");
    for (ProcessState st : {ProcessState::busy, ProcessState::idle, ProcessState::stopped}) {
      w.sample("bulwark_processes", {{"state", std::string(to_string(st))}}, processes[static_cast<std::size_t>(st)]);
    }
    w.family("bulwark_process_restarts_total", "counter", "Child worker processes started to replace ended ones.");
    w.sample("bulwark_process_restarts_total", {}, p_restarts);
    w.family("bulwark_process_restarts_deferred_total", "counter",
             "Child worker process replacements put off by the recovery limit (restarts per second).");
    w.sample("bulwark_process_restarts_deferred_total", {}, static_cast<double>(health.recovery.restarts_deferred));
    w.family("bulwark_process_ends_total", "counter", "Child worker processes that ended, by reason.");
    for (const auto& [reason, n] : s.process_ends) {
      w.sample("bulwark_process_ends_total", {{"reason", reason}}, static_cast<double>(n));
    }
  }
  w.family("bulwark_timeouts_total", "counter", "Timeouts the supervisor acted on.");
  w.sample("bulwark_timeouts_total", {{"kind", "soft"}}, static_cast<double>(s.soft_timeouts));
  w.sample("bulwark_timeouts_total", {{"kind", "hard"}}, static_cast<double>(s.hard_timeouts));
  w.family("bulwark_stuck_reports_total", "counter", "Stack dumps of jobs without a heartbeat.");
  w.sample("bulwark_stuck_reports_total", {}, static_cast<double>(s.stuck_reports));

  w.family("bulwark_type_paused", "gauge", "1 while a job type is paused (POST /v1/types/{type}/pause).");
  for (const auto& [type, t] : s.by_type) {
    if (type != "post") w.sample("bulwark_type_paused", {{"type", type}}, t.paused ? 1 : 0);
  }
  w.family("bulwark_type_held", "gauge",
           "Jobs fetched by this process and held for a place: their type is paused or at its concurrency limit.");
  for (const auto& [type, t] : s.by_type) {
    if (type != "post") w.sample("bulwark_type_held", {{"type", type}}, static_cast<double>(t.held));
  }
  w.family("bulwark_type_limit_waits_total", "counter",
           "Job starts put off by a type's controls: limit=\"rate\" (the rate limit), \"held\" (paused or at the concurrency limit).");
  for (const auto& [type, t] : s.by_type) {
    if (type == "post") continue;
    w.sample("bulwark_type_limit_waits_total", {{"type", type}, {"limit", "rate"}}, static_cast<double>(t.rate_waits));
    w.sample("bulwark_type_limit_waits_total", {{"type", type}, {"limit", "held"}}, static_cast<double>(t.limit_waits));
  }
  w.family("bulwark_circuit_breaker_state", "gauge", "Circuit breaker by job type: 0 closed, 1 half-open, 2 open.");
  for (const auto& [type, t] : s.by_type) {
    if (t.breaker == BreakerState::off) continue;
    const double v = t.breaker == BreakerState::open ? 2 : t.breaker == BreakerState::half_open ? 1 : 0;
    w.sample("bulwark_circuit_breaker_state", {{"type", type}}, v);
  }
  w.family("bulwark_circuit_breaker_opened_total", "counter", "Times a job type's circuit breaker opened.");
  for (const auto& [type, t] : s.by_type) {
    if (t.breaker != BreakerState::off) w.sample("bulwark_circuit_breaker_opened_total", {{"type", type}}, t.breaker_opened);
  }
  w.family("bulwark_trace_captures_total", "counter", "Throw-site traces captured.");
  w.sample("bulwark_trace_captures_total", {}, static_cast<double>(s.traces.captures));
  w.family("bulwark_trace_capture_seconds_total", "counter", "Time spent capturing throw-site traces.");
  w.sample("bulwark_trace_capture_seconds_total", {}, s.traces.seconds);
  w.family("bulwark_results_dropped_total", "counter",
           "Results of attempts dropped because another process took the job's lease over first.");
  w.sample("bulwark_results_dropped_total", {}, static_cast<double>(s.results_dropped));
  // The family always (alerts name it); samples with the redis backend.
  w.family("bulwark_redis_errors_total", "counter",
           "Redis errors met, by kind: unavailable (unreachable, timed out, loading, failing over), login "
           "(refused), full (out of memory), other.");
  for (const auto& [kind, n] : s.backend_errors) {
    w.sample("bulwark_redis_errors_total", {{"kind", kind}}, static_cast<double>(n));
  }
  w.family("bulwark_log_dropped_total", "counter", "Failure log lines dropped by the rate limit.");
  w.sample("bulwark_log_dropped_total", {}, static_cast<double>(s.log_dropped));
  if (server != nullptr) {
    w.family("bulwark_http_connections_refused_total", "counter",
             "Connections answered 503 and closed: at server.max_connections, or out of file descriptors.");
    w.sample("bulwark_http_connections_refused_total", {{"reason", "max_connections"}},
             static_cast<double>(server->refused_max_connections.load()));
    w.sample("bulwark_http_connections_refused_total", {{"reason", "descriptors"}},
             static_cast<double>(server->refused_no_descriptors.load()));
    w.family("bulwark_http_accept_errors_total", "counter", "accept() failures (EMFILE and ENFILE included).");
    w.sample("bulwark_http_accept_errors_total", {}, static_cast<double>(server->accept_errors.load()));
    w.family("bulwark_http_requests_total", "counter", "HTTP requests answered, by route template and status code.");
    server->requests.for_each_count([&](RouteId route, int status, std::uint64_t n) {
      w.sample("bulwark_http_requests_total", {{"route", std::string(route_template(route))}, {"code", std::to_string(status)}},
               static_cast<double>(n));
    });
    const std::string duration = "bulwark_http_request_duration_seconds";
    w.family(duration, "histogram",
             "Time to make an answer, by route template (a wait: until the job's answer; an event stream: until it "
             "starts).");
    server->requests.for_each_duration([&](RouteId route, const auto& cumulative, double sum, std::uint64_t count) {
      const std::string r(route_template(route));
      for (std::size_t i = 0; i < RequestMetrics::kBounds.size(); ++i) {
        w.sample(duration + "_bucket", {{"route", r}, {"le", number(RequestMetrics::kBounds[i])}},
                 static_cast<double>(cumulative[i]));
      }
      w.sample(duration + "_bucket", {{"route", r}, {"le", "+Inf"}}, static_cast<double>(count));
      w.sample(duration + "_sum", {{"route", r}}, sum);
      w.sample(duration + "_count", {{"route", r}}, static_cast<double>(count));
    });
  }
  w.family("bulwark_recovery_limit", "gauge", "Retries allowed to run at once, as the recovery governor set it.");
  w.sample("bulwark_recovery_limit", {}, health.recovery.limit);
  w.family("bulwark_recovery_adjustments_total", "counter", "Changes of the recovery limit, by direction.");
  w.sample("bulwark_recovery_adjustments_total", {{"direction", "up"}}, static_cast<double>(health.recovery.raised));
  w.sample("bulwark_recovery_adjustments_total", {{"direction", "down"}}, static_cast<double>(health.recovery.lowered));
  w.family("bulwark_health", "gauge", "Supervisor verdict: 0 healthy, 1 degraded, 2 unhealthy.");
  w.sample("bulwark_health", {}, static_cast<double>(static_cast<int>(health.verdict)));
  w.family("bulwark_build_info", "gauge", "Always 1; the version of bulwark that serves, as a label.");
  w.sample("bulwark_build_info", {{"version", BULWARK_VERSION}}, 1);
  process_metrics(w);
  return w.str();
}

}  // namespace bulwark::http
