#include <doctest/doctest.h>

#include "builtin_workers.hpp"
#include "bulwark/runtime.hpp"
#include "support/helpers.hpp"

using bulwark::JobState;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

struct Fixture {
  Fixture() : rt(make_registry(), options()) {}
  static bulwark::Registry make_registry() {
    bulwark::Registry r;
    bulwark::workers::register_builtin(r);
    return r;
  }
  static bulwark::RuntimeOptions options() {
    bulwark::RuntimeOptions o;
    o.workers = 2;
    o.logging.level = "off";
    o.retry.max_attempts = 1;
    return o;
  }
  bulwark::JobRecord run(bulwark::JobSpec spec) {
    auto s = rt.submit(std::move(spec));
    REQUIRE_MESSAGE(s, (s.error ? s.error->message : ""));
    REQUIRE(rt.wait_idle(20s));
    return *rt.get(s.id);
  }
  bulwark::Runtime rt;
};

}  // namespace

TEST_SUITE("built-in workers") {
  TEST_CASE_FIXTURE(Fixture, "echo returns its payload" * doctest::timeout(30)) {
    CHECK(run({.type = "echo", .payload = {1, "two"}}).result == json{1, "two"});
  }

  TEST_CASE_FIXTURE(Fixture, "sleep sleeps and says how long" * doctest::timeout(30)) {
    auto r = run({.type = "sleep", .payload = {{"ms", 30}}});
    CHECK(r.state == JobState::succeeded);
    CHECK(r.result["slept_ms"].get<int>() >= 30);
    CHECK(!r.result.contains("cancelled"));
  }

  TEST_CASE_FIXTURE(Fixture, "compute counts primes" * doctest::timeout(30)) {
    CHECK(run({.type = "compute", .payload = {{"n", 100}}}).result["primes"] == 25);
    CHECK(run({.type = "compute", .payload = {{"n", 100'000}}}).result["primes"] == 9592);
  }

  TEST_CASE_FIXTURE(Fixture, "fail throws each kind from fail_throw_site" * doctest::timeout(60)) {
    const std::pair<const char*, const char*> kinds[] = {
        {"runtime_error", "std::runtime_error"},
        {"logic_error", "std::logic_error"},
        {"out_of_range", "std::out_of_range"},
        {"bad_alloc", "std::bad_alloc"},
        {"int", "int"},
        {"c_string", "const char*"},
        {"string", "std::string"},
        {"custom", "bulwark::workers::CustomFailure"},
        {"nested", "std::_Nested_exception<std::runtime_error>"},
    };
    for (const auto& entry : kinds) {
      // Named copies, not a structured binding: INFO captures them in a
      // lambda, which clang 14 does not allow for bindings.
      const auto kind = entry.first;
      const auto type = entry.second;
      INFO("throw: " << kind);
      auto r = run({.type = "fail", .payload = {{"throw", kind}, {"message", "m"}}});
      CHECK(r.state == JobState::failed);
      REQUIRE(r.error.has_value());
      CHECK(r.error->type == type);
      // The throwing function comes first, unless the throw happens inside a
      // library helper (std::throw_with_nested when not inlined).
      const auto frames = bulwark::symbolize(r.error->trace);
      std::size_t site = 0;
      while (site < frames.size() && frames[site].function.find("fail_throw_site") == std::string::npos) ++site;
      REQUIRE(site + 2 < frames.size());
      CHECK((site == 0 || frames[0].function.rfind("void std::", 0) == 0));
      CHECK(frames[site + 1].function.find("fail_level2") != std::string::npos);
      CHECK(frames[site + 2].function.find("fail_level1") != std::string::npos);
    }
    auto nested = run({.type = "fail", .payload = {{"throw", "nested"}, {"message", "root"}}});
    REQUIRE(nested.error->nested.size() == 1);
    CHECK(nested.error->nested[0].message == "root");
  }

  TEST_CASE_FIXTURE(Fixture, "hang spins for its time" * doctest::timeout(30)) {
    auto r = run({.type = "hang", .payload = {{"ms", 20}}});
    CHECK(r.state == JobState::succeeded);
    CHECK(r.duration_ms >= 20.0);
  }

  TEST_CASE_FIXTURE(Fixture, "bad payloads are refused at submit with the field named" * doctest::timeout(30)) {
    const std::pair<bulwark::JobSpec, const char*> cases[] = {
        {{.type = "sleep", .payload = {{"ms", -5}}}, "sleep: payload.ms"},
        {{.type = "compute", .payload = "many"}, "compute: payload: expected an object"},
        {{.type = "fail", .payload = {{"throw", "segfault"}}}, "fail: payload.throw: expected one of"},
        {{.type = "fail", .payload = {{"message", 3}}}, "fail: payload.message: expected a string"},
        {{.type = "flaky", .payload = {{"fail_times", "x"}}}, "flaky: payload.fail_times"},
        {{.type = "hang", .payload = {{"ms", 1.5}}}, "hang: payload.ms"},
    };
    for (const auto& [spec, expected] : cases) {
      auto s = rt.submit(spec);
      REQUIRE_FALSE(s);
      CHECK(s.error->code == bulwark::SubmitError::Code::invalid);
      CHECK(s.error->message.rfind(expected, 0) == 0);
    }
  }
}
