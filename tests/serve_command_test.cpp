// `bulwark serve` as a process: start, serve, drain on SIGTERM, exit 0.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <vector>

#include "support/http_client.hpp"
#include "support/serve_process.hpp"
#include "support/wait.hpp"

using namespace std::chrono_literals;
using bulwark::testing::http;
using Process = bulwark::testing::ServeProcess;
using nlohmann::json;


TEST_SUITE("bulwark serve") {
  TEST_CASE("SIGTERM drains the job in flight, reports unrun jobs and exits 0" * doctest::timeout(60)) {
    Process p(BULWARK_SOURCE_DIR "/tests/support/serve.json");
    const std::string first = p.read_line();
    REQUIRE(first.find("listening on http://127.0.0.1:") != std::string::npos);
    const auto port = static_cast<std::uint16_t>(std::stoi(first.substr(first.rfind(':') + 1)));
    CHECK(p.read_line().find("curl -s -X POST") != std::string::npos);

    auto running = http(port, "POST", "/v1/jobs", R"({"type": "hang", "payload": {"ms": 2000}})");
    REQUIRE(running.status == 201);
    const std::string id = running.json()["id"];
    REQUIRE(http(port, "POST", "/v1/jobs", R"({"type": "echo", "delay_ms": 3600000})").status == 201);
    while (http(port, "GET", "/v1/jobs/" + id).json()["state"] != "running") std::this_thread::sleep_for(5ms);

    REQUIRE(::kill(p.pid, SIGTERM) == 0);
    std::this_thread::sleep_for(100ms);
    // Still answering while it drains, but no longer ready and no new jobs.
    CHECK(http(port, "GET", "/readyz").status == 503);
    CHECK(http(port, "POST", "/v1/jobs", R"({"type": "echo"})").status == 503);
    CHECK(p.wait_exit() == 0);
    const std::string err = p.stderr_text();
    CAPTURE(err);
    CHECK(err.find("SIGTERM received") != std::string::npos);
    // Only the delayed job did not run; the one in flight finished.
    CHECK(err.find("stopped; 1 jobs ended with kind shutdown") != std::string::npos);
  }

  TEST_CASE("with JSON logs to standard output, every line there is one ECS object, serve's own lines too" *
            doctest::timeout(60)) {
    Process p(BULWARK_SOURCE_DIR "/tests/support/serve-json-logs.json");
    std::vector<json> lines;
    std::uint16_t port = 0;
    while (port == 0) {  // "runtime started", then the address
      const std::string line = p.read_line();
      REQUIRE_FALSE(line.empty());
      lines.push_back(json::parse(line));
      const std::string message = lines.back()["message"];
      if (message.find("listening on http://127.0.0.1:") != std::string::npos) {
        port = static_cast<std::uint16_t>(std::stoi(message.substr(message.rfind(':') + 1)));
      }
    }
    REQUIRE(http(port, "POST", "/v1/jobs", R"({"type": "fail", "id": "ecs", "max_attempts": 1})").status == 201);
    REQUIRE(bulwark::testing::eventually([&] { return http(port, "GET", "/v1/jobs/ecs").json()["state"] == "failed"; }, 10s));
    REQUIRE(::kill(p.pid, SIGTERM) == 0);
    for (std::string line = p.read_line(); !line.empty(); line = p.read_line()) lines.push_back(json::parse(line));
    CHECK(p.wait_exit() == 0);
    bool failure = false;
    bool stopped = false;
    for (const json& j : lines) {
      CHECK(j.contains("@timestamp"));
      CHECK(j.contains("log.level"));
      if (j["message"] == "job attempt failed") {
        failure = true;
        CHECK(j["job.id"] == "ecs");
        CHECK(j["error.type"] == "std::runtime_error");
        CHECK(j["error.stack_trace"].get<std::string>().find("fail_throw_site") != std::string::npos);
      }
      if (j["message"].get<std::string>().find("bulwark serve: stopped") == 0) stopped = true;
    }
    CHECK(failure);
    CHECK(stopped);
    CHECK(p.stderr_text().empty());  // nothing went around the log
  }

  TEST_CASE("a bad configuration exits 2 naming the key" * doctest::timeout(60)) {
    Process p(BULWARK_SOURCE_DIR "/tests/support/bad-config.json");
    CHECK(p.wait_exit() == 2);
    CHECK(p.stderr_text().find("handlers.fail.max_attempts: expected an integer") != std::string::npos);
  }

  TEST_CASE("isolated job types work through the HTTP API; /v1/workers lists the child processes" *
            doctest::timeout(60)) {
    Process p(BULWARK_SOURCE_DIR "/tests/support/serve.json");
    const std::string first = p.read_line();
    REQUIRE(first.find("listening on http://127.0.0.1:") != std::string::npos);
    const auto port = static_cast<std::uint16_t>(std::stoi(first.substr(first.rfind(':') + 1)));
    const auto finish = [&](const std::string& body) {
      auto submitted = http(port, "POST", "/v1/jobs", body);
      REQUIRE(submitted.status == 201);
      const std::string id = submitted.json()["id"];
      for (;;) {
        json job = http(port, "GET", "/v1/jobs/" + id).json();
        const std::string state = job["state"];
        if (state == "succeeded" || state == "failed" || state == "cancelled") return job;
        std::this_thread::sleep_for(5ms);
      }
    };
    const json crashed = finish(R"({"type": "crash", "payload": {"how": "abort"}, "max_attempts": 1})");
    CHECK(crashed["state"] == "failed");
    CHECK(crashed["error"]["kind"] == "crash");
    CHECK(crashed["error"]["signal"] == "SIGABRT");
    const json fine = finish(R"({"type": "crash", "payload": {"how": "none"}})");
    CHECK(fine["state"] == "succeeded");

    const json workers = http(port, "GET", "/v1/workers").json();
    REQUIRE(workers["processes"].is_array());
    REQUIRE(!workers["processes"].empty());
    unsigned restarts = 0;
    for (const auto& proc : workers["processes"]) {
      CHECK(proc["pid"].get<int>() > 0);
      restarts += proc["restarts"].get<unsigned>();
    }
    CHECK(restarts == 1);
    const std::string metrics = http(port, "GET", "/metrics").body;
    CHECK(metrics.find("bulwark_process_ends_total{reason=\"SIGABRT\"} 1") != std::string::npos);

    REQUIRE(::kill(p.pid, SIGTERM) == 0);
    CHECK(p.wait_exit() == 0);
  }
}
