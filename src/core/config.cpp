#include "bulwark/config.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <thread>
#include <tuple>

#include <nlohmann/json.hpp>

#include "bulwark/json_input.hpp"
#include "core/config_file.hpp"

namespace bulwark {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

// Walks one JSON object, remembering its key path for error messages and
// rejecting keys nobody asked for.
class Section {
 public:
  // `unknown`: what a key nobody asked for is called in the error.
  Section(const json& j, std::string path, std::initializer_list<std::string_view> known,
          const char* unknown = "unknown key")
      : j_(j), path_(std::move(path)) {
    if (!j_.is_object()) fail(path_.empty() ? "configuration" : path_, "expected an object");
    for (const auto& [key, value] : j_.items()) {
      if (std::find(known.begin(), known.end(), key) == known.end()) fail(at(key), unknown);
    }
  }

  [[noreturn]] static void fail(const std::string& path, const std::string& what) {
    throw ConfigError(path + ": " + what);
  }

  std::string at(std::string_view key) const { return path_.empty() ? std::string(key) : path_ + "." + std::string(key); }
  const json* find(std::string_view key) const {
    auto it = j_.find(key);
    return it == j_.end() ? nullptr : &*it;
  }

  template <class T>
  void integer(std::string_view key, T& out, std::int64_t lo, std::int64_t hi) const {
    const json* v = find(key);
    if (v == nullptr) return;
    const std::optional<std::int64_t> n = integer_in_range(*v, lo, hi);
    if (!n) fail(at(key), integer_problem(*v, lo, hi));
    out = static_cast<T>(*n);
  }

  void millis(std::string_view key, milliseconds& out, std::int64_t lo = 0, std::int64_t hi = 86'400'000) const {
    std::int64_t n = out.count();
    integer(key, n, lo, hi);
    out = milliseconds(n);
  }

  void number(std::string_view key, double& out, double lo, double hi) const {
    const json* v = find(key);
    if (v == nullptr) return;
    if (!v->is_number()) fail(at(key), "expected a number");
    const double d = v->get<double>();
    if (!(d >= lo && d <= hi)) fail(at(key), "expected a number from " + json(lo).dump() + " to " + json(hi).dump());
    out = d;
  }

  void boolean(std::string_view key, bool& out) const {
    const json* v = find(key);
    if (v == nullptr) return;
    if (!v->is_boolean()) fail(at(key), "expected true or false");
    out = v->get<bool>();
  }

