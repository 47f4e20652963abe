// The recovery governor's decisions from given signals, and the runtime's
// governor under a real CPU hog and a real burst of failures.
#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "bulwark/runtime.hpp"
#include "supervision/recovery_governor.hpp"
#include "support/helpers.hpp"
#include "support/wait.hpp"

using bulwark::detail::LoadSignals;
using bulwark::detail::RecoveryGovernor;
using namespace std::chrono_literals;

namespace {

LoadSignals calm() {
  LoadSignals s;
  s.machine_cpu = 0.1;
  s.process_cpu = 0.1;
  s.wait_p99_ms = 5;
  s.saturation = 0.2;
  s.failure_rate = 0.0;
  return s;
}

}  // namespace

TEST_SUITE("RecoveryGovernor") {
  TEST_CASE("a high signal halves the limit at once, down to the floor and never below it") {
    bulwark::RecoveryOptions o;
    RecoveryGovernor g(o, 1, 8);
    CHECK(g.limit() == 8);
    LoadSignals hot = calm();
    hot.machine_cpu = 0.95;
    auto c = g.step(hot);
    REQUIRE(c);
    CHECK(c->from == 8);
    CHECK(c->to == 4);
    CHECK_FALSE(c->up);
    CHECK(c->why.find("machine CPU 0.95 over recovery.cpu_high 0.85") != std::string::npos);
    CHECK(g.step(hot)->to == 2);
    CHECK(g.step(hot)->to == 1);
    CHECK_FALSE(g.step(hot));  // at the floor: no change, nothing to log
    CHECK(g.limit() == 1);
  }

  TEST_CASE("each signal lowers it: process CPU, queue wait, saturation, failure rate") {
    bulwark::RecoveryOptions o;
    for (int which = 0; which < 4; ++which) {
      CAPTURE(which);
      RecoveryGovernor g(o, 1, 4);
      LoadSignals s = calm();
      if (which == 0) s.process_cpu = 0.9;
      if (which == 1) s.wait_p99_ms = 1500;
      if (which == 2) s.saturation = 1.0;  // all busy: reached counts
      if (which == 3) s.failure_rate = 0.8;
      auto c = g.step(s);
      REQUIRE(c);
      CHECK(c->to == 2);
    }
  }

  TEST_CASE("calm raises it by one after increase_after evaluations in a row, up to the maximum") {
    bulwark::RecoveryOptions o;
    o.increase_after = 3;
    RecoveryGovernor g(o, 1, 3);
    LoadSignals hot = calm();
    hot.failure_rate = 0.9;
    g.step(hot);
    g.step(hot);
    REQUIRE(g.limit() == 1);
    CHECK_FALSE(g.step(calm()));
    CHECK_FALSE(g.step(calm()));
    auto up = g.step(calm());
    REQUIRE(up);
    CHECK(up->up);
    CHECK(up->to == 2);
    CHECK(up->why.find("raised 1 -> 2") == 0);
    for (int i = 0; i < 3; ++i) g.step(calm());
    CHECK(g.limit() == 3);
    for (int i = 0; i < 10; ++i) CHECK_FALSE(g.step(calm()));  // the maximum holds
  }

  TEST_CASE("between the marks it holds, and the calm streak starts over (no oscillation)") {
    bulwark::RecoveryOptions o;
    o.increase_after = 2;
    RecoveryGovernor g(o, 1, 4);
    LoadSignals hot = calm();
    hot.machine_cpu = 0.9;
    g.step(hot);
    REQUIRE(g.limit() == 2);
    LoadSignals between = calm();
    between.machine_cpu = 0.7;  // over cpu_low 0.6, under cpu_high 0.85
    for (int i = 0; i < 10; ++i) CHECK_FALSE(g.step(between));
    CHECK_FALSE(g.step(calm()));
    CHECK_FALSE(g.step(between));  // resets the streak
    CHECK_FALSE(g.step(calm()));
    CHECK(g.step(calm()));  // two calm in a row
    CHECK(g.limit() == 3);
  }

  TEST_CASE("adaptive false: the limit stays at the maximum whatever the load") {
    bulwark::RecoveryOptions o;
    o.adaptive = false;
    RecoveryGovernor g(o, 1, 4);
    LoadSignals hot = calm();
    hot.machine_cpu = 1.0;
    hot.failure_rate = 1.0;
    for (int i = 0; i < 5; ++i) CHECK_FALSE(g.step(hot));
    CHECK(g.limit() == 4);
  }

  TEST_CASE("unknown signals count as calm; the minimum is at least one") {
    bulwark::RecoveryOptions o;
    o.increase_after = 1;
    RecoveryGovernor g(o, 0, 2);
    CHECK(g.min() == 1);
    LoadSignals hot;
    hot.saturation = 1.0;
    g.step(hot);
    REQUIRE(g.limit() == 1);
    CHECK(g.step(LoadSignals{}));  // nothing measured, nothing busy
    CHECK(g.limit() == 2);
  }

  TEST_CASE("LoadProbe reads shares of the machine between 0 and 1 from the second sample on") {
    bulwark::detail::LoadProbe probe;
    CHECK_FALSE(probe.sample().machine);  // nothing to compare with yet
    std::this_thread::sleep_for(50ms);
    const auto cpu = probe.sample();
    REQUIRE(cpu.machine);
    REQUIRE(cpu.process);
    CHECK(*cpu.machine >= 0.0);
    CHECK(*cpu.machine <= 1.0);
    CHECK(*cpu.process >= 0.0);
    CHECK(*cpu.process <= 1.0);
  }
}

