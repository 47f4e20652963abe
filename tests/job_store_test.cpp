// MemoryJobStore: lookups, retention bounds and cursor paging.
#include <doctest/doctest.h>

#include <thread>

#include "runtime/job_store.hpp"
#include "support/fake_task.hpp"
#include "core/task_access.hpp"

using bulwark::JobState;
using bulwark::detail::MemoryJobStore;
using bulwark::detail::TaskAccess;
using TaskPtr = std::shared_ptr<bulwark::detail::Task>;

namespace {

std::uint64_t g_seq = 0;

TaskPtr stored(MemoryJobStore& store, const std::string& id, JobState state, const std::string& type = "t") {
  TaskPtr t = bulwark::testing::fake_task(id, 0, state);
  TaskAccess::spec(*t).type = type;
  TaskAccess::spec(*t).seq = ++g_seq;
  REQUIRE(store.insert(t));
  return t;
}

std::string numbered(const char* prefix, int i) { return std::string(prefix).append(std::to_string(i)); }

void finish(MemoryJobStore& store, const TaskPtr& t, JobState terminal) {
  TaskAccess::set_state(*t, terminal);
  store.finished(t);
}

}  // namespace

TEST_SUITE("job_store") {
  TEST_CASE("a job is found by id until retention forgets it, and an id is taken once") {
    MemoryJobStore store(10, 10);
    TaskPtr a = stored(store, "a", JobState::queued);
    CHECK(store.find("a") == a);
    CHECK(store.record("a")->id == "a");
    CHECK_FALSE(store.find("b"));
    CHECK_FALSE(store.record("b"));
    CHECK_FALSE(store.insert(bulwark::testing::fake_task("a")));
  }

  TEST_CASE("finished jobs are kept within two bounds, so successes never push out a dead letter") {
    MemoryJobStore store(2, 1);
    TaskPtr dead1 = stored(store, "dead1", JobState::running);
    finish(store, dead1, JobState::failed);
    for (int i = 0; i < 5; ++i) finish(store, stored(store, numbered("ok", i), JobState::running), JobState::succeeded);
    CHECK(store.find("dead1"));  // five successes later
    CHECK_FALSE(store.find("ok0"));
    CHECK_FALSE(store.find("ok2"));
    CHECK(store.find("ok3"));
    CHECK(store.find("ok4"));
    finish(store, stored(store, "dead2", JobState::running), JobState::failed);
    CHECK_FALSE(store.find("dead1"));  // the dead-letter bound is 1
    CHECK(store.find("dead2"));
  }

  TEST_CASE("finished records older than their list's age limit are forgotten when a later job finishes" *
            doctest::timeout(10)) {
    using namespace std::chrono_literals;
    MemoryJobStore store(100, 100, 50ms, 0ms);  // successes age, dead letters only by count
    finish(store, stored(store, "old-ok", JobState::running), JobState::succeeded);
    finish(store, stored(store, "old-dead", JobState::running), JobState::failed);
    TaskPtr live = stored(store, "live", JobState::running);
    std::this_thread::sleep_for(120ms);
    CHECK(store.find("old-ok"));  // nothing finished since: nothing checked yet
    finish(store, stored(store, "new-dead", JobState::running), JobState::failed);  // a failure ages the other list too
    CHECK_FALSE(store.find("old-ok"));
    CHECK(store.find("old-dead"));
    CHECK(store.find("new-dead"));
    CHECK(store.find("live"));  // a job that has not finished never ages
  }

  TEST_CASE("a requeued job is not forgotten while it is live again") {
    MemoryJobStore store(1, 1);
    TaskPtr t = stored(store, "again", JobState::running);
    finish(store, t, JobState::failed);
    TaskAccess::set_state(*t, JobState::queued);  // requeued
    finish(store, stored(store, "other", JobState::running), JobState::failed);
    CHECK(store.find("again"));
  }

  TEST_CASE("a listing pages newest first with the cursor it gives, and refuses one it did not give") {
    MemoryJobStore store(100, 100);
    for (int i = 0; i < 5; ++i) stored(store, numbered("j", i), JobState::queued);
    stored(store, "other", JobState::queued, "u");
    auto first = store.list({.type = "t", .limit = 2});
    REQUIRE(first);
    REQUIRE(first->jobs.size() == 2);
    CHECK(first->jobs[0].id == "j4");
    CHECK(first->jobs[1].id == "j3");
    REQUIRE_FALSE(first->next_cursor.empty());
    auto second = store.list({.type = "t", .limit = 2, .cursor = first->next_cursor});
    REQUIRE(second);
    CHECK(second->jobs[0].id == "j2");
    auto last = store.list({.type = "t", .limit = 2, .cursor = second->next_cursor});
    REQUIRE(last);
    REQUIRE(last->jobs.size() == 1);
    CHECK(last->jobs[0].id == "j0");
    CHECK(last->next_cursor.empty());
    for (const char* bad : {"x", "0", "-1", "12abc", "99999999999999999999999"}) {
      CAPTURE(bad);
      CHECK_FALSE(store.list({.cursor = bad}));
    }
  }

  TEST_CASE("counts by state cover every retained job") {
    MemoryJobStore store(100, 100);
    stored(store, "q", JobState::queued);
    finish(store, stored(store, "f", JobState::running), JobState::failed);
    finish(store, stored(store, "s", JobState::running), JobState::succeeded);
    auto counts = store.count_by_state();
    CHECK(counts[JobState::queued] == 1);
    CHECK(counts[JobState::failed] == 1);
    CHECK(counts[JobState::succeeded] == 1);
  }
}