  void string(std::string_view key, std::string& out, std::initializer_list<std::string_view> allowed = {}) const {
    const json* v = find(key);
    if (v == nullptr) return;
    if (!v->is_string()) fail(at(key), "expected a string");
    const auto& s = v->get_ref<const std::string&>();
    if (allowed.size() != 0 && std::find(allowed.begin(), allowed.end(), s) == allowed.end()) {
      std::string list;
      for (std::string_view a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      fail(at(key), "expected one of " + list + ", got '" + s + "'");
    }
    out = s;
  }

  // A list of at most `max` strings.
  void strings(std::string_view key, std::vector<std::string>& out, std::size_t max) const {
    const json* v = find(key);
    if (v == nullptr) return;
    if (!v->is_array()) fail(at(key), "expected a list of strings");
    if (v->size() > max) fail(at(key), "at most " + std::to_string(max) + " entries");
    out.clear();
    for (const json& e : *v) {
      if (!e.is_string()) fail(at(key), "expected a list of strings");
      out.push_back(e.get<std::string>());
    }
  }

  Section child(std::string_view key, std::initializer_list<std::string_view> known) const {
    static const json kEmpty = json::object();
    const json* v = find(key);
    return Section(v != nullptr ? *v : kEmpty, at(key), known);
  }

  const json& raw() const { return j_; }
  const std::string& path() const { return path_; }

 private:
  const json& j_;
  std::string path_;
};

void read_retry(const Section& s, RetryPolicy& r) {
  s.integer("max_attempts", r.max_attempts, 1, 1000);
  s.millis("backoff_initial_ms", r.initial);
  s.millis("backoff_max_ms", r.max);
  s.number("backoff_multiplier", r.multiplier, 1.0, 100.0);
  s.number("jitter", r.jitter, 0.0, 1.0);
}

void read_redis(const Section& s, RedisOptions& r) {
  s.string("url", r.url);
  if (r.url.rfind("redis://", 0) != 0 && r.url.rfind("rediss://", 0) != 0 && r.url.rfind("unix://", 0) != 0) {
    Section::fail("redis.url", "expected redis://[user:password@]host:port/db, rediss://... (TLS) or "
                               "unix:///path/to/redis.sock");
  }
  s.string("username", r.username);
  s.string("password", r.password);
  s.string("password_file", r.password_file);
  if (!r.password.empty() && !r.password_file.empty()) {
    Section::fail("redis.password_file", "give redis.password or redis.password_file, not both");
  }
  const Section tls = s.child("tls", {"enabled", "ca_file", "cert_file", "key_file", "server_name", "verify"});
  tls.boolean("enabled", r.tls.enabled);
  tls.string("ca_file", r.tls.ca_file);
  tls.string("cert_file", r.tls.cert_file);
  tls.string("key_file", r.tls.key_file);
  tls.string("server_name", r.tls.server_name);
  tls.boolean("verify", r.tls.verify);
  const Section sentinel = s.child("sentinel", {"master", "addresses", "username", "password"});
  sentinel.string("master", r.sentinel.master);
  sentinel.strings("addresses", r.sentinel.addresses, 16);
  sentinel.string("username", r.sentinel.username);
  sentinel.string("password", r.sentinel.password);
  if (!r.sentinel.master.empty() && r.sentinel.addresses.empty()) {
    Section::fail("redis.sentinel.addresses", "give the sentinels' host:port for master '" + r.sentinel.master + "'");
  }
  for (const std::string& a : r.sentinel.addresses) {
    if (!detail::host_and_port(a)) {
      Section::fail("redis.sentinel.addresses", "expected host:port (a port of 1 to 65535), got '" + a + "'");
    }
  }
  const Section cluster = s.child("cluster", {"addresses"});
  cluster.strings("addresses", r.cluster.addresses, 64);
  for (const std::string& a : r.cluster.addresses) {
    if (!detail::host_and_port(a)) {
      Section::fail("redis.cluster.addresses", "expected host:port (a port of 1 to 65535), got '" + a + "'");
    }
  }
  if (!r.cluster.addresses.empty() && !r.sentinel.master.empty()) {
    Section::fail("redis.cluster.addresses", "a Redis Cluster fails over by itself: give redis.cluster or "
                                             "redis.sentinel, not both");
  }
  s.integer("min_replicas_ack", r.min_replicas_ack, 0, 16);
  s.millis("replica_ack_timeout_ms", r.replica_ack_timeout, 1, 60'000);
  if (r.tls.cert_file.empty() != r.tls.key_file.empty()) {
    Section::fail(r.tls.cert_file.empty() ? "redis.tls.cert_file" : "redis.tls.key_file",
                  "a client certificate needs both redis.tls.cert_file and redis.tls.key_file");
  }
  s.string("namespace", r.ns);
  if (r.ns.empty() || r.ns.size() > 64 ||
      r.ns.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:") != std::string::npos) {
    Section::fail("redis.namespace", "expected 1 to 64 of A-Z a-z 0-9 - _ . :");
  }
  s.millis("lease_ms", r.lease, 100, 3'600'000);
  if (s.find("prefetch") != nullptr) s.integer("prefetch", r.prefetch.emplace(), 0, 10'000);
  s.millis("connect_timeout_ms", r.connect_timeout, 1, 60'000);
  s.millis("command_timeout_ms", r.command_timeout, 1, 60'000);
  s.boolean("consume", r.consume);
}

}  // namespace

namespace detail {

std::optional<std::pair<std::string, int>> host_and_port(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return std::nullopt;
  std::string host = text.substr(0, colon);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return std::nullopt;
    host = host.substr(1, host.size() - 2);
  }
  int port = 0;
  const char* begin = text.data() + colon + 1;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(begin, end, port);
  if (ec != std::errc() || ptr != end || begin == end || port < 1 || port > 65535) return std::nullopt;
  return std::pair{std::move(host), port};
}

}  // namespace detail

std::optional<std::string> listen_problem(const std::string& listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos) return "expected host:port, got '" + listen + "'";
  const std::string port = listen.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port) > 65535) {
    return "'" + port + "' is not a port number (0 to 65535)";
  }
  return std::nullopt;
}

std::string listen_url(const std::string& listen, std::uint16_t port) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.empty() || host == "localhost") host = "127.0.0.1";
  if (host.find(':') != std::string::npos && host.front() != '[') host = "[" + host + "]";
  return "http://" + host + ":" + std::to_string(port);
}