namespace {

// A runtime whose governor looks only at this process's CPU and its own
// jobs (the machine's CPU is shared with whatever else runs here).
bulwark::RuntimeOptions governed(unsigned workers) {
  auto o = bulwark::testing::test_options(workers);
  o.max_concurrent_retries = 4;
  o.recovery.adjust_every = 50ms;
  o.recovery.increase_after = 2;
  o.recovery.cpu_high = 1.0;  // the machine: never high...
  o.recovery.cpu_low = 1.0;   // ...always calm
  o.recovery.wait_high = 60'000ms;
  o.recovery.wait_low = 60'000ms;
  return o;
}

}  // namespace

TEST_SUITE("recovery governor in the runtime") {
  TEST_CASE("a CPU hog in the process lowers the limit within a few evaluations; it climbs back after, and "
            "retries still run meanwhile" * doctest::timeout(120)) {
    auto o = governed(2);
    o.recovery.process_cpu_high = 0.3;
    o.recovery.process_cpu_low = 0.2;
    o.recovery.saturation_high = 1.0;
    o.recovery.saturation_low = 1.0;  // busy workers alone neither lower nor hold it
    o.recovery.failure_high = 1.0;
    o.recovery.failure_low = 1.0;
    bulwark::Runtime rt(bulwark::testing::builtins(), o);
    REQUIRE(rt.health().recovery.limit == 4);
    std::atomic<bool> stop{false};
    std::vector<std::thread> hogs;
    for (int i = 0; i < 2; ++i) {
      hogs.emplace_back([&] {
        volatile std::uint64_t x = 0;
        while (!stop.load(std::memory_order_relaxed)) x = x + 1;
      });
    }
    const bool lowered = bulwark::testing::eventually([&] { return rt.health().recovery.limit == 1; }, 20s);
    // While it is at the floor, retries still run: one at a time.
    std::vector<bulwark::JobId> ids;
    for (int i = 0; i < 20; ++i) {
      ids.push_back(rt.submit({.type = "flaky", .payload = {{"fail_times", 1}}, .max_attempts = 2}).id);
    }
    const bool drained = rt.wait_idle(60s);
    stop = true;
    for (auto& t : hogs) t.join();
    REQUIRE(lowered);
    REQUIRE(drained);
    for (const auto& id : ids) CHECK(rt.get(id)->state == bulwark::JobState::succeeded);
    const auto h = rt.health();
    CHECK(h.recovery.lowered >= 2);
    CHECK(h.recovery.reason.find("process CPU") != std::string::npos);
    CHECK(bulwark::testing::eventually([&] { return rt.health().recovery.limit == 4; }, 30s));
    CHECK(rt.health().recovery.raised >= 3);
    CHECK(rt.health().recovery.reason.find("raised") == 0);
  }

  TEST_CASE("a burst of failures lowers the limit; calm brings it back" * doctest::timeout(120)) {
    auto o = governed(2);
    o.recovery.process_cpu_high = 1.0;
    o.recovery.process_cpu_low = 1.0;
    o.recovery.saturation_high = 1.0;
    o.recovery.saturation_low = 1.0;
    bulwark::Runtime rt(bulwark::testing::builtins(), o);
    for (int i = 0; i < 2000; ++i) {
      rt.submit({.type = "fail", .payload = {{"throw", "runtime_error"}}, .max_attempts = 2});
    }
    REQUIRE(rt.wait_idle(60s));
    CHECK(bulwark::testing::eventually([&] { return rt.health().recovery.lowered >= 1; }, 10s));
    CHECK(rt.health().recovery.reason.find("failure rate") != std::string::npos);
    CHECK(bulwark::testing::eventually([&] { return rt.health().recovery.limit == 4; }, 30s));
    const std::string metrics_reason = rt.health().recovery.reason;
    CHECK(metrics_reason.find("raised") == 0);
  }
}
