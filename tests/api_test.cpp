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
    const bool json_body = !body.empty() || method == "POST";
    return api.handle(Request{std::move(method), std::move(target), json_body ? "application/json" : "", "",
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

  TEST_CASE("a unique job's duplicate submit is 200 with the first job and \"duplicate\": true" * doctest::timeout(30)) {
    Fixture f;
    const std::string spec = R"({"type": "sleep", "payload": {"ms": 1}, "unique_key": "nightly", "unique_for_ms": 60000})";
    Response first = f.call("POST", "/v1/jobs", spec);
    REQUIRE(first.status == 201);
    const std::string id = json::parse(first.body)["id"];
    Response again = f.call("POST", "/v1/jobs", spec);
    CHECK(again.status == 200);
    const json j = json::parse(again.body);
    CHECK(j["id"] == id);
    CHECK(j["duplicate"] == true);
    CHECK(header(again, "Location") == "/v1/jobs/" + id);
    Response batch = f.call("POST", "/v1/jobs/batch", "{\"jobs\": [" + spec + R"(, {"type": "echo"}]})");
    REQUIRE(batch.status == 200);
    const json b = json::parse(batch.body);
    CHECK(b["accepted"] == 1);
    CHECK(b["duplicates"] == 1);
    CHECK(b["rejected"] == 0);
    CHECK(b["results"][0] == json{{"status", 200}, {"id", id}, {"state", b["results"][0]["state"]}, {"duplicate", true}});
    CHECK(b["results"][1]["status"] == 201);
    REQUIRE(f.runtime.wait_idle(10s));
    CHECK(json::parse(f.call("GET", "/v1/jobs/" + id).body)["unique_key"] == "nightly");
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
    CHECK(stats["queues"] == json::parse(R"({"default": {"ready": 0, "waiting": 0, "weight": 1, "capacity": null,
                                                          "consumers": 1, "paused": false,
                                                          "jobs": {"submitted": 0, "succeeded": 0, "failed": 0,
                                                                   "cancelled": 0}}})"));
    Response metrics = f.call("GET", "/metrics");
    CHECK(metrics.status == 200);
    CHECK(metrics.body.find("bulwark_workers{state=\"idle\"} 2") != std::string::npos);
    CHECK(metrics.body.find("bulwark_named_queue_consumers{queue=\"default\"} 1") != std::string::npos);
    CHECK(metrics.body.find("bulwark_named_queue_jobs_total{queue=\"default\",outcome=\"succeeded\"} 0") !=
          std::string::npos);
    CHECK(procs[0]["queues"] == json::array({"default"}));
  }

  TEST_CASE("a named queue paused and resumed through the API; unknown ones answer 404" * doctest::timeout(30)) {
    Fixture f;
    Response r = f.call("POST", "/v1/queues/default/pause");
    CHECK(r.status == 200);
    CHECK(json::parse(r.body) == json::parse(R"({"queue": "default", "paused": true, "changed": true})"));
    CHECK(json::parse(f.call("GET", "/v1/stats").body)["queues"]["default"]["paused"] == true);
    CHECK(f.call("GET", "/metrics").body.find("bulwark_named_queue_paused{queue=\"default\"} 1") != std::string::npos);
    CHECK(json::parse(f.call("POST", "/v1/queues/default/resume").body)["changed"] == true);
    r = f.call("POST", "/v1/queues/nope/pause");
    CHECK(r.status == 404);
    CHECK(json::parse(r.body)["error"]["code"] == "queue_not_found");
    CHECK(f.call("GET", "/v1/queues/default/pause").status == 405);
    CHECK(f.call("GET", "/v1/jobs?queue=default").status == 200);
  }

  TEST_CASE("an added route answers before the built-in ones" * doctest::timeout(30)) {
    Fixture f;
    f.api.add_route("GET", "/v1/stats", [](const Request&) { return Response{204, "", "text/plain", {}}; });
    CHECK(f.call("GET", "/v1/stats").status == 204);
  }
}

