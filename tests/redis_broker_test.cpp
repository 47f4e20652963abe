// RedisBroker: the shared queue's at-least-once delivery between several
// "processes" (brokers with their own owner ids) on one real redis-server.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "redis/redis_broker.hpp"
#include "redis/scripts.hpp"
#include "support/fake_task.hpp"
#include "support/redis_server.hpp"
#include "support/wait.hpp"
#include "core/task_access.hpp"

using namespace std::chrono_literals;
using bulwark::Clock;
using bulwark::JobState;
using bulwark::detail::Ack;
using bulwark::detail::Admitted;
using bulwark::detail::Lease;
using bulwark::detail::redis::BrokerOptions;
using bulwark::detail::redis::FetchedJob;
using bulwark::detail::redis::RedisBroker;
using bulwark::detail::TaskAccess;
using TaskPtr = std::shared_ptr<bulwark::detail::Task>;
namespace redis = bulwark::detail::redis;

namespace {

BrokerOptions options_for(const bulwark::testing::RedisServer& server, std::chrono::milliseconds lease = 5s,
                          unsigned workers = 1) {
  BrokerOptions o;
  o.redis.address = server.address();
  o.ns.assign(1, 't');  // assign(1, c): GCC 12 -Wrestrict misfires on = "t" here
  o.lease = lease;
  o.workers = workers;
  o.prefetch = workers;
  o.poll = 1ms;
  return o;
}

// What a process would build for a fetched job: its spec, as stored.
TaskPtr make_task(const FetchedJob& f) {
  TaskPtr t = bulwark::testing::fake_task(f.id, f.priority);
  TaskAccess::spec(*t).type = f.type;
  TaskAccess::spec(*t).max_attempts = f.max_attempts;
  TaskAccess::spec(*t).stored = true;
  TaskAccess::spec(*t).payload = nlohmann::json::parse(f.payload);
  TaskAccess::with_record(*t, [&](bulwark::detail::TaskRecord& r) { r.attempts = f.attempt; });
  return t;
}

TaskPtr new_job(const std::string& id, int priority = 0) {
  TaskPtr t = bulwark::testing::fake_task(id, priority);
  TaskAccess::spec(*t).type = "echo";
  TaskAccess::spec(*t).stored = true;
  TaskAccess::spec(*t).max_attempts = 3;
  TaskAccess::spec(*t).payload = {{"n", 1}};
  return t;
}

Admitted admit(RedisBroker& b, const TaskPtr& t, int* recorded = nullptr) {
  const auto now = Clock::now();
  return b.admit(t, now, now, [&] {
    if (recorded != nullptr) ++*recorded;
    return true;
  });
}

// Takes one job from `b`, waiting for its feeder.
Lease take(RedisBroker& b) {
  std::vector<Lease> got;
  REQUIRE(b.fetch(got, 1) == 1);
  return std::move(got[0]);
}

std::string field(const bulwark::testing::RedisServer& server, const std::string& id, const std::string& name) {
  auto v = server.connect().command({"HGET", redis::Keys("t").job(id), name});
  return v.is_nil() ? "<nil>" : v.str;
}

}  // namespace

