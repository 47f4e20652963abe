// Several `bulwark serve` processes on one Redis (queue.backend "redis"):
// jobs submitted to one are run by all, any process answers for any job,
// and a process killed with SIGKILL in the middle of the work loses nothing:
// its jobs come back after their lease and run again (at least once).
//
// BULWARK_CRASH_JOBS sets how many jobs the crash case submits (default
// 3000 here; the README's figures are from 30000).
#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <thread>

#include "support/http_client.hpp"
#include "support/redis_server.hpp"
#include "support/serve_process.hpp"
#include "support/wait.hpp"

using namespace std::chrono_literals;
using bulwark::testing::eventually;
using bulwark::testing::http;
using bulwark::testing::ServeProcess;
using nlohmann::json;

namespace {

// A config for a process of the shared queue, in the server's temp dir.
// Finished jobs are all kept (retention.max_finished), so the test can see
// every one of them.
std::string write_config(const bulwark::testing::RedisServer& server, const std::string& path, int lease_ms,
                         int keep = 10'000, const std::string& log_level = "error") {
  std::ofstream out(path);
  out << json{{"workers", 2},
              {"logging", {{"level", log_level}}},
              {"server", {{"listen", "127.0.0.1:0"}, {"drain_timeout_ms", 2000}}},
              {"queue", {{"backend", "redis"}}},
              {"redis", {{"url", server.url()}, {"namespace", "serve"}, {"lease_ms", lease_ms}}},
              {"retention", {{"max_finished", keep}}},
              {"retry", {{"max_attempts", 3}, {"backoff_initial_ms", 10}, {"backoff_max_ms", 50}}}}
             .dump();
  return path;
}

// Every job of the shared queue, through one process's listing.
std::vector<json> all_jobs(std::uint16_t port) {
  std::vector<json> jobs;
  std::string cursor;
  for (;;) {
    auto r = http(port, "GET", "/v1/jobs?limit=1000" + (cursor.empty() ? "" : "&cursor=" + cursor));
    REQUIRE(r.status == 200);
    const json j = r.json();
    for (const auto& job : j["jobs"]) jobs.push_back(job);
    if (j["next_cursor"].is_null()) return jobs;
    cursor = j["next_cursor"].get<std::string>();
  }
}

std::size_t unfinished(std::uint16_t port) {
  const json by_state = http(port, "GET", "/v1/stats").json()["by_state"];
  std::size_t n = 0;
  for (const char* s : {"queued", "scheduled", "running"}) n += by_state.value(s, std::size_t{0});
  return n;
}

}  // namespace

