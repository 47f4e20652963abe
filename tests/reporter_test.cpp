#include <doctest/doctest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <sstream>

#include <spdlog/logger.h>
#include <spdlog/sinks/ostream_sink.h>

#include "builtin_workers.hpp"
#include "bulwark/runtime.hpp"

using nlohmann::json;
using namespace std::chrono_literals;

namespace {

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Runs one failing `fail` job (two attempts) with the given log format and
// returns the log file's lines.
std::vector<std::string> log_of_failing_job(const std::string& format) {
  const std::string path = "/tmp/bulwark_reporter_test_" + format + ".log";
  std::remove(path.c_str());
  bulwark::RuntimeOptions o;
  o.workers = 1;
  o.logging = {.level = "info", .format = format, .file = path};
  o.retry.initial = 1ms;
  {
    bulwark::Registry r;
    bulwark::workers::register_builtin(r);
    bulwark::Runtime rt(std::move(r), o);
    REQUIRE(rt.submit({.type = "fail", .payload = {{"throw", "out_of_range"}, {"message", "index 3"}},
                       .id = "log-me", .max_attempts = 2}));
    REQUIRE(rt.wait_idle(10s));
  }  // the destructor flushes the log
  return read_lines(path);
}

}  // namespace

TEST_SUITE("Reporter") {
  TEST_CASE("each failed attempt is logged once as an ECS JSON object with job and error fields and the trace" *
            doctest::timeout(30)) {
    std::vector<json> failures;
    for (const std::string& line : log_of_failing_job("json")) {
      const json j = json::parse(line);  // every line is one JSON object
      CHECK(j.contains("@timestamp"));
      CHECK(j.contains("log.level"));
      CHECK(j.contains("message"));
      CHECK(j["ecs.version"].is_string());
      if (j.value("message", "") == "job attempt failed") failures.push_back(j);
    }
    REQUIRE(failures.size() == 2);
    for (int i = 0; i < 2; ++i) {
      const json& f = failures[static_cast<std::size_t>(i)];
      CHECK(f["log.level"] == "error");
      CHECK(f["job.id"] == "log-me");
      CHECK(f["job.type"] == "fail");
      CHECK(f["job.attempt"] == i + 1);
      CHECK(f["job.max_attempts"] == 2);
      CHECK(f["error.type"] == "std::out_of_range");
      CHECK(f["error.message"] == "index 3");
      CHECK(f["bulwark.failure.kind"] == "exception");
      REQUIRE(f["error.stack_trace"].is_string());  // ECS: the trace as text, one frame per line
      CHECK(f["error.stack_trace"].get<std::string>().rfind("#0 bulwark::workers::(anonymous namespace)::fail_throw_site", 0) == 0);
      REQUIRE(f["bulwark.stack_frames"].is_array());  // and as frames
      REQUIRE_FALSE(f["bulwark.stack_frames"].empty());
      CHECK(f["bulwark.stack_frames"][0]["function"].get<std::string>().find("fail_throw_site") != std::string::npos);
      CHECK(f["bulwark.stack_frames"][0]["line"].get<int>() > 0);
    }
    CHECK(failures[0].contains("bulwark.retry_in_ms"));
    CHECK_FALSE(failures[1].contains("bulwark.retry_in_ms"));
  }

  TEST_CASE("an embedding program's spdlog logger receives bulwark's lines, at its own level" * doctest::timeout(30)) {
    std::ostringstream out;
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
    auto logger = std::make_shared<spdlog::logger>("app", sink);
    logger->set_pattern("%v");
    logger->set_level(spdlog::level::err);  // info lines (runtime started) are not wanted
    bulwark::RuntimeOptions o;
    o.workers = 1;
    o.logging.format = "json";
    o.logging.logger = logger;
    o.logging.level = "trace";  // not used: the logger's level decides
    {
      bulwark::Registry r;
      bulwark::workers::register_builtin(r);
      bulwark::Runtime rt(std::move(r), o);
      REQUIRE(rt.submit({.type = "fail", .payload = {{"throw", "runtime_error"}, {"message", "to the app"}},
                         .id = "app-log", .max_attempts = 1}));
      REQUIRE(rt.wait_idle(10s));
    }
    std::istringstream lines(out.str());
    int failures = 0;
    for (std::string line; std::getline(lines, line);) {
      const json j = json::parse(line);
      CHECK(j["log.level"] == "error");  // nothing below the logger's level
      if (j["message"] == "job attempt failed") {
        ++failures;
        CHECK(j["job.id"] == "app-log");
        CHECK(j["error.message"] == "to the app");
      }
    }
    CHECK(failures == 1);
  }

  TEST_CASE("the text format names the job, the error and the throwing function" * doctest::timeout(30)) {
    const auto lines = log_of_failing_job("text");
    std::string all;
    for (const auto& l : lines) all += l + "\n";
    CHECK(all.find("job log-me (fail) attempt 1/2 failed: std::out_of_range: index 3; retry in") !=
          std::string::npos);
    CHECK(all.find("attempt 2/2 failed: std::out_of_range: index 3; no attempts left") != std::string::npos);
    CHECK(all.find("#0 bulwark::workers::(anonymous namespace)::fail_throw_site") != std::string::npos);
  }

  TEST_CASE("an unwritable log file is a configuration error naming the key" * doctest::timeout(30)) {
    bulwark::RuntimeOptions o;
    o.logging.file = "/dev/null/x.log";  // a file cannot be a directory
    CHECK_THROWS_AS(bulwark::Runtime(bulwark::Registry{}, o), bulwark::ConfigError);
    try {
      bulwark::Runtime rt(bulwark::Registry{}, o);
    } catch (const bulwark::ConfigError& e) {
      CHECK(std::string(e.what()).rfind("logging.file: ", 0) == 0);
    }
  }
}
