// The HTTP API as plain functions of a request, without sockets: routing,
// status codes, error bodies and paging (the server adds only the network).
#include <doctest/doctest.h>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "bulwark/runtime.hpp"
#include "http/api.hpp"
#include "support/helpers.hpp"

using bulwark::http::Api;
using bulwark::http::Request;
using bulwark::http::Response;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

struct Fixture {
  bulwark::Runtime runtime{bulwark::testing::builtins(), bulwark::testing::test_options(2)};
  Api api{runtime, bulwark::ServerOptions{}};

  Response call(std::string method, std::string target, std::string body = {}) {
    return api.handle(Request{std::move(method), std::move(target), body.empty() ? "" : "application/json", "",
                              std::move(body)});
  }
  static std::string code(const Response& r) { return json::parse(r.body)["error"]["code"].get<std::string>(); }
};

std::string header(const Response& r, const std::string& name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return v;
  }
  return {};
}

}  // namespace

TEST_SUITE("api") {
  TEST_CASE("a submitted job is 201 with its Location, and that Location answers with the record" * doctest::timeout(30)) {
    Fixture f;
    Response created = f.call("POST", "/v1/jobs", R"({"type": "echo", "id": "tenant:42", "payload": {"x": 1}})");
    CHECK(created.status == 201);
    CHECK(header(created, "Location") == "/v1/jobs/tenant%3A42");
    REQUIRE(f.runtime.wait_idle(10s));
    Response got = f.call("GET", header(created, "Location"));
    REQUIRE(got.status == 200);
    const json j = json::parse(got.body);
    CHECK(j["state"] == "succeeded");
    CHECK(j["result"] == json{{"x", 1}});
  }

  TEST_CASE("each error of the contract has its status and code" * doctest::timeout(30)) {
    Fixture f;
    CHECK(Fixture::code(f.call("POST", "/v1/jobs", "{")) == "malformed_json");
    CHECK(Fixture::code(f.call("POST", "/v1/jobs", R"({"type": 3})")) == "invalid_field");
    CHECK(f.call("POST", "/v1/jobs", R"({"type": "nope"})").status == 422);
    CHECK(Fixture::code(f.call("POST", "/v1/jobs", R"({"type": "nope"})")) == "unknown_job_type");
    CHECK(f.call("POST", "/v1/jobs", R"({"type": "echo", "id": "dup"})").status == 201);
    CHECK(f.call("POST", "/v1/jobs", R"({"type": "echo", "id": "dup"})").status == 409);
    CHECK(f.call("GET", "/v1/jobs/missing").status == 404);
    CHECK(Fixture::code(f.call("GET", "/v1/nothing")) == "route_not_found");
    CHECK(f.call("DELETE", "/v1/jobs").status == 405);
    Response wrong_type = f.api.handle({"POST", "/v1/jobs", "text/plain", "", R"({"type": "echo"})"});
    CHECK(wrong_type.status == 415);
    CHECK(Fixture::code(f.call("POST", "/v1/jobs", std::string(200, '[') + std::string(200, ']'))) == "json_too_deep");
    REQUIRE(f.runtime.wait_idle(10s));
    CHECK(Fixture::code(f.call("POST", "/v1/jobs/dup/retry")) == "job_not_failed");
    CHECK(Fixture::code(f.call("POST", "/v1/jobs/dup/cancel")) == "job_finished");
  }

  TEST_CASE("a listing pages with the cursor it gives and refuses one it did not" * doctest::timeout(30)) {
    Fixture f;
    for (int i = 0; i < 5; ++i) {
      REQUIRE(f.call("POST", "/v1/jobs", R"({"type": "echo", "id": "p)" + std::to_string(i) + R"("})").status == 201);
    }
    REQUIRE(f.runtime.wait_idle(10s));
    std::vector<std::string> seen;
    std::string cursor;
    for (int page = 0; page < 10; ++page) {
      Response r = f.call("GET", "/v1/jobs?type=echo&limit=2" + (cursor.empty() ? "" : "&cursor=" + cursor));
      REQUIRE(r.status == 200);
      const json j = json::parse(r.body);
      for (const auto& job : j["jobs"]) seen.push_back(job["id"].get<std::string>());
      if (j["next_cursor"].is_null()) break;
      cursor = j["next_cursor"].get<std::string>();
    }
    CHECK(seen == std::vector<std::string>{"p4", "p3", "p2", "p1", "p0"});
    CHECK(f.call("GET", "/v1/jobs?cursor=abc").status == 400);
    CHECK(f.call("GET", "/v1/jobs?limit=0").status == 400);
    CHECK(f.call("GET", "/v1/jobs?state=sleeping").status == 400);
  }

  TEST_CASE("readiness follows draining; health, workers and metrics answer" * doctest::timeout(30)) {
    Fixture f;
    CHECK(f.call("GET", "/readyz").status == 200);
    f.api.set_draining(true);
    CHECK(f.call("GET", "/readyz").status == 503);
    CHECK(f.call("GET", "/healthz").status == 200);
    const json workers = json::parse(f.call("GET", "/v1/workers").body);
    CHECK(workers["workers"].size() == 2);
    CHECK(workers["workers"][0]["state"] == "idle");
    CHECK_FALSE(workers.contains("cluster"));  // no shared queue, no other processes
    const json procs = json::parse(f.call("GET", "/v1/processes").body)["processes"];
    REQUIRE(procs.size() == 1);  // the memory backend: this process alone
    CHECK(procs[0]["self"] == true);
    CHECK(procs[0]["pid"] == static_cast<int>(getpid()));
    CHECK(procs[0]["workers"] == 2);
    const json stats = json::parse(f.call("GET", "/v1/stats").body);
    CHECK(stats["by_type"]["post"]["breaker"] == "off");  // names, not enum numbers
    Response metrics = f.call("GET", "/metrics");
    CHECK(metrics.status == 200);
    CHECK(metrics.body.find("bulwark_workers{state=\"idle\"} 2") != std::string::npos);
  }

  TEST_CASE("an added route answers before the built-in ones" * doctest::timeout(30)) {
    Fixture f;
    f.api.add_route("GET", "/v1/stats", [](const Request&) { return Response{204, "", "text/plain", {}}; });
    CHECK(f.call("GET", "/v1/stats").status == 204);
  }
}