TEST_SUITE("redis serve") {
  TEST_CASE("a process killed mid-run loses no accepted job; its jobs run again after their lease" *
            doctest::timeout(300)) {
    bulwark::testing::RedisServer server;
    const char* env = std::getenv("BULWARK_CRASH_JOBS");
    const int n = env != nullptr ? std::atoi(env) : 3000;
    const std::string config = write_config(server, "/tmp/bulwark-redis-serve.json", 1000, n + 100);
    std::vector<std::unique_ptr<ServeProcess>> procs;
    std::vector<std::uint16_t> ports;
    for (int i = 0; i < 3; ++i) {
      procs.push_back(std::make_unique<ServeProcess>(config, "/tmp/bulwark-redis-serve-" + std::to_string(i) + ".err"));
      ports.push_back(procs.back()->port_from_banner());
    }
    for (int i = 0; i < n; ++i) {
      const std::string body = i % 10 == 0 ? R"({"type": "sleep", "payload": {"ms": 20}})" : R"({"type": "echo"})";
      REQUIRE(http(ports[static_cast<std::size_t>(i % 3)], "POST", "/v1/jobs", body).status == 201);
    }
    // Kill one process while work is left, holding jobs it has not finished.
    REQUIRE(bulwark::testing::eventually([&] { return unfinished(ports[1]) < static_cast<std::size_t>(n) * 3 / 4; }, 60s));
    const auto killed_at = std::chrono::system_clock::now();
    ::kill(procs[0]->pid, SIGKILL);
    REQUIRE(procs[0]->wait_exit() == -1);
    REQUIRE(bulwark::testing::eventually([&] { return unfinished(ports[1]) == 0; }, 120s));
    const auto done_at = std::chrono::system_clock::now();

    const std::vector<json> jobs = all_jobs(ports[2]);
    std::map<std::string, int> by_state;
    int redelivered = 0;
    double latest_taken_back_s = 0;  // after the kill: when the last of the killed process's jobs was queued again
    const auto killed_ms = std::chrono::duration_cast<std::chrono::milliseconds>(killed_at.time_since_epoch()).count();
    auto redis = server.connect();
    for (const json& j : jobs) {
      ++by_state[j["state"].get<std::string>()];
      if (j["attempts"].get<int>() > 1) {
        ++redelivered;
        const std::string key = "{serve}:job:" + j["id"].get<std::string>();
        const long long lost_ms = redis.command({"HGET", key, "lost_ms"}).as_integer();
        latest_taken_back_s = std::max(latest_taken_back_s, static_cast<double>(lost_ms - killed_ms) / 1000.0);
      }
    }
    // Duplicates of results: every end is on the ended stream once, and
    // only one attempt's end can be written per job.
    std::map<std::string, int> ends;
    const auto stream = redis.command({"XRANGE", "{serve}:ended", "-", "+"}).elements;
    const bool whole = stream.size() < 9'000;  // the stream keeps about 10,000 entries
    for (const auto& entry : stream) {
      const auto& fields = entry.elements.at(1).elements;  // id, state, id, state, ...
      for (std::size_t i = 0; i + 1 < fields.size(); i += 2) ++ends[fields[i].str];
    }
    int duplicate_ends = 0;
    for (const auto& [id, count] : ends) duplicate_ends += count - 1;
    MESSAGE("crash: " << n << " jobs, 3 processes, one killed; " << redelivered << " run again after a lost lease, "
                      << "the last of them taken back " << latest_taken_back_s << " s after the kill (lease 1 s); "
                      << std::chrono::duration<double>(done_at - killed_at).count() << " s from the kill to the last end; "
                      << duplicate_ends << " duplicate results");
    CHECK(jobs.size() == static_cast<std::size_t>(n));          // none lost
    CHECK(by_state["succeeded"] == n);                           // every one ended with its result
    CHECK(redelivered <= 4);                                     // at most what the killed process held
    REQUIRE_MESSAGE(whole, "the ended stream was capped: run with fewer jobs (BULWARK_CRASH_JOBS)");
    CHECK(ends.size() == static_cast<std::size_t>(n));          // every end written...
    CHECK(duplicate_ends == 0);                                  // ...once
    // Queued again within the lease and a few sweeps (they then wait their
    // turn behind fresh jobs, like every retry).
    CHECK(latest_taken_back_s < 1.0 + 2.0 * BULWARK_TIME_SCALE);
  }

  TEST_CASE("a 2,000-child flow on two processes, one SIGKILLed mid-flow: the parent ends once, listing every child" *
            doctest::timeout(300)) {
    bulwark::testing::RedisServer server;
    const std::string config = write_config(server, "/tmp/bulwark-redis-flow.json", 1000, 5000);
    std::vector<std::unique_ptr<ServeProcess>> procs;
    std::vector<std::uint16_t> ports;
    for (int i = 0; i < 2; ++i) {
      procs.push_back(std::make_unique<ServeProcess>(config, "/tmp/bulwark-redis-flow-" + std::to_string(i) + ".err"));
      ports.push_back(procs.back()->port_from_banner());
    }
    constexpr int kChildren = 2000;
    json flow = {{"type", "collect"}, {"id", "album"}, {"children", json::array()}};
    for (int i = 0; i < kChildren; ++i) flow["children"].push_back({{"type", "sleep"}, {"payload", {{"ms", 4}}}});
    auto submitted = http(ports[1], "POST", "/v1/jobs", flow.dump());
    REQUIRE(submitted.status == 201);
    CHECK(submitted.json()["state"] == "waiting_children");
    const auto children_of = [&](std::uint16_t port) { return http(port, "GET", "/v1/jobs/album").json()["children"]; };
    // Kill one process while children are left, some of them leased to it.
    REQUIRE(eventually([&] { return children_of(ports[1])["succeeded"].get<int>() >= kChildren / 5; }, 60s));
    CHECK(children_of(ports[1])["pending"].get<int>() > 0);
    ::kill(procs[0]->pid, SIGKILL);
    REQUIRE(procs[0]->wait_exit() == -1);
    json parent;
    REQUIRE(eventually([&] {
      parent = http(ports[1], "GET", "/v1/jobs/album").json();
      return parent["state"] == "succeeded";
    }, 120s));
    CHECK(parent["attempts"] == 1);
    CHECK(parent["children"] == json{{"total", kChildren}, {"succeeded", kChildren}, {"failed", 0}, {"cancelled", 0},
                                     {"pending", 0}});
    REQUIRE(parent["result"].size() == static_cast<std::size_t>(kChildren));  // every child listed, once
    // The parent's start and end happened once: one end on the stream, and
    // each child's end once.
    auto redis = server.connect();
    std::map<std::string, int> ends;
    for (const auto& entry : redis.command({"XRANGE", "{serve}:ended", "-", "+"}).elements) {
      const auto& fields = entry.elements.at(1).elements;
      for (std::size_t i = 0; i + 1 < fields.size(); i += 2) ++ends[fields[i].str];
    }
    CHECK(ends["album"] == 1);
    int lost = 0;
    for (int i = 0; i < kChildren; ++i) {
      const std::string id = "album.c" + std::to_string(i);
      CHECK(ends[id] == 1);
      lost += redis.command({"HGET", "{serve}:job:" + id, "lost_ms"}).is_nil() ? 0 : 1;
    }
    MESSAGE("flow: " << kChildren << " children on 2 processes, one killed; " << lost
                     << " children taken over after their lease");
    CHECK(redis.command({"HLEN", "{serve}:kids-ended:album"}).as_integer() == kChildren);
  }

  TEST_CASE("a process stopped past its lease and resumed: another takes the job over and retries it; the late "
            "result is dropped with a warning and counted" * doctest::timeout(120)) {
    bulwark::testing::RedisServer server;
    const std::string config =
        write_config(server, "/tmp/bulwark-redis-stop.json", 1000, 10'000, /*log_level=*/"warn");
    ServeProcess a(config, "/tmp/bulwark-redis-stop-a.err");
    const auto pa = a.port_from_banner();
    const int sleep_ms = 3000 * BULWARK_TIME_SCALE;
    const std::string body =
        json{{"type", "sleep"}, {"payload", {{"ms", sleep_ms}}}, {"id", "stopped"}, {"max_attempts", 2}}.dump();
    REQUIRE(http(pa, "POST", "/v1/jobs", body).status == 201);
    REQUIRE(bulwark::testing::eventually([&] {
      return http(pa, "GET", "/v1/jobs/stopped").json().value("state", "") == "running";
    }));
    ServeProcess b(config, "/tmp/bulwark-redis-stop-b.err");  // after A took the job
    const auto pb = b.port_from_banner();
    ::kill(a.pid, SIGSTOP);  // A stalls holding the lease
    // B takes the lease over once it has run out, ends attempt 1 as
    // lease_lost and runs attempt 2.
    REQUIRE(bulwark::testing::eventually([&] {
      const json j = http(pb, "GET", "/v1/jobs/stopped").json();
      return j.value("attempts", 0) == 2 && j.value("state", "") == "running";
    }, 20s));
    ::kill(a.pid, SIGCONT);  // A resumes in the middle of attempt 1
    REQUIRE(bulwark::testing::eventually([&] {
      return http(pa, "GET", "/metrics").body.find("bulwark_results_dropped_total 1") != std::string::npos;
    }, 20s));
    const json done = [&] {
      json j;
      REQUIRE(bulwark::testing::eventually([&] {
        j = http(pb, "GET", "/v1/jobs/stopped").json();
        return j.value("state", "") == "succeeded";
      }, 30s));
      return j;
    }();
    CHECK(done["attempts"] == 2);
    auto redis = server.connect();
    CHECK(redis.command({"HGET", "{serve}:job:stopped", "fence"}).str == "3");  // A's lease was 1
    CHECK(http(pb, "GET", "/metrics").body.find(R"(bulwark_recoveries_total{type="sleep",kind="lease_lost"} 1)") !=
          std::string::npos);
    const auto text_of = [](const std::string& path) {
      std::ifstream in(path);
      return std::string(std::istreambuf_iterator<char>(in), {});
    };
    const std::string a_log = text_of(a.err_path);
    const std::string b_log = text_of(b.err_path);
    CHECK(a_log.find("lease of job stopped (sleep, attempt 1) lost: taken over by process") != std::string::npos);
    CHECK(a_log.find("result of attempt 1 of job stopped dropped: lease taken over by process") != std::string::npos);
    CHECK(b_log.find("lease of job stopped (sleep, attempt 1) held by process") != std::string::npos);
    CHECK(b_log.find("expired: taken over by this process") != std::string::npos);
  }

  TEST_CASE("jobs submitted to one process are run by all; any process answers, cancels and retries" *
            doctest::timeout(120)) {
    bulwark::testing::RedisServer server;
    const std::string config = write_config(server, "/tmp/bulwark-redis-serve2.json", 2000);
    ServeProcess a(config, "/tmp/bulwark-redis-serve-a.err");
    ServeProcess b(config, "/tmp/bulwark-redis-serve-b.err");
    const auto pa = a.port_from_banner();
    const auto pb = b.port_from_banner();
    for (int i = 0; i < 100; ++i) REQUIRE(http(pa, "POST", "/v1/jobs", R"({"type": "sleep", "payload": {"ms": 5}})").status == 201);
    REQUIRE(bulwark::testing::eventually([&] { return unfinished(pb) == 0; }, 60s));
    const json sa = http(pa, "GET", "/v1/stats").json();
    const json sb = http(pb, "GET", "/v1/stats").json();
    CHECK(sa["totals"]["succeeded"].get<int>() > 0);
    CHECK(sb["totals"]["succeeded"].get<int>() > 0);  // b ran some of a's jobs
    CHECK(sa["totals"]["succeeded"].get<int>() + sb["totals"]["succeeded"].get<int>() == 100);
    // Either process shows the workers of both.
    const json workers = http(pb, "GET", "/v1/workers").json();
    REQUIRE(workers["cluster"].size() == 2);
    for (const json& p : workers["cluster"]) {
      CHECK(p["alive"] == true);
      CHECK(p["verdict"] == "healthy");
      CHECK(p["worker_states"].size() == 2);
    }
    CHECK(http(pa, "GET", "/v1/processes").json()["processes"].size() == 2);

    REQUIRE(http(pa, "POST", "/v1/jobs", R"({"type": "fail", "id": "dead", "max_attempts": 1})").status == 201);
    REQUIRE(bulwark::testing::eventually([&] { return http(pb, "GET", "/v1/jobs/dead").json()["state"] == "failed"; }, 30s));
    CHECK(http(pb, "POST", "/v1/jobs/dead/retry").status == 200);
    REQUIRE(http(pb, "POST", "/v1/jobs", R"({"type": "echo", "id": "later", "delay_ms": 3600000})").status == 201);
    CHECK(http(pa, "POST", "/v1/jobs/later/cancel").json()["state"] == "cancelled");
    CHECK(http(pa, "POST", "/v1/jobs", R"({"type": "echo", "id": "later"})").status == 409);
  }

  TEST_CASE("bulwark run on the shared queue writes every line's end, also of the lines another process ran" *
            doctest::timeout(120)) {
    bulwark::testing::RedisServer server;
    const std::string config = write_config(server, "/tmp/bulwark-redis-run.json", 2000);
    ServeProcess helper(config, "/tmp/bulwark-redis-run-helper.err");
    const auto port = helper.port_from_banner();
    REQUIRE(http(port, "POST", "/v1/jobs", R"({"type": "sleep", "id": "not-ours", "payload": {"ms": 1}})").status == 201);
    std::ofstream in("/tmp/bulwark-redis-run.jsonl");
    const int n = 200;
    for (int i = 1; i <= n; ++i) {
      if (i == 7) {
        in << "{not json\n";
      } else if (i % 50 == 0) {
        in << R"({"type": "fail", "max_attempts": 1})" << "\n";
      } else if (i == 11) {
        in << R"({"type": "echo", "id": "named", "payload": {"n": 11}})" << "\n";
      } else {
        in << R"({"type": "sleep", "payload": {"ms": 5}})" << "\n";
      }
    }
    in.close();
    const std::string cmd = std::string(BULWARK_BINARY) + " run --config " + config +
                            " --workers 1 --input /tmp/bulwark-redis-run.jsonl --output /tmp/bulwark-redis-run.out"
                            " 2>/tmp/bulwark-redis-run.err";
    const int raw = std::system(cmd.c_str());
    CHECK(WIFEXITED(raw));
    CHECK(WEXITSTATUS(raw) == 1);  // some lines failed
    std::map<int, json> lines;
    std::ifstream out("/tmp/bulwark-redis-run.out");
    for (std::string line; std::getline(out, line);) {
      const json j = json::parse(line);
      CHECK(lines.emplace(j["line"].get<int>(), j).second);  // each line once
    }
    REQUIRE(lines.size() == static_cast<std::size_t>(n));
    CHECK(lines[7]["state"] == "rejected");
    CHECK(lines[50]["state"] == "failed");
    CHECK(lines[50]["error"]["type"] != "");
    CHECK(lines[11]["id"] == "named");
    CHECK(lines[11]["result"] == json{{"n", 11}});
    CHECK(lines[12]["state"] == "succeeded");
    CHECK(lines[12]["id"].get<std::string>().rfind("run-", 0) == 0);  // named after the run and its line
    CHECK(lines[12]["id"].get<std::string>().find("-12") != std::string::npos);
    // The helper ran some of the lines; the run did not wait for the job it never submitted.
    CHECK(http(port, "GET", "/v1/stats").json()["totals"]["succeeded"].get<int>() > 1);
  }

  TEST_CASE("a job waits in its named queue, seen with no consumer, until a process that lists the queue runs it" *
            doctest::timeout(120)) {
    bulwark::testing::RedisServer server;
    const std::string plain = write_config(server, server.dir() + "/plain.json", 2000);
    json gpu_config = json::parse(std::ifstream(plain));
    gpu_config["queues"] = {{"gpu", 1}};
    const std::string gpu = server.dir() + "/gpu.json";
    std::ofstream(gpu) << gpu_config.dump();

    ServeProcess a(plain, server.dir() + "/a.err");
    const std::uint16_t port = a.port_from_banner();
    REQUIRE(http(port, "POST", "/v1/jobs", json{{"id", "g1"}, {"type", "echo"}, {"queue", "gpu"}, {"payload", 1}}.dump())
                .status == 201);
    REQUIRE(http(port, "POST", "/v1/jobs", json{{"id", "d1"}, {"type", "echo"}, {"payload", 2}}.dump()).status == 201);
    REQUIRE(eventually([&] { return http(port, "GET", "/v1/jobs/d1").json()["state"] == "succeeded"; }, 20s));
    std::this_thread::sleep_for(300ms);  // a few fetches: the gpu job is not among them
    json job = http(port, "GET", "/v1/jobs/g1").json();
    CHECK(job["state"] == "queued");
    CHECK(job["queue"] == "gpu");
    const json queues = http(port, "GET", "/v1/stats").json()["queues"];
    CHECK(queues["gpu"]["waiting"] == 1);
    CHECK(queues["gpu"]["consumers"] == 0);
    CHECK(queues["gpu"]["weight"] == 0);
    CHECK(queues["default"]["consumers"] == 1);
    CHECK(http(port, "GET", "/metrics").body.find("bulwark_named_queue_consumers{queue=\"gpu\"} 0") != std::string::npos);

    ServeProcess b(gpu, server.dir() + "/b.err");
    const std::uint16_t gpu_port = b.port_from_banner();
    CHECK(eventually([&] { return http(port, "GET", "/v1/jobs/g1").json()["state"] == "succeeded"; }, 20s));
    CHECK(eventually([&] { return http(gpu_port, "GET", "/v1/stats").json()["queues"]["gpu"]["consumers"] == 1; }, 10s));
    const json processes = http(port, "GET", "/v1/processes").json()["processes"];
    std::set<std::string> listed;
    for (const json& p : processes) listed.insert(p["queues"].dump());
    CHECK(listed == std::set<std::string>{R"(["default"])", R"(["gpu"])"});
  }
}
