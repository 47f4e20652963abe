// Periodic jobs: the scheduler at chosen times (tick(now)), submitting into
// a real runtime; missed runs, exclusive schedules, several processes on
// one Redis firing each time once; schedules added through the API.
#include <doctest/doctest.h>

#include <date/date.h>

#include <atomic>
#include <mutex>
#include <vector>

#include "bulwark/runtime.hpp"
#include "redis/redis_schedules.hpp"
#include "runtime/scheduler.hpp"
#include "support/helpers.hpp"
#include "support/redis_server.hpp"
#include "support/wait.hpp"

using namespace std::chrono_literals;
using bulwark::JobState;
using bulwark::Runtime;
using bulwark::WallClock;
using bulwark::detail::Scheduler;

namespace {

WallClock::time_point utc(int y, unsigned mo, unsigned d, int h, int mi, int s = 0) {
  return date::sys_days(date::year(y) / mo / d) + std::chrono::hours(h) + std::chrono::minutes(mi) +
         std::chrono::seconds(s);
}

// A scheduler submitting into `rt`, its clock the tests' own.
struct Harness {
  Harness(Runtime& rt, bulwark::RuntimeOptions o, bulwark::detail::ScheduleStore& store)
      : options(std::move(o)),
        reporter(options.logging),
        events(0, 1s),
        scheduler(
            options, store,
            [&rt, this](bulwark::JobSpec spec) {
              std::lock_guard lock(mutex);
              submitted.push_back(spec.id);
              return rt.submit(std::move(spec));
            },
            [&rt](const bulwark::JobId& id) -> std::optional<JobState> {
              auto r = rt.get(id);
              return r ? std::optional<JobState>(r->state) : std::nullopt;
            },
            [](const std::string& type) { return type == "echo" || type == "sleep"; }, reporter, events,
            [] { return WallClock::now(); }) {}

  std::vector<std::string> ids() {
    std::lock_guard lock(mutex);
    return submitted;
  }

  bulwark::RuntimeOptions options;
  bulwark::detail::Reporter reporter;
  bulwark::detail::EventLog events;
  std::mutex mutex;
  std::vector<std::string> submitted;
  Scheduler scheduler;
};

bulwark::RuntimeOptions with_schedule(const std::string& cron, bulwark::MissedRuns missed = bulwark::MissedRuns::skip,
                                      bool exclusive = false, nlohmann::json job = {{"type", "echo"}, {"payload", 1}}) {
  auto o = bulwark::testing::test_options(1);
  o.schedules["report"] = bulwark::ScheduleOptions{cron, "UTC", std::move(job), missed, exclusive};
  return o;
}

}  // namespace