TEST_SUITE("redis_broker") {
  TEST_CASE("a job admitted by one process is run by another, and its end is recorded in Redis" * doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    RedisBroker a(options_for(server, 5s, 0), "proc-a", [](const FetchedJob&) { return nullptr; });
    a.start();  // admits only
    RedisBroker b(options_for(server), "proc-b", make_task);
    b.start();
    int recorded = 0;
    REQUIRE(admit(a, new_job("j1", 5), &recorded) == Admitted::accepted);
    CHECK(recorded == 1);
    Lease l = take(b);
    CHECK(l.task->id() == "j1");
    CHECK(l.task->spec().payload == nlohmann::json{{"n", 1}});
    CHECK(field(server, "j1", "owner") == "proc-b");
    CHECK(b.held() == 1);
    TaskAccess::set_state(*l.task, JobState::succeeded);
    b.ack(std::move(l), Ack::done);
    CHECK(b.held() == 0);
    REQUIRE(bulwark::testing::eventually([&] { return b.pending_acks() == 0; }));
    CHECK(field(server, "j1", "state") == "succeeded");
    CHECK(field(server, "j1", "outcome").find("duration_ms") != std::string::npos);
  }

  TEST_CASE("admission refuses a taken id across processes and a full queue" * doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    auto small = options_for(server, 5s, 0);  // processes that admit and run nothing
    small.capacity = 2;
    RedisBroker a(small, "a", [](const FetchedJob&) { return nullptr; });
    a.start();
    RedisBroker b(small, "b", [](const FetchedJob&) { return nullptr; });
    b.start();
    int recorded = 0;
    CHECK(admit(a, new_job("same"), &recorded) == Admitted::accepted);
    CHECK(admit(b, new_job("same"), &recorded) == Admitted::duplicate);
    CHECK(admit(b, new_job("other"), &recorded) == Admitted::accepted);
    CHECK(admit(a, new_job("third"), &recorded) == Admitted::full);
    CHECK(recorded == 2);
  }

  TEST_CASE("a failed attempt retried through Redis is run again, as a retry, by any process" * doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    RedisBroker a(options_for(server), "a", make_task);
    a.start();
    REQUIRE(admit(a, new_job("r")) == Admitted::accepted);
    Lease first = take(a);
    TaskAccess::set_state(*first.task, JobState::scheduled);
    a.ack(std::move(first), Ack::retry, Clock::now() + 20ms);  // written by the acker, not on this thread
    REQUIRE(bulwark::testing::eventually([&] { return a.pending_acks() == 0; }));
    CHECK(field(server, "r", "state") != "running");
    Lease second = take(a);
    CHECK(second.task->id() == "r");
    CHECK(second.is_retry());
    CHECK(second.task->with_record([](const bulwark::detail::TaskRecord& r) { return r.attempts; }) == 2);
    TaskAccess::set_state(*second.task, JobState::failed);
    a.ack(std::move(second), Ack::done);
    REQUIRE(bulwark::testing::eventually([&] { return a.pending_acks() == 0; }));
    CHECK(field(server, "r", "state") == "failed");
  }

  TEST_CASE("jobs held by a process that died are taken back after their lease, as kind lease_lost" * doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    {
      // A process leases two jobs and dies: nothing acks or releases them.
      RedisBroker admitter(options_for(server, 5s, 0), "admitter", [](const FetchedJob&) { return nullptr; });
      admitter.start();
      REQUIRE(admit(admitter, new_job("x")) == Admitted::accepted);
      REQUIRE(admit(admitter, new_job("y")) == Admitted::accepted);
    }
    redis::Keys keys("t");
    auto c = server.connect();
    const auto now = std::to_string(redis::epoch_ms(Clock::now()));
    auto leased = c.eval(redis::kFetch, {keys.leased, keys.held, keys.ready}, {"2", now, "200", "dead-proc", keys.job_prefix});
    REQUIRE(leased.elements.size() == 2);
    const auto start = Clock::now();
    RedisBroker alive(options_for(server), "alive", make_task);
    alive.start();
    Lease l = take(alive);
    CHECK(Clock::now() - start >= 150ms);  // not before the lease ran out
    CHECK(l.is_retry());
    CHECK(field(server, l.task->id(), "outcome").find("dead-proc") != std::string::npos);
    CHECK(field(server, l.task->id(), "outcome").find("lease_lost") != std::string::npos);
    CHECK(field(server, l.task->id(), "attempts") == "2");
  }

  TEST_CASE("jobs fetched but never started go back to Redis when a process stops" * doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    {
      RedisBroker b(options_for(server), "b", make_task);
      b.start();
      for (const char* id : {"p1", "p2", "p3"}) REQUIRE(admit(b, new_job(id)) == Admitted::accepted);
      REQUIRE(bulwark::testing::eventually([&] { return b.held() == 2; }));  // one per worker plus one prefetched
      b.close();
      CHECK(b.drain().empty());  // nothing local-only; the two held go back
      CHECK(b.held() == 0);
    }
    for (const char* id : {"p1", "p2", "p3"}) {
      CAPTURE(id);
      CHECK(field(server, id, "state") == "queued");
      CHECK(field(server, id, "attempts") == "0");
    }
  }

  TEST_CASE("an end that cannot reach Redis is written once Redis is back" * doctest::timeout(60)) {
    bulwark::testing::RedisServer server(/*append_only=*/true);
    RedisBroker b(options_for(server, 30s), "b", make_task);
    b.start();
    REQUIRE(admit(b, new_job("late")) == Admitted::accepted);
    Lease l = take(b);
    server.stop();
    TaskAccess::set_state(*l.task, JobState::succeeded);
    b.ack(std::move(l), Ack::done);
    CHECK(b.pending_acks() == 1);
    CHECK(admit(b, new_job("during")) == Admitted::unavailable);
    server.start();
    CHECK(bulwark::testing::eventually([&] { return b.pending_acks() == 0; }, 20s));
    CHECK(field(server, "late", "state") == "succeeded");
    CHECK(admit(b, new_job("after")) == Admitted::accepted);
  }
}
