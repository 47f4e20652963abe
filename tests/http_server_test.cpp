// End-to-end tests of the HTTP API: a real server on an ephemeral loopback
// port, real sockets.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include "bulwark/http_server.hpp"
#include "bulwark/runtime.hpp"
#include "bulwark/version.hpp"
#include "support/helpers.hpp"
#include "support/http_client.hpp"
#include "support/wait.hpp"

using namespace std::chrono_literals;
using bulwark::testing::http;
using bulwark::testing::HttpConnection;
using bulwark::testing::http_request_text;
using nlohmann::json;

namespace {

struct Service {
  explicit Service(bulwark::RuntimeOptions o = options()) : runtime(bulwark::testing::builtins(), o), server(runtime, o.server) {}
  static bulwark::RuntimeOptions options() {
    auto o = bulwark::testing::test_options(2);
    o.server.listen = "127.0.0.1:0";
    o.server.read_timeout = 2000ms;
    o.server.max_body_bytes = 4096;
    return o;
  }
  std::uint16_t port() const { return server.port(); }
  json post_job(const json& spec) {
    auto r = http(port(), "POST", "/v1/jobs", spec.dump());
    REQUIRE_MESSAGE(r.status == 201, r.body);
    return r.json();
  }
  json wait_terminal(const std::string& id) {
    for (int i = 0; i < 1000; ++i) {
      auto r = http(port(), "GET", "/v1/jobs/" + id);
      REQUIRE(r.status == 200);
      const json j = r.json();
      if (bulwark::is_terminal(*bulwark::parse_job_state(j["state"].get<std::string>()))) return j;
      std::this_thread::sleep_for(10ms);
    }
    FAIL("job did not finish");
    return {};
  }
  bulwark::Runtime runtime;
  bulwark::HttpServer server;
};

void check_error(const bulwark::testing::HttpResponse& r, int status, const std::string& code) {
  CHECK(r.status == status);
  CHECK(r.header("content-type") == "application/json");
  const json j = r.json();
  REQUIRE(j.contains("error"));
  CHECK(j["error"]["code"] == code);
  CHECK(j["error"]["message"].is_string());
}

}  // namespace

