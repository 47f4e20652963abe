#include <doctest/doctest.h>

#include <atomic>
#include <latch>
#include <thread>
#include <vector>

#include "builtin_workers.hpp"
#include "bulwark/runtime.hpp"
#include "runtime/testing_hooks.hpp"
#include "support/helpers.hpp"
#include "support/wait.hpp"

using namespace std::chrono_literals;
using bulwark::JobContext;
using bulwark::JobState;
using bulwark::Registry;
using bulwark::Runtime;
using bulwark::RuntimeOptions;
using bulwark::Verdict;
using nlohmann::json;

namespace {

using bulwark::testing::builtins;
using bulwark::testing::test_options;


using bulwark::testing::eventually;

unsigned count_state(const bulwark::HealthReport& h, const std::string& state) {
  unsigned n = 0;
  for (const auto& w : h.workers) n += bulwark::to_string(w.state) == state ? 1 : 0;
  return n;
}

// All `workers` jobs must run at the same time to finish.
void run_on_every_worker(Runtime& rt, unsigned workers) {
  std::latch together(workers);
  std::vector<bulwark::JobHandle<void>> handles;
  for (unsigned i = 0; i < workers; ++i) handles.push_back(rt.post([&] { together.arrive_and_wait(); }));
  for (auto& h : handles) h.get();
}

}  // namespace

