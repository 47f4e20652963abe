// The admin commands end to end: the bulwark program against a real server
// (in this process), and the Beast client they share with these tests.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "bulwark/http_server.hpp"
#include "bulwark/runtime.hpp"
#include "http/client.hpp"
#include "support/helpers.hpp"
#include "support/wait.hpp"

using namespace std::chrono_literals;
using nlohmann::json;

namespace {

struct Service {
  Service() : runtime(bulwark::testing::builtins(), options()), server(runtime, options().server) {}
  static bulwark::RuntimeOptions options() {
    auto o = bulwark::testing::test_options(2);
    o.server.listen = "127.0.0.1:0";
    return o;
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server.port()); }
  bulwark::Runtime runtime;
  bulwark::HttpServer server;
};

struct Ran {
  int status = -1;
  std::string out;  // standard output
};

// Runs `bulwark ARGS` with standard error thrown away.
Ran bulwark_cli(const std::string& args) {
  Ran r;
  FILE* p = ::popen((std::string(BULWARK_BINARY) + " " + args + " 2>/dev/null").c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p) != nullptr) r.out += buf;
  const int raw = ::pclose(p);
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return r;
}

}  // namespace

TEST_SUITE("admin commands") {
  TEST_CASE("submit --wait: exit 0 when the job succeeds, 1 when it fails, with its record" * doctest::timeout(60)) {
    Service s;
    const std::string server = " --server " + s.url();
    Ran ok = bulwark_cli("submit echo '{\"hello\": 1}' --wait" + server);
    CHECK(ok.status == 0);
    CHECK(ok.out.find("succeeded") != std::string::npos);
    CHECK(ok.out.find("{\"hello\":1}") != std::string::npos);
    Ran failed = bulwark_cli("submit fail '{\"throw\": \"runtime_error\", \"message\": \"boom\"}' --max-attempts 1 --wait" +
                             server);
    CHECK(failed.status == 1);
    CHECK(failed.out.find("std::runtime_error: boom") != std::string::npos);
    CHECK(failed.out.find("fail_throw_site") != std::string::npos);  // the throw-site trace
    Ran json_out = bulwark_cli("submit echo 7 --priority 3 --json" + server);
    REQUIRE(json_out.status == 0);
    const json accepted = json::parse(json_out.out);
    CHECK(accepted["state"] == "queued");
    REQUIRE(s.runtime.wait(accepted["id"], 10s));
    CHECK(s.runtime.get(accepted["id"])->priority == 3);
    // --wait-s gives up on a job still running: exit 1, its record as it is
    // (the job sleeps 40 s; the command must not wait for it).
    Ran gave_up = bulwark_cli("submit sleep '{\"ms\": 40000}' --id long-one --wait --wait-s 1" + server);
    CHECK(gave_up.status == 1);
    CHECK(gave_up.out.find("running") != std::string::npos);
    CHECK_FALSE(bulwark::is_terminal(s.runtime.get("long-one")->state));
    s.runtime.cancel("long-one");
  }

  TEST_CASE("get, list, dead, retry, cancel, stats, workers" * doctest::timeout(60)) {
    Service s;
    const std::string server = " --server " + s.url();
    auto failed = s.runtime.submit({.type = "fail", .payload = {{"throw", "runtime_error"}}, .max_attempts = 1});
    REQUIRE(s.runtime.wait(failed.id, 10s)->state == bulwark::JobState::failed);
    Ran got = bulwark_cli("get " + failed.id + server);
    CHECK(got.status == 0);
    CHECK(got.out.find("thrown at") != std::string::npos);
    Ran dead = bulwark_cli("dead --json" + server);
    REQUIRE(dead.status == 0);
    CHECK(json::parse(dead.out)["jobs"][0]["id"] == failed.id);
    CHECK(bulwark_cli("dead" + server).out.find(failed.id) != std::string::npos);
    CHECK(bulwark_cli("list --state failed --type fail" + server).out.find(failed.id) != std::string::npos);
    Ran retried = bulwark_cli("retry " + failed.id + server);
    CHECK(retried.status == 0);
    CHECK(retried.out.find("queued") != std::string::npos);
    CHECK(bulwark_cli("retry no-such-job" + server).status == 3);
    auto slow = s.runtime.submit({.type = "sleep", .payload = {{"ms", 10'000}}, .delay = 60s});
    Ran cancelled = bulwark_cli("cancel " + slow.id + server);
    CHECK(cancelled.status == 0);
    CHECK(s.runtime.get(slow.id)->state == bulwark::JobState::cancelled);
    Ran stats = bulwark_cli("stats" + server);
    CHECK(stats.status == 0);
    CHECK(stats.out.find("submitted") != std::string::npos);
    CHECK(stats.out.find("QUEUE") != std::string::npos);  // each named queue's counts
    Ran paused = bulwark_cli("pause --queues default" + server);
    CHECK(paused.status == 0);
    CHECK(paused.out == "queue default  paused\n");
    CHECK(bulwark_cli("resume --queues default" + server).out == "queue default  resumed\n");
    CHECK(bulwark_cli("pause --queues nope" + server).status == 3);
    CHECK(bulwark_cli("list --queue nope" + server).out.find(slow.id) == std::string::npos);
    CHECK(bulwark_cli("list --queue default" + server).out.find(slow.id) != std::string::npos);
    CHECK(json::parse(bulwark_cli("stats --json" + server).out).contains("totals"));
    Ran workers = bulwark_cli("workers" + server);
    CHECK(workers.status == 0);
    CHECK(workers.out.find("verdict healthy") != std::string::npos);
  }

  TEST_CASE("flow show prints a flow's tree, each job with its state, children indented" * doctest::timeout(60)) {
    Service s;
    bulwark::JobSpec flow = bulwark::group({{.type = "echo", .payload = 1}, {.type = "fail"}});
    flow.id = "tree1";
    flow.on_child_failure = bulwark::ChildFailure::ignore;
    REQUIRE(s.runtime.submit(flow));
    REQUIRE(bulwark::testing::await_terminal(s.runtime, "tree1"));
    const Ran shown = bulwark_cli("flow show tree1 --server " + s.url());
    CHECK(shown.status == 0);
    CHECK(shown.out.find("tree1  collect  succeeded  children 2/2 ended (1 failed, 0 cancelled)\n") == 0);
    CHECK(shown.out.find("\n  tree1.c0  echo  succeeded\n") != std::string::npos);
    CHECK(shown.out.find("\n  tree1.c1  fail  failed  exception: ") != std::string::npos);
    const Ran as_json = bulwark_cli("flow show tree1 --json --server " + s.url());
    const json tree = json::parse(as_json.out);
    CHECK(tree["job"]["id"] == "tree1");
    CHECK(tree["children"].size() == 2);
    CHECK(bulwark_cli("flow show nope --server " + s.url()).status == 3);
    CHECK(bulwark_cli("flow --server " + s.url()).status == 2);
  }

  TEST_CASE("types, pause, resume" * doctest::timeout(60)) {
    Service s;
    const std::string server = " --server " + s.url();
    Ran paused = bulwark_cli("pause echo sleep" + server);
    CHECK(paused.status == 0);
    CHECK(paused.out == "echo  paused\nsleep  paused\n");
    CHECK(bulwark_cli("pause echo" + server).out == "echo  paused (already)\n");
    auto held = s.runtime.submit({.type = "echo", .payload = 1});
    REQUIRE(held);
    Ran types = bulwark_cli("types" + server);
    CHECK(types.status == 0);
    CHECK(types.out.find("TYPE") != std::string::npos);
    CHECK(types.out.find("paused") != std::string::npos);
    const json listed = json::parse(bulwark_cli("types --json" + server).out);
    bool echo_paused = false;
    for (const json& t : listed["types"]) echo_paused = echo_paused || (t["type"] == "echo" && t["paused"] == true);
    CHECK(echo_paused);
    CHECK(bulwark_cli("pause no-such-type" + server).status == 3);
    CHECK(s.runtime.get(held.id)->state == bulwark::JobState::queued);
    Ran resumed = bulwark_cli("resume echo" + server);
    CHECK(resumed.status == 0);
    CHECK(resumed.out == "echo  resumed\n");
    CHECK(s.runtime.wait(held.id, 10s)->state == bulwark::JobState::succeeded);
  }

  TEST_CASE("events --count N prints the stream's next N events" * doctest::timeout(60)) {
    Service s;
    Ran ran;
    std::atomic<bool> followed{false};
    std::thread follow([&] {
      ran = bulwark_cli("events --type echo --count 3 --server " + s.url());
      followed = true;
    });
    // Submits until the follower has its 3 events (it may connect after the first).
    for (int i = 0; i < 500 && !followed; ++i) {
      s.runtime.submit({.type = "echo", .payload = i});
      std::this_thread::sleep_for(10ms);
    }
    follow.join();
    CHECK(ran.status == 0);
    int lines = 0;
    for (char c : ran.out) lines += c == '\n';
    CHECK(lines == 3);
    CHECK(ran.out.find("echo") != std::string::npos);
  }

  TEST_CASE("health: exit 0 while the server is healthy and ready, 3 when not ready or unreachable" *
            doctest::timeout(60)) {
    Service s;
    const Ran healthy = bulwark_cli("health --server " + s.url());
    CHECK(healthy.status == 0);
    CHECK(healthy.out == "healthy\n");
    CHECK(bulwark_cli("health --ready --server " + s.url()).status == 0);
    s.server.set_draining(true);
    const Ran draining = bulwark_cli("health --ready --server " + s.url());
    CHECK(draining.status == 3);
    CHECK(draining.out.find("not ready: draining") == 0);
    CHECK(bulwark_cli("health --server " + s.url()).status == 0);  // alive, though draining
    CHECK(json::parse(bulwark_cli("health --json --server " + s.url()).out)["status"] == "healthy");
    CHECK(bulwark_cli("health --server http://127.0.0.1:1").status == 3);
  }

  TEST_CASE("usage errors exit 2; an unreachable server or an error answer exits 3" * doctest::timeout(60)) {
    CHECK(bulwark_cli("get").status == 2);
    CHECK(bulwark_cli("submit echo --priority 12").status == 2);
    CHECK(bulwark_cli("submit echo 'not json' --server http://127.0.0.1:1").status == 2);
    CHECK(bulwark_cli("stats --server http://127.0.0.1:1").status == 3);
    CHECK(bulwark_cli("stats --server ftp://x/y").status == 3);
    Service s;
    CHECK(bulwark_cli("get nope --server " + s.url()).status == 3);
    CHECK(bulwark_cli("events --state nope --server " + s.url()).status == 3);
    // BULWARK_SERVER names the server when --server does not.
    const std::string env = "BULWARK_SERVER=" + s.url() + " ";
    const int raw = std::system((env + BULWARK_BINARY + " stats >/dev/null 2>&1").c_str());
    CHECK(WEXITSTATUS(raw) == 0);
  }

  TEST_CASE("the client: requests with a token, and an event stream" * doctest::timeout(60)) {
    auto o = Service::options();
    o.server.auth_token = "sekrit";
    bulwark::Runtime rt(bulwark::testing::builtins(), o);
    bulwark::HttpServer server(rt, o.server);
    const std::string url = "127.0.0.1:" + std::to_string(server.port());
    bulwark::http::Client anonymous(url, "", 5s);
    CHECK(anonymous.request("POST", "/v1/jobs", R"({"type":"echo"})").status == 401);
    bulwark::http::Client c(url, "sekrit", 5s);
    const auto r = c.request("POST", "/v1/jobs", R"({"type":"echo","payload":5})");
    REQUIRE(r.status == 201);
    CHECK(r.headers.at("location").rfind("/v1/jobs/", 0) == 0);
    std::vector<bulwark::http::StreamEvent> seen;
    std::atomic<bool> done{false};
    std::thread submitter([&] {
      for (int i = 0; i < 200 && !done; ++i) {
        rt.submit({.type = "echo", .payload = i});
        std::this_thread::sleep_for(10ms);
      }
    });
    const int status = c.follow("/v1/events?state=succeeded", [&](const bulwark::http::StreamEvent& e) {
      seen.push_back(e);
      return seen.size() < 2;
    });
    done = true;
    submitter.join();
    CHECK(status == 200);
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].event == "job");
    CHECK(json::parse(seen[0].data)["state"] == "succeeded");
    CHECK(std::stoull(seen[1].id) > std::stoull(seen[0].id));
    CHECK_THROWS_AS(bulwark::http::Client("https://x:1", "", 1s), bulwark::http::ClientError);
  }
}