TEST_SUITE("HttpServer") {
  TEST_CASE("submit and fetch a job of every built-in type" * doctest::timeout(60)) {
    Service s;
    const std::pair<json, std::string> cases[] = {
        {{{"type", "echo"}, {"payload", {{"a", 1}}}}, "succeeded"},
        {{{"type", "sleep"}, {"payload", {{"ms", 20}}}}, "succeeded"},
        {{{"type", "compute"}, {"payload", {{"n", 1000}}}}, "succeeded"},
        {{{"type", "fail"}, {"payload", {{"throw", "int"}}}, {"max_attempts", 1}}, "failed"},
        {{{"type", "flaky"}, {"payload", {{"fail_times", 1}}}, {"max_attempts", 2}}, "succeeded"},
        {{{"type", "hang"}, {"payload", {{"ms", 20}}}}, "succeeded"},
    };
    for (const auto& c : cases) {
      const json& spec = c.first;  // not a structured binding: CAPTURE's lambda and clang 14
      const std::string& state = c.second;
      CAPTURE(spec.dump());
      const json created = s.post_job(spec);
      CHECK(created["state"] == "queued");
      const json job = s.wait_terminal(created["id"]);
      CHECK(job["state"] == state);
      CHECK(job["type"] == spec["type"]);
      CHECK(job.contains("created_at"));
      CHECK(job.contains("finished_at"));
    }
    auto failed = s.runtime.dead_letters();
    REQUIRE(failed.size() == 1);
    const json job = s.wait_terminal(failed[0].id);
    CHECK(job["error"]["type"] == "int");
    CHECK(job["error"]["trace"][0]["function"].get<std::string>().find("fail_throw_site") != std::string::npos);
  }

  TEST_CASE("a flow over HTTP: one id answered, the parent's record counts its children, /tree pages them" *
            doctest::timeout(60)) {
    Service s;
    const json flow = json::parse(R"({"type":"collect","id":"f1","children":[
        {"type":"echo","payload":1},{"type":"echo","payload":2},
        {"type":"collect","children":[{"type":"echo","payload":3}]}]})");
    const json submitted = s.post_job(flow);
    CHECK(submitted == json{{"id", "f1"}, {"state", "waiting_children"}});
    const json done = s.wait_terminal("f1");
    CHECK(done["state"] == "succeeded");
    CHECK(done["result"] == json::parse("[1, 2, [3]]"));
    CHECK(done["children"] == json{{"total", 3}, {"succeeded", 3}, {"failed", 0}, {"cancelled", 0}, {"pending", 0}});
    auto r = http(s.port(), "GET", "/v1/jobs/f1.c2");
    CHECK(r.json()["parent"] == "f1");
    r = http(s.port(), "GET", "/v1/jobs/f1/tree?limit=2");
    REQUIRE(r.status == 200);
    json page = r.json();
    CHECK(page["job"]["id"] == "f1");
    CHECK(page["total"] == 3);
    REQUIRE(page["children"].size() == 2);
    CHECK(page["children"][0]["id"] == "f1.c0");
    CHECK(page["children"][1]["result"] == 2);
    REQUIRE(page["next_cursor"].is_string());
    r = http(s.port(), "GET", "/v1/jobs/f1/tree?limit=2&cursor=" + page["next_cursor"].get<std::string>());
    page = r.json();
    REQUIRE(page["children"].size() == 1);
    CHECK(page["children"][0]["children"]["total"] == 1);  // a child with children of its own: ask its tree next
    CHECK(page["next_cursor"].is_null());
    CHECK(http(s.port(), "GET", "/v1/jobs/f1.c2.c0/tree").json()["total"] == 0);
    check_error(http(s.port(), "GET", "/v1/jobs/nope/tree"), 404, "job_not_found");
    check_error(http(s.port(), "GET", "/v1/jobs/f1/tree?limit=0"), 400, "invalid_parameter");
    check_error(http(s.port(), "GET", "/v1/jobs/f1/tree?cursor=x"), 400, "invalid_cursor");
    check_error(http(s.port(), "POST", "/v1/jobs/f1/tree", "{}"), 405, "method_not_allowed");
    // A bad child: 422 naming its path, and nothing made.
    r = http(s.port(), "POST", "/v1/jobs",
             R"({"type":"collect","id":"f2","children":[{"type":"echo"},{"type":"echo","children":[{"type":"nope"}]}]})");
    check_error(r, 422, "unknown_job_type");
    CHECK(r.json()["error"]["message"].get<std::string>().rfind("children[1].children[0].type:", 0) == 0);
    CHECK(http(s.port(), "GET", "/v1/jobs/f2").status == 404);
    CHECK(http(s.port(), "GET", "/metrics").body.find(R"(route="/v1/jobs/{id}/tree")") != std::string::npos);
    // In a batch, a flow is one entry.
    r = http(s.port(), "POST", "/v1/jobs/batch",
             R"({"jobs":[{"type":"echo","id":"b1"},{"type":"collect","id":"f3","children":[{"type":"echo","payload":4}]}]})");
    REQUIRE(r.status == 200);
    CHECK(r.json()["results"][1] == json{{"status", 201}, {"id", "f3"}, {"state", "waiting_children"}});
    CHECK(s.wait_terminal("f3")["result"] == json::array({4}));
  }

  TEST_CASE("list filters by state and type and pages with a cursor" * doctest::timeout(60)) {
    Service s;
    for (int i = 0; i < 5; ++i) s.post_job({{"type", "echo"}, {"payload", i}});
    for (int i = 0; i < 3; ++i) s.post_job({{"type", "fail"}, {"max_attempts", 1}});
    REQUIRE(s.runtime.wait_idle(10s));
    auto failed = http(s.port(), "GET", "/v1/jobs?state=failed").json();
    CHECK(failed["jobs"].size() == 3);
    CHECK(failed["next_cursor"].is_null());
    auto page1 = http(s.port(), "GET", "/v1/jobs?type=echo&limit=2").json();
    REQUIRE(page1["jobs"].size() == 2);
    CHECK(page1["jobs"][0]["payload"].is_null());  // records do not echo payloads back
    CHECK(page1["jobs"][0]["result"] == 4);        // newest first
    REQUIRE(page1["next_cursor"].is_string());
    auto page2 = http(s.port(), "GET", "/v1/jobs?type=echo&limit=2&cursor=" + page1["next_cursor"].get<std::string>()).json();
    REQUIRE(page2["jobs"].size() == 2);
    CHECK(page2["jobs"][0]["result"] == 2);
    auto page3 = http(s.port(), "GET", "/v1/jobs?type=echo&limit=2&cursor=" + page2["next_cursor"].get<std::string>()).json();
    CHECK(page3["jobs"].size() == 1);
    CHECK(page3["next_cursor"].is_null());
    check_error(http(s.port(), "GET", "/v1/jobs?state=done"), 400, "invalid_parameter");
    check_error(http(s.port(), "GET", "/v1/jobs?limit=0"), 400, "invalid_parameter");
    check_error(http(s.port(), "GET", "/v1/jobs?sort=asc"), 400, "invalid_parameter");
  }

  TEST_CASE("cancel and retry" * doctest::timeout(60)) {
    Service s;
    const json later = s.post_job({{"type", "echo"}, {"delay_ms", 3'600'000}});
    const std::string id = later["id"];
    auto cancelled = http(s.port(), "POST", "/v1/jobs/" + id + "/cancel");
    CHECK(cancelled.status == 200);
    CHECK(cancelled.json()["state"] == "cancelled");
    check_error(http(s.port(), "POST", "/v1/jobs/" + id + "/cancel"), 409, "job_finished");
    check_error(http(s.port(), "POST", "/v1/jobs/nope/cancel"), 404, "job_not_found");

    const json failing = s.post_job({{"type", "fail"}, {"max_attempts", 1}});
    CHECK(s.wait_terminal(failing["id"])["state"] == "failed");
    auto retried = http(s.port(), "POST", "/v1/jobs/" + failing["id"].get<std::string>() + "/retry");
    CHECK(retried.status == 200);
    CHECK(retried.json()["state"] == "queued");
    CHECK(s.wait_terminal(failing["id"])["attempts"] == 1);
    check_error(http(s.port(), "POST", "/v1/jobs/" + id + "/retry"), 409, "job_not_failed");
  }

  TEST_CASE("each error status of the contract" * doctest::timeout(60)) {
    auto o = Service::options();
    o.queue_capacity = 2;
    o.workers = 1;
    Service s(o);
    check_error(http(s.port(), "POST", "/v1/jobs", "{\"type\": "), 400, "malformed_json");
    check_error(http(s.port(), "GET", "/v2/nothing"), 404, "route_not_found");
    check_error(http(s.port(), "GET", "/v1/jobs/unknown-id"), 404, "job_not_found");
    auto wrong_method = http(s.port(), "DELETE", "/v1/jobs");
    check_error(wrong_method, 405, "method_not_allowed");
    CHECK(wrong_method.header("allow") == "GET, POST");
    check_error(http(s.port(), "POST", "/v1/jobs", json{{"type", "echo"}, {"payload", std::string(8000, 'x')}}.dump()),
                413, "payload_too_large");
    {
      HttpConnection c(s.port());
      c.send_raw("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi");
      check_error(c.read_response(), 415, "unsupported_media_type");
    }
    check_error(http(s.port(), "POST", "/v1/jobs", R"({"type": "fial"})"), 422, "unknown_job_type");
    check_error(http(s.port(), "POST", "/v1/jobs", R"({"type": "echo", "priority": "high"})"), 422, "invalid_field");
    check_error(http(s.port(), "POST", "/v1/jobs", R"({"type": "sleep", "payload": {"ms": -1}})"), 422, "invalid_field");
    // Fill the queue: one job running, two waiting.
    s.post_job({{"type", "sleep"}, {"payload", {{"ms", 2000}}}});
    REQUIRE(bulwark::testing::eventually([&] { return s.runtime.stats().running > 0; }));
    s.post_job({{"type", "echo"}});
    s.post_job({{"type", "echo"}});
    auto full = http(s.port(), "POST", "/v1/jobs", R"({"type": "echo"})");
    check_error(full, 429, "queue_full");
    CHECK(full.header("retry-after") == "1");
    CHECK(http(s.port(), "GET", "/readyz").status == 503);
    // Nothing accepted was lost.
    REQUIRE(s.runtime.wait_idle(10s));
    CHECK(s.runtime.stats().succeeded == 3);
    CHECK(http(s.port(), "GET", "/readyz").status == 200);
  }

  TEST_CASE("a handler that throws is answered 500 and the next request succeeds" * doctest::timeout(60)) {
    Service s;
    s.server.add_get_route("/v1/test/throw", []() -> std::string { throw std::logic_error("handler bug"); });
    check_error(http(s.port(), "GET", "/v1/test/throw"), 500, "internal_error");
    CHECK(http(s.port(), "GET", "/healthz").status == 200);
    CHECK(http(s.port(), "GET", "/v1/test/throw").status == 500);
    CHECK(http(s.port(), "POST", "/v1/jobs", R"({"type": "echo"})").status == 201);
  }

  TEST_CASE("keep-alive, pipelined requests and HTTP/1.0 clients" * doctest::timeout(60)) {
    Service s;
    HttpConnection c(s.port());
    c.send_raw(http_request_text("GET", "/healthz", "", "", false) + http_request_text("GET", "/readyz", "", "", false));
    auto first = c.read_response();
    auto second = c.read_response();
    CHECK(first.status == 200);
    CHECK(first.json().contains("status"));
    CHECK(second.json()["ready"] == true);
    c.send_raw(http_request_text("GET", "/v1/stats", "", "", true));
    CHECK(c.read_response().status == 200);
    CHECK(c.closed_by_peer(2s));

    HttpConnection old(s.port());
    old.send_raw("GET /healthz HTTP/1.0\r\n\r\n");
    auto r = old.read_response();
    CHECK(r.status == 200);
    CHECK(old.closed_by_peer(2s));
  }

  TEST_CASE("a slow client is dropped on timeout while others are served" * doctest::timeout(60)) {
    auto o = Service::options();
    o.server.read_timeout = 300ms;
    Service s(o);
    HttpConnection slow(s.port());
    const std::string request = http_request_text("GET", "/healthz", "");
    const auto start = std::chrono::steady_clock::now();
    bool dropped = false;
    for (std::size_t i = 0; i < request.size() - 1 && !dropped; ++i) {
      if (!slow.send_raw(request.substr(i, 1))) dropped = true;
      CHECK(http(s.port(), "GET", "/healthz").status == 200);  // others are served meanwhile
      dropped = dropped || slow.closed_by_peer(100ms);
    }
    CHECK(dropped);
    CHECK(std::chrono::steady_clock::now() - start < 5s);
  }

  TEST_CASE("oversized headers get 431" * doctest::timeout(60)) {
    Service s;
    auto r = http(s.port(), "GET", "/healthz", "", "X-Big: " + std::string(20'000, 'a') + "\r\n");
    check_error(r, 431, "header_too_large");
  }

  TEST_CASE("with an auth token, mutating routes need it and reads do not" * doctest::timeout(60)) {
    auto o = Service::options();
    o.server.auth_token = "s3cret";
    Service s(o);
    check_error(http(s.port(), "POST", "/v1/jobs", R"({"type": "echo"})"), 401, "unauthorized");
    check_error(http(s.port(), "POST", "/v1/jobs", R"({"type": "echo"})", "Authorization: Bearer wrong\r\n"), 401,
                "unauthorized");
    CHECK(http(s.port(), "POST", "/v1/jobs", R"({"type": "echo"})", "Authorization: Bearer s3cret\r\n").status == 201);
    CHECK(http(s.port(), "GET", "/v1/jobs").status == 200);
    Service open;  // no token: no auth
    CHECK(http(open.port(), "POST", "/v1/jobs", R"({"type": "echo"})").status == 201);
  }

  TEST_CASE("workers, stats and probes" * doctest::timeout(60)) {
    Service s;
    s.post_job({{"type", "echo"}});
    REQUIRE(s.runtime.wait_idle(10s));
    auto workers = http(s.port(), "GET", "/v1/workers").json();
    CHECK(workers["workers"].size() == 2);
    CHECK(workers["workers"][0].contains("restarts"));
    auto stats = http(s.port(), "GET", "/v1/stats").json();
    CHECK(stats["by_type"]["echo"]["succeeded"] == 1);
    CHECK(stats["queue"]["capacity"] == 100000);
    CHECK(stats.contains("rates_per_second"));
    auto health = http(s.port(), "GET", "/healthz");
    CHECK(health.status == 200);
    CHECK(health.json()["status"] == "healthy");
    s.server.set_draining(true);
    CHECK(http(s.port(), "GET", "/readyz").status == 503);
  }

  TEST_CASE("metrics pass promtool check metrics" * doctest::timeout(60)) {
    Service s;
    s.post_job({{"type", "echo"}});
    s.post_job({{"type", "fail"}, {"max_attempts", 1}});
    REQUIRE(s.runtime.wait_idle(10s));
    auto r = http(s.port(), "GET", "/metrics");
    REQUIRE(r.status == 200);
    CHECK(r.header("content-type").rfind("text/plain; version=0.0.4", 0) == 0);
    CHECK(r.body.find("bulwark_jobs_failed_total{type=\"fail\",kind=\"exception\"} 1") != std::string::npos);
    CHECK(r.body.find("bulwark_job_run_seconds_bucket{le=\"+Inf\"}") != std::string::npos);
    CHECK(r.body.find("bulwark_build_info{version=\"" BULWARK_VERSION "\"} 1") != std::string::npos);
    for (const char* name : {"process_cpu_seconds_total ", "process_start_time_seconds ", "process_resident_memory_bytes ",
                             "process_virtual_memory_bytes ", "process_open_fds ", "process_max_fds "}) {
      const auto at = r.body.find(std::string("\n") + name);
      REQUIRE_MESSAGE(at != std::string::npos, name);
      CHECK_MESSAGE(std::stod(r.body.substr(at + 1 + std::string(name).size())) >= 0, name);
    }
    CHECK(r.body.find("\nprocess_resident_memory_bytes 0\n") == std::string::npos);
    const std::string path = "/tmp/bulwark_metrics_test.txt";
    std::ofstream(path) << r.body;
    const int raw = std::system(("promtool check metrics < " + path + " > /tmp/bulwark_promtool.out 2>&1").c_str());
    std::ifstream out("/tmp/bulwark_promtool.out");
    std::string text((std::istreambuf_iterator<char>(out)), std::istreambuf_iterator<char>());
    CHECK_MESSAGE(WIFEXITED(raw), text);
    CHECK_MESSAGE(WEXITSTATUS(raw) == 0, text);
  }

  TEST_CASE("POST /v1/jobs takes the W3C traceparent header; the job's record shows the trace" * doctest::timeout(60)) {
    Service s;
    const std::string tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    auto created = http(s.port(), "POST", "/v1/jobs", R"({"type": "echo", "id": "traced"})",
                        "traceparent: " + tp + "\r\ntracestate: rojo=00f067aa0ba902b7\r\n");
    REQUIRE(created.status == 201);
    auto got = http(s.port(), "GET", "/v1/jobs/traced?wait_ms=5000").json();
    CHECK(got["state"] == "succeeded");
    CHECK(got["trace"]["trace_id"] == "0af7651916cd43dd8448eb211c80319c");
    CHECK(got["trace"]["parent_id"] == "b7ad6b7169203331");
    CHECK(got["trace"]["tracestate"] == "rojo=00f067aa0ba902b7");
    CHECK(got["trace"]["span_id"].get<std::string>().size() == 16);
    // A malformed header is ignored, as W3C asks: the job is accepted without a trace.
    REQUIRE(http(s.port(), "POST", "/v1/jobs", R"({"type": "echo", "id": "untraced"})", "traceparent: 00-nope\r\n")
                .status == 201);
    CHECK_FALSE(http(s.port(), "GET", "/v1/jobs/untraced?wait_ms=5000").json().contains("trace"));
    // The spec's own field wins over the header, and is checked strictly.
    const std::string own = "00-11111111111111111111111111111111-2222222222222222-00";
    REQUIRE(http(s.port(), "POST", "/v1/jobs", R"({"type": "echo", "id": "own", "trace_parent": ")" + own + R"("})",
                 "traceparent: " + tp + "\r\n")
                .status == 201);
    CHECK(http(s.port(), "GET", "/v1/jobs/own?wait_ms=5000").json()["trace"]["trace_id"] ==
          "11111111111111111111111111111111");
    auto bad = http(s.port(), "POST", "/v1/jobs", R"({"type": "echo", "trace_parent": "00-0-0-0"})");
    CHECK(bad.status == 422);
    CHECK(bad.json()["error"]["message"].get<std::string>().find("trace_parent: ") == 0);
  }

  TEST_CASE("HTTP metrics count requests by route template and status, with a duration histogram per route" *
            doctest::timeout(60)) {
    Service s;
    for (int i = 0; i < 3; ++i) REQUIRE(http(s.port(), "GET", "/v1/jobs/missing-" + std::to_string(i)).status == 404);
    REQUIRE(http(s.port(), "GET", "/healthz").status == 200);
    REQUIRE(http(s.port(), "GET", "/no/such/route").status == 404);
    REQUIRE(http(s.port(), "POST", "/v1/jobs", "{\"type\": \"echo\"}").status == 201);
    REQUIRE(http(s.port(), "POST", "/v1/jobs/x/cancel", "", "Content-Type: text/plain\r\n").status == 415);
    const std::string body = http(s.port(), "GET", "/metrics").body;
    CHECK(body.find("bulwark_http_requests_total{route=\"/v1/jobs/{id}\",code=\"404\"} 3\n") != std::string::npos);
    CHECK(body.find("bulwark_http_requests_total{route=\"/healthz\",code=\"200\"} 1\n") != std::string::npos);
    CHECK(body.find("bulwark_http_requests_total{route=\"unknown\",code=\"404\"} 1\n") != std::string::npos);
    CHECK(body.find("bulwark_http_requests_total{route=\"/v1/jobs\",code=\"201\"} 1\n") != std::string::npos);
    CHECK(body.find("bulwark_http_requests_total{route=\"/v1/jobs/{id}/cancel\",code=\"415\"} 1\n") !=
          std::string::npos);
    CHECK(body.find("missing-") == std::string::npos);  // no raw path becomes a label
    CHECK(body.find("bulwark_http_request_duration_seconds_bucket{route=\"/v1/jobs/{id}\",le=\"+Inf\"} 3\n") !=
          std::string::npos);
    CHECK(body.find("bulwark_http_request_duration_seconds_count{route=\"/v1/jobs/{id}\"} 3\n") != std::string::npos);
  }

  TEST_CASE("a listen address that cannot be used is a configuration error" * doctest::timeout(30)) {
    auto o = Service::options();
    bulwark::Runtime rt(bulwark::Registry{}, o);
    o.server.listen = "999.1.1.1:80";
    CHECK_THROWS_AS(bulwark::HttpServer(rt, o.server), bulwark::ConfigError);
    bulwark::HttpServer first(rt, Service::options().server);
    o.server.listen = "127.0.0.1:" + std::to_string(first.port());
    o.server.listen = "127.0.0.1:" + std::to_string(first.port());
    try {
      bulwark::HttpServer second(rt, o.server);
      FAIL("bound twice");
    } catch (const bulwark::ConfigError& e) {
      CHECK(std::string(e.what()).rfind("server.listen: cannot listen", 0) == 0);
    }
  }

  TEST_CASE("HEAD answers the GET's headers with its Content-Length and no body" * doctest::timeout(60)) {
    Service s;
    // /v1/workers of an idle runtime is the same from one request to the next
    // (/v1/stats is not: its rates move).
    const auto get = http(s.port(), "GET", "/v1/workers");
    HttpConnection c(s.port());
    c.send_raw("HEAD /v1/workers HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    const auto head = c.read_response(true);
    CHECK(head.status == 200);
    CHECK(std::stoul(head.header("content-length")) > 20);
    CHECK(std::stoul(head.header("content-length")) == std::stoul(get.header("content-length")));
    CHECK(c.read_response().status == 200);  // no stray body bytes before the next answer
  }

  TEST_CASE("deeply nested JSON is refused with 400 and the server lives on" * doctest::timeout(60)) {
    auto o = Service::options();
    o.server.max_body_bytes = 1 << 20;
    Service s(o);
    const std::string deep = R"({"type":"echo","payload":)" + std::string(200'000, '[') + std::string(200'000, ']') + "}";
    check_error(http(s.port(), "POST", "/v1/jobs", deep), 400, "json_too_deep");
    const std::string ok = R"({"type":"echo","payload":)" + std::string(100, '[') + std::string(100, ']') + "}";
    const auto accepted = s.post_job(json::parse(ok));
    CHECK(s.wait_terminal(accepted["id"])["state"] == "succeeded");  // and it can be read back
    check_error(http(s.port(), "POST", "/v1/jobs", R"({"type":"echo","payload":1e309})"), 400, "malformed_json");
    CHECK(http(s.port(), "GET", "/v1/jobs?limit=1000").status == 200);
    CHECK(http(s.port(), "GET", "/healthz").status == 200);
  }

  TEST_CASE("job ids cannot inject headers; Location is percent-encoded and resolves" * doctest::timeout(60)) {
    Service s;
    auto injected = http(s.port(), "POST", "/v1/jobs", R"({"type":"echo","id":"x\r\nSet-Cookie: pwned=1"})");
    check_error(injected, 422, "invalid_field");
    CHECK(injected.json()["error"]["message"].get<std::string>().rfind("id:", 0) == 0);
    CHECK(injected.header("set-cookie").empty());
    auto created = http(s.port(), "POST", "/v1/jobs", R"({"type":"echo","id":"tenant:7~a.b"})");
    REQUIRE(created.status == 201);
    CHECK(created.header("location") == "/v1/jobs/tenant%3A7~a.b");
    CHECK(http(s.port(), "GET", created.header("location")).json()["id"] == "tenant:7~a.b");
    CHECK(http(s.port(), "GET", "/v1/jobs/tenant:7~a.b").status == 200);
    // '+' in a path is itself, not a space: no such job, rather than a different one.
    check_error(http(s.port(), "GET", "/v1/jobs/a+b"), 404, "job_not_found");
    check_error(http(s.port(), "GET", "/v1/jobs?type=a+b&state=nope"), 400, "invalid_parameter");
  }

  TEST_CASE("POST /v1/jobs/batch answers each spec in order, as a single submit would" * doctest::timeout(60)) {
    auto o = Service::options();
    o.server.max_batch = 3;
    Service s(o);
    const json body = {{"jobs", json::array({{{"type", "echo"}, {"payload", 1}},
                                             {{"type", "no_such_type"}},
                                             {{"type", "echo"}, {"priority", "high"}}})}};
    auto r = http(s.port(), "POST", "/v1/jobs/batch", body.dump());
    REQUIRE_MESSAGE(r.status == 200, r.body);
    const json j = r.json();
    CHECK(j["accepted"] == 1);
    CHECK(j["rejected"] == 2);
    REQUIRE(j["results"].size() == 3);
    CHECK(j["results"][0]["status"] == 201);
    CHECK(s.wait_terminal(j["results"][0]["id"])["state"] == "succeeded");
    CHECK(j["results"][1]["status"] == 422);
    CHECK(j["results"][1]["error"]["code"] == "unknown_job_type");
    CHECK(j["results"][2]["status"] == 422);
    CHECK(j["results"][2]["error"]["code"] == "invalid_field");
    const json four = {{"jobs", json::array({{{"type", "echo"}}, {{"type", "echo"}}, {{"type", "echo"}}, {{"type", "echo"}}})}};
    check_error(http(s.port(), "POST", "/v1/jobs/batch", four.dump()), 422, "too_many_jobs");
    check_error(http(s.port(), "POST", "/v1/jobs/batch", R"({"jobs": []})"), 422, "invalid_field");
    check_error(http(s.port(), "POST", "/v1/jobs/batch", R"([{"type":"echo"}])"), 422, "invalid_field");
    check_error(http(s.port(), "POST", "/v1/jobs/batch", "{"), 400, "malformed_json");
    // GET names the job "batch", as any other id.
    check_error(http(s.port(), "GET", "/v1/jobs/batch"), 404, "job_not_found");
  }

  TEST_CASE("GET /v1/jobs/{id}?wait_ms= answers when the job ends, or when the wait is over" * doctest::timeout(60)) {
    Service s;
    const auto job = s.post_job({{"type", "sleep"}, {"payload", {{"ms", 300}}}});
    const auto start = std::chrono::steady_clock::now();
    auto r = http(s.port(), "GET", "/v1/jobs/" + job["id"].get<std::string>() + "?wait_ms=10000");
    REQUIRE(r.status == 200);
    CHECK(r.json()["state"] == "succeeded");
    CHECK(std::chrono::steady_clock::now() - start < 5s);  // woken by the end, not by the wait's limit
    // A wait that runs out answers with the job as it is.
    const auto slow = s.post_job({{"type", "sleep"}, {"payload", {{"ms", 3000}}}});
    r = http(s.port(), "GET", "/v1/jobs/" + slow["id"].get<std::string>() + "?wait_ms=50");
    REQUIRE(r.status == 200);
    CHECK_FALSE(bulwark::is_terminal(*bulwark::parse_job_state(r.json()["state"].get<std::string>())));
    check_error(http(s.port(), "GET", "/v1/jobs/nope?wait_ms=100"), 404, "job_not_found");
    check_error(http(s.port(), "GET", "/v1/jobs/nope?wait_ms=soon"), 400, "invalid_parameter");
    check_error(http(s.port(), "GET", "/v1/jobs/nope?wait=1"), 400, "invalid_parameter");
  }

  TEST_CASE("GET /v1/events streams every transition of every job, in order per job; Last-Event-ID resumes" *
            doctest::timeout(120)) {
    Service s;
    HttpConnection stream(s.port());
    stream.send_raw(http_request_text("GET", "/v1/events", "", "", false));
    const auto head = stream.read_head();
    REQUIRE(head.status == 200);
    CHECK(head.header("content-type") == "text/event-stream");
    CHECK(stream.read_until("\n\n") == "retry: 1000\n\n");
    constexpr int kJobs = 1000;
    std::vector<bulwark::JobSpec> specs;
    for (int i = 0; i < kJobs; ++i) specs.push_back({.type = "echo", .payload = i, .max_attempts = 1});
    for (const auto& sub : s.runtime.submit_many(std::move(specs))) REQUIRE(static_cast<bool>(sub));
    std::map<std::string, std::vector<std::string>> seen;  // job id -> states in order
    std::uint64_t last_id = 0, middle_id = 0;
    int ended = 0;
    while (ended < kJobs) {
      const std::string event = stream.read_until("\n\n");
      const auto id_at = event.find("id: ");
      REQUIRE(id_at != std::string::npos);
      const std::uint64_t id = std::stoull(event.substr(id_at + 4));
      CHECK(id > last_id);
      last_id = id;
      if (event.find("event: job") == std::string::npos) continue;
      const json data = json::parse(event.substr(event.find("data: ") + 6));
      CHECK(data["id"] == id);
      seen[data["job_id"]].push_back(data["state"]);
      if (data["state"] == "succeeded") ++ended;
      if (ended == kJobs / 2 && middle_id == 0) middle_id = id;
    }
    REQUIRE(seen.size() == kJobs);
    for (const auto& entry : seen) {  // not a structured binding: CAPTURE's lambda and clang 14
      const std::string& job = entry.first;
      CAPTURE(job);
      CHECK(entry.second == std::vector<std::string>{"queued", "running", "succeeded"});
    }
    // A reconnect with Last-Event-ID gets what came after that event.
    HttpConnection again(s.port());
    again.send_raw(http_request_text("GET", "/v1/events?state=succeeded", "", "Last-Event-ID: " + std::to_string(middle_id) + "\r\n", false));
    REQUIRE(again.read_head().status == 200);
    CHECK(again.read_until("\n\n") == "retry: 1000\n\n");
    const std::string next = again.read_until("\n\n");
    CHECK(std::stoull(next.substr(next.find("id: ") + 4)) > middle_id);
    CHECK(next.find("\"state\":\"succeeded\"") != std::string::npos);
    check_error(http(s.port(), "GET", "/v1/events?state=nope"), 400, "invalid_parameter");
    check_error(http(s.port(), "GET", "/v1/events", "", "Last-Event-ID: x\r\n"), 400, "invalid_header");
  }

  TEST_CASE("a client that falls behind the event buffer gets a last 'dropped' event and is closed; the jobs run on" *
            doctest::timeout(120)) {
    auto o = Service::options();
    o.events_buffer = 100;
    Service s(o);
    HttpConnection behind(s.port());
    behind.send_raw(http_request_text("GET", "/v1/events", "", "", false));
    REQUIRE(behind.read_head().status == 200);
    REQUIRE(behind.read_until("\n\n") == "retry: 1000\n\n");  // the stream has started
    // Thousands of events land between two of its looks at the buffer.
    std::vector<bulwark::JobSpec> specs;
    for (int i = 0; i < 20'000; ++i) specs.push_back({.type = "echo", .payload = i});
    for (const auto& sub : s.runtime.submit_many(std::move(specs))) REQUIRE(static_cast<bool>(sub));
    REQUIRE(s.runtime.wait_idle(60s));
    CHECK(s.runtime.stats().succeeded >= 20'000);
    std::string rest;
    CHECK(behind.read_to_end(rest));  // closed by the server
    const auto dropped = rest.rfind("event: dropped\n");
    REQUIRE(dropped != std::string::npos);
    const json data = json::parse(rest.substr(rest.find("data: ", dropped) + 6));
    CHECK(data["oldest"].get<std::uint64_t>() > data["after"].get<std::uint64_t>() + 1);
    CHECK(http(s.port(), "GET", "/healthz").status == 200);
  }
}