TEST_SUITE("Supervisor") {
  TEST_CASE("a hang past its hard timeout fails with kind timeout and its worker is replaced" *
            doctest::timeout(60)) {
    auto o = test_options(2);
    o.supervisor.hard_timeout = 150ms;
    Runtime rt(builtins(), o);
    auto s = rt.submit({.type = "hang", .payload = {{"ms", 1500}}, .max_attempts = 1});
    REQUIRE(eventually([&] { return rt.get(s.id)->state == JobState::failed; }));
    auto r = *rt.get(s.id);
    REQUIRE(r.error.has_value());
    CHECK(r.error->kind == bulwark::FailureKind::timeout);
    CHECK(r.error->message.find("hard timeout of 150 ms") != std::string::npos);
    const auto h = rt.health();
    CHECK(count_state(h, "abandoned") == 1);
    CHECK(count_state(h, "idle") + count_state(h, "busy") == 2);
    CHECK(rt.stats().hard_timeouts == 1);
    CHECK(rt.stats().replacements == 1);
    // The pool has its full size right away: both workers run at once.
    run_on_every_worker(rt, 2);
    // The abandoned thread retires cleanly once its job returns.
    CHECK(eventually([&] { return rt.stats().abandoned == 0; }));
  }

  TEST_CASE("a timed-out attempt is retried while attempts remain" * doctest::timeout(60)) {
    std::atomic<int> calls{0};
    Registry reg;
    reg.add("slow_once", [&](JobContext& ctx, const json&) -> json {
      if (++calls == 1) {
        while (!ctx.stop_requested()) std::this_thread::sleep_for(1ms);
        std::this_thread::sleep_for(300ms);  // keeps going past the stop request
        return "late";
      }
      return "on time";
    });
    auto o = test_options(2);
    o.supervisor.hard_timeout = 100ms;
    Runtime rt(std::move(reg), o);
    auto s = rt.submit({.type = "slow_once", .max_attempts = 2});
    REQUIRE(eventually([&] { return rt.get(s.id)->state == JobState::succeeded; }));
    auto r = *rt.get(s.id);
    CHECK(r.attempts == 2);
    CHECK(r.result == "on time");
    // The abandoned first attempt finishing later does not overwrite the result.
    REQUIRE(eventually([&] { return rt.stats().abandoned == 0; }));
    CHECK(rt.get(s.id)->result == "on time");
  }

  TEST_CASE("the stuck trace of a hang job names the function where it spins" * doctest::timeout(60)) {
    auto o = test_options(1);
    o.supervisor.stuck_after = 100ms;
    Runtime rt(builtins(), o);
    auto s = rt.submit({.type = "hang", .payload = {{"ms", 600}}});
    REQUIRE(eventually([&] { return rt.get(s.id)->stuck_trace.has_value(); }));
    CHECK(bulwark::testing::trace_names(*rt.get(s.id)->stuck_trace, "hang_spin"));
    REQUIRE(rt.wait_idle(10s));
    auto r = *rt.get(s.id);
    CHECK(r.state == JobState::succeeded);  // stuck is reported, not punished
    REQUIRE(r.stuck_trace.has_value());
    CHECK(rt.stats().stuck_reports == 1);
  }

  TEST_CASE("a soft timeout stops a cooperative sleep job early, and it fails as timed out" * doctest::timeout(60)) {
    Runtime rt(builtins(), test_options(1));
    auto s = rt.submit({.type = "sleep", .payload = {{"ms", 20'000}}, .max_attempts = 1, .timeout = 100ms});
    REQUIRE(rt.wait_idle(10s));
    auto r = *rt.get(s.id);
    CHECK(r.state == JobState::failed);  // it did not do its work
    REQUIRE(r.error.has_value());
    CHECK(r.error->kind == bulwark::FailureKind::timeout);
    CHECK(r.error->type == "bulwark::Stopped");
    CHECK(r.duration_ms < 5'000);
    CHECK(rt.stats().soft_timeouts == 1);
    REQUIRE(r.stuck_trace.has_value());  // where it was when the timeout passed
  }

  TEST_CASE("the abandoned-thread cap turns the verdict unhealthy, and it recovers" * doctest::timeout(60)) {
    auto o = test_options(2);
    o.supervisor.hard_timeout = 100ms;
    o.supervisor.max_abandoned_threads = 1;
    Runtime rt(builtins(), o);
    auto a = rt.submit({.type = "hang", .payload = {{"ms", 1200}}, .max_attempts = 1});
    REQUIRE(eventually([&] { return rt.get(a.id)->state == JobState::failed; }));
    CHECK(rt.health().verdict == Verdict::healthy);  // one abandoned thread is within the cap
    auto b = rt.submit({.type = "hang", .payload = {{"ms", 1200}}, .max_attempts = 1});
    REQUIRE(eventually([&] { return rt.get(b.id)->state == JobState::failed; }));
    REQUIRE(eventually([&] { return rt.health().verdict == Verdict::unhealthy; }));
    const auto h = rt.health();
    CHECK(count_state(h, "vacant") == 1);
    REQUIRE_FALSE(h.reasons.empty());
    CHECK(h.reasons[0].find("max_abandoned_threads") != std::string::npos);
    // Once the stuck threads return, they retire and the pool is whole again.
    REQUIRE(eventually([&] { return rt.health().verdict == Verdict::healthy; }));
    CHECK(count_state(rt.health(), "vacant") == 0);
    run_on_every_worker(rt, 2);
  }

  TEST_CASE("a worker that dies is replaced and the reason recorded" * doctest::timeout(60)) {
    Runtime rt(Registry{}, test_options(2));
    rt.post([] { bulwark::detail::hooks::end_current_worker(); }).get();
    REQUIRE(eventually([&] { return rt.stats().replacements == 1; }));
    const auto h = rt.health();
    unsigned restarted = 0;
    for (const auto& w : h.workers) restarted += w.restarts;
    CHECK(restarted == 1);
    CHECK(rt.stats().workers == 2);
    run_on_every_worker(rt, 2);
  }

  TEST_CASE("restart intensity turns the verdict unhealthy and recovers once the window passes" *
            doctest::timeout(60)) {
    auto o = test_options(2);
    o.supervisor.max_restarts = 1;
    o.supervisor.restart_window = 1500ms;
    Runtime rt(Registry{}, o);
    for (int i = 0; i < 2; ++i) {
      rt.post([] { bulwark::detail::hooks::end_current_worker(); }).get();
      REQUIRE(eventually([&] { return rt.stats().replacements == static_cast<unsigned>(i + 1); }));
    }
    REQUIRE(eventually([&] { return rt.health().verdict == Verdict::unhealthy; }));
    CHECK(rt.health().reasons[0].find("supervisor.max_restarts") != std::string::npos);
    REQUIRE(eventually([&] { return rt.health().verdict == Verdict::healthy; }));
  }

  TEST_CASE("a breaker opens on a poison type while another type keeps succeeding, then closes" *
            doctest::timeout(60)) {
    std::atomic<bool> poisoned{true};
    std::atomic<int> poison_runs{0};
    Registry reg;
    reg.add("poison", [&](JobContext&, const json&) -> json {
      ++poison_runs;
      if (poisoned) throw std::runtime_error("poison");
      return "cured";
    });
    reg.add("echo", [](JobContext&, const json& p) { return p; });
    auto o = test_options(2);
    o.circuit_breaker = {.failures = 3, .window = 10'000ms, .cooldown = 300ms};
    Runtime rt(std::move(reg), o);
    for (int i = 0; i < 3; ++i) REQUIRE(rt.submit({.type = "poison", .max_attempts = 1}));
    REQUIRE(rt.wait_idle(10s));
    REQUIRE(eventually([&] { return rt.stats().breaker_opened == 1; }));
    auto breaker = [&] {
      for (const auto& b : rt.health().breakers) {
        if (b.type == "poison") return std::string(bulwark::to_string(b.state));
      }
      return std::string("none");
    };
    CHECK(breaker() == "open");
    // While open: a poison job waits (scheduled, not failed); echo runs.
    const int runs_before = poison_runs.load();
    auto waiting = rt.submit({.type = "poison", .max_attempts = 1});
    auto other = rt.submit({.type = "echo", .payload = 5});
    REQUIRE(eventually([&] { return rt.get(other.id)->state == JobState::succeeded; }));
    std::this_thread::sleep_for(50ms);
    CHECK(rt.get(waiting.id)->state == JobState::scheduled);
    CHECK(poison_runs.load() == runs_before);
    // The cure lands; after the cooldown the waiting job is the trial and closes it.
    poisoned = false;
    REQUIRE(eventually([&] { return rt.get(waiting.id)->state == JobState::succeeded; }));
    CHECK(rt.get(waiting.id)->result == "cured");
    CHECK(breaker() == "closed");
    CHECK(rt.stats().breaker_deferred >= 1);
  }

  TEST_CASE("health reports every worker with its job and heartbeat age" * doctest::timeout(60)) {
    Runtime rt(builtins(), test_options(2));
    auto s = rt.submit({.type = "sleep", .payload = {{"ms", 5000}}});  // stopped early at shutdown
    // The state turns `running` a moment before the worker publishes the job.
    REQUIRE(eventually([&] { return count_state(rt.health(), "busy") == 1; }));
    const auto h = rt.health();
    CHECK(h.verdict == Verdict::healthy);
    REQUIRE(h.workers.size() == 2);
    unsigned busy = 0;
    for (const auto& w : h.workers) {
      if (w.state != bulwark::WorkerState::busy) continue;
      ++busy;
      CHECK(w.job == s.id);
      REQUIRE(w.ms_since_heartbeat.has_value());
      CHECK(*w.ms_since_heartbeat >= 0.0);
    }
    CHECK(busy == 1);
    const auto j = bulwark::to_json(h);
    CHECK(j["verdict"] == "healthy");
    CHECK(j["workers"].size() == 2);
  }

  TEST_CASE("saturation: every worker busy past stall_ms makes the verdict degraded" * doctest::timeout(60)) {
    auto o = test_options(1);
    o.supervisor.stall = 100ms;
    Runtime rt(builtins(), o);
    auto s = rt.submit({.type = "sleep", .payload = {{"ms", 600}}});
    REQUIRE(eventually([&] { return rt.health().verdict == Verdict::degraded; }));
    CHECK(rt.health().reasons[0].find("supervisor.stall_ms") != std::string::npos);
    REQUIRE(rt.wait_idle(10s));
    REQUIRE(eventually([&] { return rt.health().verdict == Verdict::healthy; }));
  }

  TEST_CASE("shutdown abandons a job that ignores its stop token past the grace period" * doctest::timeout(60)) {
    Runtime rt(builtins(), test_options(1));
    auto s = rt.submit({.type = "hang", .payload = {{"ms", 800}}});
    REQUIRE(eventually([&] { return rt.get(s.id)->state == JobState::running; }));
    const auto start = bulwark::Clock::now();
    rt.shutdown(10ms);
    CHECK(bulwark::Clock::now() - start < 700ms);
    auto r = *rt.get(s.id);
    CHECK(r.state == JobState::failed);
    CHECK(r.error->kind == bulwark::FailureKind::shutdown);
    std::this_thread::sleep_for(900ms);  // the detached thread finishes against shared state only
  }
}