RuntimeOptions RuntimeOptions::from_json(const json& config) {
  RuntimeOptions o;
  const Section root(config, "", {"workers", "queue", "redis", "retry", "recovery", "retention", "events", "shutdown", "supervisor",
                                  "circuit_breaker", "isolation", "server", "logging", "limits", "handlers",
                                  "schedules", "queues"});
  root.integer("workers", o.workers, 0, 1024);
  const Section queue = root.child("queue", {"capacity", "backend", "strict"});
  queue.integer("capacity", o.queue_capacity, 1, 100'000'000);
  queue.boolean("strict", o.queue_strict);
  std::string backend = "memory";
  queue.string("backend", backend, {"memory", "redis"});
  o.backend = backend == "redis" ? QueueBackend::redis : QueueBackend::memory;
  read_redis(root.child("redis", {"url", "username", "password", "password_file", "tls", "sentinel", "cluster", "min_replicas_ack",
                                  "replica_ack_timeout_ms", "namespace", "lease_ms", "prefetch", "connect_timeout_ms",
                                  "command_timeout_ms", "consume"}),
             o.redis);
  read_retry(root.child("retry", {"max_attempts", "backoff_initial_ms", "backoff_max_ms", "backoff_multiplier",
                                  "jitter"}),
             o.retry);
  const Section recovery = root.child(
      "recovery", {"max_concurrent", "max_concurrent_retries", "capture_traces", "adaptive", "min_concurrent",
                   "priority_offset", "adjust_ms", "increase_after", "decrease_factor", "cpu_high", "cpu_low",
                   "wait_high_ms", "wait_low_ms", "saturation_high", "saturation_low", "failure_high", "failure_low",
                   "process_cpu_high", "process_cpu_low"});
  if (recovery.find("max_concurrent") != nullptr && recovery.find("max_concurrent_retries") != nullptr) {
    Section::fail("recovery.max_concurrent_retries", "the old name of recovery.max_concurrent: give one of them");
  }
  recovery.integer("max_concurrent_retries", o.max_concurrent_retries, 0, 1024);
  recovery.integer("max_concurrent", o.max_concurrent_retries, 0, 1024);
  recovery.boolean("capture_traces", o.capture_traces);
  RecoveryOptions& rc = o.recovery;
  recovery.boolean("adaptive", rc.adaptive);
  recovery.integer("min_concurrent", rc.min_concurrent, 1, 1024);
  recovery.integer("priority_offset", rc.priority_offset, 0, 9);
  recovery.millis("adjust_ms", rc.adjust_every, 10, 600'000);
  recovery.integer("increase_after", rc.increase_after, 1, 1000);
  recovery.number("decrease_factor", rc.decrease_factor, 0.0, 0.99);
  recovery.number("cpu_high", rc.cpu_high, 0.0, 1.0);
  recovery.number("cpu_low", rc.cpu_low, 0.0, 1.0);
  recovery.number("process_cpu_high", rc.process_cpu_high, 0.0, 1.0);
  recovery.number("process_cpu_low", rc.process_cpu_low, 0.0, 1.0);
  recovery.millis("wait_high_ms", rc.wait_high);
  recovery.millis("wait_low_ms", rc.wait_low);
  recovery.number("saturation_high", rc.saturation_high, 0.0, 1.0);
  recovery.number("saturation_low", rc.saturation_low, 0.0, 1.0);
  recovery.number("failure_high", rc.failure_high, 0.0, 1.0);
  recovery.number("failure_low", rc.failure_low, 0.0, 1.0);
  for (const auto& [low, high, name] : {std::tuple{rc.cpu_low, rc.cpu_high, "cpu"},
                                        std::tuple{static_cast<double>(rc.wait_low.count()),
                                                   static_cast<double>(rc.wait_high.count()), "wait"},
                                        std::tuple{rc.saturation_low, rc.saturation_high, "saturation"},
                                        std::tuple{rc.process_cpu_low, rc.process_cpu_high, "process_cpu"},
                                        std::tuple{rc.failure_low, rc.failure_high, "failure"}}) {
    if (low > high) {
      const std::string n(name);
      Section::fail("recovery." + n + "_low" + (n == "wait" ? "_ms" : ""),
                    "must not be above recovery." + n + "_high" + (n == "wait" ? "_ms" : ""));
    }
  }
  const Section retention = root.child("retention", {"max_finished", "max_dead", "finished_ttl_s", "dead_ttl_s"});
  retention.integer("max_finished", o.retention_max_finished, 0, 100'000'000);
  retention.integer("max_dead", o.retention_max_dead, 0, 100'000'000);
  std::int64_t ttl = o.retention_finished_ttl.count();
  retention.integer("finished_ttl_s", ttl, 0, 315'360'000);  // up to ten years
  o.retention_finished_ttl = std::chrono::seconds(ttl);
  ttl = o.retention_dead_ttl.count();
  retention.integer("dead_ttl_s", ttl, 0, 315'360'000);
  o.retention_dead_ttl = std::chrono::seconds(ttl);
  const Section limits =
      root.child("limits", {"json_depth", "id_length", "line_bytes", "pending_output", "flow_children", "flow_depth"});
  limits.integer("json_depth", o.limits.json_depth, 2, 10'000);
  limits.integer("id_length", o.limits.id_length, 1, 1024);
  limits.integer("line_bytes", o.limits.line_bytes, 64, 1 << 30);
  limits.integer("pending_output", o.limits.pending_output, 1, 10'000'000);
  limits.integer("flow_children", o.limits.flow_children, 1, 10'000'000);
  limits.integer("flow_depth", o.limits.flow_depth, 1, kMaxFlowDepth);
  const Section events = root.child("events", {"buffer", "linger_ms"});
  events.integer("buffer", o.events_buffer, 0, 10'000'000);
  events.millis("linger_ms", o.events_linger);
  const Section shutdown = root.child("shutdown", {"timeout_ms", "grace_ms"});
  shutdown.millis("timeout_ms", o.shutdown_timeout);
  shutdown.millis("grace_ms", o.shutdown_grace);
  const Section sup = root.child("supervisor", {"tick_ms", "stuck_after_ms", "hard_timeout_ms",
                                                "max_abandoned_threads", "max_restarts", "restart_window_ms",
                                                "max_queue_wait_ms", "stall_ms"});
  sup.millis("tick_ms", o.supervisor.tick, 1, 60'000);
  sup.millis("stuck_after_ms", o.supervisor.stuck_after);
  sup.millis("hard_timeout_ms", o.supervisor.hard_timeout);
  sup.integer("max_abandoned_threads", o.supervisor.max_abandoned_threads, 0, 1024);
  sup.integer("max_restarts", o.supervisor.max_restarts, 0, 1'000'000);
  sup.millis("restart_window_ms", o.supervisor.restart_window);
  sup.millis("max_queue_wait_ms", o.supervisor.max_queue_wait);
  sup.millis("stall_ms", o.supervisor.stall);
  const Section cb = root.child("circuit_breaker", {"failures", "window_ms", "cooldown_ms"});
  cb.integer("failures", o.circuit_breaker.failures, 0, 1'000'000);
  cb.millis("window_ms", o.circuit_breaker.window);
  cb.millis("cooldown_ms", o.circuit_breaker.cooldown);
  const Section iso = root.child("isolation", {"processes", "memory_limit_mb", "start_timeout_ms"});
  iso.integer("processes", o.isolation.processes, 1, 256);
  iso.integer("memory_limit_mb", o.isolation.memory_limit_mb, 0, 1 << 20);
  iso.millis("start_timeout_ms", o.isolation.start_timeout, 1);
  const Section server = root.child("server", {"listen", "io_threads", "max_body_bytes", "max_header_bytes",
                                               "read_timeout_ms", "idle_timeout_ms", "max_connections", "auth_token",
                                               "drain_timeout_ms", "max_batch", "max_wait_ms", "auth_reads", "auth_metrics",
                                               "allowed_origins"});
  server.string("listen", o.server.listen);
  if (auto problem = listen_problem(o.server.listen)) Section::fail("server.listen", *problem);
  server.integer("io_threads", o.server.io_threads, 0, 64);
  server.integer("max_body_bytes", o.server.max_body_bytes, 1, 1 << 30);
  server.integer("max_header_bytes", o.server.max_header_bytes, 256, 1 << 20);
  // 0 would expire every read at once: the smallest timeout is 1 ms.
  server.millis("read_timeout_ms", o.server.read_timeout, 1);
  server.millis("idle_timeout_ms", o.server.idle_timeout, 1);
  server.integer("max_connections", o.server.max_connections, 1, 1'000'000);
  server.string("auth_token", o.server.auth_token);
  server.boolean("auth_reads", o.server.auth_reads);
  server.boolean("auth_metrics", o.server.auth_metrics);
  server.strings("allowed_origins", o.server.allowed_origins, 100);
  server.millis("drain_timeout_ms", o.server.drain_timeout);
  server.integer("max_batch", o.server.max_batch, 1, 1'000'000);
  server.millis("max_wait_ms", o.server.max_wait, 0, 3'600'000);
  const Section logging = root.child("logging", {"level", "format", "file"});
  logging.string("level", o.logging.level, {"trace", "debug", "info", "warn", "error", "critical", "off"});
  logging.string("format", o.logging.format, {"text", "json"});
  logging.string("file", o.logging.file);

  if (const json* queues = root.find("queues")) {
    if (!queues->is_object()) Section::fail("queues", "expected an object: a weight, or {\"weight\", \"capacity\"}, by queue name");
    if (queues->size() > 100) Section::fail("queues", "at most 100 queues");
    for (const auto& [name, value] : queues->items()) {
      if (std::string problem = queue_problem(name); !problem.empty()) {
        Section::fail("queues." + name, "not a queue name: " + problem.substr(7));
      }
      QueueOptions q;
      if (value.is_object()) {
        const Section entry(value, "queues." + name, {"weight", "capacity"});
        entry.integer("weight", q.weight, 1, 1000);
        entry.integer("capacity", q.capacity, 1, 100'000'000);
      } else {
        if (!value.is_number_integer() || value.get<std::int64_t>() < 1 || value.get<std::int64_t>() > 1000) {
          Section::fail("queues." + name, "expected a weight from 1 to 1000, or {\"weight\", \"capacity\"}");
        }
        q.weight = value.get<unsigned>();
      }
      o.queues[name] = q;
    }
  }
  if (const json* handlers = root.find("handlers")) {
    if (!handlers->is_object()) Section::fail("handlers", "expected an object");
    for (const auto& [type, value] : handlers->items()) {
      const Section h(value, "handlers." + type,
                      {"max_attempts", "backoff_initial_ms", "backoff_max_ms", "timeout_ms", "hard_timeout_ms",
                       "isolation", "memory_limit_mb", "concurrency", "rate"});
      HandlerConfig hc;
      if (h.find("max_attempts") != nullptr) h.integer("max_attempts", hc.max_attempts.emplace(), 1, 1000);
      if (h.find("backoff_initial_ms") != nullptr) h.millis("backoff_initial_ms", hc.backoff_initial.emplace());
      if (h.find("backoff_max_ms") != nullptr) h.millis("backoff_max_ms", hc.backoff_max.emplace());
      if (h.find("timeout_ms") != nullptr) h.millis("timeout_ms", hc.timeout.emplace());
      if (h.find("hard_timeout_ms") != nullptr) h.millis("hard_timeout_ms", hc.hard_timeout.emplace());
      if (h.find("isolation") != nullptr) {
        std::string mode;
        h.string("isolation", mode, {"thread", "process"});
        hc.isolation = mode == "process" ? Isolation::process : Isolation::thread;
      }
      if (h.find("memory_limit_mb") != nullptr) h.integer("memory_limit_mb", hc.memory_limit_mb.emplace(), 0, 1 << 20);
      if (h.find("concurrency") != nullptr) h.integer("concurrency", hc.concurrency.emplace(), 1, 1'000'000);
      if (h.find("rate") != nullptr) {
        const Section rate = h.child("rate", {"per_second", "burst"});
        if (rate.find("per_second") == nullptr) Section::fail(rate.at("per_second"), "required");
        RateLimit& r = hc.rate.emplace();
        rate.number("per_second", r.per_second, 0.001, 1'000'000);
        rate.integer("burst", r.burst, 1, 1'000'000);
      }
      o.handlers[type] = hc;
    }
  }
  if (const json* schedules = root.find("schedules")) {
    if (!schedules->is_object()) Section::fail("schedules", "expected an object of schedules by name");
    if (schedules->size() > 1000) Section::fail("schedules", "at most 1000 schedules");
    for (const auto& [name, value] : schedules->items()) {
      ScheduleOptions s = detail::read_schedule(value, "schedules." + name, false);
      std::string problem = schedule_problem(name, s, o.limits.id_length);
      if (!problem.empty()) Section::fail("schedules." + name, problem);
      o.schedules[name] = std::move(s);
    }
  }
  return o;
}

namespace detail {

ScheduleOptions read_schedule(const json& value, const std::string& path, bool named) {
  if (!value.is_object()) throw ConfigError((path.empty() ? std::string("schedule") : path) + ": expected an object");
  const Section sc = named ? Section(value, path, {"name", "cron", "time_zone", "job", "missed", "exclusive"},
                                     "unknown field")
                           : Section(value, path, {"cron", "time_zone", "job", "missed", "exclusive"});
  if (sc.find("cron") == nullptr) Section::fail(sc.at("cron"), "required");
  if (sc.find("job") == nullptr) Section::fail(sc.at("job"), "required");
  ScheduleOptions s;
  sc.string("cron", s.cron);
  sc.string("time_zone", s.time_zone);
  s.job = *sc.find("job");
  std::string missed = "skip";
  sc.string("missed", missed, {"skip", "run_once"});
  s.missed = missed == "run_once" ? MissedRuns::run_once : MissedRuns::skip;
  sc.boolean("exclusive", s.exclusive);
  return s;
}

json read_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot open the configuration file");
  std::string text;
  constexpr std::size_t kMaxConfigBytes = 16 << 20;
  text.resize(kMaxConfigBytes + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) throw ConfigError(path + ": cannot read the configuration file");
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > kMaxConfigBytes) throw ConfigError(path + ": larger than 16 MiB; not a configuration file");
  try {
    return parse_json(text);
  } catch (const InputError& e) {
    throw ConfigError(path + ": not valid JSON: " + e.what());
  }
}

}  // namespace detail

RuntimeOptions RuntimeOptions::from_file(const std::string& path) {
  const json config = detail::read_config_file(path);
  try {
    return from_json(config);
  } catch (const ConfigError& e) {
    throw ConfigError(path + ": " + e.what());
  }
}

unsigned RuntimeOptions::effective_workers() const noexcept {
  return workers != 0 ? workers : std::max(1u, std::thread::hardware_concurrency());
}

unsigned ServerOptions::effective_io_threads() const noexcept {
  return io_threads != 0 ? io_threads : std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
}

unsigned RuntimeOptions::effective_max_concurrent_retries() const noexcept {
  return max_concurrent_retries != 0 ? max_concurrent_retries : std::max(1u, effective_workers() / 2);
}

}  // namespace bulwark