TEST_SUITE("scheduler") {
  TEST_CASE("each time the expression names makes one job with the time in its id" * doctest::timeout(60)) {
    Runtime rt(bulwark::testing::builtins(), bulwark::testing::test_options(1));
    bulwark::detail::MemoryScheduleStore store;
    Harness h(rt, with_schedule("*/15 * * * *"), store);
    h.scheduler.tick(utc(2026, 11, 30, 10, 7));   // starts: next is 10:15
    h.scheduler.tick(utc(2026, 11, 30, 10, 14, 59));
    CHECK(h.ids().empty());
    h.scheduler.tick(utc(2026, 11, 30, 10, 15, 1));
    h.scheduler.tick(utc(2026, 11, 30, 10, 15, 2));  // the same time twice: still one
    h.scheduler.tick(utc(2026, 11, 30, 10, 30, 0));
    CHECK(h.ids() == std::vector<std::string>{"report:20261130T1015Z", "report:20261130T1030Z"});
    REQUIRE(rt.wait_idle(10s));
    CHECK(rt.get("report:20261130T1015Z")->state == JobState::succeeded);
    const auto listed = h.scheduler.list();
    REQUIRE(listed.size() == 1);
    CHECK(listed[0].from_config);
    CHECK(listed[0].last_job == "report:20261130T1030Z");
    CHECK(listed[0].next_run == utc(2026, 11, 30, 10, 45));
  }

  TEST_CASE("missed runs: skip drops them, run_once makes one job at the latest" * doctest::timeout(60)) {
    Runtime rt(bulwark::testing::builtins(), bulwark::testing::test_options(1));
    for (const auto policy : {bulwark::MissedRuns::skip, bulwark::MissedRuns::run_once}) {
      bulwark::detail::MemoryScheduleStore store;
      store.set_last_run("report", std::chrono::duration_cast<std::chrono::milliseconds>(
                                       utc(2026, 11, 30, 6, 0).time_since_epoch()).count());
      Harness h(rt, with_schedule("0 * * * *", policy), store);
      h.scheduler.tick(utc(2026, 11, 30, 10, 30));  // 07:00 to 10:00 were missed
      if (policy == bulwark::MissedRuns::skip) {
        CHECK(h.ids().empty());
      } else {
        CHECK(h.ids() == std::vector<std::string>{"report:20261130T1000Z"});
      }
      CHECK(store.last_run("report") ==
            std::chrono::duration_cast<std::chrono::milliseconds>(utc(2026, 11, 30, 10, 0).time_since_epoch()).count());
      h.scheduler.tick(utc(2026, 11, 30, 11, 0, 5));  // on time again
      CHECK(h.ids().back() == "report:20261130T1100Z");
    }
  }

  TEST_CASE("exclusive: a time is skipped while the previous run has not ended" * doctest::timeout(60)) {
    Runtime rt(bulwark::testing::builtins(), bulwark::testing::test_options(1));
    bulwark::detail::MemoryScheduleStore store;
    Harness h(rt, with_schedule("* * * * *", bulwark::MissedRuns::skip, true,
                                {{"type", "sleep"}, {"payload", {{"ms", 3000}}}}),
              store);
    h.scheduler.tick(utc(2026, 11, 30, 10, 0, 30));
    h.scheduler.tick(utc(2026, 11, 30, 10, 1, 1));
    REQUIRE(h.ids() == std::vector<std::string>{"report:20261130T1001Z"});
    REQUIRE(bulwark::testing::eventually([&] { return rt.get("report:20261130T1001Z")->state == JobState::running; }));
    h.scheduler.tick(utc(2026, 11, 30, 10, 2, 1));  // still running: skipped
    CHECK(h.ids().size() == 1);
    REQUIRE(bulwark::testing::await_terminal(rt, "report:20261130T1001Z"));
    h.scheduler.tick(utc(2026, 11, 30, 10, 3, 1));
    CHECK(h.ids().back() == "report:20261130T1003Z");
  }

  TEST_CASE("schedules added through the API: checked, listed, replaced, removed; config ones stay" *
            doctest::timeout(60)) {
    auto o = with_schedule("0 3 * * *");
    Runtime rt(bulwark::testing::builtins(), o);
    std::string problem;
    bulwark::ScheduleOptions s{"*/5 * * * *", "Europe/Berlin", {{"type", "echo"}}, bulwark::MissedRuns::skip, false};
    CHECK(rt.add_schedule("five", s, &problem) == bulwark::ScheduleResult::added);
    CHECK(rt.add_schedule("five", s, &problem) == bulwark::ScheduleResult::replaced);
    CHECK(rt.add_schedule("report", s, &problem) == bulwark::ScheduleResult::from_config);
    bulwark::ScheduleOptions bad = s;
    bad.job = {{"type", "nope"}};
    CHECK(rt.add_schedule("bad", bad, &problem) == bulwark::ScheduleResult::invalid);
    CHECK(problem == "job.type: unknown job type 'nope'");
    bad = s;
    bad.cron = "* * *";
    CHECK(rt.add_schedule("bad", bad, &problem) == bulwark::ScheduleResult::invalid);
    CHECK(problem.rfind("cron: expected five fields", 0) == 0);
    CHECK(rt.add_schedule("no:colons", s, &problem) == bulwark::ScheduleResult::invalid);
    const auto listed = rt.schedules();
    REQUIRE(listed.size() == 2);
    CHECK(listed[0].name == "five");
    CHECK_FALSE(listed[0].from_config);
    CHECK(listed[0].options.time_zone == "Europe/Berlin");
    REQUIRE(listed[0].next_run);
    CHECK(*listed[0].next_run > WallClock::now());
    CHECK(*listed[0].next_run <= WallClock::now() + 5min);
    CHECK(rt.remove_schedule("five") == bulwark::ScheduleResult::removed);
    CHECK(rt.remove_schedule("five") == bulwark::ScheduleResult::not_found);
    CHECK(rt.remove_schedule("report") == bulwark::ScheduleResult::from_config);
    CHECK(rt.schedules().size() == 1);
  }

  TEST_CASE("a config schedule of a type the registry lacks stops the runtime at start" * doctest::timeout(30)) {
    auto o = with_schedule("0 3 * * *", bulwark::MissedRuns::skip, false, {{"type", "nope"}});
    CHECK_THROWS_WITH_AS(Runtime(bulwark::testing::builtins(), o), "schedules.report.job.type: unknown job type 'nope'",
                         bulwark::ConfigError);
  }

  TEST_CASE("two processes on one Redis: each time makes one job; a new process knows the last run" *
            doctest::timeout(60)) {
    bulwark::testing::RedisServer server;
    auto shared = bulwark::testing::test_options(1);
    shared.backend = bulwark::QueueBackend::redis;
    shared.redis.url = server.url();
    shared.redis.ns = "sched";
    Runtime a(bulwark::testing::builtins(), shared);
    Runtime b(bulwark::testing::builtins(), shared);
    bulwark::detail::redis::ConnectOptions redis;
    redis.address = *bulwark::detail::redis::parse_url(server.url());
    bulwark::detail::redis::RedisScheduleStore store_a(redis, "sched"), store_b(redis, "sched");
    Harness ha(a, with_schedule("*/10 * * * *"), store_a);
    Harness hb(b, with_schedule("*/10 * * * *"), store_b);
    for (int minute : {5, 10, 20}) {
      ha.scheduler.tick(utc(2026, 11, 30, 10, minute, 1));
      hb.scheduler.tick(utc(2026, 11, 30, 10, minute, 2));
    }
    REQUIRE(a.wait_idle(20s));
    // Both tried each time; the queue has one job per time.
    CHECK(ha.ids() == hb.ids());
    auto page = a.list({.type = "echo", .limit = 100});
    CHECK(page.size() == 2);
    CHECK(store_a.last_run("report") ==
          std::chrono::duration_cast<std::chrono::milliseconds>(utc(2026, 11, 30, 10, 20).time_since_epoch()).count());
    // A third process started later: the last run comes from Redis, so 10:30 to 11:00 were missed.
    bulwark::detail::redis::RedisScheduleStore store_c(redis, "sched");
    Harness hc(a, with_schedule("*/10 * * * *", bulwark::MissedRuns::run_once), store_c);
    hc.scheduler.tick(utc(2026, 11, 30, 11, 5));
    CHECK(hc.ids() == std::vector<std::string>{"report:20261130T1100Z"});
    // Schedules added through one process are run by the others.
    bulwark::ScheduleOptions s{"0 4 * * *", "UTC", {{"type", "echo"}}, bulwark::MissedRuns::skip, false};
    REQUIRE(a.add_schedule("nightly", s) == bulwark::ScheduleResult::added);
    CHECK(bulwark::testing::eventually([&] {
      for (const auto& x : b.schedules()) {
        if (x.name == "nightly") return true;
      }
      return false;
    }));
  }
}