TEST_SUITE("Api access") {
  namespace {
  Request request(std::string method, std::string target, std::string token = "", std::string origin = "") {
    std::string body = method == "POST" ? "{}" : "";
    Request r{std::move(method), std::move(target), "application/json", token.empty() ? "" : "Bearer " + token,
              std::move(body)};
    r.origin = std::move(origin);
    r.host = "jobs.internal:8080";
    return r;
  }

  // A server with a token, guarding reads and /metrics as asked.
  bulwark::ServerOptions with_token(bool reads, bool metrics) {
    bulwark::ServerOptions options;
    options.auth_token = "s3cret";
    options.auth_reads = reads;
    options.auth_metrics = metrics;
    return options;
  }
  }  // namespace

  TEST_CASE("server.auth_reads: every read under /v1 needs the token; probes, the dashboard's files and /v1/auth do not" * doctest::timeout(30)) {
    bulwark::Runtime runtime{bulwark::testing::builtins(), bulwark::testing::test_options(1)};
    Api api{runtime, with_token(true, false)};
    for (const char* target : {"/v1/jobs", "/v1/jobs/x", "/v1/stats", "/v1/workers", "/v1/processes", "/v1/events"}) {
      CAPTURE(target);
      const Response r = api.handle(request("GET", target));
      CHECK(r.status == 401);
      CHECK(json::parse(r.body)["error"]["code"] == "unauthorized");
      CHECK(api.handle(request("GET", target, "wrong")).status == 401);
    }
    CHECK(api.handle(request("GET", "/v1/jobs", "s3cret")).status == 200);
    CHECK(api.handle(request("GET", "/v1/jobs/x", "s3cret")).status == 404);
    for (const char* open : {"/healthz", "/readyz", "/metrics", "/", "/ui/app.js", "/v1/auth"}) {
      CAPTURE(open);
      CHECK(api.handle(request("GET", open)).status == 200);
    }
    CHECK(json::parse(api.handle(request("GET", "/v1/auth")).body)["authorized"] == false);
  }

  TEST_CASE("without auth_reads reads stay open; server.auth_metrics guards /metrics alone" * doctest::timeout(30)) {
    bulwark::Runtime runtime{bulwark::testing::builtins(), bulwark::testing::test_options(1)};
    Api api{runtime, with_token(false, true)};
    CHECK(api.handle(request("GET", "/v1/jobs")).status == 200);
    CHECK(api.handle(request("GET", "/metrics")).status == 401);
    CHECK(api.handle(request("GET", "/metrics", "s3cret")).status == 200);
    CHECK(api.handle(request("GET", "/healthz")).status == 200);
  }

  TEST_CASE("a POST of another media type is 415, even with no body; one with neither body nor media type is not" *
            doctest::timeout(30)) {
    bulwark::Runtime runtime{bulwark::testing::builtins(), bulwark::testing::test_options(1)};
    Api api{runtime, bulwark::ServerOptions{}};
    REQUIRE(api.handle(request("POST", "/v1/jobs")).status == 422);  // {} reached the validator
    // curl -X POST .../cancel: no body, no Content-Type.
    Request bare{"POST", "/v1/jobs/x/cancel", "", "", ""};
    CHECK(api.handle(bare).status == 404);  // past the check: no such job
    Request bare_submit{"POST", "/v1/jobs", "", "", ""};
    CHECK(api.handle(bare_submit).status == 400);  // a submit needs its JSON body: malformed_json, not 415
    Request body_without_type{"POST", "/v1/jobs", "", "", R"({"type":"echo"})"};
    CHECK(api.handle(body_without_type).status == 415);
    for (const char* type : {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}) {
      CAPTURE(type);
      Request r{"POST", "/v1/jobs/x/cancel", type, "", ""};
      const Response answer = api.handle(r);
      CHECK(answer.status == 415);
      CHECK(json::parse(answer.body)["error"]["code"] == "unsupported_media_type");
    }
    Request with_charset{"POST", "/v1/jobs/x/cancel", "Application/JSON; charset=utf-8", "", ""};
    CHECK(api.handle(with_charset).status == 404);  // past the check: no such job
  }

  TEST_CASE("a request whose Origin is neither this server nor server.allowed_origins is 403" * doctest::timeout(30)) {
    bulwark::Runtime runtime{bulwark::testing::builtins(), bulwark::testing::test_options(1)};
    bulwark::ServerOptions options;
    options.allowed_origins = {"https://ops.example.com/"};
    Api api{runtime, options};
    const Response evil = api.handle(request("POST", "/v1/jobs/x/cancel", "", "https://evil.example"));
    CHECK(evil.status == 403);
    CHECK(json::parse(evil.body)["error"]["code"] == "forbidden_origin");
    CHECK(api.handle(request("GET", "/v1/jobs", "", "null")).status == 403);  // a sandboxed page
    CHECK(api.handle(request("GET", "/v1/jobs", "", "http://jobs.internal:8080.evil.example")).status == 403);
    CHECK(api.handle(request("POST", "/v1/jobs/x/cancel", "", "http://jobs.internal:8080")).status == 404);
    CHECK(api.handle(request("POST", "/v1/jobs/x/cancel", "", "https://JOBS.internal:8080")).status == 404);
    CHECK(api.handle(request("POST", "/v1/jobs/x/cancel", "", "https://ops.example.com")).status == 404);
    CHECK(api.handle(request("POST", "/v1/jobs/x/cancel")).status == 404);  // no Origin: not a browser
  }

  TEST_CASE("GET /v1/types lists each type's options, limits and state; pause and resume change it" * doctest::timeout(30)) {
    auto o = bulwark::testing::test_options(2);
    o.handlers["sleep"].concurrency = 3;
    o.handlers["sleep"].rate = bulwark::RateLimit{.per_second = 2.5, .burst = 4};
    o.handlers["sleep"].max_attempts = 7;
    bulwark::Runtime runtime{bulwark::testing::builtins(), o};
    Api api{runtime, bulwark::ServerOptions{}};
    const auto call = [&](std::string method, std::string target) {
      return api.handle(Request{std::move(method), std::move(target), "application/json", "", ""});
    };
    const auto sleep_type = [&] {
      const json all = json::parse(call("GET", "/v1/types").body)["types"];
      for (const json& t : all) {
        if (t["type"] == "sleep") return t;
      }
      FAIL("no sleep type listed");
      return json();
    };
    json t = sleep_type();
    CHECK(t["paused"] == false);
    CHECK(t["options"]["max_attempts"] == 7);
    CHECK(t["limits"]["concurrency"] == 3);
    CHECK(t["limits"]["rate"] == json{{"per_second", 2.5}, {"burst", 4}});
    CHECK(t["tokens"] == 4.0);
    CHECK(t["breaker"] == "off");  // circuit_breaker.failures is 0 in tests
    Response paused = call("POST", "/v1/types/sleep/pause");
    CHECK(paused.status == 200);
    CHECK(json::parse(paused.body) == json{{"type", "sleep"}, {"paused", true}, {"changed", true}});
    CHECK(json::parse(call("POST", "/v1/types/sleep/pause").body)["changed"] == false);
    CHECK(sleep_type()["paused"] == true);
    CHECK(json::parse(call("POST", "/v1/types/sleep/resume").body)["changed"] == true);
    CHECK(sleep_type()["paused"] == false);
    Response unknown = call("POST", "/v1/types/nope/pause");
    CHECK(unknown.status == 404);
    CHECK(json::parse(unknown.body)["error"]["code"] == "type_not_found");
    CHECK(call("GET", "/v1/types/sleep/pause").status == 405);
    CHECK(call("POST", "/v1/types").status == 405);
  }

  TEST_CASE("schedules: POST adds (201), GET lists with next_run, DELETE removes; errors have their codes" *
            doctest::timeout(30)) {
    Fixture f;
    Response added = f.call("POST", "/v1/schedules",
                            R"({"name": "nightly", "cron": "0 3 * * *", "time_zone": "Europe/Berlin",
                                "job": {"type": "echo", "payload": {"report": true}}, "missed": "run_once"})");
    REQUIRE(added.status == 201);
    CHECK(header(added, "Location") == "/v1/schedules/nightly");
    const json a = json::parse(added.body);
    CHECK(a["name"] == "nightly");
    CHECK(a["source"] == "api");
    CHECK(a["missed"] == "run_once");
    CHECK(a["next_run"].get<std::string>().find("T02:00:00") != std::string::npos);  // 03:00 in Berlin's winter
    const json listed = json::parse(f.call("GET", "/v1/schedules").body);
    REQUIRE(listed["schedules"].size() == 1);
    CHECK(listed["schedules"][0]["cron"] == "0 3 * * *");
    CHECK(Fixture::code(f.call("POST", "/v1/schedules", R"({"name": "x", "cron": "bad", "job": {"type": "echo"}})")) ==
          "invalid_field");
    CHECK(json::parse(f.call("POST", "/v1/schedules", R"({"name": "x", "cron": "* * * * *", "job": {"type": "nope"}})").body)
              ["error"]["message"] == "job.type: unknown job type 'nope'");
    CHECK(json::parse(f.call("POST", "/v1/schedules", R"({"cron": "* * * * *", "job": {"type": "echo"}})").body)
              ["error"]["message"] == "name: required, a string");
    CHECK(json::parse(f.call("POST", "/v1/schedules", R"({"name": "x", "cron": "* * * * *", "job": {}, "when": 1})").body)
              ["error"]["message"] == "when: unknown field");
    Response removed = f.api.handle(Request{"DELETE", "/v1/schedules/nightly", "", "", ""});
    CHECK(removed.status == 200);
    CHECK(json::parse(removed.body) == json{{"name", "nightly"}, {"removed", true}});
    CHECK(Fixture::code(f.api.handle(Request{"DELETE", "/v1/schedules/nightly", "", "", ""})) == "schedule_not_found");
    CHECK(f.call("PUT", "/v1/schedules").status == 405);
  }

  TEST_CASE("route_of names the route template, never the raw path" * doctest::timeout(30)) {
    bulwark::Runtime runtime{bulwark::testing::builtins(), bulwark::testing::test_options(1)};
    Api api{runtime, bulwark::ServerOptions{}};
    api.add_route("GET", "/custom", [](const Request&) { return Response{}; });
    const std::vector<std::pair<std::pair<const char*, const char*>, const char*>> cases = {
        {{"GET", "/healthz"}, "/healthz"},
        {{"GET", "/v1/jobs?limit=5"}, "/v1/jobs"},
        {{"POST", "/v1/jobs"}, "/v1/jobs"},
        {{"POST", "/v1/jobs/batch"}, "/v1/jobs/batch"},
        {{"GET", "/v1/jobs/batch"}, "/v1/jobs/{id}"},
        {{"GET", "/v1/jobs/some-id-42"}, "/v1/jobs/{id}"},
        {{"POST", "/v1/jobs/some-id/cancel"}, "/v1/jobs/{id}/cancel"},
        {{"POST", "/v1/jobs/some-id/retry"}, "/v1/jobs/{id}/retry"},
        {{"GET", "/v1/events?type=x"}, "/v1/events"},
        {{"GET", "/v1/types"}, "/v1/types"},
        {{"POST", "/v1/types/resize/pause"}, "/v1/types/{type}/pause"},
        {{"POST", "/v1/types/resize/resume"}, "/v1/types/{type}/resume"},
        {{"GET", "/v1/schedules"}, "/v1/schedules"},
        {{"DELETE", "/v1/schedules/nightly"}, "/v1/schedules/{name}"},
        {{"GET", "/"}, "/ui/{file}"},
        {{"GET", "/ui/app.js"}, "/ui/{file}"},
        {{"GET", "/custom"}, "extra"},
        {{"GET", "/v1/nothing/here"}, "unknown"},
        {{"GET", "/wp-admin"}, "unknown"},
    };
    for (const auto& c : cases) {  // not a structured binding: clang 14's CAPTURE cannot name one
      CAPTURE(c.first.second);
      CHECK(bulwark::http::route_template(api.route_of(Request{c.first.first, c.first.second, "", "", ""})) ==
            c.second);
    }
  }
}
