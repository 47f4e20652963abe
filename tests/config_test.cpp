#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "bulwark/config.hpp"
#include "bulwark/runtime.hpp"

using nlohmann::json;

namespace {

// The ConfigError of a runtime started on Redis with `redis`; empty if it
// started.
std::string redis_start_error(const bulwark::RedisOptions& redis) {
  bulwark::RuntimeOptions o;
  o.backend = bulwark::QueueBackend::redis;
  o.redis = redis;
  o.logging.level = "off";
  try {
    bulwark::Runtime rt(bulwark::Registry{}, o);
  } catch (const bulwark::ConfigError& e) {
    return e.what();
  }
  return {};
}

std::string config_error(const json& j) {
  try {
    bulwark::RuntimeOptions::from_json(j);
  } catch (const bulwark::ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_SUITE("RuntimeOptions") {
  TEST_CASE("an empty object gives the defaults") {
    auto o = bulwark::RuntimeOptions::from_json(json::object());
    CHECK(o.workers == 0);
    CHECK(o.queue_capacity == 100'000);
    CHECK(o.retry.max_attempts == 3);
    CHECK(o.capture_traces);
    CHECK(o.logging.format == "text");
  }

  TEST_CASE("config/default.json holds every key at its default") {
    auto o = bulwark::RuntimeOptions::from_file(BULWARK_SOURCE_DIR "/config/default.json");
    bulwark::RuntimeOptions d;
    CHECK(o.workers == d.workers);
    CHECK(o.queue_capacity == d.queue_capacity);
    CHECK(o.retry.max_attempts == d.retry.max_attempts);
    CHECK(o.retry.initial == d.retry.initial);
    CHECK(o.retry.max == d.retry.max);
    CHECK(o.retry.multiplier == d.retry.multiplier);
    CHECK(o.retry.jitter == d.retry.jitter);
    CHECK(o.max_concurrent_retries == d.max_concurrent_retries);
    CHECK(o.capture_traces == d.capture_traces);
    CHECK(o.retention_max_finished == d.retention_max_finished);
    CHECK(o.retention_max_dead == d.retention_max_dead);
    CHECK(o.retention_finished_ttl == d.retention_finished_ttl);
    CHECK(o.retention_dead_ttl == d.retention_dead_ttl);
    CHECK(o.shutdown_timeout == d.shutdown_timeout);
    CHECK(o.logging.level == d.logging.level);
    CHECK(o.logging.format == d.logging.format);
    CHECK(o.logging.file == d.logging.file);
    CHECK(o.isolation.processes == d.isolation.processes);
    CHECK(o.isolation.memory_limit_mb == d.isolation.memory_limit_mb);
    CHECK(o.isolation.start_timeout == d.isolation.start_timeout);
    CHECK(o.backend == d.backend);
    CHECK(o.redis.url == d.redis.url);
    CHECK(o.redis.ns == d.redis.ns);
    CHECK(o.redis.lease == d.redis.lease);
    CHECK(o.redis.prefetch == d.redis.prefetch);
    CHECK(o.redis.connect_timeout == d.redis.connect_timeout);
    CHECK(o.redis.command_timeout == d.redis.command_timeout);
    CHECK(o.redis.consume == d.redis.consume);
    CHECK(o.events_buffer == d.events_buffer);
    CHECK(o.events_linger == d.events_linger);
    CHECK(o.server.io_threads == d.server.io_threads);
    CHECK(o.server.max_batch == d.server.max_batch);
    CHECK(o.server.max_wait == d.server.max_wait);
    // Every section and key of the file is one the reader knows: from_file
    // above would have thrown otherwise. And every known section is there:
    std::ifstream in(BULWARK_SOURCE_DIR "/config/default.json");
    const json j = json::parse(in);
    for (const char* key : {"workers", "queue", "redis", "retry", "recovery", "retention", "events", "shutdown", "isolation", "logging", "handlers"}) {
      CHECK_MESSAGE(j.contains(key), key);
    }
  }

  TEST_CASE("reads every key") {
    auto o = bulwark::RuntimeOptions::from_json(json::parse(R"({
      "workers": 3, "queue": {"capacity": 10},
      "retry": {"max_attempts": 4, "backoff_initial_ms": 5, "backoff_max_ms": 50, "backoff_multiplier": 3, "jitter": 0},
      "recovery": {"max_concurrent_retries": 2, "capture_traces": false},
      "retention": {"max_finished": 7}, "shutdown": {"timeout_ms": 1500},
      "logging": {"level": "warn", "format": "json", "file": "/tmp/x.log"},
      "isolation": {"processes": 4, "memory_limit_mb": 512, "start_timeout_ms": 3000},
      "handlers": {"fail": {"max_attempts": 1, "backoff_initial_ms": 1, "backoff_max_ms": 2},
                   "crash": {"isolation": "process", "memory_limit_mb": 64}, "echo": {"isolation": "thread"}}})"));
    CHECK(o.workers == 3);
    CHECK(o.effective_workers() == 3);
    CHECK(o.queue_capacity == 10);
    CHECK(o.retry.max_attempts == 4);
    CHECK(o.retry.initial.count() == 5);
    CHECK(o.retry.max.count() == 50);
    CHECK(o.retry.multiplier == 3.0);
    CHECK(o.retry.jitter == 0.0);
    CHECK(o.max_concurrent_retries == 2);
    CHECK_FALSE(o.capture_traces);
    CHECK(o.retention_max_finished == 7);
    CHECK(o.shutdown_timeout.count() == 1500);
    CHECK(o.logging.level == "warn");
    CHECK(o.logging.format == "json");
    CHECK(o.logging.file == "/tmp/x.log");
    CHECK(o.handlers.at("fail").max_attempts == 1);
    CHECK(o.handlers.at("fail").backoff_initial->count() == 1);
    CHECK(o.handlers.at("fail").backoff_max->count() == 2);
    CHECK(!o.handlers.at("fail").isolation);
    CHECK(o.isolation.processes == 4);
    CHECK(o.isolation.memory_limit_mb == 512);
    CHECK(o.isolation.start_timeout.count() == 3000);
    CHECK(o.handlers.at("crash").isolation == bulwark::Isolation::process);
    CHECK(o.handlers.at("crash").memory_limit_mb == 64);
    CHECK(o.handlers.at("echo").isolation == bulwark::Isolation::thread);
  }

  TEST_CASE("server.io_threads: 0 (the default) is one per core, at most 8; a number is taken as given") {
    const auto d = bulwark::RuntimeOptions::from_json(json::object());
    CHECK(d.server.io_threads == 0);
    CHECK(d.server.effective_io_threads() == std::clamp(std::thread::hardware_concurrency(), 1U, 8U));
    const auto o = bulwark::RuntimeOptions::from_json(json::parse(R"({"server": {"io_threads": 3}})"));
    CHECK(o.server.effective_io_threads() == 3);
    CHECK(config_error(json::parse(R"({"server": {"io_threads": 65}})")).find("server.io_threads") != std::string::npos);
  }

  TEST_CASE("recovery: the governor's keys, max_concurrent under its old name too, and marks in order") {
    const auto o = bulwark::RuntimeOptions::from_json(json::parse(R"({"recovery": {
      "max_concurrent": 6, "adaptive": false, "min_concurrent": 2, "priority_offset": 3, "adjust_ms": 250,
      "increase_after": 5, "decrease_factor": 0.25, "cpu_high": 0.9, "cpu_low": 0.5, "process_cpu_high": 0.8,
      "process_cpu_low": 0.4, "wait_high_ms": 900, "wait_low_ms": 100, "saturation_high": 0.95,
      "saturation_low": 0.5, "failure_high": 0.6, "failure_low": 0.1}})"));
    CHECK(o.max_concurrent_retries == 6);
    CHECK_FALSE(o.recovery.adaptive);
    CHECK(o.recovery.min_concurrent == 2);
    CHECK(o.recovery.priority_offset == 3);
    CHECK(o.recovery.adjust_every.count() == 250);
    CHECK(o.recovery.increase_after == 5);
    CHECK(o.recovery.decrease_factor == 0.25);
    CHECK(o.recovery.cpu_high == 0.9);
    CHECK(o.recovery.process_cpu_low == 0.4);
    CHECK(o.recovery.wait_high.count() == 900);
    CHECK(o.recovery.saturation_low == 0.5);
    CHECK(o.recovery.failure_high == 0.6);
    CHECK(bulwark::RuntimeOptions::from_json(json::parse(R"({"recovery": {"max_concurrent_retries": 3}})"))
              .max_concurrent_retries == 3);
    CHECK(config_error(json::parse(R"({"recovery": {"max_concurrent": 3, "max_concurrent_retries": 3}})")) ==
          "recovery.max_concurrent_retries: the old name of recovery.max_concurrent: give one of them");
    CHECK(config_error(json::parse(R"({"recovery": {"cpu_low": 0.9, "cpu_high": 0.5}})")) ==
          "recovery.cpu_low: must not be above recovery.cpu_high");
    CHECK(config_error(json::parse(R"({"recovery": {"wait_low_ms": 900, "wait_high_ms": 500}})")) ==
          "recovery.wait_low_ms: must not be above recovery.wait_high_ms");
    CHECK(config_error(json::parse(R"({"recovery": {"min_concurrent": 0}})")).find("recovery.min_concurrent") == 0);
    CHECK(config_error(json::parse(R"({"recovery": {"decrease_factor": 1}})")).find("recovery.decrease_factor") == 0);
  }

  TEST_CASE("handlers.<type>.concurrency and .rate are read and bounded") {
    const auto o = bulwark::RuntimeOptions::from_json(json::parse(R"({"handlers": {
      "slow": {"concurrency": 3, "rate": {"per_second": 0.5, "burst": 5}}, "api": {"rate": {"per_second": 20}}}})"));
    CHECK(o.handlers.at("slow").concurrency == 3u);
    REQUIRE(o.handlers.at("slow").rate);
    CHECK(o.handlers.at("slow").rate->per_second == 0.5);
    CHECK(o.handlers.at("slow").rate->burst == 5u);
    CHECK(o.handlers.at("api").rate->burst == 1u);  // the default burst
    CHECK(!o.handlers.at("api").concurrency);
    CHECK(config_error(json::parse(R"({"handlers": {"x": {"concurrency": 0}}})")).find("handlers.x.concurrency") !=
          std::string::npos);
    CHECK(config_error(json::parse(R"({"handlers": {"x": {"rate": {"burst": 2}}}})")) ==
          "handlers.x.rate.per_second: required");
    CHECK(config_error(json::parse(R"({"handlers": {"x": {"rate": {"per_second": 0}}}})")).find(
              "handlers.x.rate.per_second") != std::string::npos);
    CHECK(config_error(json::parse(R"({"handlers": {"x": {"rate": {"per_second": 1, "burst": 0}}}})")).find(
              "handlers.x.rate.burst") != std::string::npos);
    CHECK(config_error(json::parse(R"({"handlers": {"x": {"rate": 5}}})")) == "handlers.x.rate: expected an object");
  }

  TEST_CASE("schedules.<name>: read and checked, errors naming the schedule") {
    const auto o = bulwark::RuntimeOptions::from_json(json::parse(R"({"schedules": {
      "nightly": {"cron": "0 3 * * *", "time_zone": "Europe/Berlin", "job": {"type": "echo"}, "missed": "run_once",
                  "exclusive": true},
      "often": {"cron": "*/5 * * * *", "job": {"type": "echo", "priority": 2}}}})"));
    REQUIRE(o.schedules.size() == 2);
    CHECK(o.schedules.at("nightly").time_zone == "Europe/Berlin");
    CHECK(o.schedules.at("nightly").missed == bulwark::MissedRuns::run_once);
    CHECK(o.schedules.at("nightly").exclusive);
    CHECK(o.schedules.at("often").time_zone == "UTC");
    CHECK(o.schedules.at("often").missed == bulwark::MissedRuns::skip);
    const auto error = [](const char* text) { return config_error(json::parse(text)); };
    CHECK(error(R"({"schedules": {"x": {"job": {"type": "echo"}}}})") == "schedules.x.cron: required");
    CHECK(error(R"({"schedules": {"x": {"cron": "* * * * *"}}})") == "schedules.x.job: required");
    CHECK(error(R"({"schedules": {"x": {"cron": "61 * * * *", "job": {"type": "echo"}}}})")
              .rfind("schedules.x: cron: minute field '61'", 0) == 0);
    CHECK(error(R"({"schedules": {"x": {"cron": "* * * * *", "time_zone": "Nowhere", "job": {"type": "echo"}}}})")
              .rfind("schedules.x: time_zone: 'Nowhere'", 0) == 0);
    CHECK(error(R"({"schedules": {"x": {"cron": "* * * * *", "job": {"type": "echo", "id": "fixed"}}}})")
              .rfind("schedules.x: job.id: not allowed", 0) == 0);
    CHECK(error(R"({"schedules": {"x": {"cron": "* * * * *", "job": {"payload": 1}}}})") == "schedules.x: job.type: required");
    CHECK(error(R"({"schedules": {"a:b": {"cron": "* * * * *", "job": {"type": "echo"}}}})")
              .rfind("schedules.a:b: name: expected", 0) == 0);
    CHECK(error(R"({"schedules": {"x": {"cron": "* * * * *", "job": {"type": "echo"}, "missed": "all"}}})")
              .rfind("schedules.x.missed: expected one of skip, run_once", 0) == 0);
  }

  TEST_CASE("errors name the key path") {
    CHECK(config_error(json::parse(R"({"handlers": {"fail": {"max_attempts": "3"}}})")) ==
          "handlers.fail.max_attempts: expected an integer");
    CHECK(config_error(json::parse(R"({"workers": -1})")) == "workers: expected an integer from 0 to 1024, got -1");
    CHECK(config_error(json::parse(R"({"queue": {"capacity": 0}})")).rfind("queue.capacity: ", 0) == 0);
    CHECK(config_error(json::parse(R"({"retry": {"jitter": 2}})")).rfind("retry.jitter: ", 0) == 0);
    CHECK(config_error(json::parse(R"({"recovery": {"capture_traces": 1}})")) ==
          "recovery.capture_traces: expected true or false");
    CHECK(config_error(json::parse(R"({"logging": {"format": "xml"}})")) ==
          "logging.format: expected one of text, json, got 'xml'");
    CHECK(config_error(json::parse(R"({"queue": 5})")) == "queue: expected an object");
    CHECK(config_error(json::parse(R"({"handlers": {"crash": {"isolation": "fork"}}})")) ==
          "handlers.crash.isolation: expected one of thread, process, got 'fork'");
    CHECK(config_error(json::parse(R"({"isolation": {"processes": 0}})")) ==
          "isolation.processes: expected an integer from 1 to 256, got 0");
    CHECK(config_error(json::array()) == "configuration: expected an object");
  }

  TEST_CASE("the shared queue's keys are read and checked") {
    auto o = bulwark::RuntimeOptions::from_json(json::parse(
        R"({"queue": {"backend": "redis"}, "redis": {"url": "unix:///run/r.sock?db=2", "namespace": "jobs.eu-1",
            "lease_ms": 5000, "prefetch": 0, "connect_timeout_ms": 200, "command_timeout_ms": 300, "consume": false},
            "retention": {"finished_ttl_s": 0, "dead_ttl_s": 3600}})"));
    CHECK(o.backend == bulwark::QueueBackend::redis);
    CHECK(o.redis.url == "unix:///run/r.sock?db=2");
    CHECK(o.redis.ns == "jobs.eu-1");
    CHECK(o.redis.lease == std::chrono::milliseconds(5000));
    CHECK(o.redis.prefetch == 0u);
    CHECK(o.redis.connect_timeout == std::chrono::milliseconds(200));
    CHECK(o.redis.command_timeout == std::chrono::milliseconds(300));
    CHECK_FALSE(o.redis.consume);
    CHECK(o.retention_finished_ttl == std::chrono::seconds(0));
    CHECK(o.retention_dead_ttl == std::chrono::seconds(3600));
    CHECK(config_error(json::parse(R"({"redis": {"consume": "no"}})")) == "redis.consume: expected true or false");
    CHECK(config_error(json::parse(R"({"retention": {"finished_ttl_s": -1}})")).rfind("retention.finished_ttl_s: ", 0) ==
          0);
    CHECK(config_error(json::parse(R"({"retention": {"dead_ttl_s": 1e12}})")).rfind("retention.dead_ttl_s: ", 0) == 0);
    CHECK(config_error(json::parse(R"({"queue": {"backend": "kafka"}})")) ==
          "queue.backend: expected one of memory, redis, got 'kafka'");
    CHECK(config_error(json::parse(R"({"redis": {"url": "http://x"}})")).rfind("redis.url: ", 0) == 0);
    CHECK(config_error(json::parse(R"({"redis": {"namespace": "a{b}"}})")).rfind("redis.namespace: ", 0) == 0);
    CHECK(config_error(json::parse(R"({"redis": {"namespace": ""}})")).rfind("redis.namespace: ", 0) == 0);
    CHECK(config_error(json::parse(R"({"redis": {"lease_ms": 10}})")).rfind("redis.lease_ms: ", 0) == 0);
    CHECK(config_error(json::parse(R"({"redis": {"port": 1}})")).find("port") != std::string::npos);
  }

  TEST_CASE("redis: the login and TLS keys are read; a password twice or half a client certificate is refused") {
    auto o = bulwark::RuntimeOptions::from_json(json::parse(
        R"({"redis": {"url": "rediss://cache:6380/0", "username": "app", "password_file": "/run/secrets/redis",
            "tls": {"ca_file": "/etc/ca.pem", "cert_file": "/etc/c.pem", "key_file": "/etc/k.pem",
                    "server_name": "cache.internal", "verify": false}}})"));
    CHECK(o.redis.username == "app");
    CHECK(o.redis.password_file == "/run/secrets/redis");
    CHECK_FALSE(o.redis.tls.enabled);  // rediss:// turns it on when the runtime connects
    CHECK(o.redis.tls.ca_file == "/etc/ca.pem");
    CHECK(o.redis.tls.server_name == "cache.internal");
    CHECK_FALSE(o.redis.tls.verify);
    CHECK(config_error(json::parse(R"({"redis": {"password": "a", "password_file": "/f"}})")) ==
          "redis.password_file: give redis.password or redis.password_file, not both");
    CHECK(config_error(json::parse(R"({"redis": {"tls": {"cert_file": "/c.pem"}}})")).rfind("redis.tls.key_file: ", 0) ==
          0);
    CHECK(config_error(json::parse(R"({"redis": {"tls": {"enabled": 1}}})")).rfind("redis.tls.enabled: ", 0) == 0);
    CHECK(config_error(json::parse(R"({"redis": {"url": "rediss//x"}})")).rfind("redis.url: ", 0) == 0);
    auto s = bulwark::RuntimeOptions::from_json(json::parse(
        R"({"redis": {"sentinel": {"master": "m", "addresses": ["10.0.0.1:26379", "[::1]:26380"]}}})"));
    CHECK(s.redis.sentinel.addresses.size() == 2);
    CHECK(config_error(json::parse(R"({"redis": {"sentinel": {"master": "m"}}})")).rfind("redis.sentinel.addresses: ", 0) ==
          0);
    for (const char* bad : {"h", ":1", "h:", "h:0", "h:70000", "h:1x", "[::1:2"}) {
      CAPTURE(bad);
      CHECK(config_error(json{{"redis", {{"sentinel", {{"master", "m"}, {"addresses", {bad}}}}}}})
                .rfind("redis.sentinel.addresses: ", 0) == 0);
      CHECK(config_error(json{{"redis", {{"cluster", {{"addresses", {bad}}}}}}}).rfind("redis.cluster.addresses: ", 0) == 0);
    }
    auto c = bulwark::RuntimeOptions::from_json(json::parse(R"({"redis": {"cluster": {"addresses": ["10.0.0.1:7000"]}}})"));
    CHECK(c.redis.cluster.addresses == std::vector<std::string>{"10.0.0.1:7000"});
    CHECK(config_error(json::parse(R"({"redis": {"cluster": {"addresses": ["h:1"]},
                                                 "sentinel": {"master": "m", "addresses": ["h:2"]}}})")) ==
          "redis.cluster.addresses: a Redis Cluster fails over by itself: give redis.cluster or redis.sentinel, not both");
    CHECK(config_error(json::parse(R"({"redis": {"cluster": {"nodes": []}}})")).find("redis.cluster.nodes") !=
          std::string::npos);
  }

  TEST_CASE("queues: a weight or {weight, capacity} by name, and queue.strict") {
    auto o = bulwark::RuntimeOptions::from_json(
        json::parse(R"({"queues": {"critical": 6, "default": 3, "low": {"weight": 1, "capacity": 500}},
                        "queue": {"strict": true}})"));
    REQUIRE(o.queues.size() == 3);
    CHECK(o.queues["critical"].weight == 6u);
    CHECK(o.queues["critical"].capacity == 0u);
    CHECK(o.queues["low"].capacity == 500u);
    CHECK(o.queue_strict);
    CHECK(bulwark::RuntimeOptions::from_json(json::object()).queues.empty());  // the default alone
    CHECK(config_error(json::parse(R"({"queues": {"a": 0}})")) ==
          "queues.a: expected a weight from 1 to 1000, or {\"weight\", \"capacity\"}");
    CHECK(config_error(json::parse(R"({"queues": {"a": "high"}})")).rfind("queues.a: expected a weight", 0) == 0);
    CHECK(config_error(json::parse(R"({"queues": {"a": {"weight": 2, "size": 3}}})")) == "queues.a.size: unknown key");
    CHECK(config_error(json::parse(R"({"queues": {"a": {"capacity": 0}}})")).rfind("queues.a.capacity: ", 0) == 0);
    CHECK(config_error(json::parse(R"({"queues": {"a b": 1}})")) ==
          "queues.a b: not a queue name: only A-Z a-z 0-9 - _ . are allowed");
    CHECK(config_error(json::parse(R"({"queues": []})")).rfind("queues: expected an object", 0) == 0);
    json many = json::object();
    for (int i = 0; i < 101; ++i) many[std::string("q").append(std::to_string(i))] = 1;
    CHECK(config_error(json{{"queues", many}}) == "queues: at most 100 queues");
  }

  TEST_CASE("a Redis Cluster has only database 0 and no unix socket: said at start" * doctest::timeout(30)) {
    bulwark::RedisOptions r;
    r.cluster.addresses = {"127.0.0.1:1"};
    r.url = "redis://127.0.0.1/2";
    CHECK(redis_start_error(r) == "redis.url: a Redis Cluster has only database 0, the URL names 2");
    r.url = "unix:///tmp/r.sock";
    CHECK(redis_start_error(r).rfind("redis.cluster.addresses: a cluster is reached over TCP", 0) == 0);
  }

  TEST_CASE("a redis.password_file that cannot be read stops the runtime at start, naming the key" *
            doctest::timeout(30)) {
    bulwark::RedisOptions r;
    r.password_file = "/nonexistent/bulwark-secret";
    CHECK(redis_start_error(r).rfind("redis.password_file: cannot read /nonexistent/bulwark-secret", 0) == 0);
  }

  TEST_CASE("a redis.url the runtime cannot use stops it at start, naming the key" * doctest::timeout(30)) {
    bulwark::RedisOptions r;
    r.url = "redis://host:99999";
    CHECK(redis_start_error(r).rfind("redis.url: ", 0) == 0);
  }

  TEST_CASE("unknown keys are rejected, never ignored") {
    CHECK(config_error(json::parse(R"({"wrokers": 2})")) == "wrokers: unknown key");
    CHECK(config_error(json::parse(R"({"retry": {"max_attempt": 2}})")) == "retry.max_attempt: unknown key");
    CHECK(config_error(json::parse(R"({"handlers": {"fail": {"retries": 2}}})")) ==
          "handlers.fail.retries: unknown key");
  }

  TEST_CASE("a file that is missing or not JSON is named") {
    CHECK_THROWS_WITH_AS(bulwark::RuntimeOptions::from_file("/nonexistent/bulwark.json"),
                         "/nonexistent/bulwark.json: cannot open the configuration file", bulwark::ConfigError);
    const std::string path = "/tmp/bulwark_config_test_bad.json";
    std::ofstream(path) << "{\"workers\": ";
    try {
      bulwark::RuntimeOptions::from_file(path);
      FAIL("no error");
    } catch (const bulwark::ConfigError& e) {
      CHECK(std::string(e.what()).rfind(path + ": not valid JSON", 0) == 0);
    }
  }
}

TEST_SUITE("RuntimeOptions: hostile values") {
  std::string file_error(const std::string& text) {
    const std::string path = "/tmp/bulwark_config_test_hostile.json";
    std::ofstream(path) << text;
    try {
      bulwark::RuntimeOptions::from_file(path);
    } catch (const bulwark::ConfigError& e) {
      return e.what();
    }
    return "";
  }

  TEST_CASE("a number past double range is a configuration error naming the key, not an abort") {
    const std::string e = file_error(R"({"workers": 1e309})");
    CHECK(e.find("not valid JSON") != std::string::npos);
    CHECK(e.find("'workers'") != std::string::npos);
  }

  TEST_CASE("a deeply nested file is refused, not a stack overflow") {
    CHECK(file_error(R"({"handlers": )" + std::string(100'000, '[') + std::string(100'000, ']') + "}")
              .find("nested deeper") != std::string::npos);
  }

  TEST_CASE("huge integers are reported as written") {
    CHECK(config_error(json::parse(R"({"workers": 18446744073709551615})")).find("got 18446744073709551615") !=
          std::string::npos);
    CHECK(config_error(json::parse(R"({"queue": {"capacity": -5}})")).find("got -5") != std::string::npos);
  }

  TEST_CASE("timeouts that would expire every read at once are refused") {
    CHECK(config_error({{"server", {{"read_timeout_ms", 0}}}}).rfind("server.read_timeout_ms: expected an integer from 1", 0) == 0);
    CHECK(config_error({{"server", {{"idle_timeout_ms", 0}}}}).rfind("server.idle_timeout_ms", 0) == 0);
  }

  TEST_CASE("limits.* and retention.max_dead are read and bounded") {
    auto o = bulwark::RuntimeOptions::from_json(
        {{"limits", {{"json_depth", 16}, {"id_length", 64}, {"line_bytes", 4096}, {"pending_output", 7}}},
         {"retention", {{"max_dead", 3}}}});
    CHECK(o.limits.json_depth == 16);
    CHECK(o.limits.id_length == 64);
    CHECK(o.limits.line_bytes == 4096);
    CHECK(o.limits.pending_output == 7);
    CHECK(o.retention_max_dead == 3);
    CHECK(config_error({{"limits", {{"json_depth", 1}}}}).rfind("limits.json_depth", 0) == 0);
    CHECK(config_error({{"limits", {{"jsn_depth", 1}}}}) == "limits.jsn_depth: unknown key");
  }

  TEST_CASE("server.listen: malformed ports are refused; URLs bracket IPv6 and fill an empty host") {
    CHECK(config_error({{"server", {{"listen", "127.0.0.1:99999"}}}}).find("not a port number") != std::string::npos);
    CHECK(config_error({{"server", {{"listen", "127.0.0.1"}}}}).find("host:port") != std::string::npos);
    CHECK(bulwark::listen_url("::1:0", 8080) == "http://[::1]:8080");
    CHECK(bulwark::listen_url("[::1]:0", 8080) == "http://[::1]:8080");
    CHECK(bulwark::listen_url(":0", 8080) == "http://127.0.0.1:8080");
    CHECK(bulwark::listen_url("localhost:1", 8080) == "http://127.0.0.1:8080");
    CHECK(bulwark::listen_url("10.1.2.3:80", 80) == "http://10.1.2.3:80");
  }
}

namespace {

std::string layers_error(const bulwark::ConfigLayers& layers) {
  try {
    bulwark::load_config(layers);
  } catch (const bulwark::ConfigError& e) {
    return e.what();
  }
  return "";
}

const bulwark::ConfigSetting& setting(const bulwark::LoadedConfig& c, const std::string& key) {
  for (const auto& s : c.settings) {
    if (s.key == key) return s;
  }
  FAIL("no setting " << key);
  throw std::logic_error("unreachable");
}

}  // namespace

TEST_SUITE("load_config") {
  TEST_CASE("no layers: every key of config/default.json at its default, in the file's order") {
    const auto c = bulwark::load_config({});
    std::ifstream in(BULWARK_SOURCE_DIR "/config/default.json");
    const auto file = nlohmann::ordered_json::parse(in);
    std::vector<std::string> keys;
    const auto flatten = [&](const auto& self, const nlohmann::ordered_json& v, const std::string& path) -> void {
      if (!v.is_object() || v.empty()) {  // an empty object is one key: handlers: {}
        keys.push_back(path);
        return;
      }
      for (const auto& [key, child] : v.items()) self(self, child, path.empty() ? key : path + "." + key);
    };
    flatten(flatten, file, "");
    REQUIRE(c.settings.size() == keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) {
      CHECK(c.settings[i].key == keys[i]);
      CHECK(c.settings[i].source == "default");
    }
    CHECK(c.options.server.listen == bulwark::ServerOptions{}.listen);
    CHECK(json::parse(c.json) == json::parse(bulwark::default_config_json()));
  }

  TEST_CASE("BULWARK_REDIS__PASSWORD sets redis.password, and the listing names the variable") {
    const auto c = bulwark::load_config({"", {{"BULWARK_REDIS__PASSWORD", "from-env"}}, {}});
    CHECK(c.options.redis.password == "from-env");
    bool found = false;
    for (const auto& s : c.settings) {
      if (s.key == "redis.password") found = s.source.find("BULWARK_REDIS__PASSWORD") != std::string::npos;
    }
    CHECK(found);
  }

  TEST_CASE("flags over environment over file over defaults, key by key") {
    std::ofstream("/tmp/bulwark-layers.json") << R"({"workers": 2, "server": {"listen": "127.0.0.1:1", "max_batch": 5}})";
    bulwark::ConfigLayers layers{"/tmp/bulwark-layers.json",
                                 {{"BULWARK_SERVER__LISTEN", "0.0.0.0:2"}, {"BULWARK_WORKERS", "3"}},
                                 {{"workers", "4", "flag --workers"}}};
    const auto c = bulwark::load_config(layers);
    CHECK(c.options.workers == 4);
    CHECK(setting(c, "workers").source == "flag --workers");
    CHECK(c.options.server.listen == "0.0.0.0:2");
    CHECK(setting(c, "server.listen").source == "environment BULWARK_SERVER__LISTEN");
    CHECK(setting(c, "server.listen").value == "\"0.0.0.0:2\"");
    CHECK(c.options.server.max_batch == 5);  // the file's, beside the environment's listen
    CHECK(setting(c, "server.max_batch").source == "file /tmp/bulwark-layers.json");
    CHECK(c.options.server.max_connections == 1024);  // the default, beside both
    CHECK(setting(c, "server.max_connections").source == "default");
  }

  TEST_CASE("an environment value is read as its key's type") {
    bulwark::ConfigLayers layers;
    layers.environment = {{"BULWARK_SERVER__AUTH_TOKEN", "12345"},  // a string key: text, though it looks like a number
                          {"BULWARK_SERVER__AUTH_READS", "true"},
                          {"BULWARK_RETRY__JITTER", "0.5"},
                          {"BULWARK_SERVER__ALLOWED_ORIGINS", R"(["https://ops.example.com"])"},
                          {"BULWARK_HANDLERS__RESIZE__MAX_ATTEMPTS", "7"},  // not in the defaults: JSON
                          {"BULWARK_HANDLERS__RESIZE__ISOLATION", "process"},  // ...or text
                          {"BULWARK_REDIS__PREFETCH", "9"}};
    const auto c = bulwark::load_config(layers);
    CHECK(c.options.server.auth_token == "12345");
    CHECK(c.options.server.auth_reads);
    CHECK(c.options.retry.jitter == 0.5);
    REQUIRE(c.options.server.allowed_origins.size() == 1);
    CHECK(c.options.server.allowed_origins[0] == "https://ops.example.com");
    CHECK(c.options.handlers.at("resize").max_attempts == 7);
    CHECK(c.options.handlers.at("resize").isolation == bulwark::Isolation::process);
    CHECK(c.options.redis.prefetch == 9u);
    CHECK(setting(c, "handlers.resize.max_attempts").source == "environment BULWARK_HANDLERS__RESIZE__MAX_ATTEMPTS");
  }

  TEST_CASE("variables that are not configuration are left alone") {
    bulwark::ConfigLayers layers;
    layers.environment = {{"BULWARK_SERVER", "http://127.0.0.1:9"}, {"BULWARK_TOKEN", "t"},
                          {"BULWARK_TEST_BACKEND", "redis"}, {"BULWARK_", "x"}, {"OTHER__KEY", "1"}};
    const auto c = bulwark::load_config(layers);
    REQUIRE(c.settings.size() > 20);  // every key is listed, each from its default
    for (const auto& s : c.settings) CHECK(s.source == "default");
  }

  TEST_CASE("errors name the key and the layer that set it") {
    bulwark::ConfigLayers env;
    env.environment = {{"BULWARK_SERVER__LISTN", "x"}};
    CHECK(layers_error(env) == "server.listn: unknown key (environment BULWARK_SERVER__LISTN)");
    env.environment = {{"BULWARK_SERVER__IO_THREADS", "many"}};
    CHECK(layers_error(env) == "server.io_threads: expected an integer (environment BULWARK_SERVER__IO_THREADS)");
    env.environment = {{"BULWARK_WORKERS__X", "1"}};
    CHECK(layers_error(env) == "BULWARK_WORKERS__X: workers is a value, not a section");
    env.environment = {{"BULWARK_SERVER__", "1"}};
    CHECK(layers_error(env).find("BULWARK_SERVER__: an empty part") == 0);
    env.environment = {{"BULWARK_SERVER__ALLOWED_ORIGINS", "https://a"}};  // not a JSON list
    CHECK(layers_error(env) == "server.allowed_origins: expected a list of strings (environment BULWARK_SERVER__ALLOWED_ORIGINS)");

    std::ofstream("/tmp/bulwark-layers-bad.json") << R"({"server": {"max_batch": 0}})";
    CHECK(layers_error({"/tmp/bulwark-layers-bad.json", {}, {}}).find("(file /tmp/bulwark-layers-bad.json)") !=
          std::string::npos);
    CHECK(layers_error({{}, {}, {{"server.listen", R"("nope")", "flag --listen"}}}) ==
          "server.listen: expected host:port, got 'nope' (flag --listen)");
    CHECK(layers_error({"/nonexistent/bulwark.json", {}, {}}) ==
          "/nonexistent/bulwark.json: cannot open the configuration file");
  }

  TEST_CASE("a value or name that is not UTF-8 is an error naming the variable, not a crash (fuzz_config found it)") {
    bulwark::ConfigLayers env;
    env.environment = {{"BULWARK_SERVER__LISTEN", std::string(";\xd6" "0*0.0:1")}};
    CHECK(layers_error(env) == "BULWARK_SERVER__LISTEN: the value is not valid UTF-8");
    env.environment = {{std::string("BULWARK_SERVER__LIST\xd6N"), "x"}};
    CHECK(layers_error(env) == "an environment variable's name is not valid UTF-8");
    // The fuzzer's input, as fuzz_config splits it into variables.
    std::ifstream in(BULWARK_SOURCE_DIR "/tests/fuzz/regressions/config/env-invalid-utf8", std::ios::binary);
    env.environment.clear();
    for (std::string line; std::getline(in, line);) {
      const auto eq = line.find('=');
      if (eq != std::string::npos) env.environment.emplace_back(line.substr(0, eq), line.substr(eq + 1));
    }
    CHECK(layers_error(env).find("not valid UTF-8") != std::string::npos);
  }

  TEST_CASE("bulwark_environment lists this process's BULWARK_ variables, sorted") {
    ::setenv("BULWARK_ZZ_TEST__B", "2", 1);
    ::setenv("BULWARK_ZZ_TEST__A", "1", 1);
    const auto env = bulwark::bulwark_environment();
    ::unsetenv("BULWARK_ZZ_TEST__A");
    ::unsetenv("BULWARK_ZZ_TEST__B");
    CHECK(std::is_sorted(env.begin(), env.end()));
    const auto a = std::find(env.begin(), env.end(), std::pair<std::string, std::string>{"BULWARK_ZZ_TEST__A", "1"});
    REQUIRE(a != env.end());
    CHECK(*(a + 1) == std::pair<std::string, std::string>{"BULWARK_ZZ_TEST__B", "2"});
    for (const auto& [name, value] : env) CHECK(name.rfind("BULWARK_", 0) == 0);
  }
}
