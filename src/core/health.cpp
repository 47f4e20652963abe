// Names and JSON of the health values (bulwark/health.hpp).
#include "bulwark/health.hpp"

#include <nlohmann/json.hpp>

namespace bulwark {

std::string_view to_string(Verdict v) noexcept {
  switch (v) {
    case Verdict::healthy: return "healthy";
    case Verdict::degraded: return "degraded";
    case Verdict::unhealthy: return "unhealthy";
  }
  return "unknown";
}

std::string_view to_string(WorkerState s) noexcept {
  switch (s) {
    case WorkerState::idle: return "idle";
    case WorkerState::busy: return "busy";
    case WorkerState::abandoned: return "abandoned";
    case WorkerState::vacant: return "vacant";
  }
  return "unknown";
}

std::string_view to_string(ProcessState s) noexcept {
  switch (s) {
    case ProcessState::not_started: return "not_started";
    case ProcessState::idle: return "idle";
    case ProcessState::busy: return "busy";
    case ProcessState::stopped: return "stopped";
  }
  return "unknown";
}

std::string_view to_string(BreakerState s) noexcept {
  switch (s) {
    case BreakerState::off: return "off";
    case BreakerState::closed: return "closed";
    case BreakerState::open: return "open";
    case BreakerState::half_open: return "half_open";
  }
  return "unknown";
}

namespace {

template <class T>
nlohmann::ordered_json or_null(const std::optional<T>& v) {
  return v ? nlohmann::ordered_json(*v) : nlohmann::ordered_json();
}

}  // namespace

nlohmann::ordered_json to_json(const HealthReport& h) {
  nlohmann::ordered_json workers = nlohmann::ordered_json::array();
  for (const WorkerHealth& w : h.workers) {
    workers.push_back({{"id", w.id},
                       {"state", to_string(w.state)},
                       {"job", or_null(w.job)},
                       {"ms_since_heartbeat", or_null(w.ms_since_heartbeat)},
                       {"restarts", w.restarts},
                       {"abandoned", w.abandoned}});
  }
  nlohmann::ordered_json processes = nlohmann::ordered_json::array();
  for (const ProcessHealth& p : h.processes) {
    processes.push_back({{"id", p.id},
                         {"pid", p.pid},
                         {"state", to_string(p.state)},
                         {"job", or_null(p.job)},
                         {"restarts", p.restarts},
                         {"last_exit", p.last_exit}});
  }
  nlohmann::ordered_json breakers = nlohmann::ordered_json::array();
  for (const BreakerHealth& b : h.breakers) {
    breakers.push_back({{"type", b.type}, {"state", to_string(b.state)}, {"opened", b.opened}});
  }
  return {{"verdict", to_string(h.verdict)},
          {"reasons", h.reasons},
          {"queue_wait_p99_ms", or_null(h.queue_wait_p99_ms)},
          {"workers", std::move(workers)},
          {"processes", std::move(processes)},
          {"breakers", std::move(breakers)},
          {"recovery", {{"limit", h.recovery.limit},
                        {"min", h.recovery.min},
                        {"max", h.recovery.max},
                        {"adaptive", h.recovery.adaptive},
                        {"reason", h.recovery.reason},
                        {"raised", h.recovery.raised},
                        {"lowered", h.recovery.lowered},
                        {"restarts_deferred", h.recovery.restarts_deferred}}}};
}

}  // namespace bulwark
