// RuntimeOptions: every setting of a Runtime, and how they are read from JSON.
//
// config/default.json lists every key with its default; README documents
// each. Reading is strict: an unknown key or a value of the wrong type throws
// ConfigError naming the key path, so a typo never silently falls back.
//
//   bulwark::RuntimeOptions opts = bulwark::RuntimeOptions::from_file("bulwark.json");
//   opts.workers = 4;  // code may adjust after reading
//
// Plain values; not synchronized.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "bulwark/job.hpp"
#include "bulwark/json_input.hpp"
#include "bulwark/handler_options.hpp"
#include "bulwark/retry_policy.hpp"

namespace spdlog {
class logger;
}

namespace bulwark {

// Bad configuration; what() starts with the key path, e.g.
// "handlers.fail.max_attempts: expected an integer".
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What is wrong with a server.listen value ("host:port", "[v6]:port", port
// 0 to 65535), or nullopt if nothing.
std::optional<std::string> listen_problem(const std::string& listen);
// The URL clients use for `listen` once bound to `port`: "http://127.0.0.1:8080",
// "http://[::1]:8080" (an empty host or "localhost" is 127.0.0.1).
std::string listen_url(const std::string& listen, std::uint16_t port);

// Where accepted jobs wait and are recorded (queue.backend): in this
// process's memory (the default), or in Redis, shared by every process that
// names the same Redis and namespace.
enum class QueueBackend { memory, redis };

// TLS to Redis (redis.tls.*; rediss:// turns it on too).
struct RedisTlsOptions {
  bool enabled = false;
  std::string ca_file{};      // PEM; empty: the system's certificate authorities
  std::string cert_file{};    // a client certificate (PEM), with key_file
  std::string key_file{};
  std::string server_name{};  // SNI and the name verified; empty: the URL's host
  bool verify = true;         // false: any certificate is accepted (logged as a warning at start)
};

// Redis Sentinel (redis.sentinel.*): the sentinels name the master, and
// name the new one after a failover. Their own login, if they need one; the
// data login is redis.username/password as without Sentinel.
struct RedisSentinelOptions {
  std::string master{};                  // the name the sentinels monitor; empty: no Sentinel
  std::vector<std::string> addresses{};  // "host:port" of each sentinel
  std::string username{};
  std::string password{};
};

// Redis Cluster (redis.cluster.*): the nodes asked for the slot map; the
// URL's login, TLS and database (0) still apply, its host is not used.
struct RedisClusterOptions {
  std::vector<std::string> addresses{};  // "host:port" of some nodes; empty: no Cluster
};

// The Redis of queue.backend "redis" (redis.*).
struct RedisOptions {
  // redis[s]://[user[:password]@]host[:port][/db] or unix:///path/to/redis.sock[?db=N]
  std::string url = "redis://127.0.0.1:6379/0";
  // The login, when not in the URL. Given here, each wins over the URL's;
  // password and password_file exclude each other. password_file is read
  // when the runtime starts (a mounted secret); its last line break is
  // dropped.
  std::string username{};
  std::string password{};
  std::string password_file{};
  RedisTlsOptions tls{};
  RedisSentinelOptions sentinel{};
  RedisClusterOptions cluster{};
  // Replicas that must have a submit (and an end) before it counts as
  // written: WAIT after each; a submit not acknowledged within
  // replica_ack_timeout answers backend_unavailable. 0: no WAIT.
  unsigned min_replicas_ack = 0;
  std::chrono::milliseconds replica_ack_timeout{1'000};
  std::string ns = "bulwark";  // redis.namespace: every key starts with "{namespace}:"
  std::chrono::milliseconds lease{30'000};  // a job held by a process that stops renewing it goes back after this
  std::optional<unsigned> prefetch{};         // jobs held beyond the running ones; default: workers
  std::chrono::milliseconds connect_timeout{1'000};
  std::chrono::milliseconds command_timeout{1'000};
  // false: this process submits and answers for the shared queue but runs
  // none of its jobs (a producer, such as a web front end); posted
  // callables still run on its workers.
  bool consume = true;
};

// The child worker processes that run isolated job types (isolation.*).
struct IsolationOptions {
  unsigned processes = 2;            // child processes shared by every isolated type
  std::size_t memory_limit_mb = 0;   // default per isolated job; 0: none
  std::chrono::milliseconds start_timeout{10'000};  // for a child to say it is ready
};

// What the supervisor watches and when it acts (supervisor.*).
struct SupervisorOptions {
  std::chrono::milliseconds tick{50};
  std::chrono::milliseconds stuck_after{10'000};   // no heartbeat this long: dump the stack; 0 = never
  std::chrono::milliseconds hard_timeout{0};       // default for every type; 0 = none
  unsigned max_abandoned_threads = 4;
  unsigned max_restarts = 5;                       // replacements within restart_window before unhealthy
  std::chrono::milliseconds restart_window{60'000};
  std::chrono::milliseconds max_queue_wait{5'000}; // queue wait p99 above this: degraded; 0 = off
  std::chrono::milliseconds stall{10'000};         // every worker busy this long: degraded; 0 = off
};

// How much recovery work (retries) may run at once (recovery.*). The
// supervisor's recovery governor moves the limit between min_concurrent and
// RuntimeOptions::max_concurrent_retries from measured load: any signal
// above its high mark halves it (decrease_factor), every signal below its
// low mark for increase_after evaluations in a row raises it by one; in
// between it holds. Like Ceph's osd_recovery_max_active, adjusted.
struct RecoveryOptions {
  bool adaptive = true;            // false: the limit stays at max_concurrent_retries
  unsigned min_concurrent = 1;     // never below (at least 1: recovery never stops)
  // Retries run at their priority minus this (at least 0), after fresh
  // jobs of that priority (like osd_recovery_op_priority).
  unsigned priority_offset = 0;
  std::chrono::milliseconds adjust_every{1'000};  // how often the signals are read
  unsigned increase_after = 3;     // calm evaluations in a row before raising the limit by one
  double decrease_factor = 0.5;    // the limit is multiplied by this when a signal is high
  double cpu_high = 0.85, cpu_low = 0.60;  // the machine's CPU, busy fraction of all cores (1.0: never high)
  double process_cpu_high = 0.85, process_cpu_low = 0.60;  // this process's share of all cores
  std::chrono::milliseconds wait_high{1'000}, wait_low{200};  // fresh jobs' queue wait p99
  double saturation_high = 1.0, saturation_low = 0.75;        // busy workers / workers
  double failure_high = 0.5, failure_low = 0.2;  // failed attempts / ended attempts (of at least 10)
};

// Per job type poison-job quarantine (circuit_breaker.*).
struct CircuitBreakerOptions {
  unsigned failures = 0;  // failed attempts within `window` that open the breaker; 0 = off
  std::chrono::milliseconds window{10'000};
  std::chrono::milliseconds cooldown{5'000};  // open this long, then one trial job decides
};

// The HTTP API of `bulwark serve` (server.*).
struct ServerOptions {
  std::string listen = "127.0.0.1:8080";  // host:port; port 0 picks a free one
  // I/O threads, separate from the job workers; 0 = one per core, at most 8
  // (effective_io_threads()).
  unsigned io_threads = 0;
  unsigned effective_io_threads() const noexcept;
  std::size_t max_body_bytes = 1 << 20;    // larger bodies: 413
  std::size_t max_batch = 1'000;           // jobs in one POST /v1/jobs/batch
  std::chrono::milliseconds max_wait{30'000};  // the longest GET /v1/jobs/{id}?wait_ms=
  std::size_t max_header_bytes = 8 << 10;  // larger headers: 431
  std::chrono::milliseconds read_timeout{10'000};  // to receive one whole request
  std::chrono::milliseconds idle_timeout{60'000};  // keep-alive connection with no request
  unsigned max_connections = 1024;         // more: 503 and close
  std::string auth_token{};                  // set: mutating routes need "Authorization: Bearer <token>"
  // With auth_token set: reads (GET /v1/..., the event stream) need it too;
  // the dashboard's files stay open (they hold no data). Probes never need it.
  bool auth_reads = false;
  bool auth_metrics = false;  // GET /metrics needs the token too
  // Origins besides the server's own (http://<Host header>) whose browser
  // requests are accepted ("https://ops.example.com"); a request with any
  // other Origin header gets 403. Requests without Origin (curl, other
  // services) are not affected.
  std::vector<std::string> allowed_origins{};
  std::chrono::milliseconds drain_timeout{10'000};  // on SIGTERM, how long jobs may still run
};

// Limits on outside input that are not the HTTP server's (limits.*). README
// "Guarantees and limits" lists every limit with its key.
struct InputLimits {
  std::size_t json_depth = kDefaultJsonDepth;  // nesting of any outside JSON (bodies, lines, payloads)
  std::size_t id_length = kDefaultMaxIdLength;  // client-chosen job ids, in bytes
  std::size_t line_bytes = 1 << 20;             // bulwark run: one input line
  std::size_t pending_output = 10'000;          // bulwark run: finished, unwritten results before reading pauses
  std::size_t flow_children = kDefaultFlowChildren;  // a flow's jobs below its root, at every depth
  std::size_t flow_depth = kDefaultFlowDepth;        // levels of children below a flow's root
};

// bulwark's log (logging.*). With format "json" every line is one ECS
// (Elastic Common Schema) object: @timestamp, log.level, message,
// error.type/message/stack_trace, job.id/type/attempt, trace.id/span.id.
struct LogOptions {
  std::string level = "info";  // trace, debug, info, warn, error, critical, off
  std::string format = "text";  // text or json (one ECS object per line)
  std::string file{};             // empty: standard error; "-": standard output
  // An embedding program's own spdlog logger: bulwark writes through it (its
  // sinks, pattern and level; `level` and `file` are then not used). With
  // format "json", give it the pattern "%v" so each line stays one object.
  // Not read from JSON.
  std::shared_ptr<spdlog::logger> logger{};
};

// Periodic jobs (schedules.<name>): a normal job, submitted at each time a
// five-field cron expression names in a time zone. See README, "Periodic jobs".
enum class MissedRuns {
  skip,      // runs missed while no process was running (or it stalled) are dropped
  run_once,  // one job stands for all of them, at the latest missed time
};
struct ScheduleOptions {
  std::string cron{};             // "minute hour day-of-month month day-of-week"
  std::string time_zone = "UTC";  // a tz database name: "Europe/Berlin"
  nlohmann::json job{};           // a job spec (JobSpec::from_json) without an id
  MissedRuns missed = MissedRuns::skip;
  bool exclusive = false;         // skip a run while the previous one has not ended
};
// What is wrong with a schedule, as "name: ...", "cron: ...", "time_zone:
// ...", "job.<field>: ..."; empty if nothing. Names are 1 to 64 of A-Z a-z
// 0-9 - _ . ~ (each run's id is "<name>:<yyyymmddThhmmZ>").
std::string schedule_problem(std::string_view name, const ScheduleOptions& schedule,
                             std::size_t max_id_length = kDefaultMaxIdLength);

// One named queue this process runs (queues.<name>): its share of the
// picks and how many of its jobs may wait.
struct QueueOptions {
  unsigned weight = 1;        // 1..1000: picked in proportion among the queues with jobs ready
  std::size_t capacity = 0;   // queued + scheduled jobs of this queue; 0: only queue.capacity bounds it
};

struct RuntimeOptions {
  unsigned workers = 0;                   // 0: one per hardware thread
  std::size_t queue_capacity = 100'000;   // queued + scheduled jobs, every queue together
  // The named queues this process runs (`queues`: a weight, or {"weight",
  // "capacity"}, by name; at most 100). Empty: {"default": 1}. A job names
  // its queue (JobSpec::queue); a posted callable runs in "default", or,
  // when that is not listed, in the queue of the greatest weight.
  std::map<std::string, QueueOptions> queues{};
  // queue.strict: the queue of the greatest weight that has a job ready
  // always goes first (ties by name), instead of a weighted random pick.
  bool queue_strict = false;
  QueueBackend backend = QueueBackend::memory;  // queue.backend
  RedisOptions redis{};
  RetryPolicy retry{};                      // defaults for every type
  unsigned max_concurrent_retries = 0;    // recovery.max_concurrent; 0: half the workers, at least 1
  RecoveryOptions recovery{};
  bool capture_traces = true;             // throw-site traces of jobs' throws; false: capture off process-wide
  std::size_t retention_max_finished = 10'000;  // succeeded and cancelled records kept for lookup
  std::size_t retention_max_dead = 100'000;     // failed records (dead letters) kept
  // Records older than these (from their finish) are forgotten too; 0: no
  // age limit. Checked as jobs finish (and, with Redis, every feeder sweep).
  std::chrono::seconds retention_finished_ttl{86'400};  // one day
  std::chrono::seconds retention_dead_ttl{2'592'000};   // thirty days
  std::chrono::milliseconds shutdown_timeout{10'000};
  std::chrono::milliseconds shutdown_grace{2'000};  // after the stop token, before abandoning
  // The event stream (bulwark/events.hpp): how many recent events are kept
  // for readers (0: none, GET /v1/events then sends nothing), and how long
  // recording goes on after the last read.
  std::size_t events_buffer = 10'000;
  std::chrono::milliseconds events_linger{60'000};
  SupervisorOptions supervisor{};
  ServerOptions server{};  // read by `bulwark serve` / HttpServer; the runtime ignores it
  CircuitBreakerOptions circuit_breaker{};
  IsolationOptions isolation{};
  LogOptions logging{};
  InputLimits limits{};
  std::map<std::string, HandlerConfig> handlers{};
  std::map<std::string, ScheduleOptions> schedules{};  // periodic jobs by name

  // Called once for every job that reaches a terminal state, on the thread
  // that finished it (a worker, or the one calling shutdown/cancel). Keep it
  // short; it runs guarded, and it must not symbolize (hand the record to
  // another thread for that). Not read from JSON.
  std::function<void(const JobRecord&)> on_finished{};

  // Called once for every job that reaches a terminal state in *any*
  // process sharing the queue, if `finished_filter` (when set) accepts its
  // id; with the memory backend that is this process, on the same thread as
  // on_finished. With the redis backend it runs on a feed thread that
  // follows the queue's ended stream and reads each record back from Redis
  // (so it costs one read per accepted end): ends from the moment the
  // runtime starts, each once. Used by `bulwark run` to write the results
  // of its lines whichever process ran them. Not read from JSON.
  std::function<void(const JobRecord&)> on_finished_anywhere{};
  std::function<bool(const JobId&)> finished_filter{};

  // Parses a configuration object. Throws ConfigError naming the key path.
  static RuntimeOptions from_json(const nlohmann::json& config);
  // Reads and parses a file. Throws ConfigError naming the file for I/O or
  // JSON syntax errors, and the key path for the rest.
  static RuntimeOptions from_file(const std::string& path);

  unsigned effective_workers() const noexcept;
  unsigned effective_max_concurrent_retries() const noexcept;
};

// ---------------------------------------------------------------------------
// Configuration in layers, as `bulwark run` and `bulwark serve` read it:
// built-in defaults (config/default.json), then a file, then the
// environment, then overrides such as command-line flags; a later layer wins
// key by key.
//
// The environment maps onto key paths: BULWARK_, then the path in capitals
// with "__" between its parts: BULWARK_SERVER__LISTEN is server.listen,
// BULWARK_HANDLERS__RESIZE__MAX_ATTEMPTS is handlers.resize.max_attempts
// (names are lowercased), BULWARK_WORKERS is workers. A value is read as the
// type of the key's default: strings as they are, numbers and true/false as
// JSON, lists (server.allowed_origins) as a JSON array. Variables without
// "__" other than top-level keys (BULWARK_SERVER, BULWARK_TOKEN of the admin
// commands) are not configuration; a "__" variable naming no key is an error.
//
//   bulwark::ConfigLayers layers{.file = "bulwark.json", .environment = bulwark::bulwark_environment()};
//   bulwark::LoadedConfig c = bulwark::load_config(layers);  // c.options, c.settings
//
// Functions, no shared state; thread-safe.

// One value set above the environment; `value` is JSON text ("4", "\"0.0.0.0:80\"").
struct ConfigOverride {
  std::string key{};     // key path: "server.listen"
  std::string value{};   // JSON text
  std::string source{};  // what set it, for `bulwark config --print`: "flag --listen"
};

struct ConfigLayers {
  std::string file{};  // a configuration file; empty: none
  std::vector<std::pair<std::string, std::string>> environment{};  // name, value
  std::vector<ConfigOverride> overrides{};
};

// One key of the effective configuration and the layer it came from.
struct ConfigSetting {
  std::string key{};     // "server.listen"
  std::string value{};   // JSON text
  std::string source{};  // "default", "file PATH", "environment NAME", or an override's source
};

struct LoadedConfig {
  RuntimeOptions options{};
  std::vector<ConfigSetting> settings{};  // every key, in config/default.json's order, then added keys
  std::string json{};                     // the effective configuration as one JSON object
};

// Reads the layers. Throws ConfigError naming the key path and the layer
// that set it ("server.listen: expected host:port, got 'x' (environment
// BULWARK_SERVER__LISTEN)").
LoadedConfig load_config(const ConfigLayers& layers);

// This process's BULWARK_* environment variables, sorted by name.
std::vector<std::pair<std::string, std::string>> bulwark_environment();

// config/default.json: every key with its default, as JSON text.
std::string_view default_config_json() noexcept;

}  // namespace bulwark
